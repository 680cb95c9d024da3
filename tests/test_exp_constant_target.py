"""The constant-target experiment (study 1): quick preset end to end, its statistics, the
verdicts failing when the implementation is broken on purpose, bad input."""

import importlib
import json
import math
import types

import jax.numpy as jnp
import numpy as np
import pytest

from sgdlab import cli, engine, losses, models, theory
from sgdlab.experiments import constant_target as ct
from sgdlab.experiments import finalize, get
from sgdlab.optim import Optimizer
from sgdlab.theory import constant_target as theory_ct

NAME = "constant-target"
problem_module = importlib.import_module("sgdlab.problems.constant_target")


def test_quick_preset_end_to_end(tmp_path, capsys):
    out = tmp_path / "o"
    code = cli.main(["run", NAME, "--out", str(out), "--quiet"])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    assert (out / "results.zarr").is_dir()
    assert {p.stem for p in (out / "figures").glob("*.png")} == {"risk_vs_step", "divergence"}
    summary = json.loads((out / "summary.json").read_text())
    qs = summary["quantities"]
    assert all(q["pass"] for q in qs if q["pass"] is not None)
    assert all(q["oracle"] for q in qs if q["predicted"] is not None)
    names = {q["name"] for q in qs}
    assert {"risk", "risk_final", "risk_ratio", "risk_exponent", "plateau_ratio", "sample_risk",
            "risk_se_scale", "dead_risk", "diverged_fraction"} <= names
    assert all(q["predicted"] is None for q in qs if q["name"] in ("risk", "risk_final"))
    cfg = summary["config"]
    assert cfg["input_dim"] == [1, 2, 4]

    def pick(name, **coords):
        return [q for q in qs if q["name"] == name
                and all(q["coords"].get(k) == v for k, v in coords.items())]

    for d in (1, 2, 4):
        # the theorem's claim for every non-summable schedule, in every dimension
        for sched, thr in (("constant", 10), ("inv_sqrt", 10), ("inv", 1)):
            (r,) = pick("risk_ratio", schedule=sched, input_dim=d)
            assert (r["criterion"], r["predicted"], r["pass"]) == ("greater", thr, True)
            (e,) = pick("risk_exponent", schedule=sched, input_dim=d)
            assert (e["criterion"], e["predicted"], e["pass"]) == ("less", 0.0, True)
        # the summable schedule plateaus
        (e,) = pick("risk_exponent", schedule="inv_sq", input_dim=d)
        assert (e["criterion"], e["predicted"], e["pass"]) == ("greater", -0.05, True)
        plateau = pick("plateau_ratio", input_dim=d)
        assert {q["coords"]["versus"] for q in plateau} == {"constant", "inv_sqrt"}
        assert all(q["criterion"] == "greater" and q["predicted"] == 10 for q in plateau)
    # the evaluation-sample estimator is checked against the exact integral in d = 1 only
    assert {q["coords"]["input_dim"] for q in qs if q["name"] == "sample_risk"} == {1}
    assert all(q["oracle"] == "exact 1-D integral" for q in pick("sample_risk"))
    # every schedule is checked against the dead-network closed form, from step 0 on
    for sched in cfg["schedule"]:
        steps = [q["coords"]["step"] for q in pick("dead_risk", schedule=sched)]
        assert steps and steps[0] == 0
    # divergence: reported with Wilson intervals, every member diverges at the largest γ0
    div = pick("diverged_fraction", schedule="constant")
    assert len(div) == len(cfg["diverge_gamma0"])
    assert all(q["criterion"] is None and q["ci"][0] <= q["value"] <= q["ci"][1] for q in div)
    assert div[0]["value"] == 0 and div[-1]["value"] == 1


# ------------------------------------------------------------------ breaks at smoke size

SMOKE = {"input_dim": [1], "steps": 400, "records": 9, "seeds": 64, "dead_seeds": 512,
         "n_eval": 512, "diverge_seeds": 4, "diverge_steps": 2, "diverge_gamma0": [0.1]}
DEAD_SMOKE = {**SMOKE, "input_dim": [2], "n_eval": 16, "steps": 200}
"""The dead network in d = 2: its output is constant on the box, so any evaluation sample gives
the exact risk (c − ξ)², and the program compiles much faster than the exact 1-D integral."""


def _smoke(study: str):
    """Run one study at smoke size; return its checks, judged by the run's policy."""
    cfg = get(NAME).resolve("quick", DEAD_SMOKE if study == "dead" else SMOKE)
    ds = engine.run(ct._studies(cfg, 0)[study], progress=False)
    qs = ct._dead(cfg, ds)[0] if study == "dead" else ct._live(cfg, 1, ds)[0]
    finalize(qs)
    return [q for q in qs if q["criterion"] is not None]


def _failed(qs, name):
    return [q for q in qs if q["name"] == name and q["fails_run"]]


def test_smoke_size_passes_unbroken():
    """The baseline for the breaks below: at the same size nothing fails."""
    for study in ("dead", "live"):
        qs = _smoke(study)
        assert qs and not [q for q in qs if q["fails_run"]], study


def _power_schedule(scale=1.0, shift=0):
    def learning_rate(self, hp):
        g0, alpha, n0 = hp["gamma0"], hp["alpha"], hp["n0"]
        return lambda count: scale * g0 / (count + 1 + shift + n0) ** alpha
    return learning_rate


def test_schedule_off_by_one_step_fails_the_dead_network(monkeypatch):
    monkeypatch.setattr(Optimizer, "learning_rate", _power_schedule(shift=1))
    failed = _failed(_smoke("dead"), "dead_risk")
    # the constant schedule does not see the shift; the decaying ones do
    assert failed and {q["coords"]["schedule"] for q in failed} == {"inv_sqrt", "inv", "inv_sq"}


def test_learning_rate_off_by_ten_percent_fails_the_dead_network(monkeypatch):
    monkeypatch.setattr(Optimizer, "learning_rate", _power_schedule(scale=1.1))
    failed = _failed(_smoke("dead"), "dead_risk")
    assert {q["coords"]["schedule"] for q in failed} >= {"constant", "inv"}


def test_loss_scale_off_by_half_fails_the_dead_network(monkeypatch):
    """The paper's loss is the mean squared error without ½; a stray ½ halves every step."""
    square = losses.squared_error
    monkeypatch.setattr(losses, "squared_error", lambda p, t, r: 0.5 * square(p, t, r))
    failed = _failed(_smoke("dead"), "dead_risk")
    assert {q["coords"]["schedule"] for q in failed} == {"constant", "inv_sqrt", "inv", "inv_sq"}


def test_summable_and_constant_schedules_swapped_fail_the_live_checks(monkeypatch):
    """A mapping bug that runs γ0/n² under the name "constant" and vice versa: the "constant"
    schedule no longer falls 10×, and "γ0/n²" no longer ends above the others."""
    swapped = {**ct.SCHEDULES, "constant": ct.SCHEDULES["inv_sq"],
               "inv_sq": ct.SCHEDULES["constant"]}
    monkeypatch.setattr(ct, "SCHEDULES", swapped)
    failed = {(q["name"], q["coords"]["schedule"]) for q in _smoke("live") if q["fails_run"]}
    assert {("risk_ratio", "constant"), ("plateau_ratio", "inv_sq")} <= failed


def test_wrong_activation_fails_the_exact_integral_check(monkeypatch):
    """A leaky ReLU (slope 0.01) in the network the problem trains and samples, while the
    exact 1-D integral integrates the ReLU network of the same weights: the members' sample
    risks leave their exact values by several times risk_se (risk_se_scale, a median over
    members, > 2; a few members carry most of the difference, so the mean difference alone
    is within its wide SE at this size)."""
    leaky = types.SimpleNamespace(**vars(models))
    leaky.mlp_apply = lambda params, x, activation="relu": _leaky_apply(params, x)
    monkeypatch.setattr(problem_module, "models", leaky)
    failed = _failed(_smoke("live"), "risk_se_scale")
    assert failed and all(q["value"] > 2 for q in failed)


def _leaky_apply(params, x):
    h = x
    for i, (w, b) in enumerate(params):
        h = h @ w + b
        if i < len(params) - 1:
            h = jnp.where(h > 0, h, 0.01 * h)
    return h[..., 0]


# ------------------------------------------------------------------ statistics


def test_dead_factor_is_the_product_of_the_schedule():
    g0, alpha, n0 = 0.1, 1.0, 0.0
    steps = np.array([0, 1, 2, 5, 50])
    gam = g0 / (np.arange(1, 51) + n0) ** alpha
    direct = np.concatenate([[1.0], np.cumprod((1 - 2 * gam) ** 2)])[steps]
    assert np.allclose(ct.dead_factor(g0, alpha, n0, steps), direct, rtol=1e-12)
    # summable schedule: the product tends to Euler's sin(πz)/(πz) squared, z² = 2 g0
    far = ct.dead_factor(g0, 2.0, 0.0, [10**6])
    assert far == pytest.approx(theory.dead_risk_inv_sq_limit(g0, 1.0), rel=1e-5)


def test_dead_mean_risk_matches_the_sgd_recursion_in_numpy():
    """The closed form against the recursion c ← c − γ_k·2(c − ξ) run on sampled c_0."""
    xi, s, g0 = 1.0, 0.5, 0.1
    c0 = np.random.default_rng(2).normal(0.0, s, size=200_000)
    steps = [0, 1, 7, 40]
    for alpha in (0.0, 1.0, 2.0):
        c, got = c0.copy(), {}
        for k in range(max(steps) + 1):
            if k:
                c = c - g0 / k**alpha * 2 * (c - xi)
            if k in steps:
                got[k] = np.mean((c - xi) ** 2)
        pred = theory_ct.dead_network_mean_risk(xi, s, g0, alpha, 0.0, steps)
        mc = np.array([got[k] for k in steps])
        se = np.std((c0 - xi) ** 2) / math.sqrt(c0.size) * pred / (xi**2 + s**2)
        assert np.all(np.abs(mc - pred) < 4 * se), (alpha, mc, pred)


def test_last_decade_exponent_recovers_a_power_law_with_calibrated_error():
    """Members L_i(n) = c_i n^p: the exponent is exact; with noise its SE covers the truth."""
    rng = np.random.default_rng(0)
    steps = np.array([0, 1, 10, 100, 1000])
    c = rng.exponential(size=4000)
    exact = c[:, None] * np.maximum(steps, 1) ** -0.5
    p, se, a, n = ct.last_decade_exponent(exact, steps)
    assert (a, n) == (100, 1000) and p == pytest.approx(-0.5, abs=1e-12) and se < 1e-12
    z = []
    for _ in range(40):
        noisy = exact * rng.exponential(size=exact.shape)
        p, se, _, _ = ct.last_decade_exponent(noisy, steps)
        z.append((p + 0.5) / se)
    assert abs(np.mean(z)) < 4 / math.sqrt(40) and 0.6 < np.std(z) < 1.5


def test_ratio_of_means_error_is_calibrated_for_correlated_pairs():
    """Paired members (a_i, b_i) correlated: the SE of ln R matches its spread over repeats."""
    rng = np.random.default_rng(1)
    truth = math.log(2.0 / 0.5)
    z = []
    for _ in range(200):
        common = rng.exponential(size=500)
        a = 2.0 * (0.5 * common + 0.5 * rng.exponential(size=500))
        b = 0.5 * (0.5 * common + 0.5 * rng.exponential(size=500))
        r, se, m = ct.ratio_of_means(a, b)
        assert m == 500
        z.append((math.log(r) - truth) / se)
    assert abs(np.mean(z)) < 4 / math.sqrt(200) and 0.85 < np.std(z) < 1.15


@pytest.mark.parametrize("sets,needle", [
    (["schedule=inv,inv"], "schedule"),
    (["gamma0=20"], "gamma0=20.0"),
    (["input_dim=2,2"], "input_dim"),
    (["diverge_gamma0=0"], "diverge_gamma0=0.0"),
])
def test_bad_input_exits_2_with_one_line(sets, needle, capsys):
    code = cli.main(["run", NAME] + [x for s in sets for x in ("--set", s)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err
