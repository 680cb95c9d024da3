"""Study 3: mini-batch gradient descent on a ball indicator, error decaying like t^(-1/3).

arXiv:2304.08172, "Pointwise convergence theorem of generalized mini-batch gradient
descent in deep neural network": the target ``f°(x) = 1{|x| ≤ r}`` on ``[-1, 1)^d``
is learned by a ReLU network built from ``|x|²`` and a ramp, and the error decays
like ``t^{-1/3}``.

* ``model="ramp"`` (:func:`sgdlab.problems.indicator_target`): the solvable instance
  ``f_a(x) = ReLU(1 - ReLU(a(|x|² - r²)))`` with one trained scalar ``a``. Its
  population loss is ``½E(f_a - f°)² = c/a`` (c = π/24 in d = 2), so gradient
  descent gives ``a_t³ ≈ a_0³ + 3cηt`` and ``E|f_a - f°| = π/(8a) ∝ t^{-1/3}``.
* ``model="deep"``: a generic deep ReLU network on the same target, for contrast
  (no closed form, no check).

Every prediction comes from :mod:`sgdlab.theory.indicator` (shell integrals and a
deterministic recursion in NumPy), never from the loss that SGD differentiates:

* ``a_mean`` (``equal`` at every record step): ``E[a_t]`` against the
  population-gradient recursion ``a ← a + ηκD(a)`` plus its O(η) minibatch-noise
  correction ``ηκ½D''(a)Var(a_t)`` (κ the loss scale, ``Var(a_t)`` from its own
  recursion). The ``t^{-1/3}`` law is then a law in ``ηκt`` with a correction
  that depends on the batch size.
* ``l1_error_mc`` (``equal``): the L¹ error from the network's own output, a
  Monte-Carlo quadrature of ``|f_t(x) - 1{|x| ≤ r}|`` over ``n_eval`` uniform
  points, against the closed-form shell integral ``M_1(a)`` (``π/(8a)`` in d = 2)
  of the same members' ``a``. The evaluation points are shared by the members, so
  the SE used is the members' mean quadrature SE, an upper bound.
* ``error_slope`` (``covers``): the log-log slope of the ensemble-mean L¹ error
  over ``[fit_start, steps]``, with a seed-bootstrap CI, against the slope of
  ``E M_1(a_t)`` under the recursion over the same steps. It tends to -1/3; the
  note gives the gap (in d > 2, ``M_1`` is ``∝ 1/a`` only asymptotically).
* ``pointwise_time`` (``equal``) and ``pointwise_time_slope`` (``covers``): the
  paper's claim is pointwise. ``a_t`` never decreases, and the point at
  ``|x| = r + δ`` is fitted exactly once ``a_t ≥ a*(δ) = 1/((r+δ)² - r²)``, so the
  time to pointwise convergence at δ is a first-passage time ``T(δ)``, recorded per
  member for ``n_delta`` values of δ spanning ``delta_decades`` decades by the
  engine's multi-event first-passage recorder. Its mean is checked against the
  passage law ``P(T ≤ t) = P(a_t ≥ a*)`` (Gaussian marginals from the recursion),
  and the mean per-member least-squares slope of ``ln T`` against ``ln δ`` against
  that law's slope: -3 asymptotically, steeper over a finite range. The smallest δ
  is reached at about half the run by the slowest learning rate.
* ``pointwise_error`` (the grid maximum away from a band around the sphere) and
  ``l1_error`` (the closed form on the members) are reported per record step.

Dimensions: ``input_dim`` lists d; the density of ``|x|² - r²`` at the sphere falls
with d (π/4, π/8, π²/192 for d = 2, 3, 5 at r = ½), so in d = 5 the same ``a`` needs
about 15× more steps; the δ range adapts. The deep contrast runs in the first listed
d only (it has no prediction, and it costs as much as a ramp study). The first listed
d keeps the historical study names (``ramp``, ``deep``) and summary keys
(``ramp@10``); the others add ``_d{d}`` / ``@d{d}``.
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np

from sgdlab import analysis, engine
from sgdlab._validate import fail
from sgdlab.experiments import Experiment, Outcome, Param, quantity, register
from sgdlab.optim import Optimizer
from sgdlab.problems import indicator_target
from sgdlab.theory import indicator as theory

MODELS = ("ramp", "deep")
REDUCTIONS = ("half_mean", "mean", "half_sum", "sum")
PREDICTED_SLOPE = -1.0 / 3.0
"""The asymptotic slope of the L¹ error (the paper's rate)."""
N_BOOT = 400
"""Seed-bootstrap resamples for the CI of the fitted slope."""
PASSAGE_END = 0.5
"""The smallest δ is the one the slowest learning rate's mean ``a_t`` fits at this fraction of
the run."""
MIN_PASSAGE = 20
"""The largest δ must be reached no earlier than this step (Gaussian passage law)."""
MIN_SHELL_POINTS = 20
"""``l1_error_mc`` is checked where at least this many evaluation points are expected in the
error shell (a quadrature of fewer points is far from Gaussian)."""
Z95 = 1.959963984540054
_GH_X, _GH_W = np.polynomial.hermite.hermgauss(7)
_GH_X, _GH_W = math.sqrt(2.0) * _GH_X, _GH_W / math.sqrt(math.pi)
_ORACLE_A = "population-gradient recursion + O(η) noise correction"
_ORACLE_T = "passage law of the a_t recursion"


# --------------------------------------------------------------------------- closed forms


def _shell_moment(a, radius: float, dim: int, power: int, derivative: bool = False):
    """``M_p(a) = E|f_a - f°|^p`` (or ``dM_2/da = -2D(a)``); :mod:`sgdlab.theory.indicator`."""
    if not derivative:
        return theory.ramp_shell_moment(a, radius, dim, power)
    if power != 2:
        raise ValueError("derivative is available for power=2 only")
    return -2.0 * np.asarray(theory.ramp_drift(a, radius, dim)["D"])


def population_gd(a0: float, lr: float, radius: float, dim: int, steps: int) -> np.ndarray:
    """``a_k`` for k = 0..steps under gradient descent on the population loss ``½M_2(a)``.

    ``a_{k+1} = a_k + η D(a_k)``, ``D = -½dM_2/da`` (``π/(24a²)`` in d = 2, so
    ``a_k³ ≈ a_0³ + 3cηk``, c = π/24): the noise-free part of
    :func:`sgdlab.theory.indicator.ramp_mean_recursion`.
    """
    return _recursion(float(a0), float(lr), int(steps), float(radius), int(dim), 1, "half_mean",
                      False)[0]


@functools.lru_cache(maxsize=64)
def _recursion(a0, lr, steps, radius, dim, batch_size, reduction, noise=True):
    m, p = theory.ramp_mean_recursion(a0, lr, steps, radius=radius, dim=dim,
                                      batch_size=batch_size, reduction=reduction, noise=noise)
    m.flags.writeable = False
    p.flags.writeable = False
    return m, p


def _cfg_recursion(cfg, d, lr, noise=True):
    return _recursion(float(cfg["a0"]), float(lr), int(cfg["steps"]), float(cfg["radius"]),
                      int(d), int(cfg["batch_size"]), cfg["reduction"], noise)


def _mean_moment(m, p, radius, dim, power):
    """``E M_p(a)`` for ``a ~ N(m, P)`` (7-point Gauss–Hermite), ``a`` kept in the ramp's range."""
    lo = 1.0 / (1.0 - radius * radius)
    a = np.maximum(m[..., None] + np.sqrt(p)[..., None] * _GH_X, lo)
    return np.sum(_GH_W * theory.ramp_shell_moment(a, radius, dim, power), axis=-1)


def _deltas(cfg, d) -> np.ndarray:
    """The δ grid of dimension d: geometric, ``delta_decades`` decades up from δ_min.

    δ_min solves ``a*(δ) = m_t`` at ``t = PASSAGE_END·steps`` for the slowest
    learning rate.
    """
    m, _ = _cfg_recursion(cfg, d, min(cfg["learning_rate"]))
    a_end = float(m[int(PASSAGE_END * cfg["steps"])])
    r = cfg["radius"]
    d_min = math.sqrt(r * r + 1.0 / a_end) - r
    return d_min * np.geomspace(1.0, 10.0 ** cfg["delta_decades"], cfg["n_delta"])


def _grid_gap(radius: float, dim: int, grid_size: int, band: float) -> float:
    """``min(|x|² - r²)`` over the kept error-grid points outside the ball (inf if none).

    Replicates the grid of :func:`sgdlab.problems.indicator_target` (cell midpoints
    of ``[-1, 1)^d``, points with ``||x| - r| ≤ band`` left out).
    """
    axis = -1.0 + (2.0 * np.arange(grid_size) + 1.0) / grid_size
    s = np.zeros(())
    for _ in range(dim):
        s = np.add.outer(s, axis**2)
    s = s.reshape(-1)
    rho = np.sqrt(s)
    out = s[(rho - radius) > band]
    return float(out.min() - radius**2) if out.size else math.inf


# --------------------------------------------------------------------------- studies


def _name(cfg, model, d) -> str:
    return model if d == cfg["input_dim"][0] else f"{model}_d{d}"


def _models(cfg, d) -> list[str]:
    """The models run in dimension d: the ramp in every one, the deep contrast in the first."""
    return [m for m in cfg["model"] if m == "ramp" or d == cfg["input_dim"][0]]


def _tag(cfg, model, d, lr) -> str:
    return f"{model}@{lr:g}" + ("" if d == cfg["input_dim"][0] else f"@d{d}")


def _problem(cfg, model, d):
    common = {"dim": d, "radius": cfg["radius"], "batch_size": cfg["batch_size"],
              "band": cfg["band"], "n_eval": cfg["n_eval"], "reduction": cfg["reduction"]}
    if model == "ramp":
        return indicator_target("ramp", a0=cfg["a0"], **common)
    return indicator_target("mlp", sizes=(d, *cfg["deep_widths"], 1), **common)


def _validate(cfg):
    r = cfg["radius"]
    if not r < 1.0:
        fail("radius", r, "expected a number in the open interval (0, 1)")
    if len(set(cfg["input_dim"])) != len(cfg["input_dim"]):
        fail("input_dim", cfg["input_dim"], "list each dimension once")
    if cfg["fit_start"] >= cfg["steps"]:
        fail("fit_start", cfg["fit_start"], f"must be smaller than steps={cfg['steps']}")
    steps = engine.Observe(at="log", num=cfg["records"]).steps_for(cfg["steps"])
    if int(np.sum(steps >= cfg["fit_start"])) < 3:
        fail("fit_start", cfg["fit_start"], "leaves fewer than 3 record steps in the fit range; "
             "lower it or raise records")
    if len(set(cfg["model"])) != len(cfg["model"]):
        fail("model", cfg["model"], "list each model once")
    if "ramp" in cfg["model"] and cfg["a0"] < 1.0 / (1.0 - r * r):
        fail("a0", cfg["a0"], f"the ramp must start inside the unit ball (a0 >= 1/(1 - r²) = "
             f"{1.0 / (1.0 - r * r):.4g}), where the population loss is c/a")
    for d in cfg["input_dim"]:
        for model in cfg["model"]:
            _problem(cfg, model, d)  # the grid/band and size checks, before anything is written
        if "ramp" in cfg["model"]:
            deltas = _deltas(cfg, d)
            m, _ = _cfg_recursion(cfg, d, max(cfg["learning_rate"]))
            first = int(np.searchsorted(m, theory.ramp_threshold(deltas[-1], r)))
            if first < MIN_PASSAGE:
                fail("delta_decades", cfg["delta_decades"],
                     f"in d={d} the largest δ={deltas[-1]:.3g} is fitted at step {first} "
                     f"(< {MIN_PASSAGE}, where the passage law is not Gaussian); lower "
                     "delta_decades or raise steps")


def _passage_recorder(cfg, d):
    deltas = _deltas(cfg, d)
    # a NumPy constant of the traced predicate (a jnp array would be staged eagerly: a
    # program compiled for nothing)
    a_star = np.asarray(theory.ramp_threshold(deltas, cfg["radius"]))

    def fitted_at_r_plus_delta(o):
        return o.params["a"] >= a_star

    return engine.FirstPassage(fitted_at_r_plus_delta, freeze=False,
                               names=tuple(float(x) for x in deltas), dim="delta")


def _studies(cfg, seed):
    observe = {"ramp": ("pointwise_error", "l1_error", "a", "l1_error_mc", "l1_error_mc_se"),
               "deep": ("pointwise_error", "l1_error")}
    studies = {}
    for d in cfg["input_dim"]:
        for model in _models(cfg, d):
            ramp = model == "ramp"
            studies[_name(cfg, model, d)] = engine.Study(
                _problem(cfg, model, d), Optimizer("sgd"),
                {"learning_rate": cfg["learning_rate"] if ramp else cfg["deep_learning_rate"]},
                steps=cfg["steps"], seeds=cfg["seeds"] if ramp else cfg["deep_seeds"], seed=seed,
                observe=engine.Observe(observe[model], at="log", num=cfg["records"]),
                first_passage=_passage_recorder(cfg, d) if ramp else None)
    return studies


# --------------------------------------------------------------------------- analysis


def _per_step(ds, name, sel):
    """Ensemble mean and SE of ``name`` at every record step (grid point ``sel``)."""
    mean = np.asarray(ds[f"{name}_mean"].values, float)[sel]
    var = np.asarray(ds[f"{name}_var"].values, float)[sel]
    n = np.asarray(ds[f"{name}_n"].values, float)[sel]
    se = np.sqrt(np.where(n > 1, var, np.nan) / np.maximum(n, 1))
    return mean, se


def _slope_fit(steps, members, t_min, t_max, rng):
    """WLS power-law fit of the ensemble mean, with a seed-bootstrap standard error.

    The record steps share their members, so the points of the fit are correlated;
    resampling whole trajectories keeps that correlation, which the WLS interval
    (independent points) does not.
    """
    x = np.asarray(members, float)
    x = x[np.all(np.isfinite(x), axis=1)]
    n = x.shape[0]

    def fit(sample):
        m = sample.mean(axis=0)
        se = sample.std(axis=0, ddof=1) / math.sqrt(sample.shape[0])
        return analysis.fit_power_law(steps, m, se, t_min=t_min, t_max=t_max)

    main = fit(x)
    boot = []
    for _ in range(N_BOOT):
        try:
            boot.append(fit(x[rng.integers(0, n, n)]).estimate)
        except ValueError:
            continue
    se_boot = float(np.std(boot, ddof=1)) if len(boot) > 1 else math.nan
    return main, se_boot


def _ls_slopes(x, y):
    """Least-squares slope of each row of ``y`` against ``x``."""
    xc = x - x.mean()
    return (y - y.mean(axis=-1, keepdims=True)) @ xc / (xc @ xc)


def _passage_times(ds, i, steps):
    """Per-member first-passage steps ``[seed, delta]``; censored members count as steps + 1."""
    ev = ds["event_step"]
    if "learning_rate" in ev.dims:
        ev = ev.isel(learning_rate=i)
    t = np.asarray(ev.transpose("seed", "delta").values, float)
    censored = t < 0
    return np.where(censored, steps + 1.0, t), censored


def _ramp_checks(cfg, ds, d, i, lr, coords, tag, steps, quantities, notes, extra, rng):
    """The ramp's checks at one (d, learning rate): a_mean, l1_error_mc, error_slope, passage."""
    sel = (i,) if "learning_rate" in ds.dims else ()
    r, total = cfg["radius"], cfg["steps"]
    m, p = _cfg_recursion(cfg, d, lr)
    m0, _ = _cfg_recursion(cfg, d, lr, noise=False)
    # E[a_t]
    a_mean, a_se = _per_step(ds, "a", sel)
    shift = []
    for k, v, s in zip(steps, a_mean, a_se, strict=True):
        if k == 0:
            continue
        shift.append((m[k] - m0[k]) / s if s > 0 else math.nan)
        quantities.append(quantity(
            "a_mean", {**coords, "step": int(k)}, v, s, m[k], criterion="equal",
            oracle=_ORACLE_A,
            note=f"noise-free recursion {m0[k]:.6g}; the noise correction is "
                 f"{m[k] - m0[k]:+.3g} ({shift[-1]:+.2f} SE)"))
    # the L1 error from the network's output against the closed form on the same members
    a_members = np.asarray(ds["a"].values, float)[sel]                       # [seed, step]
    mc = np.asarray(ds["l1_error_mc"].values, float)[sel]
    mc_se = np.asarray(ds["l1_error_mc_se"].values, float)[sel]
    lo, n_eval = 1.0 / (1.0 - r * r), cfg["n_eval"]
    for j, k in enumerate(steps):
        a_j = a_members[:, j]
        ok = np.isfinite(a_j) & np.isfinite(mc[:, j]) & (a_j >= lo)
        m1 = np.asarray(theory.ramp_shell_moment(a_j[ok], r, d, 1))
        m2 = np.asarray(theory.ramp_shell_moment(a_j[ok], r, d, 2))
        se_null = float(np.mean(np.sqrt(np.maximum(m2 - m1 * m1, 0.0) / n_eval)))
        se_sample = float(np.mean(mc_se[ok, j]))
        in_shell = n_eval * float(theory.ramp_shell_moment(np.mean(a_j[ok]), r, d, 0))
        checked = in_shell >= MIN_SHELL_POINTS
        quantities.append(quantity(
            "l1_error_mc", {**coords, "step": int(k)}, float(np.mean(mc[ok, j])),
            max(se_sample, se_null), float(np.mean(m1)) if checked else None,
            criterion="equal" if checked else None,
            oracle="closed-form shell integral M_1(a) on the same members" if checked else None,
            note=(f"quadrature over n_eval={n_eval} points shared by the members "
                  f"(~{in_shell:.0f} in the error shell); se = max(members' mean sample se "
                  f"{se_sample:.2g}, se under the closed form {se_null:.2g}), an upper bound"
                  if checked else f"only ~{in_shell:.1f} of the n_eval={n_eval} points lie "
                  f"in the error shell (< {MIN_SHELL_POINTS}): too few for a quadrature check "
                  f"(closed form {float(np.mean(m1)):.4g})")))
    # the slope of the ensemble-mean L1 error
    t_min, t_max = float(cfg["fit_start"]), float(total)
    l1_members = np.asarray(ds["l1_error"].values, float)[sel]
    l1_pred = _mean_moment(m[steps], p[steps], r, d, 1)
    l1_mean, l1_se = _per_step(ds, "l1_error", sel)
    fit_coords = {**coords, "observable": "l1_error"}
    try:
        fit, se_boot = _slope_fit(steps, l1_members, t_min, t_max, rng)
    except ValueError as e:
        notes.append(f"{tag}: no slope fit ({e})")
        fit = None
    if fit is not None:
        # the same weights as the measurement's fit (relative SEs), so that a slope varying
        # over the range is averaged alike
        rel = np.where(l1_se > 0, l1_se / l1_mean, np.nan)
        det = analysis.fit_power_law(steps, l1_pred, l1_pred * rel, t_min=t_min,
                                     t_max=t_max).estimate
        se = se_boot if math.isfinite(se_boot) else fit.se
        extra["fits"][tag] = {"model": "ramp", "input_dim": d, "learning_rate": lr,
                              "slope": fit.estimate, "intercept": fit.intercept,
                              "t_min": fit.t_min, "t_max": fit.t_max, "se_wls": fit.se,
                              "se_bootstrap": se_boot, "chi2_dof": fit.chi2_dof,
                              "predicted": det}
        quantities.append(quantity(
            "error_slope", {**fit_coords, "t_min": int(fit.t_min), "t_max": int(fit.t_max)},
            fit.estimate, se, det, ci=(fit.estimate - Z95 * se, fit.estimate + Z95 * se),
            criterion="covers", oracle="E[a_t] recursion + closed-form M_1",
            note=f"fit of the ensemble-mean L1 error over steps [{fit.t_min:g}, {fit.t_max:g}] "
                 f"({fit.n_points} points); 95% CI from {N_BOOT} seed-bootstrap refits (WLS se "
                 f"{fit.se:.2g}, chi2/dof {fit.chi2_dof:.2g}); the predicted finite-range slope "
                 f"is {det - PREDICTED_SLOPE:+.2g} from the asymptotic -1/3"))
    problem = json.loads(ds.attrs["sgdlab_config"])["problem"]
    gap = _grid_gap(r, d, problem["grid_size"], cfg["band"])
    a_det = m0[steps]
    extra["population_gd"][tag] = {
        "input_dim": d, "learning_rate": lr, "step": steps.tolist(), "a": a_det.tolist(),
        "l1_error": np.asarray(theory.ramp_shell_moment(a_det, r, d, 1)).tolist(),
        "pointwise_error": (np.clip(1.0 - a_det * gap, 0.0, None) if math.isfinite(gap)
                            else np.zeros_like(a_det)).tolist(),
        "slope": extra["fits"].get(tag, {}).get("predicted"), "grid_gap": gap}
    extra["recursion"][tag] = {"input_dim": d, "learning_rate": lr, "step": steps.tolist(),
                               "a_mean": m[steps].tolist(), "a_var": p[steps].tolist(),
                               "l1_error": l1_pred.tolist()}
    # pointwise convergence: first-passage times of a_t over a*(δ)
    deltas = np.asarray(ds["delta"].values, float)
    times, censored = _passage_times(ds, i, total)
    law = theory.ramp_time_slope(deltas, m, p, r)
    n = times.shape[0]
    for j, dl in enumerate(deltas):
        tj = times[:, j]
        quantities.append(quantity(
            "pointwise_time", {**coords, "delta": float(dl)}, float(tj.mean()),
            float(tj.std(ddof=1) / math.sqrt(n)), float(law["mean"][j]), criterion="equal",
            oracle=_ORACLE_T,
            note=f"first step with a_t >= a*(δ) = {theory.ramp_threshold(dl, r):.5g}; the mean "
                 f"a_t reaches it at step {int(law['deterministic_times'][j])}"))
    slopes = _ls_slopes(np.log(deltas), np.log(times))
    sl, sl_se = float(slopes.mean()), float(slopes.std(ddof=1) / math.sqrt(n))
    n_cens = int(np.any(censored, axis=1).sum())
    if n_cens:
        notes.append(f"{tag}: {n_cens} members did not reach every a*(δ) (counted at step "
                     f"{total + 1}, a lower bound); the passage law predicts "
                     f"{float(law['censored'].max()):.2g} censored")
    quantities.append(quantity(
        "pointwise_time_slope", {**coords, "delta_min": float(deltas[0]),
                                 "delta_max": float(deltas[-1]), "n_delta": int(deltas.size)},
        sl, sl_se, law["gaussian"], ci=(sl - Z95 * sl_se, sl + Z95 * sl_se), criterion="covers",
        oracle=_ORACLE_T,
        note=f"mean of the {n} per-member least-squares slopes of ln T(δ) on ln δ; the mean "
             f"a_t's own passage times give {law['deterministic']:.4f}, the asymptote is -3"))
    extra["passage"][tag] = {
        "input_dim": d, "learning_rate": lr, "delta": deltas.tolist(),
        "a_star": np.asarray(theory.ramp_threshold(deltas, r)).tolist(),
        "log_time_mean": np.log(times).mean(axis=0).tolist(),
        "log_time_se": (np.log(times).std(axis=0, ddof=1) / math.sqrt(n)).tolist(),
        "predicted_log_time": law["log_mean"].tolist(),
        "deterministic_time": law["deterministic_times"].tolist(),
        "slope": sl, "slope_se": sl_se, "predicted_slope": law["gaussian"],
        "deterministic_slope": law["deterministic"], "censored_members": n_cens}
    if np.any(np.diff(a_members, axis=1) < 0):
        notes.append(f"{tag}: a_t decreased between record steps in some member (the ramp's "
                     "gradient is never positive: is the model or loss wrong?)")


def _analyze(cfg, datasets) -> Outcome:
    quantities, notes = [], []
    extra: dict = {"fits": {}, "population_gd": {}, "recursion": {}, "passage": {}}
    t_min, t_max = float(cfg["fit_start"]), float(cfg["steps"])
    rng = np.random.default_rng(0)
    for d in cfg["input_dim"]:
        for model in _models(cfg, d):
            ds = datasets[_name(cfg, model, d)]
            steps = np.asarray(ds.step.values)
            lrs = cfg["learning_rate"] if model == "ramp" else [cfg["deep_learning_rate"]]
            for i, lr in enumerate(lrs):
                sel = (i,) if "learning_rate" in ds.dims else ()
                coords = {"model": model, "input_dim": d, "learning_rate": lr}
                tag = _tag(cfg, model, d, lr)
                pw_note = ("error at a fixed point off the sphere is (1 - a_t(|x|² - r²))₊, "
                           "exactly 0 once a_t > 1/(|x|² - r²): tested as first-passage times "
                           "(pointwise_time)" if model == "ramp"
                           else "no closed form for a generic deep ReLU network")
                l1_note = ("closed form M_1(a_t) on the members; checked against the network's "
                           "output by l1_error_mc" if model == "ramp" else
                           "no closed form for a generic deep ReLU network (sampled on "
                           f"{cfg['n_eval']} evaluation points)")
                for name, note in (("pointwise_error", pw_note), ("l1_error", l1_note)):
                    mean, se = _per_step(ds, name, sel)
                    for k, mv, s in zip(steps, mean, se, strict=True):
                        quantities.append(quantity(name, {**coords, "step": int(k)}, mv, s,
                                                   None, note=note))
                if model == "ramp":
                    _ramp_checks(cfg, ds, d, i, lr, coords, tag, steps, quantities, notes, extra,
                                 rng)
                else:
                    members = np.asarray(ds["l1_error"].values, float)[sel]
                    try:
                        fit, se_boot = _slope_fit(steps, members, t_min, t_max, rng)
                    except ValueError as e:
                        notes.append(f"{tag}: no slope fit ({e})")
                    else:
                        se = se_boot if math.isfinite(se_boot) else fit.se
                        extra["fits"][tag] = {
                            "model": model, "input_dim": d, "learning_rate": lr,
                            "slope": fit.estimate, "intercept": fit.intercept,
                            "t_min": fit.t_min, "t_max": fit.t_max, "se_wls": fit.se,
                            "se_bootstrap": se_boot, "chi2_dof": fit.chi2_dof}
                        quantities.append(quantity(
                            "error_slope", {**coords, "observable": "l1_error",
                                            "t_min": int(fit.t_min), "t_max": int(fit.t_max)},
                            fit.estimate, se, None,
                            ci=(fit.estimate - Z95 * se, fit.estimate + Z95 * se),
                            note="no closed form for a generic deep ReLU network; fitted over "
                                 "the same range for contrast"))
                n_div = int(np.asarray(ds.n_diverged.values)[sel])
                if n_div:
                    notes.append(f"{tag}: {n_div} members diverged")
    return Outcome(quantities, notes, {"indicator": extra})


# --------------------------------------------------------------------------- figures


def _curve(ds, name, sel):
    steps = np.asarray(ds.step.values)
    mean, se = _per_step(ds, name, sel)
    keep = steps > 0
    return steps[keep], mean[keep], se[keep]


def _figures(results, summary):
    from matplotlib.figure import Figure

    cfg = summary["config"]
    extra = summary.get("indicator", {})
    fits, rec, pas = (extra.get(k, {}) for k in ("fits", "recursion", "passage"))
    fig = Figure(figsize=(17.0, 9.5), layout="constrained")
    (ax_l1, ax_sl, ax_pw), (ax_a, ax_mc, ax_t) = fig.subplots(2, 3)
    z = Z95
    dims = cfg["input_dim"] if isinstance(cfg["input_dim"], list) else [cfg["input_dim"]]
    c = 0
    for d in dims:
        for model in cfg["model"]:
            name = _name({**cfg, "input_dim": dims}, model, d)
            if name not in results:
                continue
            ds = results[name]
            lrs = cfg["learning_rate"] if model == "ramp" else [cfg["deep_learning_rate"]]
            for i, lr in enumerate(lrs):
                sel = (i,) if "learning_rate" in ds.dims else ()
                tag = _tag({**cfg, "input_dim": dims}, model, d, lr)
                color = f"C{c}"
                c += 1
                label = f"{model}, d={d}, η={lr:g}"
                fit, rc, ps = fits.get(tag), rec.get(tag), pas.get(tag)
                # (a) the L1 error with the fit and the recursion
                t, m, s = _curve(ds, "l1_error", sel)
                ax_l1.plot(t, m, "-", color=color, label=f"{label} (mean ± 1.96 SE)")
                ax_l1.fill_between(t, m - z * s, m + z * s, color=color, alpha=0.3, lw=0)
                if fit is not None:
                    tt = np.geomspace(fit["t_min"], fit["t_max"], 50)
                    ax_l1.plot(tt, np.exp(fit["intercept"]) * tt ** fit["slope"], "--",
                               color="k", lw=1.2, zorder=5)
                if rc is not None:
                    st = np.asarray(rc["step"], float)
                    k = st > 0
                    l1 = np.asarray(rc["l1_error"])
                    ax_l1.plot(st[k], l1[k], "-", color="0.4", lw=0.8)
                    lt, lm = np.log(st[k]), np.log(l1[k])
                    ax_sl.plot(np.exp(0.5 * (lt[1:] + lt[:-1])), np.diff(lm) / np.diff(lt), "-",
                               color="0.4", lw=0.8)
                # (b) local log-log slope, the fitted slope's CI
                if model == "ramp" and len(t) > 2:
                    good = m > 0
                    lt, lm = np.log(t[good]), np.log(m[good])
                    ax_sl.plot(np.exp(0.5 * (lt[1:] + lt[:-1])), np.diff(lm) / np.diff(lt),
                               "o", ms=2.5, color=color, label=f"{label}: local slope")
                if model == "ramp" and fit is not None:
                    se = fit["se_bootstrap"] if math.isfinite(fit["se_bootstrap"]) \
                        else fit["se_wls"]
                    ax_sl.fill_between([fit["t_min"], fit["t_max"]], fit["slope"] - z * se,
                                       fit["slope"] + z * se, color=color, alpha=0.35, lw=0,
                                       label=f"{label}: fit {fit['slope']:.4f}, predicted "
                                             f"{fit['predicted']:.4f}")
                # (c) the maximal grid error
                t, m, s = _curve(ds, "pointwise_error", sel)
                pos = m > 0
                ax_pw.plot(t[pos], m[pos], "-o", ms=2.5, color=color, label=label)
                if model != "ramp":
                    continue
                # (d) E[a_t] against the recursion, in SE units
                t, m, s = _curve(ds, "a", sel)
                if rc is not None:
                    st = np.asarray(rc["step"])
                    pred = np.asarray(rc["a_mean"])[st > 0]
                    ax_a.plot(t, (m - pred) / s, "o-", ms=2.5, color=color,
                              label=f"{label}: (mean - recursion)/SE")
                    a0 = np.asarray(summary["indicator"]["population_gd"][tag]["a"])[st > 0]
                    ax_a.plot(t, (m - a0) / s, ":", color=color, lw=1.0,
                              label=f"{label}: without the noise correction")
                # (e) the L1 error from the network's output against the closed form
                qs = [q for q in summary["quantities"] if q["name"] == "l1_error_mc"
                      and q["coords"].get("input_dim", d) == d
                      and q["coords"]["learning_rate"] == lr and q["coords"]["step"] > 0
                      and q["predicted"] is not None and q["se"]]
                if qs:
                    ax_mc.plot([q["coords"]["step"] for q in qs],
                               [(q["value"] - q["predicted"]) / q["se"] for q in qs], "o-",
                               ms=2.5, color=color, label=label)
                # (f) first-passage times against δ
                if ps is not None:
                    dl = np.asarray(ps["delta"])
                    lm, ls = np.asarray(ps["log_time_mean"]), np.asarray(ps["log_time_se"])
                    ax_t.errorbar(dl, np.exp(lm), yerr=[np.exp(lm) - np.exp(lm - z * ls),
                                                        np.exp(lm + z * ls) - np.exp(lm)],
                                  fmt="o", ms=3, color=color,
                                  label=f"{label}: slope {ps['slope']:.3f} ± "
                                        f"{z * ps['slope_se']:.3f} (pred. "
                                        f"{ps['predicted_slope']:.3f})")
                    ax_t.plot(dl, np.exp(ps["predicted_log_time"]), "-", color=color, lw=0.8)
    for ax in (ax_l1, ax_sl, ax_pw, ax_a, ax_mc):
        ax.set_xscale("log")
        ax.set_xlabel("step t")
    for ax in (ax_l1, ax_sl, ax_pw, ax_a, ax_mc, ax_t):
        ax.legend(fontsize=6.5)
    ax_l1.plot([], [], "-", color="0.4", lw=0.8, label="recursion: E M_1(a_t)")
    ax_l1.plot([], [], "--", color="k", label="power-law fit")
    ax_l1.legend(fontsize=6.5)
    ax_l1.set_yscale("log")
    ax_l1.set_ylabel("L¹ error E|f_t(x) - 1{|x| ≤ r}|")
    ax_l1.set_title("L¹ error (closed form on the members)")
    ax_sl.axhline(PREDICTED_SLOPE, color="k", lw=1.0, ls="--")
    ax_sl.set_ylim(-0.40, -0.15)
    ax_sl.set_ylabel("d ln(L¹ error) / d ln t")
    ax_sl.set_title("local slope (grey: recursion; dashed: -1/3)")
    ax_pw.set_yscale("log")
    ax_pw.set_ylabel("max grid error |f_t(x) - f°(x)|")
    ax_pw.set_title(f"grid error, ||x| - r| ≤ {cfg['band']:g} left out (0 not shown)")
    for ax, title in ((ax_a, "E[a_t] vs the population-gradient recursion + noise term"),
                      (ax_mc, "L¹ error from the network's output vs the closed form")):
        ax.axhspan(-4, 4, color="0.9", zorder=0)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_ylabel("(measured - predicted) / SE")
        ax.set_title(title + " (band: ±4)")
    ax_t.set_xscale("log")
    ax_t.set_yscale("log")
    ax_t.set_xlabel("δ = |x| - r")
    ax_t.set_ylabel("first step with f_t(x) = f°(x) (geometric mean, 95% CI)")
    ax_t.set_title("first-passage time T(δ) (line: passage law)")
    fig.suptitle("Mini-batch GD on a ball indicator (arXiv:2304.08172): error ∝ t^(-1/3), "
                 "pointwise time ∝ δ^(-3)")
    return {"indicator": fig}


EXPERIMENT = register(Experiment(
    name="indicator", study="3",
    title="ball indicator by mini-batch GD: E[a_t], L1 error and pointwise first-passage times "
          "vs the recursion (ramp model; deep ReLU contrast)",
    params=(
        Param("input_dim", int, [2, 3], "input dimensions d (inputs uniform on [-1, 1)^d)",
              list=True, low=1, high=20),
        Param("radius", float, 0.5, "radius r of the target ball, in (0, 1)", low=0.0,
              low_open=True, high=1.0),
        Param("model", str, ["ramp", "deep"], "models: the solvable ramp (every d), a deep ReLU "
              "net (first d only)",
              list=True, choices=MODELS),
        Param("batch_size", int, 4, "minibatch size S (fresh uniform samples each step)",
              low=1),
        Param("reduction", str, "half_mean", "loss scaling of both models (the step size means "
              "different things under each)", choices=REDUCTIONS),
        Param("learning_rate", float, [10.0], "ramp learning rates η", list=True,
              low=0.0, low_open=True),
        Param("steps", int, 100000, "mini-batch GD steps", low=10),
        Param("seeds", int, 256, "members of the ramp ensemble", low=2),
        Param("band", float, 0.05, "grid points with ||x| - r| <= band are excluded", low=0.0),
        Param("a0", float, 1.5, "the ramp's initial a (>= 1/(1 - r²))", low=0.0, low_open=True),
        Param("fit_start", int, 10000, "first step of the slope fit (the fit ends at steps)",
              low=1),
        Param("records", int, 31, "log-spaced record steps", low=5, high=400),
        Param("n_delta", int, 8, "distances δ = |x| - r of the pointwise first-passage times",
              low=3, high=64),
        Param("delta_decades", float, 1.0, "decades spanned by the δ values (the smallest is "
              "fitted at about half the run)", low=0.0, low_open=True, high=3.0),
        Param("deep_widths", int, [32, 32], "hidden widths of the deep ReLU net", list=True,
              low=1),
        Param("deep_learning_rate", float, 0.05, "learning rate of the deep ReLU net", low=0.0,
              low_open=True),
        Param("deep_seeds", int, 16, "members of the deep-net ensemble", low=2),
        Param("n_eval", int, 4096, "evaluation points of the sampled L1 errors", low=16),
    ),
    presets={
        "quick": {},
        "paper": {"input_dim": [2, 3, 5], "steps": 1000000, "seeds": 1024, "fit_start": 100000,
                  "records": 61, "n_delta": 12,
                  "deep_widths": [64, 64, 64], "deep_seeds": 256, "n_eval": 16384},
    },
    studies=_studies, analyze=_analyze, figures=_figures, validate=_validate,
))
