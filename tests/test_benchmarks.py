"""Smoke test of the benchmark harness (no timing assertions): W1 at a tiny size
goes through ``benchmarks.main`` and writes the documented JSON record."""

import json

import benchmarks


def test_w1_tiny_writes_the_documented_record(tmp_path):
    out = tmp_path / "w1.json"
    rc = benchmarks.main(["--workload", "W1", "--size", "tiny", "--repeats", "1", "--no-torch",
                          "--no-save", "--json", str(out)])
    assert rc == 0
    rec = json.loads(out.read_text())
    assert rec["workload"] == "W1"
    for key, typ in [("device", str), ("versions", dict), ("member_steps_per_s", float),
                     ("compile_s", float), ("baselines", dict), ("ratios", dict),
                     ("roofline", dict)]:
        assert isinstance(rec[key], typ), key
    assert set(rec["baselines"]) == {"per_seed_loop", "naive_vmap"} == set(rec["ratios"])
    assert all(isinstance(v, float) and v > 0 for v in rec["baselines"].values())
    assert set(rec["roofline"]) >= {"matmul_flops_per_s", "normals_per_s", "fraction"}
    assert all(rec["roofline"][k] > 0 for k in ("matmul_flops_per_s", "normals_per_s",
                                                "fraction"))
    assert rec["member_steps_per_s"] > 0 and rec["compile_s"] >= 0
    assert {"jax", "sgdlab"} <= set(rec["versions"])
    # a new grid of the same shape reuses the compiled program
    assert rec["trace_count_delta"]["repeats"] == 0


def test_bad_arguments_exit_2():
    assert benchmarks.main(["--workload", "W9"]) == 2
    assert benchmarks.main(["--repeats", "0", "--no-save"]) == 2
