"""Experiment `indicator` (study 3): quick preset end to end, its oracles, breaks that must fail."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from sgdlab import cli, engine, models
from sgdlab.experiments import finalize, indicator
from sgdlab.theory import indicator as theory


def test_quick_preset_end_to_end(tmp_path, capsys):
    out = tmp_path / "o"
    code = cli.main(["run", "indicator", "--out", str(out), "--quiet"])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "results.zarr").is_dir()
    assert list((out / "figures").glob("*.png"))
    qs = summary["quantities"]
    assert not any(q["fails_run"] for q in qs)
    names = {q["name"] for q in qs}
    assert {"pointwise_error", "l1_error", "error_slope", "a_mean", "l1_error_mc",
            "pointwise_time", "pointwise_time_slope"} <= names
    assert all(q["oracle"] for q in qs if q["criterion"] is not None)
    for d in (2, 3):
        ramp = [q for q in qs if q["name"] == "error_slope" and q["coords"]["model"] == "ramp"
                and q["coords"]["input_dim"] == d]
        assert len(ramp) == 1 and ramp[0]["pass"] is True
        assert abs(ramp[0]["predicted"] + 1 / 3) < 3e-3      # the finite-range slope -> -1/3
        (sl,) = [q for q in qs if q["name"] == "pointwise_time_slope"
                 and q["coords"]["input_dim"] == d]
        c = sl["coords"]
        assert c["n_delta"] >= 8 and c["delta_max"] / c["delta_min"] >= 10 * (1 - 1e-9)
        assert sl["criterion"] == "covers" and -3.6 < sl["predicted"] < -3.0
        assert sum(q["name"] == "a_mean" and q["coords"]["input_dim"] == d for q in qs) >= 20
    deep = [q for q in qs if q["coords"]["model"] == "deep"]
    assert deep and all(q["predicted"] is None for q in deep)
    # the ramp's grid error vanishes after a finite time, as the population-GD recursion says
    pw = [q for q in qs if q["name"] == "pointwise_error" and q["coords"]["model"] == "ramp"
          and q["coords"]["input_dim"] == 2]
    assert pw[-1]["value"] == 0.0 and pw[0]["value"] > 0.5
    det = summary["indicator"]["population_gd"]["ramp@10"]
    zero_det = min(k for k, e in zip(det["step"], det["pointwise_error"], strict=True) if e == 0)
    zero_mc = min(q["coords"]["step"] for q in pw if q["value"] == 0.0)
    assert 0.5 * zero_det <= zero_mc <= 2.0 * zero_det
    assert "ramp@10@d3" in summary["indicator"]["passage"]


# --------------------------------------------------------------------------- the oracles


@pytest.mark.parametrize("dim", [2, 3])
def test_shell_moments_match_monte_carlo(dim):
    """M_p(a) = E|f_a - f°|^p for X uniform on [-1, 1)^d, against direct sampling."""
    rng = np.random.default_rng(1)
    a, r = 3.0, 0.5
    x = rng.uniform(-1, 1, (400_000, dim))
    s = np.sum(x * x, axis=1)
    f = np.clip(1 - np.clip(a * (s - r * r), 0, None), 0, None)
    err = np.abs(f - (s <= r * r))
    for p in (1, 2):
        e = err**p
        exact = float(indicator._shell_moment(a, r, dim, p))
        assert abs(e.mean() - exact) <= 4 * e.std() / math.sqrt(e.size)
    if dim == 2:
        assert float(indicator._shell_moment(a, r, 2, 1)) == pytest.approx(math.pi / (8 * a))
        assert float(indicator._shell_moment(a, r, 2, 2)) == pytest.approx(math.pi / (12 * a))


@pytest.mark.parametrize("dim", [2, 3, 5])
def test_drift_and_its_moments_match_sampling(dim):
    """D(a) = E[u(1-au)1{0<u<1/a}] and Var g by sampling x; D', D'' by finite differences."""
    rng = np.random.default_rng(2)
    a, r = 4.0, 0.5
    x = rng.uniform(-1, 1, (1_000_000, dim))
    u = np.sum(x * x, axis=1) - r * r
    g = np.where((u > 0) & (u < 1 / a), u * (1 - a * u), 0.0)
    dr = theory.ramp_drift(a, r, dim)
    assert abs(g.mean() - dr["D"]) <= 4 * g.std() / math.sqrt(g.size)
    g2 = (g - dr["D"]) ** 2
    assert abs(g2.mean() - dr["var"]) <= 4 * g2.std() / math.sqrt(g.size)
    h = 1e-4
    dp, dm = theory.ramp_drift(a + h, r, dim), theory.ramp_drift(a - h, r, dim)
    assert dr["D1"] == pytest.approx((dp["D"] - dm["D"]) / (2 * h), rel=1e-6)
    assert dr["D2"] == pytest.approx((dp["D1"] - dm["D1"]) / (2 * h), rel=1e-6)
    if dim == 2:
        assert dr["D"] == pytest.approx(math.pi / (24 * a * a), rel=1e-12)
        assert dr["var"] == pytest.approx(math.pi / (120 * a**3) - dr["D"] ** 2, rel=1e-12)
    assert theory.ramp_shell_density(0.0, r, dim) == pytest.approx(
        {2: math.pi / 4, 3: math.pi / 8, 5: math.pi**2 / 192}[dim])


def test_loss_scale():
    assert [theory.ramp_loss_scale(rd, 4) for rd in ("half_mean", "mean", "half_sum", "sum")] == \
        [1.0, 2.0, 4.0, 8.0]
    with pytest.raises(ValueError, match="reduction='halfmean' is invalid"):
        theory.ramp_loss_scale("halfmean")


def test_mean_recursion_matches_a_numpy_simulation_and_needs_its_noise_term():
    """E[a_t] of the ramp's SGD, simulated in NumPy from uniform x, against the recursion.

    The noise-free population recursion misses the early mean by many SEs; with the
    O(η) noise term the recursion is within 4 SE at every checked t.
    """
    rng = np.random.default_rng(3)
    n, s, lr, r, a0, steps = 4000, 4, 10.0, 0.5, 1.5, 30
    a = np.full(n, a0)
    m, p = theory.ramp_mean_recursion(a0, lr, steps, radius=r, dim=2, batch_size=s)
    m0, p0 = theory.ramp_mean_recursion(a0, lr, steps, radius=r, dim=2, batch_size=s,
                                        noise=False)
    assert not p0.any()
    z, z0 = [], []
    for t in range(1, steps + 1):
        x = rng.uniform(-1, 1, (n, s, 2))
        u = np.sum(x * x, axis=-1) - r * r
        ac = a[:, None]
        a = a + lr * np.where((u > 0) & (u < 1 / ac), u * (1 - ac * u), 0.0).mean(axis=1)
        if t in (3, 10, 20, 30):
            se = a.std(ddof=1) / math.sqrt(n)
            z.append((a.mean() - m[t]) / se)
            z0.append((a.mean() - m0[t]) / se)
            dev2 = (a - a.mean()) ** 2
            assert abs(dev2.mean() - p[t]) <= 4 * dev2.std() / math.sqrt(n)
    assert max(map(abs, z)) <= 4, z
    assert max(z0) > 4, z0
    # a dropped ½ (loss scale 2) or a learning rate off by 10% changes the prediction by >> 4 SE
    for kw in ({"reduction": "mean"}, {"lr": 1.1 * lr}):
        args = {"lr": lr, "reduction": "half_mean", **kw}
        mb, _ = theory.ramp_mean_recursion(a0, args["lr"], steps, radius=r, dim=2, batch_size=s,
                                           reduction=args["reduction"])
        assert abs(a.mean() - mb[-1]) > 10 * a.std() / math.sqrt(n)


def test_passage_law():
    """P(T ≤ t) = Φ((m_t - a*)/√P_t); without variance T is the deterministic passage step."""
    m = np.linspace(2.0, 12.0, 101)
    law = theory.ramp_passage(m, np.zeros_like(m), [4.05, 8.05])
    assert law["deterministic"].tolist() == [21.0, 61.0]
    assert law["mean"].tolist() == [21.0, 61.0] and not law["censored"].any()
    law = theory.ramp_passage(m, np.full_like(m, 0.04), [7.0])
    # the crossing 50 + 2Z of a continuous line, rounded up to a whole step: mean 50.5
    assert law["mean"][0] == pytest.approx(50.5, abs=1e-9) and law["deterministic"][0] == 50
    with pytest.raises(ValueError, match="must exceed m_0"):
        theory.ramp_passage(m, m * 0, [1.0])
    # the slope of ln T against ln δ: -3 asymptotically, steeper over a finite range
    mm, pp = theory.ramp_mean_recursion(1.5, 10.0, 200_000, batch_size=4)
    sl = theory.ramp_time_slope(np.geomspace(0.02, 0.06, 8), mm, pp)
    assert -3.2 < sl["gaussian"] < -3.0 and abs(sl["gaussian"] - sl["deterministic"]) < 0.01


def test_population_gd_and_moment_derivative():
    h = 1e-5
    for dim in (2, 3):
        fd = (indicator._shell_moment(2.0 + h, 0.5, dim, 2)
              - indicator._shell_moment(2.0 - h, 0.5, dim, 2)) / (2 * h)
        assert float(indicator._shell_moment(2.0, 0.5, dim, 2, derivative=True)) == \
            pytest.approx(float(fd), rel=1e-6)
    # d = 2: a_t³ = a_0³ + 3cηt + O(ln t)
    a = indicator.population_gd(1.5, 10.0, 0.5, 2, 20000)
    c = math.pi / 24
    assert a[-1] ** 3 == pytest.approx(1.5**3 + 3 * c * 10.0 * 20000, rel=1e-3)
    # the Chebyshev-evaluated general-d path reproduces gradient descent on ½M_2 step by step
    a3 = indicator.population_gd(2.0, 1.0, 0.5, 3, 2000)
    b3 = [2.0]
    for _ in range(2000):
        cur = b3[-1]
        b3.append(cur - 0.5 * float(indicator._shell_moment(cur, 0.5, 3, 2, derivative=True)))
    assert a3[-1] == pytest.approx(b3[-1], rel=1e-10)


def test_grid_gap_matches_brute_force():
    g, r, band = 16, 0.5, 0.05
    axis = -1 + (2 * np.arange(g) + 1) / g
    xx, yy = np.meshgrid(axis, axis)
    s = (xx**2 + yy**2).ravel()
    keep = np.sqrt(s) - r > band
    assert indicator._grid_gap(r, 2, g, band) == pytest.approx(s[keep].min() - r * r)


def test_slope_fit_recovers_a_power_law_and_its_error():
    """Members C_i·t^(-1/3): the fit finds -1/3; the bootstrap se is finite and small."""
    rng = np.random.default_rng(0)
    t = np.unique(np.geomspace(1, 1e4, 20).astype(int))
    members = (1 + 0.05 * rng.standard_normal((200, 1))) * t ** (-1 / 3) \
        * (1 + 0.01 * rng.standard_normal((200, t.size)))
    fit, se = indicator._slope_fit(t, members, 100, 1e4, np.random.default_rng(1))
    assert abs(fit.estimate + 1 / 3) <= 4 * se and 0 < se < 0.01


# --------------------------------------------------------------------------- breaks must fail

SMOKE = {"model": ["ramp"], "input_dim": [2], "steps": 1500, "seeds": 32, "records": 10,
         "fit_start": 150, "n_eval": 1024, "n_delta": 4, "delta_decades": 0.4}


def _smoke(break_studies=None):
    """Run the smoke configuration (optionally with broken studies); return failing check names."""
    cfg = indicator.EXPERIMENT.resolve("quick", SMOKE)
    studies = indicator._studies(cfg, 0)
    if break_studies is not None:
        studies = break_studies(studies)
    datasets = {k: engine.run(s, progress=False) for k, s in studies.items()}
    qs = indicator._analyze(cfg, datasets).quantities
    finalize(qs)
    return {q["name"] for q in qs if q["fails_run"]}, qs


def test_smoke_passes_as_built():
    failing, qs = _smoke()
    assert not failing
    assert {"a_mean", "l1_error_mc", "pointwise_time", "pointwise_time_slope", "error_slope"} <= \
        {q["name"] for q in qs if q["criterion"]}


def test_break_loss_scale_fails(monkeypatch):
    """The ½ of the loss dropped in the trained problem (the prediction keeps ½·mean)."""
    build = indicator.indicator_target
    monkeypatch.setattr(indicator, "indicator_target",
                        lambda *a, **k: build(*a, **{**k, "reduction": "mean"}))
    failing, _ = _smoke()
    assert {"a_mean", "pointwise_time"} <= failing


def test_break_learning_rate_fails():
    """SGD runs at 1.1 η while the prediction uses η."""
    def faster(studies):
        return {k: s.with_hparams(learning_rate=[1.1 * float(v) for v in
                                                 s.hparams["learning_rate"]])
                for k, s in studies.items()}
    failing, _ = _smoke(faster)
    assert {"a_mean", "pointwise_time"} <= failing


def test_break_activation_fails(monkeypatch):
    """A leaky ReLU in place of the ramp's ReLUs: its output no longer matches the closed form."""
    monkeypatch.setattr(models, "relu", lambda x: jnp.where(x > 0, x, 0.01 * x))
    failing, _ = _smoke()
    assert "l1_error_mc" in failing


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("argv,needle", [
    (["--set", "a0=1.2"], "a0=1.2"),
    (["--set", "fit_start=200000"], "fit_start=200000"),
    (["--set", "model=ramp,wide"], "model='wide'"),
    (["--set", "radius=1"], "radius=1.0"),
    (["--set", "band=2"], "band=2.0"),
    (["--set", "input_dim=2,2"], "input_dim=[2, 2]"),
    (["--set", "reduction=halfmean"], "reduction='halfmean'"),
    (["--set", "n_delta=2"], "n_delta=2"),
    (["--set", "delta_decades=2"], "delta_decades=2.0"),
])
def test_bad_input_exits_2_with_one_line(argv, needle, tmp_path, capsys):
    code = cli.main(["run", "indicator", "--out", str(tmp_path / "o")] + argv)
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "o").exists()
