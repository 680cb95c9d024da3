"""Experiment `du-overparam` (study 4): smoke-size run end to end, the closed forms behind
its predictions, bad input, and breaks on purpose that its verdicts must catch.

The smoke size (n = d = 24, m ∈ {256, 1024, 4096}, 40 seeds, 30 steps) is where the
correct code passes every check (the kernel-trajectory slope there is -0.53 ± 0.03);
each break below moves it by > 10 standard errors.
"""

import collections
import dataclasses
import functools
import json
import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgdlab.experiments as ex
from sgdlab import cli, engine, models, theory
from sgdlab.engine import _compiled as engine_compiled
from sgdlab.experiments import du
from sgdlab.problems import du_two_layer
from sgdlab.theory.du import du_kernel_residual

SMOKE = {"n_samples": 24, "input_dim": 24, "width": [256, 1024, 4096], "seeds": 40,
         "steps": 30, "records": 11}
SMOKE_SET = [f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
             for k, v in SMOKE.items()]


def _by_name(quantities, name, train="W"):
    return [q for q in quantities if q["name"] == name
            and q["coords"].get("train", "W") == train]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The experiment through the CLI at smoke size, both trained-layer choices."""
    out = tmp_path_factory.mktemp("du") / "o"
    argv = ["run", "du-overparam", "--out", str(out), "--quiet", "--set", "train=W,both"]
    for item in SMOKE_SET:
        argv += ["--set", item]
    code = cli.main(argv)
    summary, results = ex.load_run(out)
    return SimpleNamespace(code=code, out=out, summary=summary, results=results)


def test_smoke_run_end_to_end(smoke):
    assert smoke.code == 0, ex.summary_table(smoke.summary)
    summary = json.loads((smoke.out / "summary.json").read_text())
    assert (smoke.out / "results.zarr").is_dir()
    assert list((smoke.out / "figures").glob("*.png"))
    qs = summary["quantities"]
    assert not any(q["fails_run"] for q in qs)
    widths = summary["config"]["width"]
    for train in ("W", "both"):
        checked = {q["name"] for q in qs if q["pass"] is True
                   and q["coords"].get("train", "W") == train}
        assert {"lambda0", "kernel_deviation_slope", "linear_rate_fraction",
                "min_lambda_ratio", "flip_slope", "distance_slope"} <= checked, train
        for name in ("flip_fraction", "rms_distance", "trajectory_deviation"):
            final = [q["value"] for q in _by_name(qs, name, train)]
            assert len(final) == len(widths) and all(np.diff(final) < 0), (name, train)
        # the thresholds are the issue's, the oracles are named
        rate = _by_name(qs, "linear_rate_fraction", train)[-1]
        assert rate["criterion"] == "greater" and rate["predicted"] == 0.9
        assert rate["coords"]["width"] == max(widths) and rate["oracle"]
        lam = _by_name(qs, "min_lambda_ratio", train)[-1]
        assert lam["criterion"] == "greater" and lam["predicted"] == 0.5 and lam["oracle"]
        slope = _by_name(qs, "kernel_deviation_slope", train)[0]
        assert slope["criterion"] == "covers" and slope["predicted"] == -0.5
        assert slope["oracle"]
    assert all(q["oracle"] for q in qs if q["criterion"] is not None)
    # the kernel prediction is stored for the figure, one curve per width
    assert set(summary["du"]["kernel_loss"]) == {str(m) for m in widths}


def test_both_layers_need_the_second_layer_kernel(smoke, monkeypatch):
    """Judged against H∞ alone (G∞ dropped), both-layer training fails its trajectory check."""
    cfg = du.EXPERIMENT.resolve("quick", {**SMOKE, "train": ["W", "both"]})
    monkeypatch.setattr(du, "_kernel", lambda X, train: theory.du_H_inf(X))
    outcome = du._analyze(cfg, smoke.results)
    ex.finalize(outcome.quantities)
    slope = _by_name(outcome.quantities, "kernel_deviation_slope", "both")[0]
    assert slope["pass"] is False and slope["fails_run"], slope
    assert _by_name(outcome.quantities, "kernel_deviation_slope", "W")[0]["pass"] is True


def _leaky_derivative_relu(alpha):
    """ReLU forward, leaky-ReLU derivative (slope ``alpha`` for x ≤ 0): a wrong gradient."""
    @jax.custom_jvp
    def f(x):
        return jnp.where(x > 0, x, jnp.zeros_like(x))

    @f.defjvp
    def _jvp(primals, tangents):
        (x,), (dx,) = primals, tangents
        return f(x), jnp.where(x > 0, 1.0, alpha).astype(x.dtype) * dx

    return f


def _run_broken(monkeypatch, brk):
    cfg = du.EXPERIMENT.resolve("quick", {**SMOKE, "train": ["W"]})
    scale = {"lr_10pct": 1.1, "gd_stalled": 0.1}.get(brk, 1.0)
    if brk == "half_dropped":       # L = Σ_i (u_i - y_i)², no ½: the step is effectively 2η
        monkeypatch.setattr(du, "du_two_layer",
                            functools.partial(du_two_layer, reduction="sum"))
    if brk == "leaky_relu_grad":
        monkeypatch.setitem(models.ACTIVATIONS, "relu", _leaky_derivative_relu(0.1))
        # the patched global is not part of a program's cache key: compile into a private
        # cache, so that this run cannot reuse a correct program and later runs not this one
        monkeypatch.setattr(engine_compiled, "_PROGRAMS", collections.OrderedDict())
    studies = du._studies(cfg, 0)
    studies = {k: dataclasses.replace(s, hparams={"learning_rate": cfg["learning_rate"] * scale})
               for k, s in studies.items()}
    outcome = du._analyze(cfg, {k: engine.run(s, progress=False) for k, s in studies.items()})
    ex.finalize(outcome.quantities)
    return outcome.quantities


@pytest.mark.parametrize("brk", ["lr_10pct", "half_dropped", "leaky_relu_grad"])
def test_breaks_fail_the_kernel_trajectory_check(brk, monkeypatch):
    qs = _run_broken(monkeypatch, brk)
    slope = _by_name(qs, "kernel_deviation_slope")[0]
    assert slope["pass"] is False and slope["fails_run"], slope
    # an error in the dynamics leaves an m-independent deviation: the slope flattens
    assert slope["lo"] > -0.5


def test_stalled_gd_fails_the_linear_rate(monkeypatch):
    """λ0 at k = 0 cannot see a broken GD; the linear rate along the trajectory does."""
    qs = _run_broken(monkeypatch, "gd_stalled")
    rate = _by_name(qs, "linear_rate_fraction")[-1]
    assert rate["pass"] is False and rate["fails_run"], rate
    assert all(q["pass"] for q in _by_name(qs, "lambda0"))


def test_kernel_residual_is_the_linear_recursion():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((7, 5))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    K = theory.du_H_inf(X) + theory.du_G_inf(X)
    r0 = rng.standard_normal((3, 7))
    steps = np.array([0, 1, 2, 5, 13])
    got = du_kernel_residual(K, r0, 0.3, steps)
    A = np.eye(7) - 0.3 * K
    for s in range(3):
        r, k_done = r0[s].copy(), 0
        for j, k in enumerate(steps):
            for _ in range(k - k_done):
                r = A @ r
            k_done = k
            np.testing.assert_allclose(got[s, j], r, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="steps"):
        du_kernel_residual(K, r0, 0.3, [0, 1.5])


def test_gram_closed_forms_match_sampling():
    """H∞ and G∞ (the oracles of the trajectory checks) against direct sampling of w."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((5, 4))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    W = rng.standard_normal((200_000, 4))
    pre = W @ X.T
    act, ind = np.maximum(pre, 0.0), (pre >= 0).astype(float)
    for closed, samples in ((theory.du_H_inf(X), (X @ X.T)[None] * ind[:, :, None]
                             * ind[:, None, :]),
                            (theory.du_G_inf(X), act[:, :, None] * act[:, None, :])):
        mean = samples.mean(axis=0)
        se = samples.std(axis=0) / math.sqrt(samples.shape[0])
        assert np.all(np.abs(mean - closed) <= 4 * se + 1e-12)


def test_trajectory_checks_on_exact_kernel_dynamics():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((6, 6))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    H = theory.du_H_inf(X)
    lam0 = float(np.linalg.eigvalsh(H)[0])
    steps = np.arange(0, 41, 4)
    r = du_kernel_residual(H, rng.standard_normal((5, 6)), 0.5, steps)
    dev, ok, ratio = du.trajectory_checks(r, steps, H, 0.5, lam0)
    np.testing.assert_allclose(dev, 0.0, atol=1e-12)
    assert ok.all() and np.all(np.diff(ratio, axis=1) < 0)
    stalled = np.repeat(r[:, :1], steps.size, axis=1)    # GD that does not move
    dev, ok, _ = du.trajectory_checks(stalled, steps, H, 0.5, lam0)
    assert not ok.any() and np.all(dev > 0.1)
    r[0, 3] = np.nan                                       # a diverged member
    dev, ok, _ = du.trajectory_checks(r, steps, H, 0.5, lam0)
    assert np.isnan(dev[0]) and not ok[0] and ok[1:].all()


def test_spectral_observable_matches_numpy():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 6))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    W = rng.standard_normal((40, 6))
    H_inf = theory.du_H_inf(X)
    o = SimpleNamespace(params={"W": jnp.asarray(W)},
                        data={"X": jnp.asarray(X), "H_inf": jnp.asarray(H_inf)})
    lam_min, dev, rayleigh = np.asarray(du._spectral_observable(H_inf)(o), float)
    H = np.asarray(models.du_gram(jnp.asarray(W), jnp.asarray(X)), float)
    v0 = np.linalg.eigh(H_inf)[1][:, 0]
    assert lam_min == pytest.approx(np.linalg.eigvalsh(H)[0], abs=1e-5)
    assert dev == pytest.approx(np.linalg.norm(H - H_inf, 2), abs=1e-5)
    assert rayleigh == pytest.approx(v0 @ H @ v0, abs=1e-5)


def test_rayleigh_quotient_is_unbiased_for_lambda0():
    """E[v0ᵀH(0)v0] = λ0 at any width (the basis of the lambda0 check), by direct sampling."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((10, 5))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    H_inf = theory.du_H_inf(X)
    lam, V = np.linalg.eigh(H_inf)
    v0 = V[:, 0]
    vals = []
    for _ in range(4000):
        W = rng.standard_normal((8, 5))
        s = (W @ X.T >= 0).astype(float)
        H = (X @ X.T) * (s.T @ s) / 8
        vals.append(v0 @ H @ v0)
    vals = np.asarray(vals)
    assert abs(vals.mean() - lam[0]) <= 4 * vals.std() / math.sqrt(vals.size)


def test_rms_distance_observable():
    W0 = jnp.zeros((3, 2))
    W = jnp.asarray([[3.0, 4.0], [0.0, 0.0], [0.0, 1.0]])
    o = SimpleNamespace(params={"W": W}, params0={"W": W0})
    assert float(du._rms_distance(o)) == pytest.approx(math.sqrt((25 + 0 + 1) / 3))


def test_studies_use_independent_seeds_per_width_and_layer_choice():
    cfg = du.EXPERIMENT.resolve("quick", {"width": [8, 16, 32], "seeds": 2, "steps": 2,
                                          "train": ["W", "both"]})
    studies = du._studies(cfg, seed=5)
    seeds = [s.seed for s in studies.values()]
    assert seeds[:3] == [5, 5 + du.SEED_STRIDE, 5 + 2 * du.SEED_STRIDE]
    assert len(set(seeds)) == 6
    assert list(studies)[:3] == ["m8", "m16", "m32"] and "both_m8" in studies
    assert all(s.keep_init for s in studies.values())
    assert studies["both_m8"].problem.config["train"] == "both"
    p = studies["m8"].problem
    assert p.init(jax.random.key(0))["W"].shape == (8, cfg["input_dim"])


@pytest.mark.parametrize("argv,needle", [
    (["--set", "learning_rate=5"], "learning_rate=5.0"),
    (["--set", "width=64,64,256"], "width=[64, 64, 256]"),
    (["--set", "width=64,256"], "width=[64, 256]"),
    (["--set", "labels=uniform"], "labels='uniform'"),
    (["--set", "n_samples=1"], "n_samples=1"),
    (["--set", "train=first"], "train='first'"),
    (["--set", "train=W,W"], "train=['W', 'W']"),
])
def test_bad_input_exits_2_with_one_line(argv, needle, tmp_path, capsys):
    code = cli.main(["run", "du-overparam", "--out", str(tmp_path / "o")] + argv)
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "o").exists()
