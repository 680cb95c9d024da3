"""Study 1: SGD on deep ReLU networks with a constant target and non-summable step sizes.

Hutzenthaler, Jentzen, Pohl, Riekert & Scarpa, "Convergence proof for stochastic
gradient descent in the training of deep neural networks with ReLU activation for
constant target functions", arXiv:2112.07369 (2021).

``constant-target`` trains a fully connected ReLU network (ReLU'(0) = 0) on the
constant ξ with fresh uniform inputs on a box, plain SGD with the schedules
``γ_n = γ0/(n + n0)^α`` for α = 0 (constant), ½, 1 (non-summable) and 2
(summable), all in one compiled grid per input dimension d. It reports

* ``risk``: the ensemble mean of the population risk ``E[(N(X) − ξ)²]`` at
  log-spaced steps, reported only (the theorem gives a limit, not a curve). In
  d = 1 it is exact (piecewise-linear integration); in d > 1 it is the mean over
  a fixed evaluation sample of ``n_eval`` inputs drawn once per seed, so the
  sample's error is independent across members and inside the ensemble's SE;
* ``risk_final`` (reported) and, the theorem's claim as checks:

  - ``risk_ratio`` = E[risk at step 0] / E[risk at the last step], ``greater``
    than 1 for every non-summable schedule, and than 10 for the constant and γ0/√n
    ones (they fall by orders of magnitude within the quick preset);
  - ``risk_exponent``, the local power-law exponent over the last decade of
    steps: ``less`` than 0 (non-summable: still falling), ``greater`` than −0.05
    for the summable γ0/n² (a plateau: late trajectories are nearly deterministic,
    so "consistent with 0" would fail on correct code);
  - ``plateau_ratio`` = E[final risk] of γ0/n² over that of the constant and of
    the γ0/√n schedule: ``greater`` than 10;

  ratios carry the delta-method SE of their logarithm over independent members
  (the same members at both steps or schedules: common random numbers) and a
  log-normal 95% interval;
* ``sample_risk`` (d = 1): the evaluation-sample estimate used in d > 1 against
  the exact integral of the same members (``equal``), and ``risk_se_scale``,
  the median over members of |sample − exact| / risk_se over its normal value
  Φ⁻¹(0.75), which is 1 when ``risk_se`` is the right standard error (``equal``;
  a median, because a few members with the largest risks decided the former
  ratio of mean squares, and a mean of squares has no usable SE when a broken
  estimator makes some of them enormous); both at the record step
  nearest √N and at the last one (the first steps are the same for every schedule,
  and their heavy-tailed overshoots make a ratio's delta-method SE unreliable);
* ``dead_risk``: the dead network (every hidden unit inactive on the box, only
  the output bias c moves), whose risk is exactly
  ``(c_0 − ξ)² Π_{k≤n}(1 − 2γ_k)²``; with ``c_0 ~ N(0, bias_scale²)`` the
  prediction ``E[L_n] = (ξ² + bias_scale²) Π(1 − 2γ_k)²`` is checked at each record
  step. It is what catches a schedule off by one step, a wrong learning rate or
  loss scale: the live checks are one-sided and hold for those too;
* ``diverged_fraction``: for step sizes beyond the theorem's "small enough", the
  fraction of members that blow up (non-finite, or a parameter above
  :data:`DIVERGENCE_BOUND`) vs γ0, with Wilson intervals, reported only.
"""

from __future__ import annotations

import math

import numpy as np

from sgdlab import engine, models, theory
from sgdlab._validate import fail
from sgdlab.analysis import wilson_interval
from sgdlab.experiments import Experiment, Outcome, Param, quantity, register
from sgdlab.optim import Optimizer
from sgdlab.problems import constant_target
from sgdlab.theory.constant_target import dead_network_mean_risk

SCHEDULES = {"constant": 0.0, "inv_sqrt": 0.5, "inv": 1.0, "inv_sq": 2.0}
"""Schedule name -> α of γ_n = γ0/(n + n0)^α."""
_LABELS = {"constant": "γ0 (constant)", "inv_sqrt": "γ0/√n", "inv": "γ0/n",
           "inv_sq": "γ0/n² (summable)"}
DEAD_FLOOR = 1e-6
"""dead_risk is checked where Π(1 − 2γ_k)² ≥ DEAD_FLOOR: there |c_n − ξ| ≥ 10⁻³|c_0 − ξ|,
thousands of float32 rounding units of c_n, so rounding is far below the Monte Carlo error."""
MAX_KINKS = 16384
RATIO_MIN = {"constant": 10.0, "inv_sqrt": 10.0, "inv": 1.0}
"""risk_ratio must exceed this (non-summable schedules): E[risk] falls, by ≥ 10× where fast."""
PLATEAU_MIN = 10.0
"""plateau_ratio (summable final / constant or γ0/√n final) must exceed this."""
PLATEAU_EXPONENT = -0.05
"""The summable schedule's last-decade exponent must exceed this (a plateau)."""
DIVERGENCE_BOUND = 1e6
"""A member of the divergence sweep counts as diverged once a parameter exceeds this."""
SE_FLOOR = 1e-3
"""risk_se_scale leaves out members whose risk_se is below SE_FLOOR × their sample risk: a
network (nearly) constant on the box has a (nearly) zero SE, and its sample − exact
difference is float32 rounding (relative ~1e-5 at the quick preset's smallest risks)."""
SEED_STRIDE = 1000
"""Input dimension i (in the order given) runs from base seed ``seed + SEED_STRIDE·i``, the
divergence sweep from ``seed + SEED_STRIDE//2``: independent ensembles."""
Z95 = 1.959963984540054
Q75 = 0.6744897501960817
"""Φ⁻¹(0.75): the median of |z| for z ~ N(0, 1)."""
MEDIAN_SE = 1 / (4 * Q75 * math.exp(-Q75 ** 2 / 2) / math.sqrt(2 * math.pi))
"""√m × the SE of median(|z|) / Φ⁻¹(0.75) over m members with z ~ N(0, s²), per unit s:
1 / (4 q φ(q)) at q = Φ⁻¹(0.75) (about 1.166)."""


def _sizes(cfg, d: int) -> tuple[int, ...]:
    return (d,) + (cfg["width"],) * cfg["depth"] + (1,)


def _validate(cfg):
    for key in ("schedule", "gamma0", "input_dim", "diverge_gamma0"):
        if len(set(cfg[key])) != len(cfg[key]):
            fail(key, cfg[key], "expected distinct " + ("schedules" if key == "schedule"
                                                          else "values"))
    if len(cfg["box"]) != 2 or not cfg["box"][0] < cfg["box"][1]:
        fail("box", cfg["box"], "expected two numbers low,high with low < high")
    if 1 in cfg["input_dim"]:
        bound = models.kink_bound(_sizes(cfg, 1))
        if bound > MAX_KINKS:
            fail("width", cfg["width"], f"the exact 1-D risk needs up to {bound} kinks for depth="
                 f"{cfg['depth']}; at most {MAX_KINKS} are supported: lower width or depth")


def live_name(cfg, d: int) -> str:
    """Name of the live study of input dimension ``d`` (the first one keeps the name "live")."""
    return "live" if d == cfg["input_dim"][0] else f"live_d{d}"


def _problem(cfg, d: int, dead: bool, eval_sample: str | None = None):
    sizes = _sizes(cfg, d)
    max_kinks = models.kink_bound(sizes) if d == 1 else None
    return constant_target(sizes, target_value=cfg["target"], box=tuple(cfg["box"]),
                           batch_size=cfg["batch_size"], bias_scale=cfg["bias_scale"],
                           dead=dead, n_eval=cfg["n_eval"], max_kinks=max_kinks,
                           eval_sample=eval_sample)


def _hparams(cfg, gamma0) -> dict:
    return {"alpha": [SCHEDULES[s] for s in cfg["schedule"]], "gamma0": gamma0,
            "n0": cfg["n0"]}


def _studies(cfg, seed):
    opt = Optimizer("sgd", schedule="power")
    studies = {}
    for i, d in enumerate(cfg["input_dim"]):
        observe = ("risk", "risk_sample", "risk_sample_se") if d == 1 else ("risk", "risk_se")
        studies[live_name(cfg, d)] = engine.Study(
            _problem(cfg, d, dead=False, eval_sample="per_seed"), opt,
            _hparams(cfg, cfg["gamma0"]), steps=cfg["steps"], seeds=cfg["seeds"],
            seed=seed + SEED_STRIDE * i,
            observe=engine.Observe(observe, at="log", num=cfg["records"], members=True))
    d0 = cfg["input_dim"][0]
    studies["dead"] = engine.Study(
        _problem(cfg, d0, dead=True), opt, _hparams(cfg, cfg["gamma0"]), steps=cfg["steps"],
        seeds=cfg["dead_seeds"], seed=seed,
        observe=engine.Observe(("risk",), at="log", num=cfg["records"], members=False))
    studies["diverge"] = engine.Study(
        _problem(cfg, d0, dead=False), opt, _hparams(cfg, cfg["diverge_gamma0"]),
        steps=cfg["diverge_steps"], seeds=cfg["diverge_seeds"], seed=seed + SEED_STRIDE // 2,
        observe=None, divergence_bound=DIVERGENCE_BOUND)
    return studies


def dead_factor(gamma0: float, alpha: float, n0: float, steps) -> np.ndarray:
    """Π_{k≤n}(1 − 2γ_k)² at each n of ``steps`` (the dead-network risk per unit (c_0 − ξ)²)."""
    return np.asarray(theory.dead_network_risk_schedule(1.0, gamma0, alpha, n0,
                                                        np.asarray(steps, dtype=np.int64)))


def ratio_of_means(num: np.ndarray, den: np.ndarray) -> tuple[float, float, int]:
    """``R = mean(num) / mean(den)`` over paired members, with the SE of ``ln R``.

    Members (the rows of ``num`` and ``den``) are independent; the two values of a
    member may be correlated (the same member at two steps, or the same seed under
    two schedules). Delta method: ``δ ln R = δm_num/m_num − δm_den/m_den``, so
    ``se(ln R) = sd(num_i/m_num − den_i/m_den) / √M``. Members with a non-finite value
    are left out.

    Returns:
      ``(R, se_lnR, M)``.
    """
    num, den = np.asarray(num, float), np.asarray(den, float)
    ok = np.isfinite(num) & np.isfinite(den)
    a, b = num[ok], den[ok]
    m = int(ok.sum())
    if m < 2:
        return math.nan, math.nan, m
    ma, mb = a.mean(), b.mean()
    u = a / ma - b / mb
    return float(ma / mb), float(np.std(u, ddof=1) / math.sqrt(m)), m


def last_decade_exponent(values: np.ndarray, steps: np.ndarray) -> tuple[float, float, int, int]:
    """Local power-law exponent of the ensemble mean over the last decade of record steps.

    ``p = ln(m_N / m_a) / ln(N / a)``, with ``m`` the mean over members of ``values``
    (``[member, step]``), N the last record step and a the record step nearest N/10.
    The standard error is the delta method over independent members, with the
    covariance of the two means taken into account (the same members at both steps;
    :func:`ratio_of_means`).

    Returns:
      ``(p, se, a, N)``.
    """
    steps = np.asarray(steps)
    n_last = int(steps[-1])
    pos = steps[steps > 0]
    a = int(pos[np.argmin(np.abs(np.log(pos) - math.log(n_last / 10)))])
    ia = int(np.flatnonzero(steps == a)[0])
    r, se, _ = ratio_of_means(values[:, -1], values[:, ia])
    span = math.log(n_last / a)
    return math.log(r) / span, se / span, a, n_last


def _ratio_quantity(name, coords, r, se_ln, threshold, oracle, note):
    ci = (r * math.exp(-Z95 * se_ln), r * math.exp(Z95 * se_ln))
    return quantity(name, coords, r, r * se_ln, threshold, ci=ci,
                    criterion=None if threshold is None else "greater",
                    oracle=None if threshold is None else oracle, note=note)


def _live(cfg, d, ds):
    """The live network's checks in input dimension ``d``."""
    steps = ds.step.values
    quantities, notes = [], []
    final = {}
    for sched in cfg["schedule"]:
        alpha = SCHEDULES[sched]
        for g0 in cfg["gamma0"]:
            coords = {"schedule": sched, "gamma0": g0, "input_dim": d}
            sel = {"alpha": alpha, "gamma0": g0}
            mean = ds.risk_mean.sel(sel).values
            se = np.sqrt(ds.risk_var.sel(sel).values / ds.risk_n.sel(sel).values)
            why = ("no closed form for a live network; the theorem gives the limit "
                   "E[risk] → 0 (non-summable steps), not the curve")
            for n, m, s in zip(steps, mean, se, strict=True):
                quantities.append(quantity("risk", {**coords, "step": int(n)}, m, s, None,
                                           note=why))
            alive = ds.diverged_step.sel(sel).values < 0
            members = ds.risk.sel(sel).values[alive]                  # [seed, step]
            final[sched, g0] = members[:, -1]
            quantities.append(quantity("risk_final", coords, mean[-1], se[-1], None))
            r, r_se, _ = ratio_of_means(members[:, 0], members[:, -1])
            thr = RATIO_MIN.get(sched)
            quantities.append(_ratio_quantity(
                "risk_ratio", {**coords, "steps": [0, int(steps[-1])]}, r, r_se, thr,
                "theorem: E[risk] → 0" if thr == 1 else "claim: ≥ 10× drop where fast",
                "E[risk at step 0] / E[risk at the last step], delta-method SE of the log "
                "over members" + ("" if thr else "; summable: outside the theorem")))
            p, p_se, a, n_last = last_decade_exponent(members, steps)
            ci = (p - Z95 * p_se, p + Z95 * p_se)
            summable = alpha > 1
            quantities.append(quantity(
                "risk_exponent", {**coords, "steps": [a, n_last]}, p, p_se,
                PLATEAU_EXPONENT if summable else 0.0, ci=ci,
                criterion="greater" if summable else "less",
                oracle="summable: plateau" if summable else "theorem: E[risk] → 0",
                note="local power-law exponent ln(E[L_N]/E[L_a])/ln(N/a), delta-method SE "
                     "over members"))
            if sched == "inv":
                notes.append(
                    f"d={d}, schedule=inv, gamma0={g0:g}: γ0/n decays slowly: exponent "
                    f"{p:.3g} ± {p_se:.2g} over steps {a}..{n_last} (the dead network's "
                    f"n^(−4γ0) = n^({-4 * g0:.3g})); this preset shows it")
            n_div = int(ds.n_diverged.sel(sel).values)
            if n_div:
                notes.append(f"d={d}, schedule={sched}, gamma0={g0:g}: {n_div} of "
                             f"{cfg['seeds']} live members diverged (left out)")
    if "inv_sq" in cfg["schedule"]:
        for g0 in cfg["gamma0"]:
            for other in ("constant", "inv_sqrt"):
                if other not in cfg["schedule"]:
                    continue
                # the same seeds under both schedules: pair members alive in both
                a_sel = {"gamma0": g0}
                alive = ((ds.diverged_step.sel(alpha=SCHEDULES["inv_sq"], **a_sel).values < 0)
                         & (ds.diverged_step.sel(alpha=SCHEDULES[other], **a_sel).values < 0))
                num = ds.risk.sel(alpha=SCHEDULES["inv_sq"], **a_sel).values[alive, -1]
                den = ds.risk.sel(alpha=SCHEDULES[other], **a_sel).values[alive, -1]
                r, r_se, _ = ratio_of_means(num, den)
                quantities.append(_ratio_quantity(
                    "plateau_ratio", {"schedule": "inv_sq", "versus": other, "gamma0": g0,
                                      "input_dim": d, "step": int(steps[-1])},
                    r, r_se, PLATEAU_MIN, "summable: plateau",
                    f"E[final risk] under γ0/n² over that under {_LABELS[other]} (same seeds)"))
    if d == 1 and "risk_sample" in ds:
        quantities += _sample_checks(cfg, ds)
    return quantities, notes


def _sample_checks(cfg, ds):
    """d = 1: the evaluation-sample risk and its SE against the exact integral."""
    steps = ds.step.values
    n_last = int(steps[-1])
    pos = steps[steps > 0]
    mid = int(pos[np.argmin(np.abs(np.log(pos) - 0.5 * math.log(n_last)))])
    out = []
    for sched in cfg["schedule"]:
        for g0 in cfg["gamma0"]:
            sel = {"alpha": SCHEDULES[sched], "gamma0": g0}
            alive = ds.diverged_step.sel(sel).values < 0
            exact = ds.risk.sel(sel).values[alive]
            samp = ds.risk_sample.sel(sel).values[alive]
            sse = ds.risk_sample_se.sel(sel).values[alive]
            for n in sorted({mid, n_last}):
                i = int(np.flatnonzero(steps == n)[0])
                ok = np.isfinite(exact[:, i]) & np.isfinite(samp[:, i])
                diff = samp[ok, i] - exact[ok, i]
                coords = {"schedule": sched, "gamma0": g0, "input_dim": 1, "step": n}
                out.append(quantity(
                    "sample_risk", coords, samp[ok, i].mean(),
                    np.std(diff, ddof=1) / math.sqrt(diff.size), exact[ok, i].mean(),
                    criterion="equal", oracle="exact 1-D integral",
                    note=f"mean over members of the risk on {cfg['n_eval']} inputs drawn per "
                         "seed, against the exact integral of the same members; SE of the "
                         "mean difference"))
                keep = ok & (sse[:, i] > SE_FLOOR * np.abs(samp[:, i]))
                z = np.abs(samp[keep, i] - exact[keep, i]) / sse[keep, i]
                m = z.size
                scale = float(np.median(z)) / Q75 if m >= 2 else math.nan
                out.append(quantity(
                    "risk_se_scale", coords, scale, scale * MEDIAN_SE / math.sqrt(max(m, 1)), 1.0,
                    criterion="equal", oracle="exact 1-D integral",
                    note="median over members of |sample − exact| / risk_se, over its "
                         f"normal value Φ⁻¹(0.75) = {Q75:.4f}: 1 when risk_se is the "
                         "standard error of the sample risk; SE of a normal sample's "
                         f"median ({int(ok.sum()) - m} members with a network constant to "
                         f"{SE_FLOOR:g} on the box left out)"))
    return out


def _dead(cfg, ds):
    """The dead network against its closed form."""
    steps = ds.step.values
    xi2 = cfg["target"] ** 2 + cfg["bias_scale"] ** 2
    d0 = cfg["input_dim"][0]
    quantities, notes = [], []
    for sched in cfg["schedule"]:
        alpha = SCHEDULES[sched]
        for g0 in cfg["gamma0"]:
            sel = {"alpha": alpha, "gamma0": g0}
            f = dead_factor(g0, alpha, cfg["n0"], steps)
            pred = np.atleast_1d(dead_network_mean_risk(cfg["target"], cfg["bias_scale"], g0,
                                                        alpha, cfg["n0"], steps))
            dmean = ds.risk_mean.sel(sel).values
            dse = np.sqrt(ds.risk_var.sel(sel).values / ds.risk_n.sel(sel).values)
            div = ds.diverged_step.sel(sel).values if "diverged_step" in ds else None
            first_div = (int(div[div >= 0].min()) if div is not None and np.any(div >= 0)
                         else None)
            if first_div is not None:
                notes.append(f"dead network, schedule={sched}, gamma0={g0:g}: members diverge "
                             f"from step {first_div} (|1 − 2γ| > 1); checked before it")
            for n, fn, pn, m, s in zip(steps, f, pred, dmean, dse, strict=True):
                if fn >= DEAD_FLOOR and (first_div is None or n < first_div):
                    quantities.append(quantity(
                        "dead_risk", {"schedule": sched, "gamma0": g0, "input_dim": d0,
                                      "step": int(n)}, m, s, pn,
                        oracle="closed form (ξ² + s²)·Π(1 − 2γ_k)²"))
    notes.append(
        "dead_risk: only the output bias moves, c_n − ξ = Π(1 − 2γ_k)(c_0 − ξ) exactly, so "
        f"E[L_n] = (ξ² + bias_scale²)·Π(1 − 2γ_k)² = {xi2:g}·Π(1 − 2γ_k)² for "
        "c_0 ~ N(0, bias_scale²); each trajectory is deterministic given c_0, so the Monte "
        "Carlo error is that of E[(c_0 − ξ)²] and the z-scores of one run are (nearly) equal "
        f"across steps. Checked where Π(1 − 2γ_k)² ≥ {DEAD_FLOOR:g} (float32 resolution).")
    return quantities, notes


def _divergence(cfg, ds):
    """Fraction of diverged members vs γ0, with Wilson intervals (reported only)."""
    d0 = cfg["input_dim"][0]
    quantities, notes = [], []
    for sched in cfg["schedule"]:
        onset = None
        for g0 in cfg["diverge_gamma0"]:
            div = ds.diverged_step.sel(alpha=SCHEDULES[sched], gamma0=g0).values
            n, k = div.size, int(np.sum(div >= 0))
            lo, hi = wilson_interval(k, n)
            p = k / n
            lo, hi = min(float(lo), p), max(float(hi), p)    # the ends may round past p̂
            quantities.append(quantity(
                "diverged_fraction", {"schedule": sched, "gamma0": g0, "input_dim": d0,
                                      "steps": cfg["diverge_steps"]},
                p, math.sqrt(p * (1 - p) / n), None, ci=(lo, hi),
                note=f"{k} of {n} members non-finite or with a parameter > "
                     f"{DIVERGENCE_BOUND:g} within {cfg['diverge_steps']} steps; 95% Wilson "
                     "interval; no prediction (the theorem asks for small enough steps)"))
            if onset is None and k:
                onset = g0
        notes.append(f"divergence sweep, d={d0}, schedule={sched}: "
                     + (f"first diverged members at gamma0={onset:g}" if onset is not None
                        else "no member diverged at any gamma0 of diverge_gamma0"))
    return quantities, notes


def _analyze(cfg, datasets) -> Outcome:
    quantities, notes = [], []
    for d in cfg["input_dim"]:
        q, n = _live(cfg, d, datasets[live_name(cfg, d)])
        quantities += q
        notes += n
    for part in (_dead(cfg, datasets["dead"]), _divergence(cfg, datasets["diverge"])):
        quantities += part[0]
        notes += part[1]
    notes.append("input_dim = 1: the risk is exact (piecewise-linear integration); input_dim "
                 f"> 1: the risk is the mean over {cfg['n_eval']} inputs drawn once per seed "
                 "(its error, risk_se, is independent across members and inside the "
                 "ensemble's standard error); the estimator and risk_se are checked against the "
                 "exact integral in d = 1 (sample_risk, risk_se_scale)")
    return Outcome(quantities, notes)


def _band(ds, sel):
    mean = ds.risk_mean.sel(sel).values
    se = np.sqrt(ds.risk_var.sel(sel).values / ds.risk_n.sel(sel).values)
    return mean, mean - 1.96 * se, mean + 1.96 * se


def _figures(results, summary):
    from matplotlib.figure import Figure

    from sgdlab.plots import plot_mean_band

    cfg = summary["config"]
    dims = cfg["input_dim"]
    dead = results["dead"]
    xi2 = cfg["target"] ** 2 + cfg["bias_scale"] ** 2
    rows = len(cfg["gamma0"])
    fig = Figure(figsize=(4.6 * (len(dims) + 1), 4.2 * rows), layout="constrained")
    axes = fig.subplots(rows, len(dims) + 1, squeeze=False)
    for r, g0 in enumerate(cfg["gamma0"]):
        for c, d in enumerate(dims):
            live = results[live_name(cfg, d)]
            steps = live.step.values
            keep = steps >= 1
            ax = axes[r, c]
            for i, sched in enumerate(cfg["schedule"]):
                m, lo, hi = _band(live, {"alpha": SCHEDULES[sched], "gamma0": g0})
                plot_mean_band(ax, steps[keep], m[keep], np.maximum(lo, m * 1e-3)[keep],
                               hi[keep], label=_LABELS[sched], color=f"C{i}")
            ax.set_xscale("log")
            ax.set_yscale("log")
            # a member on its way to divergence can dominate a mean for a few steps
            ax.set_ylim(top=30 * float(np.nanmax(live.risk_mean.values[..., 0])))
            ax.set_xlabel("SGD step n")
            ax.set_ylabel("E[risk]  E[(N(X) − ξ)²]")
            ax.set_title(f"d = {d}, ReLU net {'×'.join(map(str, _sizes(cfg, d)))}, "
                         f"γ0 = {g0:g}", fontsize=9)
            ax.legend(fontsize=7)
        ax_dead = axes[r, -1]
        steps = dead.step.values
        keep = steps >= 1
        fine = np.unique(np.round(np.geomspace(1, max(int(steps[-1]), 1), 400)).astype(np.int64))
        for i, sched in enumerate(cfg["schedule"]):
            alpha = SCHEDULES[sched]
            m, lo, hi = _band(dead, {"alpha": alpha, "gamma0": g0})
            ok = keep & (m > 0)
            plot_mean_band(ax_dead, steps[ok], m[ok], np.maximum(lo, m * 1e-3)[ok], hi[ok],
                           label=f"measured, {_LABELS[sched]}", color=f"C{i}")
            exact = xi2 * dead_factor(g0, alpha, cfg["n0"], fine)
            pos = exact > 0
            ax_dead.plot(fine[pos], exact[pos], "--", color="k", lw=0.9, alpha=0.8,
                         label="exact E[(c₀−ξ)²]·Π(1−2γ_k)²" if i == 0 else None)
            if sched == "inv_sq" and cfg["n0"] == 0:
                ax_dead.axhline(theory.dead_risk_inv_sq_limit(g0, 1.0) * xi2, color=f"C{i}",
                                ls=":", lw=1.2, label="n → ∞ plateau (Euler product)")
        ax_dead.set_xscale("log")
        ax_dead.set_yscale("log")
        ax_dead.axhspan(xi2 * DEAD_FLOOR * 1e-4, xi2 * DEAD_FLOOR, color="0.9", zorder=0,
                        label="not checked (float32 resolution of c_n)")
        ax_dead.set_ylim(xi2 * DEAD_FLOOR * 1e-4, xi2 * 3)
        ax_dead.set_xlabel("SGD step n")
        ax_dead.set_ylabel("E[risk] of the dead network")
        ax_dead.set_title(f"dead network (only the output bias moves), γ0 = {g0:g}", fontsize=9)
        ax_dead.legend(fontsize=7)
    fig.suptitle(f"Constant target ξ = {cfg['target']:g}: SGD risk under step-size schedules "
                 "γ0/(n+n0)^α (95% bands)")
    figures = {"risk_vs_step": fig}
    if "diverge" in results:
        div = results["diverge"]
        fig2 = Figure(figsize=(6.4, 4.4), layout="constrained")
        ax = fig2.subplots()
        g = np.asarray(cfg["diverge_gamma0"], float)
        for i, sched in enumerate(cfg["schedule"]):
            steps_div = div.diverged_step.sel(alpha=SCHEDULES[sched]).values   # [gamma0, seed]
            k = np.sum(steps_div >= 0, axis=-1)
            n = steps_div.shape[-1]
            lo, hi = wilson_interval(k, n)
            p = k / n
            err = np.maximum([p - lo, hi - p], 0.0)     # Wilson ends may round past p
            ax.errorbar(g * (1 + 0.02 * (i - 1.5)), p, yerr=err, fmt="o-",
                        ms=4, capsize=3, color=f"C{i}", label=_LABELS[sched])
        ax.set_xscale("log")
        ax.set_xlabel("γ0")
        ax.set_ylabel("fraction of members diverged")
        ax.set_title(f"d = {dims[0]}: divergence within {cfg['diverge_steps']} steps "
                     "(95% Wilson intervals)", fontsize=9)
        ax.legend(fontsize=8)
        figures["divergence"] = fig2
    return figures


register(Experiment(
    name="constant-target", study="1",
    title="deep ReLU nets on a constant target: E[risk] → 0 for non-summable steps "
          "(Hutzenthaler et al.)",
    params=(
        Param("depth", int, 2, "hidden layers", low=1),
        Param("width", int, 8, "units per hidden layer", low=1),
        Param("input_dim", int, [1, 2, 4], "input dimensions d, one study each (d = 1: "
              "exact risk; d > 1: an evaluation sample per seed)", list=True, low=1),
        Param("target", float, 1.0, "the constant target ξ"),
        Param("batch_size", int, 1, "fresh i.i.d. inputs per step", low=1),
        Param("schedule", str, list(SCHEDULES), "step-size schedules γ0/(n+n0)^α: constant "
              "(α=0), inv_sqrt (½), inv (1), inv_sq (2, summable)", list=True,
              choices=tuple(SCHEDULES)),
        Param("gamma0", float, [0.1], "γ0 (swept in the grid); the claims are checked at "
              "each, so large values fail them (see diverge_gamma0)", list=True, low=0.0,
              high=10.0, low_open=True),
        Param("n0", float, 0.0, "offset n0 of the schedules", low=0.0),
        Param("box", float, [0.0, 1.0], "input box low,high (inputs uniform on box^d)",
              list=True),
        Param("bias_scale", float, 0.5, "initial biases ~ N(0, bias_scale²); the law of the "
              "output bias c_0", low=0.0, low_open=True),
        Param("n_eval", int, 2048, "evaluation sample per seed (the risk in d > 1; the check "
              "of that estimator in d = 1)", low=2),
        Param("records", int, 17, "log-spaced record steps", low=3),
        Param("steps", int, 10000, "SGD steps per member (≥ 10: the exponent uses the last "
              "decade)", low=10),
        Param("seeds", int, 512, "members per schedule and dimension (live network)", low=2),
        Param("dead_seeds", int, 512, "members per schedule (dead network)", low=2),
        Param("diverge_gamma0", float, [0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0],
              "γ0 of the divergence sweep (fraction diverged, reported)", list=True, low=0.0,
              high=10.0, low_open=True),
        Param("diverge_steps", int, 500, "SGD steps of the divergence sweep", low=1),
        Param("diverge_seeds", int, 256, "members per point of the divergence sweep", low=2),
    ),
    presets={
        "quick": {},
        "paper": {"depth": 3, "width": 16, "gamma0": [0.05, 0.1], "records": 31,
                  "steps": 100000, "seeds": 20480, "dead_seeds": 4096, "n_eval": 16384,
                  "diverge_seeds": 4096, "diverge_steps": 10000},
    },
    studies=_studies, analyze=_analyze, figures=_figures, validate=_validate,
))
