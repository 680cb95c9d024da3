"""The escape experiment (study 5): quick preset end to end, the exact oracles, bad input."""

import json
import math

import numpy as np
import pytest
from scipy.special import erf

from sgdlab import analysis, cli, engine, experiments, theory
from sgdlab.experiments import escape as E
from sgdlab.optim import Optimizer
from sgdlab.problems import potential_1d, potential_fns
from sgdlab.theory import escape as TE


def _cfg(**overrides):
    return experiments.get("escape").resolve("quick", overrides)


def test_quick_preset_end_to_end(tmp_path, capsys):
    out = tmp_path / "o"
    traces = engine.trace_count()
    code = cli.main(["run", "escape", "--out", str(out), "--quiet"])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    # every learning rate is its own study, all through one compiled program
    assert engine.trace_count() - traces == 1
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "results.zarr").is_dir()
    assert (out / "figures" / "escape.png").exists()
    assert summary["stream_version"] == engine.STREAM_VERSION
    assert summary["processes"] == 1
    assert summary["summary_format"] == experiments.SUMMARY_FORMAT
    names = {q["name"] for q in summary["quantities"]}
    assert names == {"mfpt", "escape_rate", "arrhenius_slope"}
    assert all(q["pass"] is True for q in summary["quantities"]), stdout
    assert "passed, 0 failed" in stdout
    # the measured slopes are far from the continuous-time slope 1 at large λ
    big = max(a["learning_rate"] for a in summary["arrhenius"])
    fit = next(a for a in summary["arrhenius"] if a["learning_rate"] == big)
    assert fit["hi"] < 0.6
    # the report redraws the figure from the stored run alone
    (out / "figures" / "escape.png").unlink()
    assert cli.main(["report", str(out)]) == 0
    assert (out / "figures" / "escape.png").exists()


def test_layout_noise_per_member():
    """σ = √(2ΔL/(λx)) per grid point; Gaussian studies share one problem object."""
    cfg = _cfg()
    studies = experiments.get("escape").studies(cfg, 0)
    assert list(studies) == [f"S1_lr{i}" for i in range(len(cfg["learning_rate"]))]
    dL = 0.5 * cfg["curvature"] * cfg["wall"] ** 2
    for lr, st in zip(cfg["learning_rate"], studies.values(), strict=True):
        assert float(st.hparams["learning_rate"]) == lr
        want = [math.sqrt(2 * dL / (lr * x)) for x in cfg["barrier_over_temperature"]]
        np.testing.assert_allclose(st.hparams["noise_std"], want, rtol=1e-15)
        assert st.problem is next(iter(studies.values())).problem
    mixed = experiments.get("escape").studies(_cfg(batch_size=[1, 4, 8], noise_var=2.0), 0)
    assert list(mixed) == ["S1", "minibatch"]
    assert float(mixed["S1"].hparams["noise_std"]) == pytest.approx(math.sqrt(2.0))
    assert mixed["minibatch"].static == {"batch_size": (4, 8)}
    subs = mixed["minibatch"].static_studies()
    for S in (4, 8):
        assert subs[(S,)].problem.config["gradient_noise_var"] == pytest.approx(2.0 / S)
        assert float(subs[(S,)].hparams["noise_scale"]) == 1.0


def test_minibatch_sizes_are_a_static_sweep_with_few_programs():
    """batch_size 1, 4, 16 × two learning rates: one program for S = 1 and one per S > 1.

    The dry run plans that many programs and a run traces exactly that many; every
    cell is read back from its row, which a separately built single-cell study (its
    own problem, the tilts' variance S·σ² static, no ``noise_scale``) confirms.
    """
    cfg = _cfg(batch_size=[1, 4, 16], learning_rate=[0.1, 0.5], seeds=16, max_steps=200)
    exp = experiments.get("escape")
    lines = experiments.dry_run("escape", "quick", {k: cfg[k] for k in
                                                    ("batch_size", "learning_rate", "seeds",
                                                     "max_steps")})
    assert lines[-1].split("; ")[1].startswith("3 compiles (distinct programs over 4 studies)")
    studies = exp.studies(cfg, 0)
    assert list(studies) == ["S1_lr0", "S1_lr1", "minibatch_lr0", "minibatch_lr1"]
    mb = [studies[f"minibatch_lr{i}"] for i in range(2)]
    assert mb[0].static == {"batch_size": (4, 16)}
    for i in range(2):  # noise_scale = σ, the Gaussian noise_std, for every S
        np.testing.assert_allclose(mb[i].hparams["noise_scale"],
                                   studies[f"S1_lr{i}"].hparams["noise_std"], rtol=1e-15)
    for S in (4, 16):  # one problem object per S, shared by the learning rates
        a, b = (m.static_studies()[(S,)].problem for m in mb)
        assert a is b
        z = np.asarray(a.data.init(None), float)
        assert np.mean(z * z) == pytest.approx(S, rel=1e-5)  # the batch mean has variance 1
    traces = engine.trace_count()
    datasets = {name: engine.run(st, progress=False) for name, st in studies.items()}
    assert engine.trace_count() - traces == 3
    assert datasets["minibatch_lr1"].event_step.dims == ("batch_size", "noise_scale", "seed")
    times = E._member_times(cfg, datasets)
    assert set(times) == {(c.S, c.i, c.j) for c in E._cells(cfg)}
    cells = {(c.S, c.i, c.j): c for c in E._cells(cfg)}
    for key in [(16, 1, 2), (4, 1, 0)]:  # λ = 0.5: few censored, the times tell cells apart
        c = cells[key]
        ref = engine.run(engine.Study(
            E._problem(cfg, c.S * c.s2, c.S), Optimizer("sgd"), {"learning_rate": c.lr},
            steps=cfg["max_steps"], seeds=cfg["seeds"], observe=None,
            first_passage=engine.FirstPassage("escaped", freeze=True)), progress=False)
        t = analysis.escape_times(ref.event_step.values.ravel(),
                                  ref.event_censored.values.ravel(), cfg["max_steps"])
        # the tilts differ in the last bit (σ·√S·u vs √(Sσ²)·u), so allow a rare flip;
        # every other cell's times differ (common random numbers make some agree)
        same = {k: np.mean(v[0] == t) for k, v in times.items()}
        assert same[key] >= 0.9, (key, same)
        assert max(v for k, v in same.items() if k != key) < 0.9, (key, same)


def test_step_convention_on_an_exactly_geometric_chain():
    """With λa = 1 the next position ignores the current one: T is geometric, τ = 1/(1 − p).

    The engine's event_step (updates after which the walker is first outside) must
    have exactly the oracle's mean: an off-by-one would be 50 standard errors away.
    """
    lr, s2 = 1.0, 4.0
    cfg = _cfg(learning_rate=[lr], noise_var=s2, max_steps=3)
    stay = erf(cfg["wall"] / (lr * math.sqrt(2 * s2)))
    orc = E.oracle(cfg, E._cells(cfg)[0])
    assert orc.tau == pytest.approx(1 / (1 - stay), rel=1e-9)
    assert orc.hazard == pytest.approx(1 - stay, rel=1e-9)
    assert orc.t_tail == 0
    assert orc.tau_censored == pytest.approx(orc.tau, rel=1e-9)  # memoryless: no bias
    problem = potential_1d("sharp-well", curvature=1.0, wall=1.0)
    ds = engine.run(engine.Study(problem, Optimizer("sgd"), {"learning_rate": lr,
                                                             "noise_std": math.sqrt(s2)},
                                 steps=40, seeds=4000, observe=None,
                                 first_passage=engine.FirstPassage("escaped")), progress=False)
    t = ds.event_step.values.ravel()
    assert t.min() >= 1 and not ds.event_censored.values.any()
    assert abs(t.mean() - orc.tau) < 4 * t.std(ddof=1) / math.sqrt(t.size)


@pytest.mark.parametrize("kind,lo,hi,x0", [("sharp-well", -1.0, 1.0, 0.0),
                                           ("double-well", -2.5, 0.0, -1.0)])
def test_gaussian_kernel_reproduces_theory(kind, lo, hi, x0):
    _, dU = potential_fns(kind, 1.0)
    lr, s2 = 0.3, 0.8
    tau, n, _ = theory.mfpt_nystrom_converged(dU, lr, s2, lo, hi, x0=x0)
    P, k0 = E.gaussian_kernel(dU, lr, s2, lo, hi, x0, n)
    assert TE.kernel_tau(P, k0) == pytest.approx(tau, rel=1e-10)
    s, h = TE.kernel_survival(P, k0)
    assert np.sum(s[:-1]) + s[-1] / h[-1] == pytest.approx(tau, rel=1e-7)
    rho = np.max(np.abs(np.linalg.eigvals(P)))
    assert h[-1] == pytest.approx(1 - rho, rel=1e-7)


def test_lattice_oracle_in_the_gaussian_limit():
    _, dU = potential_fns("sharp-well", 1.0)
    lr, s2 = 0.5, 0.5
    tau = theory.mfpt_nystrom(dU, lr, s2, -1.0, 1.0, x0=0.0)
    sd = math.sqrt(s2)
    atoms = np.linspace(-10 * sd, 10 * sd, 1001)
    probs = np.exp(-0.5 * (atoms / sd) ** 2)
    P, k0 = E.lattice_kernel(dU, lr, atoms, probs / probs.sum(), -1.0, 1.0, 0.0, 800)
    assert TE.kernel_tau(P, k0) == pytest.approx(tau, rel=5e-4)


def test_minibatch_noise_law_moments():
    z = np.random.default_rng(3).standard_normal(500)
    for S in (1, 4, 16):
        atoms, probs = E.minibatch_noise_law(z, S)
        assert probs.sum() == pytest.approx(1.0, abs=1e-12)
        assert probs @ atoms == pytest.approx(z.mean(), abs=1e-10)
        var = probs @ (atoms - z.mean()) ** 2
        assert var == pytest.approx(z.var() / S, rel=3e-4)


def test_minibatch_oracle_is_exact_where_the_gaussian_one_is_not():
    """S = 1 draws from 1000 fixed tilts: non-Gaussian noise escapes ~10% faster here.

    The lattice oracle with the exact noise law agrees with the simulation; the
    Gaussian Nyström τ of the same variance is many standard errors away.
    """
    lr, s2 = 0.5, 0.5
    problem = potential_1d("sharp-well", noise="minibatch", noise_var=s2, batch_size=1,
                           n_data=E.N_DATA)
    atoms, probs = E.minibatch_noise_law(np.asarray(problem.data.init(None), float), 1)
    _, dU = potential_fns("sharp-well", 1.0)
    P, k0 = E.lattice_kernel(dU, lr, atoms, probs, -1.0, 1.0, 0.0, 800)
    tau = TE.kernel_tau(P, k0)
    ds = engine.run(engine.Study(problem, Optimizer("sgd"), {"learning_rate": lr}, steps=1000,
                                 seeds=4000, observe=None,
                                 first_passage=engine.FirstPassage("escaped")), progress=False)
    t, c = ds.event_step.values.ravel(), ds.event_censored.values.ravel()
    mfpt, se, _ = E.measure_mfpt(analysis.escape_times(t, c, 1000), c)
    assert abs(mfpt - tau) < 4 * se
    gauss = theory.mfpt_nystrom(dU, lr, s2, -1.0, 1.0, x0=0.0)
    assert abs(mfpt - gauss) > 6 * se


def test_censored_estimators_on_geometric_times():
    rng = np.random.default_rng(0)
    h, n, cap = 0.02, 20000, 60
    t = rng.geometric(h, n).astype(float)
    # no censoring: the plain mean and its SE
    mfpt, se, d = E.measure_mfpt(t, np.zeros(n, bool))
    assert mfpt == pytest.approx(t.mean()) and d == n
    assert se == pytest.approx(t.std(ddof=1) / math.sqrt(n))
    # censoring at cap: the geometric MLE is unbiased for 1/h, before and after a truncation
    cens = t > cap
    tc = np.minimum(t, cap)
    mfpt, se, _ = E.measure_mfpt(tc, cens)
    assert abs(mfpt - 1 / h) < 4 * se
    rate, rse, _ = E.measure_tail_rate(tc, cens, t_tail=20)
    assert abs(rate - h) < 4 * rse
    nan, _, events = E.measure_mfpt(tc, np.ones(n, bool))
    assert math.isnan(nan) and events == 0


@pytest.mark.parametrize("sets,key", [
    (["learning_rate=0.5,2.5"], "learning_rate"),
    (["potential=double-well", "learning_rate=0.5,1.2"], "learning_rate"),
    (["start=1.5"], "start"),
    (["potential=double-well", "learning_rate=0.5", "threshold=-1.5"], "threshold"),
    (["batch_size=1,5000"], "batch_size"),
    (["barrier_over_temperature=3,3,4"], "barrier_over_temperature"),
    (["potential=triple-well"], "potential"),
    (["estimator=bogus"], "estimator"),
    (["estimator=splitting", "batch_size=1,4"], "batch_size"),
    (["estimator=splitting", "start=0.5"], "basin"),
    (["estimator=splitting", "flux_steps=100", "burn_in=100"], "burn_in"),
])
def test_bad_input_is_one_line_exit_2(sets, key, capsys, tmp_path):
    argv = ["run", "escape", "--out", str(tmp_path / "bad")]
    for s in sets:
        argv += ["--set", s]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"sgdlab: error: {key}=")


def test_slope_se_reduces_to_the_fit_for_independent_errors():
    x, m, e = [3.0, 4.0, 5.0], np.array([60.0, 150.0, 360.0]), np.array([1.0, 2.6, 6.6])
    _, se, *_ = E._fit_slope(x, m, e)
    assert E.slope_se_correlated(x, m, e, np.diag((e / m) ** 2)) == pytest.approx(se, rel=1e-10)
    # positively correlated errors (common random numbers) shrink the slope's SE
    corr = np.full((3, 3), 0.5) + 0.5 * np.eye(3)
    cov = corr * np.outer(e / m, e / m)
    assert E.slope_se_correlated(x, m, e, cov) < se


SPLIT_SMOKE = ["estimator=splitting", "learning_rate=0.5", "barrier_over_temperature=3,4,5",
               "replicas=8", "walkers=32", "flux_steps=150", "burn_in=50", "particles=64",
               "levels=30", "substeps=2"]


def test_splitting_estimator_end_to_end(tmp_path, capsys):
    """``--set estimator=splitting``: mfpt (same name and coordinates) against the oracle's
    uncensored τ, inverse_mfpt, the probability per attempt, the figure, the report."""
    out = tmp_path / "s"
    argv = ["run", "escape", "--out", str(out), "--quiet"]
    for item in SPLIT_SMOKE:
        argv += ["--set", item]
    code = cli.main(argv)
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    summary = json.loads((out / "summary.json").read_text())
    names = {q["name"] for q in summary["quantities"]}
    assert {"mfpt", "inverse_mfpt", "escape_probability", "arrhenius_slope"} <= names
    assert "escape_rate" not in names  # the tail hazard is a brute-force quantity
    mfpt = [q for q in summary["quantities"] if q["name"] == "mfpt"]
    assert len(mfpt) == 3 and all(q["oracle"] == "nystrom" for q in mfpt)
    assert set(mfpt[0]["coords"]) == {"learning_rate", "barrier_over_temperature", "batch_size"}
    for q in mfpt:  # the uncensored τ of the oracle
        cell = next(r for r in summary["cells"]
                    if r["barrier_over_temperature"] == q["coords"]["barrier_over_temperature"])
        assert q["predicted"] == cell["tau"]
    assert all(q["pass"] is not False for q in summary["quantities"]), stdout
    assert (out / "figures" / "escape.png").exists()
    (out / "figures" / "escape.png").unlink()
    assert cli.main(["report", str(out)]) == 0
    assert (out / "figures" / "escape.png").exists()


def test_splitting_run_killed_with_sigkill_resumes_bitwise(tmp_path):
    """``sgdlab run escape --set estimator=splitting`` checkpoints its chunks of replicas
    under the run's state directory: SIGKILL after the first one, rerun, same bits."""
    import os
    import signal
    import subprocess
    import sys
    import time

    sets = [a for item in SPLIT_SMOKE for a in ("--set", item)]
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    # the CLI, with a pause after each checkpoint write so that the test kills mid-run
    tests = os.path.dirname(os.path.abspath(__file__))
    slow_cli = ("import sys\n"
                f"sys.path.insert(0, {tests!r})\n"
                "from _slow import slow_checkpoint_writes\n"
                "from sgdlab import cli\n"
                "slow_checkpoint_writes()\n"
                "sys.exit(cli.main(sys.argv[1:]))\n")
    args = [sys.executable, "-c", slow_cli, "run", "escape", "--quiet", *sets]
    p = subprocess.Popen(args + ["--out", str(killed)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    state = killed / ".sgdlab-state"
    try:
        deadline = time.time() + 300
        while p.poll() is None and time.time() < deadline and \
                not any(state.glob("splitting_*.npz")):
            time.sleep(0.02)
        assert p.poll() is None, "the run ended before the test could kill it"
        p.send_signal(signal.SIGKILL)
        p.wait(60)
    finally:
        if p.poll() is None:
            p.kill()
    assert not (killed / "summary.json").exists()  # killed mid-run
    assert any(state.glob("splitting_*.npz"))
    assert cli.main(["run", "escape", "--quiet", "--out", str(killed), *sets]) == 0
    assert cli.main(["run", "escape", "--quiet", "--out", str(whole), *sets]) == 0
    a, b = (json.loads((d / "summary.json").read_text()) for d in (killed, whole))
    assert [q["value"] for q in a["quantities"]] == [q["value"] for q in b["quantities"]]
    assert not (killed / ".sgdlab-state").exists()


def test_score_auto_takes_the_nearer_escape_point_where_the_minimum_oscillates():
    from types import SimpleNamespace

    from sgdlab.experiments import _escape_splitting as S

    w = np.linspace(-1.5, 1.5, 7)
    o = SimpleNamespace(params=w, hp={"learning_rate": 0.6})
    # the noiseless SGD step in U = (w² − 1)²/4, written out independently of potential_fns
    np.testing.assert_allclose(S.drift_score(o), w - 0.6 * (w ** 3 - w), rtol=1e-12)
    # λU''(−1) = 2λ: above 1 the minimum oscillates and auto takes the drift image
    assert S.score_fn("double-well", "auto", lr=0.6) is S.nearest_score(0.0)
    # the nearer escape point: θ itself on the right, the far-left w_L on the left
    wl = -math.sqrt(1.6 / 0.6)
    np.testing.assert_allclose(S.nearest_score(0.0)(o), np.maximum(w, wl - w), rtol=1e-6)  # f32
    assert S.score_fn("double-well", "auto", lr=0.3) is S.w_score
    assert S.score_fn("double-well", "drift", lr=0.3) is S.drift_score
    assert S.score_fn("sharp-well", "auto", lr=0.6) is S.abs_score
