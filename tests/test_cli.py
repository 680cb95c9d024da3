"""The command line: list, run (quick presets end to end), report, overrides, clean errors."""

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgdlab import cli, experiments, theory


def run_cli(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_list_names_every_experiment(capsys):
    code, out, _ = run_cli(["list"], capsys)
    assert code == 0
    names = [line.split()[0] for line in out.strip().splitlines()]
    assert names == experiments.names()
    assert {"lzu-stationary", "lzu-minibatch"} <= set(names)


def check_outputs(out_dir):
    summary = json.loads((out_dir / "summary.json").read_text())
    for key in ("experiment", "preset", "config", "device", "versions", "runtime_s",
                "quantities", "summary_format", "checks"):
        assert key in summary
    assert summary["summary_format"] == experiments.SUMMARY_FORMAT
    assert summary["checks"]["n"] == sum(q["criterion"] is not None
                                         for q in summary["quantities"])
    for q in summary["quantities"]:
        assert set(q) >= {"name", "coords", "value", "se", "predicted", "z", "pass", "criterion",
                          "lo", "hi", "oracle", "fails_run"}
        assert (q["criterion"] is None) == (q["predicted"] is None)
    assert (out_dir / "results.zarr").is_dir()
    pngs = list((out_dir / "figures").glob("*.png"))
    assert pngs and all(p.with_suffix(".pdf").exists() for p in pngs)
    return summary


@pytest.mark.parametrize("name", ["lzu-stationary", "lzu-minibatch"])
def test_quick_preset_end_to_end(name, tmp_path, capsys):
    out = tmp_path / name
    code, stdout, _ = run_cli(["run", name, "--out", str(out), "--quiet"], capsys)
    summary = check_outputs(out)
    assert code == 0, stdout
    assert all(q["pass"] for q in summary["quantities"] if q["pass"] is not None)
    assert "passed, 0 failed" in stdout
    # report redraws from the stored run alone
    (out / "figures" / next(iter((out / "figures").glob("*.png"))).name).unlink()
    code, stdout2, _ = run_cli(["report", str(out)], capsys)
    assert code == 0 and "passed, 0 failed" in stdout2
    assert len(list((out / "figures").glob("*.png"))) >= 1


def test_set_override_reaches_the_compiled_run(tmp_path, capsys):
    """A changed learning rate changes the measured variance as the theory says."""
    values = {}
    for lr in (0.2, 1.2):
        out = tmp_path / f"lr{lr}"
        code, stdout, _ = run_cli(["run", "lzu-stationary", "--out", str(out), "--quiet",
                                   "--set", f"learning_rate={lr}", "--set", "momentum=0",
                                   "--set", "seeds=400", "--set", "steps=2000",
                                   "--set", "burn_in=200"], capsys)
        assert code == 0, stdout
        q = next(q for q in json.loads((out / "summary.json").read_text())["quantities"]
                 if q["name"] == "variance")
        assert q["coords"]["learning_rate"] == lr
        values[lr] = q
    for lr, q in values.items():
        assert abs(q["value"] - theory.lzu_variance_1d(lr, 1.0, 1.0)) <= 4 * q["se"]
    assert values[1.2]["value"] > 5 * values[0.2]["value"]


def test_unstable_grid_point_runs_and_says_why_there_is_no_prediction(tmp_path, capsys):
    out = tmp_path / "unstable"
    code, stdout, _ = run_cli(["run", "lzu-stationary", "--out", str(out), "--quiet",
                               "--set", "learning_rate=0.5,2.5", "--set", "momentum=0",
                               "--set", "seeds=200", "--set", "steps=1000",
                               "--set", "burn_in=100"], capsys)
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    bad = [q for q in summary["quantities"] if q["coords"]["learning_rate"] == 2.5]
    assert bad and all(q["predicted"] is None and q["pass"] is None for q in bad)
    assert all("no stationary distribution" in q["note"] for q in bad)
    assert any("200 of 200 members diverged" in n for n in summary["notes"])
    assert "no stationary distribution" in stdout


@pytest.mark.parametrize("argv,needle", [
    (["run", "nope"], "experiment='nope'"),
    (["run", "lzu-stationary", "--set", "lr=0.1"], "valid keys: curvature"),
    (["run", "lzu-stationary", "--set", "learning_rate=-1"], "learning_rate=-1.0"),
    (["run", "lzu-stationary", "--set", "learning_rate=fast"], "learning_rate='fast'"),
    (["run", "lzu-stationary", "--set", "learning_rate=0.1,,0.2"], "learning_rate"),
    (["run", "lzu-stationary", "--set", "seeds=2.5"], "seeds='2.5'"),
    (["run", "lzu-stationary", "--set", "rotation=0.3"], "rotation=0.3"),
    (["run", "lzu-stationary", "--set", "burn_in=5000"], "burn_in=5000"),
    (["run", "lzu-stationary", "--set", "noise_var=1,2,3"], "noise_var"),
    (["run", "lzu-stationary", "--set", "steps"], "--set='steps'"),
    (["run", "lzu-stationary", "--preset", "huge"], "invalid choice"),
    (["run", "lzu-stationary", "--seed", "-3"], "--seed=-3"),
    (["run", "lzu-stationary", "--config", "/nonexistent.toml"], "file not found"),
    (["run", "lzu-minibatch", "--set", "method=adam"], "method='adam'"),
    (["report", "/nonexistent"], "no finished sgdlab run"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_exits_2_with_one_line(argv, needle, capsys, tmp_path):
    code, out, err = run_cli(argv + (["--out", str(tmp_path / "o")] if argv[0] == "run" else []),
                             capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_toml_config_file(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[lzu-stationary]\nlearning_rate = [0.5]\nmomentum = [0.0]\nseeds = 300\n'
                   'steps = 600\nburn_in = 100\n')
    exp = experiments.get("lzu-stationary")
    resolved = exp.resolve("quick", config_file=cfg, set_strings=["seeds=400"])
    assert resolved["learning_rate"] == [0.5] and resolved["seeds"] == 400
    cfg.write_text("learning_rate = 'x'\n")
    code, _, err = run_cli(["run", "lzu-stationary", "--config", str(cfg), "--out",
                            str(tmp_path / "o")], capsys)
    assert code == 2 and "learning_rate='x'" in err


# ---- generated malformed inputs: every one a clean error, never a traceback or output


def _bad_value(param, draw):
    options = []
    if param.kind in (float, int):
        options += ["abc", "1e999" if param.kind is float else "1.5", "nan", ""]
        if param.low is not None:
            below = param.low - 1.0
            options.append(repr(below) if param.kind is float else str(int(below)))
        if param.high is not None:
            options.append(repr(param.high + 1.0))
    elif param.kind is str:
        options += ["definitely-not-a-choice", ""]
    elif param.kind is bool:
        options += ["maybe"]
    if not param.list:
        options.append("1,2")
    return draw(st.sampled_from(options))


@st.composite
def malformed_cli(draw):
    name = draw(st.sampled_from(experiments.names()))
    exp = experiments.get(name)
    kind = draw(st.sampled_from(["value", "value", "value", "key", "syntax"]))
    if kind == "key":
        key = draw(st.text("abcxyz_", min_size=1, max_size=8).filter(
            lambda k: k not in exp.param_map))
        return name, [f"{key}=1"]
    if kind == "syntax":
        return name, [draw(st.sampled_from(["novalue", "=3", ""]))]
    param = draw(st.sampled_from(exp.params))
    return name, [f"{param.name}={_bad_value(param, draw)}"]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=malformed_cli())
def test_generated_malformed_cli_inputs(case, tmp_path_factory, capsys):
    name, sets = case
    out = tmp_path_factory.mktemp("bad") / "o"
    argv = ["run", name, "--out", str(out)] + [x for s in sets for x in ("--set", s)]
    code, stdout, err = run_cli(argv, capsys)
    assert code == 2, (argv, stdout, err)
    assert len(err.strip().splitlines()) == 1 and err.startswith("sgdlab: error: "), err
    assert not out.exists()


@st.composite
def malformed_api(draw):
    import sgdlab as sl
    field = draw(st.sampled_from(["learning_rate", "momentum", "steps", "seeds", "burn_in",
                                  "n_batches", "optimizer", "hparam_name"]))
    bad = draw(st.sampled_from([-1, 0, math.nan, math.inf, "x", [], [[1.0]], None, 2.5]))
    problem = sl.problems.noisy_quadratic(1.0, 1.0)
    kw = dict(problem=problem, optimizer=sl.Optimizer("momentum"),
              hparams={"learning_rate": 0.1, "momentum": 0.5}, steps=100, seeds=4,
              stationary=sl.Stationary(("w2",), burn_in=10))
    if field in ("learning_rate", "momentum"):
        if field == "momentum" and bad == 0:
            bad = 1.5
        if field == "learning_rate" and bad == 2.5:
            bad = -2.5
        kw["hparams"] = dict(kw["hparams"], **{field: bad})
    elif field in ("steps", "seeds"):
        kw[field] = bad if bad not in (2.5,) else -7
    elif field in ("burn_in", "n_batches"):
        val = {"burn_in": 10, "n_batches": 10}
        val[field] = bad if field == "burn_in" or bad != 2.5 else 0
        if field == "burn_in" and bad in (0, 2.5):
            val[field] = 1000
        kw["stationary"] = ("stationary", val)
    elif field == "optimizer":
        return lambda: sl.Optimizer(bad if isinstance(bad, str) else "sgd-" + str(bad))
    else:
        kw["hparams"] = dict(kw["hparams"], **{"lr" + str(bad): 0.1})

    def build():
        if isinstance(kw.get("stationary"), tuple):
            kw["stationary"] = sl.Stationary(("w2",), **kw["stationary"][1])
        return sl.Study(**kw)
    return build


@settings(max_examples=60, deadline=None)
@given(build=malformed_api())
def test_generated_malformed_api_inputs(build):
    with pytest.raises(ValueError) as e:
        build()
    msg = str(e.value)
    assert "\n" not in msg and " is invalid: " in msg


def test_x64_switch_runs_in_float64(tmp_path, capsys):
    import jax
    try:
        code, _, _ = run_cli(["run", "lzu-stationary", "--x64", "--quiet", "--out",
                              str(tmp_path / "o"), "--set", "seeds=64", "--set", "steps=300",
                              "--set", "burn_in=50", "--set", "learning_rate=0.5",
                              "--set", "momentum=0"], capsys)
    finally:
        jax.config.update("jax_enable_x64", False)
    assert code == 0
    summary, results = experiments.load_run(tmp_path / "o")
    assert summary["x64"] is True
    assert results["stationary"]["stationary_w_outer"].dtype == np.float64
    assert json.loads(results["stationary"].attrs["sgdlab_config"])["dtype"] == "float64"


# ---- --params, help texts, list-vs-scalar messages


def test_params_show_the_preset_values_next_to_the_defaults(capsys):
    code, out, _ = run_cli(["run", "lzu-stationary", "--params", "--preset", "paper"], capsys)
    assert code == 0
    lines = {ln.split(" = ")[0].strip(): ln for ln in out.splitlines() if " = " in ln}
    assert lines["seeds"].startswith("  seeds = 20000  [preset paper; default 4000]")
    assert "momentum = [0.0, 0.5, 0.9]  [preset paper; default [0.0]]" in lines["momentum"]
    code, out, _ = run_cli(["run", "lzu-stationary", "--params"], capsys)
    assert "momentum = [0.0, 0.5]  [preset quick; default [0.0]]" in out
    assert "seeds = 4000  [default]" in out
    code, out, _ = run_cli(["run", "lzu-stationary", "--params", "--set", "seeds=77"], capsys)
    assert "seeds = 77  [--config/--set; default 4000]" in out


def test_every_option_has_help_and_shows_its_default():
    import argparse
    run = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = run.choices["run"]
    formatter = parser._get_formatter()
    for action in parser._actions:
        assert action.help, action.dest
        if action.option_strings and action.default is not argparse.SUPPRESS:
            text = formatter._expand_help(action) if "%" in action.help else action.help
            assert "default" in formatter._get_help_string(action), action.dest
            assert "%(" not in text
    assert "(default: quick)" in parser.format_help()


@pytest.mark.parametrize("setting", ["rotation=0.1,0.2", "steps=10,20", "extras_nope=1"])
def test_list_for_a_scalar_says_so(setting, capsys, tmp_path):
    code, _, err = run_cli(["run", "lzu-stationary", "--set", setting, "--out",
                            str(tmp_path / "o")], capsys)
    assert code == 2
    if setting.startswith("extras_nope"):
        assert "unknown parameter" in err
    else:
        assert "takes one value, not a list" in err, err
    with pytest.raises(ValueError, match="takes one value, not a list"):
        experiments.get("lzu-stationary").resolve("quick", {"rotation": [0.1, 0.2]})


# ---- progress display (sgdlab._progress)


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def _run_progress(monkeypatch, ticks, dt, **kw):
    import io

    from sgdlab import _progress

    clock = FakeClock()
    monkeypatch.setattr(_progress.time, "perf_counter", clock)
    stream = io.StringIO()
    bar = _progress.Progress(ticks, label="learning_rate=0.1, batch_size=4 (3/8)",
                             stream=stream, work_per_tick=4096 * 50, **kw)
    for i in range(ticks):
        clock.t += dt
        bar.tick(1, f"chunk {i // 10 + 1}/{ticks // 10}")
    bar.close()
    return stream.getvalue()


def test_progress_on_a_log_is_line_based_and_sparse(monkeypatch):
    # 200 segments at 1 s each: a line only when ≥ 10 s and ≥ 10% (20 segments) have passed.
    text = _run_progress(monkeypatch, 200, 1.0)
    assert "\r" not in text
    lines = text.splitlines()
    assert 8 <= len(lines) <= 10, text  # 9 progress lines (20, 40, ..., 180) + closing line
    assert all(ln.startswith("[learning_rate=0.1, batch_size=4 (3/8)] ") for ln in lines)
    assert "ETA 03:00" in lines[0] and "(20/200)" in lines[0]
    assert "205k member-steps/s" in lines[0]  # 4096 · 50 member-steps per second
    assert lines[-1].endswith("done") and "(200/200)" in lines[-1]
    # fast segments: 10% passes every 0.2 s, but a line waits for 10 s to pass
    fast = _run_progress(monkeypatch, 200, 0.1).splitlines()
    assert 2 <= len(fast) <= 3
    # a short run says nothing at all
    assert _run_progress(monkeypatch, 50, 0.01) == ""
    assert _run_progress(monkeypatch, 200, 1.0, enabled=False) == ""


def test_progress_on_a_terminal_uses_tqdm_with_eta_and_throughput(monkeypatch):
    import io

    from sgdlab import _progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    bar = _progress.Progress(20, label="learning_rate=0.1 (1/2)", stream=stream,
                             work_per_tick=1000, delay=0.0)
    assert bar.tty
    for _ in range(20):
        bar.tick(1, "chunk 1/1")
    bar.total = 20
    bar.close()
    text = stream.getvalue()
    assert "learning_rate=0.1 (1/2)" in text and "member-steps/s" in text
    assert "20.0k/20.0k" in text and "<" in text  # tqdm's [elapsed<remaining, rate]


def test_human_names_of_studies():
    from sgdlab._progress import human_names

    hp = {"S1_lr0": {"learning_rate": 0.1, "batch_size": 4, "momentum": 0.0},
          "S1_lr1": {"learning_rate": 0.5, "batch_size": 4, "momentum": 0.0},
          "S2_lr0": {"learning_rate": 0.1, "batch_size": 16, "momentum": 0.0}}
    names = human_names(hp)
    assert names["S1_lr0"] == "learning_rate=0.1, batch_size=4 (1/3)"
    assert names["S2_lr0"] == "learning_rate=0.1, batch_size=16 (3/3)"
    assert human_names({"main": {"learning_rate": [0.1, 0.2]}}) == {"main": "main"}


# steps no other test uses, so that no program of these runs is cached in this process
DRY_RUN_SMOKE = {
    "escape": ["learning_rate=0.3,0.7", "barrier_over_temperature=3", "seeds=40",
               "max_steps=43"],
    "lzu-minibatch": ["batch_size=2,3", "learning_rate=0.3", "method=sgd,newton", "seeds=40",
                      "steps=230", "burn_in=30"],
}


@pytest.mark.parametrize("name", sorted(DRY_RUN_SMOKE))
def test_dry_run_counts_the_compiles_a_run_traces(name, capsys):
    """--dry-run's compile count is the number of traces the run then adds: studies of the
    same static structure (escape's learning rates; lzu-minibatch's methods, whose
    preconditioners are arguments) share one program, others (another batch size) do not."""
    import re

    from sgdlab import engine

    argv = ["run", name, "--dry-run"]
    for item in DRY_RUN_SMOKE[name]:
        argv += ["--set", item]
    code, out, _ = run_cli(argv, capsys)
    assert code == 0, out
    m = re.search(r"; (\d+) compiles? \(distinct programs over (\d+) stud(?:y|ies)\)", out)
    assert m, out
    planned, n_studies = int(m.group(1)), int(m.group(2))
    assert n_studies == len(out.strip().splitlines()) - 1
    if name == "escape":
        assert (planned, n_studies) == (1, 2)
        assert "shared with S1_lr0" in out
    else:
        assert (planned, n_studies) == (2, 4)
        assert "S2_newton" in out and "shared with S2_sgd" in out
        assert "S3_newton" in out and "shared with S3_sgd" in out
    before = engine.trace_count()
    experiments.run(name, set_strings=DRY_RUN_SMOKE[name], progress=False, log=lambda s: None)
    assert engine.trace_count() - before == planned
