"""Smoke tests of the benchmark harness (no timing assertions): W1 at a tiny size goes
through ``benchmarks.main`` and writes the documented JSON record; the gpu suite runs at
a tiny size through the ``sgdlab bench`` command line within its budget, records what it
skipped or shrank and why, and refuses bad flag values with one line and status 2."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr

import benchmarks
from benchmarks import bench

ROOT = Path(__file__).resolve().parents[1]


def test_w1_tiny_writes_the_documented_record(tmp_path):
    out = tmp_path / "w1.json"
    rc = benchmarks.main(["--workload", "W1", "--size", "tiny", "--repeats", "1", "--no-torch",
                          "--no-save", "--json", str(out)])
    assert rc == 0
    rec = json.loads(out.read_text())
    assert rec["workload"] == "W1"
    for key, typ in [("device", str), ("versions", dict), ("member_steps_per_s", float),
                     ("compile_s", float), ("baselines", dict), ("ratios", dict),
                     ("roofline", dict), ("compile", dict)]:
        assert isinstance(rec[key], typ), key
    assert set(rec["baselines"]) == {"per_seed_loop", "naive_vmap"} == set(rec["ratios"])
    assert all(isinstance(v, float) and v > 0 for v in rec["baselines"].values())
    assert set(rec["roofline"]) >= {"matmul_flops_per_s", "normals_per_s", "fraction"}
    assert all(rec["roofline"][k] > 0 for k in ("matmul_flops_per_s", "normals_per_s",
                                                "fraction"))
    assert rec["member_steps_per_s"] > 0 and rec["compile_s"] >= 0
    assert {"jax", "sgdlab"} <= set(rec["versions"])
    # the engine's compile, per program, split into lowering and XLA
    assert set(rec["compile"]["programs"]) == {"_init", "_segment"}
    for prog in rec["compile"]["programs"].values():
        assert prog["lowering_s"] > 0 and prog["xla_s"] > 0
    # a new grid of the same shape reuses the compiled program
    assert rec["trace_count_delta"]["repeats"] == 0


def test_bad_arguments_exit_2():
    assert benchmarks.main(["--workload", "W9"]) == 2
    assert benchmarks.main(["--repeats", "0", "--no-save"]) == 2


def _cli(*args, **kw):
    """``sgdlab bench ARGS`` in a fresh process (through the sgdlab command line)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = "import sys; from sgdlab.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, "bench", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, **kw)


def test_gpu_suite_tiny_runs_end_to_end_through_the_cli(tmp_path):
    out = tmp_path / "suite.json"
    p = _cli("--suite", "gpu", "--size", "tiny", "--workload", "W2", "--budget-s", "300",
             "--repeats", "1", "--no-torch", "--no-save", "--json", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["suite"] == "gpu" and doc["size"] == "tiny" and doc["budget_s"] == 300
    assert isinstance(doc["device"], str) and doc["device"]
    assert doc["precision"] == {"jax_default_matmul_precision": "highest", "tf32_allowed": False}
    c = doc["ceilings"]
    assert c["matmul_flops_per_s"] > 0 and c["normals_per_s"] > 0
    assert c["precision"] == "highest" and c["matmul_dtype"] == "float32"
    # the bitwise check ran: 8 seeds in one chunk against four chunks
    bw = doc["bitwise"]
    assert bw["chunks"] == [1, 4] and isinstance(bw["equal"], bool)
    assert bw["chunking_equal"] == (bw["differing_chunking"] == [])
    # and the engine keeps its guarantee (it once did not: the step-0 loss of seed 5)
    assert bw["equal"] is True, bw
    # every workload is a record or a skip with its reason
    ran = {r["workload"] for r in doc["records"]}
    skipped = {s["workload"]: s["reason"] for s in doc["skipped"]}
    assert ran == {"W2"} and set(skipped) == {"W1", "W3", "W4", "W5"}
    assert all("not selected" in r for r in skipped.values())
    rec = doc["records"][0]
    assert set(rec["compile"]["programs"]) == {"_init", "_segment"}
    assert rec["compile"]["lowering_s"] > 0 and rec["compile"]["xla_s"] > 0
    assert rec["rounds"] == 1 and rec["member_steps_per_s"] > 0
    assert doc["fractions"]["W2"]["bound"] == "rng" and doc["fractions"]["W2"]["fraction"] > 0
    assert "lowering s | XLA s" in p.stdout  # the printed table
    # the dated section appended to RESULTS.md
    md = tmp_path / "RESULTS.md"
    md.write_text("# Benchmark results\n")
    bench.append_section(doc, md)
    text = md.read_text()
    assert bench.GPU_BEGIN in text and f"GPU suite, {doc['created'][:10]}" in text
    assert "| W2 | 1000 × 50 |" in text and "Skipped W1: not selected" in text


def test_gpu_suite_budget_too_small_records_skips(tmp_path, capsys, monkeypatch):
    def broken(size):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setitem(bench.BUILDERS, "W3", broken)  # a workload that fails is recorded
    out = tmp_path / "suite.json"
    rc = benchmarks.main(["--suite", "gpu", "--size", "tiny", "--budget-s", "0.5", "--repeats",
                          "1", "--no-torch", "--no-save", "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["records"] == [] and doc["fractions"] == {}
    reasons = {s["workload"]: s["reason"] for s in doc["skipped"]}
    assert list(reasons) == list(bench.WORKLOADS)
    assert reasons.pop("W3") == "error: RuntimeError: boom"
    assert all(r.startswith("budget") for r in reasons.values())
    assert doc["bitwise"]["equal"] is None and "budget" in doc["bitwise"]["skipped"]
    assert doc["ceilings"]["matmul_flops_per_s"] > 0
    assert "skipped W5: budget" in capsys.readouterr().out


def test_bad_flag_values_give_one_line_and_status_2(capsys):
    for argv, what in [(["--suite", "tpu"], "--suite"), (["--budget-s", "0"], "--budget-s"),
                       (["--suite", "gpu", "--budget-s", "abc"], "--budget-s"),
                       (["--budget-s", "60"], "--budget-s applies to --suite gpu"),
                       (["--append-results"], "--append-results"),
                       (["--suite", "gpu", "--workload", "scaling"], "scaling"),
                       (["--append-from", "/nonexistent/x.json"], "--append-from")]:
        assert benchmarks.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and what in err, (argv, err)
    p = _cli("--suite", "gpu", "--budget-s", "-1")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "--budget-s" in p.stderr


def test_fit_shrinks_steps_then_seeds_and_skips_what_cannot_fit():
    case = bench.w4("quick")  # 4 × 1024 members × 300 steps

    def est(c):  # a stand-in cost model: 1 s fixed + 1 ms per member-step / 1000
        return 1.0 + c.study.n_members * c.study.steps * 1e-6

    full = est(case)
    same, change = bench.fit(case, full + 1, full + 1, est)
    assert same is case and change is None
    small, change = bench.fit(case, 1.5, 100.0, est)
    assert est(small) <= 1.5 and small.study.steps < case.study.steps
    assert change["steps"] == [300, small.study.steps]
    assert change["members"] == [4096, small.study.n_members]
    assert small.baseline_steps <= small.study.steps
    tiny_share, change = bench.fit(case, 1.05, 100.0, est)  # needs seeds shrunk too
    assert tiny_share.study.steps == 30 and tiny_share.study.seeds < 1024
    none, reason = bench.fit(case, 0.5, 0.9, est)
    assert none is None and reason["reason"].startswith("budget")


def test_bitwise_comparison_sees_one_ulp():
    a = xr.Dataset({"x": ("i", np.array([1.0, 2.0], np.float32)),
                    "n": ("i", np.array([1, 2]))})
    b = a.copy(deep=True)
    assert bench._differing(a, b) == []
    b["x"].values[1] = np.nextafter(np.float32(2.0), np.float32(3.0))
    assert bench._differing(a, b) == ["x"]
    assert bench._differing(a, a.drop_vars("n")) == ["n"]


def test_time_runs_repeats_short_runs_until_they_add_up_to_min_s():
    calls = []

    def fn(r):
        calls.append(r)
        return r

    t = bench.time_runs(fn, 3)
    assert calls == [0, 1, 2, 3] and len(t["times_s"]) == 3  # no min_s: the repeats asked for
    calls.clear()
    t = bench.time_runs(fn, 3, min_s=1e9)  # never adds up: stops at 1000 runs
    assert calls == list(range(1001)) and len(t["times_s"]) == 1000
    calls.clear()

    def slow(r):  # 2 ms each
        calls.append(r)
        time.sleep(0.002)

    t = bench.time_runs(slow, 1, min_s=0.02)
    assert sum(t["times_s"]) >= 0.02 and 1 <= len(t["times_s"]) <= 10
    assert calls == list(range(len(t["times_s"]) + 1))
