"""Study 1: SGD on deep ReLU networks with a constant target and non-summable step sizes.

Hutzenthaler, Jentzen, Pohl, Riekert & Scarpa, "Convergence proof for stochastic
gradient descent in the training of deep neural networks with ReLU activation for
constant target functions", arXiv:2112.07369 (2021).

``constant-target`` trains a fully connected ReLU network (ReLU'(0) = 0) on the
constant ξ with fresh uniform inputs on a box, plain SGD with the schedules
``γ_n = γ0/(n + n0)^α`` for α = 0 (constant), ½, 1 (non-summable) and 2
(summable), all in one compiled grid. It reports

* ``risk``: the ensemble mean of the population risk ``E[(N(X) − ξ)²]`` (exact
  for ``input_dim = 1``) at log-spaced steps, with no prediction (the theorem
  gives a limit, not a curve);
* ``risk_final`` and ``risk_exponent``: the last value and the local power-law
  exponent over the last decade of steps, the evidence for ``E[risk] → 0``
  (stated as a criterion in the notes, not as a prediction);
* ``dead_risk``: the dead network (every hidden unit inactive on the box, only
  the output bias c moves), whose risk is exactly
  ``(c_0 − ξ)² Π_{k≤n}(1 − 2γ_k)²``; with ``c_0 ~ N(0, bias_scale²)`` the
  prediction ``E[L_n] = (ξ² + bias_scale²) Π(1 − 2γ_k)²`` is checked at each record step.
"""

from __future__ import annotations

import math

import numpy as np

from sgdlab import engine, models, theory
from sgdlab._validate import fail
from sgdlab.experiments import Experiment, Outcome, Param, quantity, register
from sgdlab.optim import Optimizer
from sgdlab.problems import constant_target

SCHEDULES = {"constant": 0.0, "inv_sqrt": 0.5, "inv": 1.0, "inv_sq": 2.0}
"""Schedule name -> α of γ_n = γ0/(n + n0)^α."""
_LABELS = {"constant": "γ0 (constant)", "inv_sqrt": "γ0/√n", "inv": "γ0/n",
           "inv_sq": "γ0/n² (summable)"}
DEAD_FLOOR = 1e-6
"""dead_risk is checked where Π(1 − 2γ_k)² ≥ DEAD_FLOOR: there |c_n − ξ| ≥ 10⁻³|c_0 − ξ|,
thousands of float32 rounding units of c_n, so rounding is far below the Monte Carlo error."""
MAX_KINKS = 16384


def _sizes(cfg) -> tuple[int, ...]:
    return (cfg["input_dim"],) + (cfg["width"],) * cfg["depth"] + (1,)


def _validate(cfg):
    if len(set(cfg["schedule"])) != len(cfg["schedule"]):
        fail("schedule", cfg["schedule"], "expected distinct schedules")
    if len(set(cfg["gamma0"])) != len(cfg["gamma0"]):
        fail("gamma0", cfg["gamma0"], "expected distinct values")
    if len(cfg["box"]) != 2 or not cfg["box"][0] < cfg["box"][1]:
        fail("box", cfg["box"], "expected two numbers low,high with low < high")
    if cfg["input_dim"] == 1:
        bound = models.kink_bound(_sizes(cfg))
        if bound > MAX_KINKS:
            fail("width", cfg["width"], f"the exact 1-D risk needs up to {bound} kinks for depth="
                 f"{cfg['depth']}; at most {MAX_KINKS} are supported: lower width or depth")


def _problem(cfg, dead: bool):
    sizes = _sizes(cfg)
    max_kinks = models.kink_bound(sizes) if cfg["input_dim"] == 1 else None
    return constant_target(sizes, target_value=cfg["target"], box=tuple(cfg["box"]),
                           batch_size=cfg["batch_size"], bias_scale=cfg["bias_scale"],
                           dead=dead, n_eval=cfg["n_eval"], max_kinks=max_kinks)


def _hparams(cfg) -> dict:
    return {"alpha": [SCHEDULES[s] for s in cfg["schedule"]], "gamma0": cfg["gamma0"],
            "n0": cfg["n0"]}


def _studies(cfg, seed):
    observe = ("risk",) if cfg["input_dim"] == 1 else ("risk", "risk_se")
    opt = Optimizer("sgd", schedule="power")
    live = engine.Study(
        _problem(cfg, dead=False), opt, _hparams(cfg), steps=cfg["steps"], seeds=cfg["seeds"],
        seed=seed, observe=engine.Observe(observe, at="log", num=cfg["records"], members=True))
    dead = engine.Study(
        _problem(cfg, dead=True), opt, _hparams(cfg), steps=cfg["steps"],
        seeds=cfg["dead_seeds"],
        seed=seed, observe=engine.Observe(("risk",), at="log", num=cfg["records"],
                                          members=False))
    return {"live": live, "dead": dead}


def dead_factor(gamma0: float, alpha: float, n0: float, steps) -> np.ndarray:
    """Π_{k≤n}(1 − 2γ_k)² at each n of ``steps`` (the dead-network risk per unit (c_0 − ξ)²)."""
    return np.asarray(theory.dead_network_risk_schedule(1.0, gamma0, alpha, n0,
                                                        np.asarray(steps, dtype=np.int64)))


def last_decade_exponent(values: np.ndarray, steps: np.ndarray) -> tuple[float, float, int, int]:
    """Local power-law exponent of the ensemble mean over the last decade of record steps.

    ``p = ln(m_N / m_a) / ln(N / a)``, with ``m`` the mean over members of ``values``
    (``[member, step]``), N the last record step and a the record step nearest N/10.
    The standard error is the delta method over independent members, with the
    covariance of the two means taken into account (the same members at both steps).

    Returns:
      ``(p, se, a, N)``.
    """
    steps = np.asarray(steps)
    n_last = int(steps[-1])
    pos = steps[steps > 0]
    a = int(pos[np.argmin(np.abs(np.log(pos) - math.log(n_last / 10)))])
    ia, ib = int(np.flatnonzero(steps == a)[0]), len(steps) - 1
    v = values[np.all(np.isfinite(values[:, [ia, ib]]), axis=1)]
    m_a, m_b = v[:, ia].mean(), v[:, ib].mean()
    span = math.log(n_last / a)
    p = math.log(m_b / m_a) / span
    u = v[:, ib] / m_b - v[:, ia] / m_a
    se = float(np.std(u, ddof=1) / math.sqrt(len(u)) / span)
    return p, se, a, n_last


def _analyze(cfg, datasets) -> Outcome:
    live, dead = datasets["live"], datasets["dead"]
    steps = live.step.values
    xi2 = cfg["target"] ** 2 + cfg["bias_scale"] ** 2
    quantities, notes = [], []
    for sched in cfg["schedule"]:
        alpha = SCHEDULES[sched]
        summable = alpha > 1
        for g0 in cfg["gamma0"]:
            coords = {"schedule": sched, "gamma0": g0}
            sel = {"alpha": alpha, "gamma0": g0}
            mean = live.risk_mean.sel(sel).values
            se = np.sqrt(live.risk_var.sel(sel).values / live.risk_n.sel(sel).values)
            why = ("no closed form for a live network; the theorem gives the limit "
                   "E[risk] → 0 (non-summable steps), not the curve")
            for n, m, s in zip(steps, mean, se, strict=True):
                quantities.append(quantity("risk", {**coords, "step": int(n)}, m, s, None,
                                           note=why))
            members = live.risk.sel(sel).values                      # [seed, step]
            alive = live.diverged_step.sel(sel).values < 0
            p, p_se, a, n_last = last_decade_exponent(members[alive], steps)
            ci = (p - 1.96 * p_se, p + 1.96 * p_se)
            falling = ci[1] < 0
            drop = (mean[0] - mean[-1]) / math.hypot(se[0], se[-1])
            if summable:
                crit = (f"summable (Σγ_k < ∞): outside the theorem; the parameters converge and "
                        f"the risk stalls above 0 (exponent over steps {a}..{n_last}: "
                        f"{p:.3g}, 95% CI [{ci[0]:.3g}, {ci[1]:.3g}])")
            else:
                ok = falling and drop > 4
                crit = ("criterion for E[risk] → 0: the risk at the last step is below the "
                        "initial risk by > 4 SE and the local exponent over the last decade "
                        f"(steps {a}..{n_last}) has a 95% CI below 0: drop = {drop:.1f} SE, "
                        f"exponent {p:.3g} [{ci[0]:.3g}, {ci[1]:.3g}] -> "
                        + ("met" if ok else "NOT met"))
                notes.append(f"schedule={sched}, gamma0={g0:g}: " + crit)
            quantities.append(quantity("risk_final", coords, mean[-1], se[-1], None, note=crit))
            quantities.append(quantity(
                "risk_exponent", {**coords, "steps": [a, n_last]}, p, p_se, None, ci=ci,
                note="local power-law exponent ln(E[L_N]/E[L_a])/ln(N/a), delta-method SE "
                     "over members; no closed form for a live network"))
            n_div = int(live.n_diverged.sel(sel).values)
            if n_div:
                notes.append(f"schedule={sched}, gamma0={g0:g}: {n_div} of {cfg['seeds']} live "
                             "members diverged (left out)")
            # the dead network: exact
            f = dead_factor(g0, alpha, cfg["n0"], steps)
            dmean = dead.risk_mean.sel(sel).values
            dse = np.sqrt(dead.risk_var.sel(sel).values / dead.risk_n.sel(sel).values)
            for n, fn, m, s in zip(steps, f, dmean, dse, strict=True):
                if fn >= DEAD_FLOOR:
                    quantities.append(quantity("dead_risk", {**coords, "step": int(n)}, m, s,
                                               xi2 * fn))
    notes.append(
        "dead_risk: only the output bias moves, c_n − ξ = Π(1 − 2γ_k)(c_0 − ξ) exactly, so "
        f"E[L_n] = (ξ² + bias_scale²)·Π(1 − 2γ_k)² = {xi2:g}·Π(1 − 2γ_k)² for "
        "c_0 ~ N(0, bias_scale²); each trajectory is deterministic given c_0, so the Monte "
        "Carlo error is that of E[(c_0 − ξ)²] and the z-scores of one run are (nearly) equal "
        f"across steps. Checked where Π(1 − 2γ_k)² ≥ {DEAD_FLOOR:g} (float32 resolution).")
    if cfg["input_dim"] > 1:
        rse = float(np.nanmax(live.risk_se_mean.values))
        notes.append(f"input_dim > 1: risk from a fixed sample of {cfg['n_eval']} inputs; its "
                     f"standard error (a bias common to all members) is at most {rse:.3g}")
    else:
        notes.append("input_dim = 1: the risk is exact (piecewise-linear integration)")
    return Outcome(quantities, notes)


def _band(ds, sel):
    mean = ds.risk_mean.sel(sel).values
    se = np.sqrt(ds.risk_var.sel(sel).values / ds.risk_n.sel(sel).values)
    return mean, mean - 1.96 * se, mean + 1.96 * se


def _figures(results, summary):
    from matplotlib.figure import Figure

    from sgdlab.plots import plot_mean_band

    cfg = summary["config"]
    live, dead = results["live"], results["dead"]
    steps = live.step.values
    keep = steps >= 1
    xi2 = cfg["target"] ** 2 + cfg["bias_scale"] ** 2
    rows = len(cfg["gamma0"])
    fig = Figure(figsize=(12, 4.4 * rows), layout="constrained")
    axes = fig.subplots(rows, 2, squeeze=False)
    fine = np.unique(np.round(np.geomspace(1, max(int(steps[-1]), 1), 400)).astype(np.int64))
    for r, g0 in enumerate(cfg["gamma0"]):
        ax_live, ax_dead = axes[r]
        for i, sched in enumerate(cfg["schedule"]):
            alpha = SCHEDULES[sched]
            sel = {"alpha": alpha, "gamma0": g0}
            color = f"C{i}"
            m, lo, hi = _band(live, sel)
            plot_mean_band(ax_live, steps[keep], m[keep], np.maximum(lo, m * 1e-3)[keep],
                           hi[keep], label=_LABELS[sched], color=color)
            m, lo, hi = _band(dead, sel)
            ok = keep & (m > 0)
            plot_mean_band(ax_dead, steps[ok], m[ok], np.maximum(lo, m * 1e-3)[ok], hi[ok],
                           label=f"measured, {_LABELS[sched]}", color=color)
            exact = xi2 * dead_factor(g0, alpha, cfg["n0"], fine)
            pos = exact > 0
            ax_dead.plot(fine[pos], exact[pos], "--", color="k", lw=0.9, alpha=0.8,
                         label="exact E[(c₀−ξ)²]·Π(1−2γ_k)²" if i == 0 else None)
            if sched == "inv_sq" and cfg["n0"] == 0:
                ax_dead.axhline(theory.dead_risk_inv_sq_limit(g0, 1.0) * xi2, color=color,
                                ls=":", lw=1.2, label="n → ∞ plateau (Euler product)")
        ax_live.set_xscale("log")
        ax_live.set_yscale("log")
        ax_live.set_xlabel("SGD step n")
        ax_live.set_ylabel("E[risk]  E[(N(X) − ξ)²]")
        ax_live.set_title(f"ReLU net {'×'.join(map(str, _sizes(cfg)))}, γ0 = {g0:g} "
                          "(95% bands)")
        ax_live.legend(fontsize=8)
        ax_dead.set_xscale("log")
        ax_dead.set_yscale("log")
        ax_dead.axhspan(xi2 * DEAD_FLOOR * 1e-4, xi2 * DEAD_FLOOR, color="0.9", zorder=0,
                        label="not checked (float32 resolution of c_n)")
        ax_dead.set_ylim(xi2 * DEAD_FLOOR * 1e-4, xi2 * 3)
        ax_dead.set_xlabel("SGD step n")
        ax_dead.set_ylabel("E[risk] of the dead network")
        ax_dead.set_title(f"dead network (only the output bias moves), γ0 = {g0:g}")
        ax_dead.legend(fontsize=7)
    fig.suptitle(f"Constant target ξ = {cfg['target']:g}: SGD risk under step-size schedules "
                 "γ0/(n+n0)^α")
    return {"risk_vs_step": fig}


register(Experiment(
    name="constant-target", study="1",
    title="deep ReLU nets on a constant target: E[risk] → 0 for non-summable steps "
          "(Hutzenthaler et al.)",
    params=(
        Param("depth", int, 2, "hidden layers", low=1),
        Param("width", int, 8, "units per hidden layer", low=1),
        Param("input_dim", int, 1, "input dimension d (d = 1: exact risk)", low=1),
        Param("target", float, 1.0, "the constant target ξ"),
        Param("batch_size", int, 1, "fresh i.i.d. inputs per step", low=1),
        Param("schedule", str, list(SCHEDULES), "step-size schedules γ0/(n+n0)^α: constant "
              "(α=0), inv_sqrt (½), inv (1), inv_sq (2, summable)", list=True,
              choices=tuple(SCHEDULES)),
        Param("gamma0", float, [0.1], "γ0 (swept in the grid)", list=True, low=0.0, high=0.5,
              low_open=True),
        Param("n0", float, 0.0, "offset n0 of the schedules", low=0.0),
        Param("box", float, [0.0, 1.0], "input box low,high (inputs uniform on box^d)",
              list=True),
        Param("bias_scale", float, 0.5, "initial biases ~ N(0, bias_scale²); the law of the "
              "output bias c_0", low=0.0, low_open=True),
        Param("n_eval", int, 16384, "evaluation sample for the risk when input_dim > 1", low=1),
        Param("records", int, 17, "log-spaced record steps", low=3),
        Param("steps", int, 10000, "SGD steps per member (≥ 10: the exponent uses the last "
              "decade)", low=10),
        Param("seeds", int, 1024, "members per schedule (live network)", low=2),
        Param("dead_seeds", int, 512, "members per schedule (dead network)", low=2),
    ),
    presets={
        "quick": {},
        "paper": {"depth": 3, "width": 16, "gamma0": [0.05, 0.1], "records": 31,
                  "steps": 100000, "seeds": 20480, "dead_seeds": 4096},
    },
    studies=_studies, analyze=_analyze, figures=_figures, validate=_validate,
))
