"""Study 5's splitting estimator: flux × adaptive multilevel splitting per cell.

``estimator=splitting`` of the escape experiment (:mod:`sgdlab.experiments.escape`):
the mean escape time of each Gaussian-noise cell from :func:`sgdlab.splitting.estimate`
(its own compiled programs, run from ``analyze`` with the run's seed), checked against
the same exact Nyström oracle as the brute-force estimator, and its figure.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import numpy as np

from sgdlab import splitting
from sgdlab._validate import fail
from sgdlab.experiments import Outcome, quantity
from sgdlab.experiments import _escape_chain as chain
from sgdlab.optim import Optimizer
from sgdlab.problems import Observation, potential_fns

ESTIMATORS = ("brute", "splitting")
"""Values of the ``estimator`` parameter."""


def abs_score(o):
    import jax.numpy as jnp
    return jnp.abs(o.params)


def w_score(o):
    return o.params


_, _double_well_dU = potential_fns("double-well")


def drift_score(o):
    """The double well's noiseless next position w − λU'(w) (U' from ``potential_fns``)."""
    w = o.params
    return w - o.hp["learning_rate"] * _double_well_dU(w)


def far_left_point(lr, threshold: float = 0.0):
    """The double well's far-left point w_L < −1 whose noiseless step lands on the
    threshold: w_L − λU'(w_L) = θ (JAX-traceable in ``lr``). Newton from a start left
    of the root, −1 − 3/√λ − (|θ|/λ)^⅓, where h(w) = w − λ(w³ − w) − θ is convex and
    decreasing, so the iterates rise monotonically to it."""
    import jax
    import jax.numpy as jnp

    d2U = jax.grad(_double_well_dU)

    def newton(_, w):
        return w - (w - lr * _double_well_dU(w) - threshold) / (1.0 - lr * d2U(w))
    start = -1.0 - 3.0 / jnp.sqrt(lr) - (abs(threshold) / lr) ** (1.0 / 3.0)
    return jax.lax.fori_loop(0, 60, newton, jnp.asarray(start, jnp.result_type(float)))


@functools.cache
def nearest_score(threshold: float = 0.0):
    """The double well's score "nearer escape point": max(w, θ + w_L − w), i.e. θ minus
    the distance to the nearer of the two points from which a step escapes: the
    threshold θ itself, and w_L (:func:`far_left_point`), which the drift throws onto
    θ. Linear in position, so a sub-kick moves it as much as the kick, and two-sided,
    so a state a large kick has thrown far left is not inside the basin."""
    def nearer_escape_point(o):
        import jax.numpy as jnp
        w = o.params
        return jnp.maximum(w, threshold + far_left_point(o.hp["learning_rate"], threshold) - w)
    return nearer_escape_point


SCORES = ("auto", "position", "drift", "nearest")
"""Values of the ``score`` parameter."""

TRIALS_FROM = ("auto",) + splitting.TRIALS_FROM
"""Values of the ``trials_from`` parameter."""


DOUBLE_WELL_CURVATURE = 2.0
"""U'' at the double well's minimum w = −1 (U = (w² − 1)²/4)."""


def oscillates(kind: str, lr: float | None) -> bool:
    """The double well's minimum oscillates under the noiseless step: λU'' > 1."""
    return kind == "double-well" and lr is not None and lr * DOUBLE_WELL_CURVATURE > 1


def score_fn(kind: str, choice: str = "position", lr: float | None = None,
             threshold: float = 0.0):
    """The reaction coordinate: |w| for the sharp well; w, its drift image, or the
    nearer escape point for the double well (``choice``). ``auto`` takes the nearer
    escape point where the minimum oscillates (λU'' > 1 at learning rate ``lr``: there
    the escape is one large kick far left, which the drift throws past the barrier),
    w elsewhere (RESULTS.md compares them)."""
    if kind == "sharp-well" or choice == "position":
        return abs_score if kind == "sharp-well" else w_score
    if choice == "drift":
        return drift_score
    if choice == "nearest" or oscillates(kind, lr):
        return nearest_score(float(threshold))
    return w_score


def trials_from(cfg, lr: float) -> str:
    """Where the AMS trials start: ``auto`` takes the basin states where the double
    well's minimum oscillates with score ``auto`` or ``nearest`` (the escape there is
    one kick from the basin, so the crossing states' overshoot would carry it), the
    crossing states elsewhere."""
    if cfg["trials_from"] != "auto":
        return cfg["trials_from"]
    if cfg["potential"] == "double-well" and (
            cfg["score"] == "nearest" or (cfg["score"] == "auto" and oscillates(
                cfg["potential"], lr))):
        return "basin"
    return "crossing"


def score_label(kind: str, choice: str) -> str:
    if kind == "sharp-well":
        return "|w|"
    return {"position": "w", "drift": "w − λU'(w)",
            "nearest": "max(w, θ + w_L − w)",
            "auto": "w, or max(w, θ + w_L − w) where λU'' > 1"}[choice]


def score_at(cfg, lr: float | None, w: float) -> float:
    """The score of ``cfg`` at learning rate ``lr`` evaluated at position ``w``: the same
    function the AMS runs, so a level set from it cannot drift from the score."""
    import jax.numpy as jnp
    fn = score_fn(cfg["potential"], cfg["score"], lr, cfg["threshold"])
    o = Observation(jnp.asarray(w, jnp.result_type(float)), None, None, None, None, 0,
                    {"learning_rate": lr}, None)
    return float(fn(o))


def levels(cfg, lr: float | None = None) -> tuple[float, float]:
    """``(basin level z_A, target z_B)`` in score units: ``basin`` of the way from the
    score of the minimum to the target (the learning rate ``lr`` sets the nearer
    escape point's score)."""
    top = cfg["wall"] if cfg["potential"] == "sharp-well" else cfg["threshold"]
    lo = score_at(cfg, lr, chain.minimum(cfg["potential"]))
    return lo + cfg["basin"] * (top - lo), top


def start_score(cfg, lr: float | None = None) -> float:
    return score_at(cfg, lr, chain.minimum(cfg["potential"]) + cfg["start"])


def budget_of(cfg) -> splitting.Budget:
    return splitting.Budget(
        replicas=cfg["replicas"], walkers=cfg["walkers"], flux_steps=cfg["flux_steps"],
        burn_in=cfg["burn_in"], particles=cfg["particles"], kill_fraction=cfg["kill_fraction"],
        levels=cfg["levels"], substeps=cfg["substeps"], max_trial_steps=cfg["max_trial_steps"],
        target_rel_se=cfg["target_rel_se"] or None,
        max_replicas=max(cfg["max_replicas"], cfg["replicas"]),
        trials_from="crossing" if cfg["trials_from"] == "auto" else cfg["trials_from"])


def validate(cfg) -> None:
    """The checks of ``estimator=splitting`` (beside those of every escape run)."""
    if cfg["batch_size"] != [1]:
        fail("batch_size", cfg["batch_size"], "estimator=splitting supports batch_size=1 "
             "(Gaussian gradient noise) only")
    for lr in cfg["learning_rate"]:
        zA, _ = levels(cfg, lr)
        z0 = start_score(cfg, lr)
        if not z0 < zA:
            fail("basin", cfg["basin"], f"the start's score {z0:g} must lie "
                 f"below the basin level {zA:g} (learning_rate={lr:g}): raise basin or move "
                 "start")
    if cfg["score"] == "nearest" and cfg["potential"] == "sharp-well":
        fail("score", "nearest", "the sharp well's score |w| is already the distance to its "
             "nearer wall; use score=position")
    if cfg["score"] == "drift" and cfg["potential"] == "sharp-well":
        fail("score", "drift", "the sharp well's drift image (1 − λa)|w| loses the position at "
             "λa = 1; use score=position (|w|)")
    if cfg["max_replicas"] < cfg["replicas"] and cfg["target_rel_se"] > 0:
        fail("max_replicas", cfg["max_replicas"], f"expected at least replicas={cfg['replicas']}")
    if cfg["burn_in"] >= cfg["flux_steps"]:
        fail("burn_in", cfg["burn_in"], f"expected fewer than flux_steps={cfg['flux_steps']}")


def analyze(cfg, datasets: dict, seed: int, checkpoint_dir=None) -> Outcome:
    """Flux × adaptive multilevel splitting per cell (:mod:`sgdlab.splitting`).

    ``mfpt`` (equal, 4 SE of the replicas, delta method) against the oracle's
    uncensored τ; ``inverse_mfpt`` (covers: the replicas' t interval) against 1/τ;
    ``inverse_mfpt_brute`` (covers) the escapes of the flux walkers (brute force with
    recycling) against 1/τ where they saw ≥ MIN_EVENTS escapes; ``escape_probability``
    per attempt (crossing of the basin level) reported; ``arrhenius_slope`` (covers)
    of ln mfpt against the same fit through the oracle's ln τ.

    The per-replica results are added to ``datasets`` as the dataset ``splitting``
    (dims cell × replica), so that they are stored in results.zarr with the run.
    With ``checkpoint_dir`` (``sgdlab run`` passes the run's state directory) every
    cell checkpoints its finished chunks of replicas (a quarter of them each), so a
    killed run resumes to the same bits.
    """
    import xarray as xr

    problem = chain.problem(cfg)
    budget = budget_of(cfg)
    quantities, notes, rows, raw = [], [], [], []
    lrs = cfg["learning_rate"]
    level = {lr: levels(cfg, lr) for lr in lrs}
    zAs = ", ".join(f"{level[lr][0]:.4g}" for lr in lrs)
    starts = ", ".join(trials_from(cfg, lr) for lr in lrs)
    notes.append(f"estimator=splitting: score {score_label(cfg['potential'], cfg['score'])}, basin "
                 f"level {zAs} (per learning rate), target {level[lrs[0]][1]:g}; trials "
                 f"from the {starts} states; {budget.replicas} replicas × ({budget.walkers} "
                 f"flux walkers × {budget.flux_steps} steps, {budget.particles} AMS particles, "
                 f"{budget.levels} levels, {budget.substeps} sub-kick(s) per step)"
                 + (f"; a second stage of replicas toward relative SE {budget.target_rel_se:g} "
                    f"(at most {budget.max_replicas})" if budget.target_rel_se else ""))
    chunk = -(-budget.replicas // 4) if checkpoint_dir is not None else None
    for i, cell in enumerate(chain.cells(cfg)):
        tau = chain.tau_only(cfg, cell)
        ckpt = None if checkpoint_dir is None else Path(checkpoint_dir) / f"splitting_{i}.npz"
        score = score_fn(cfg["potential"], cfg["score"], cell.lr, cfg["threshold"])
        zA, zB = level[cell.lr]
        res = splitting.estimate(problem, Optimizer("sgd"),
                                 {"learning_rate": cell.lr, "noise_std": math.sqrt(cell.s2)},
                                 score=score, basin=zA, target=zB,
                                 budget=dataclasses.replace(
                                     budget, trials_from=trials_from(cfg, cell.lr)),
                                 seed=seed, chunk=chunk, checkpoint=ckpt)
        m, inv, pr, br = res.mfpt, res.inverse_mfpt, res.probability, res.brute_rate
        raw.append(res)
        quantities.append(quantity(
            "mfpt", cell.coords, m.value, m.se, tau, criterion="equal", oracle="nystrom",
            note=f"splitting; 95% interval [{m.lo:.4g}, {m.hi:.4g}]; uncensored τ"))
        quantities.append(quantity(
            "inverse_mfpt", cell.coords, inv.value, inv.se, 1.0 / tau, ci=(inv.lo, inv.hi),
            criterion="covers", oracle="nystrom", note="splitting: flux × AMS probability",
            dof=res.rate.size - 1))
        quantities.append(quantity("escape_probability", cell.coords, pr.value, pr.se,
                                   ci=(pr.lo, pr.hi),
                                   note="per crossing of the basin level (reported only)"))
        n_esc = int(np.sum(res.escapes))
        if n_esc >= chain.MIN_EVENTS:
            quantities.append(quantity(
                "inverse_mfpt_brute", cell.coords, br.value, br.se, 1.0 / tau,
                ci=(br.lo, br.hi), criterion="covers", oracle="nystrom",
                note=f"brute force: {n_esc} escapes of the recycled flux walkers",
                dof=res.rate.size - 1))
        rel = m.se / m.value
        cost = res.member_steps * rel**2
        rows.append({**cell.coords, "noise_var": cell.s2, "tau": tau, "mfpt": m.value,
                     "mfpt_se": m.se, "mfpt_lo": m.lo, "mfpt_hi": m.hi,
                     "inverse_mfpt": inv.value, "inverse_mfpt_se": inv.se,
                     "probability": pr.value, "probability_se": pr.se,
                     "brute_rate": br.value, "brute_rate_se": br.se, "brute_escapes": n_esc,
                     "member_steps": res.member_steps, "seconds": res.seconds,
                     "cost_per_unit_relvar": cost, "brute_cost_per_unit_relvar": tau,
                     "iterations_mean": float(np.mean(res.iterations)),
                     "replicas": int(res.rate.size), "direct": res.direct.value,
                     "direct_se": res.direct.se})
    cells = chain.cells(cfg)
    n_rep = max(r.rate.size for r in raw)  # cells may differ with target_rel_se (NaN pad)

    def padded(k):
        return np.stack([np.pad(np.asarray(getattr(r, k), float), (0, n_rep - r.rate.size),
                                constant_values=np.nan) for r in raw])

    datasets["splitting"] = xr.Dataset(
        {k: (("cell", "replica"), padded(k))
         for k in ("rate", "prob", "crossings", "escapes", "iterations")},
        coords={"learning_rate": ("cell", [c.lr for c in cells]),
                "barrier_over_temperature": ("cell", [c.x for c in cells])},
        attrs={"walker_steps": raw[0].walker_steps, "seed": seed})
    arrhenius = []
    xs = cfg["barrier_over_temperature"]
    if not chain.fixed_noise(cfg) and len(xs) >= 3:
        for lr in cfg["learning_rate"]:
            row = [r for r in rows if r["learning_rate"] == lr]
            x = np.array([r["barrier_over_temperature"] for r in row])
            mm = np.array([r["mfpt"] for r in row])
            e = np.array([r["mfpt_se"] for r in row])
            tau = np.array([r["tau"] for r in row])
            coords = {"learning_rate": lr, "batch_size": 1}
            slope, se, lo, hi, a = chain.fit_slope(x, mm, e)
            pred, _, _, _, a_pred = chain.fit_slope(x, tau, tau * e / mm)
            quantities.append(quantity(
                "arrhenius_slope", coords, slope, se, pred, ci=(lo, hi), oracle="nystrom",
                note="independent-errors SE (replicas share keys across barriers)"))
            arrhenius.append({**coords, "slope": slope, "se": se, "lo": lo, "hi": hi,
                              "intercept": a, "predicted": pred, "predicted_intercept": a_pred})
    return Outcome(quantities, notes, {"barrier": chain.barrier(cfg), "cells": rows,
                                       "arrhenius": arrhenius,
                                       "curves": curves(cfg)})


def curves(cfg) -> dict:
    """Oracle ln τ on a fine grid of ΔL/T per learning rate (for the escape figure)."""
    out = {"mfpt_vs_x": []}
    if chain.fixed_noise(cfg):
        return out
    xs = np.asarray(cfg["barrier_over_temperature"])
    dL = chain.barrier(cfg)
    xg = np.linspace(min(xs.min(), 3.0), max(xs.max(), 3.0), 12)
    for lr in cfg["learning_rate"]:
        taus = [chain.tau_only(cfg, chain.Cell(1, -1, -1, lr, float(x), 2 * dL / (lr * x)))
                for x in xg]
        out["mfpt_vs_x"].append({"learning_rate": lr, "barrier_over_temperature": xg.tolist(),
                                 "tau": taus})
    return out


def figures(summary):
    from matplotlib.figure import Figure

    cfg = summary["config"]
    rows = summary["cells"]
    fig = Figure(figsize=(12.5, 5.0), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    for i, lr in enumerate(cfg["learning_rate"]):
        c = f"C{i}"
        pts = [r for r in rows if r["learning_rate"] == lr]
        x = np.array([r["barrier_over_temperature"] for r in pts])
        m = np.array([r["mfpt"] for r in pts])
        lo = np.array([r["mfpt_lo"] for r in pts])
        hi = np.array([r["mfpt_hi"] for r in pts])
        ax1.errorbar(x, np.log(m), yerr=[np.log(m) - np.log(lo), np.log(hi) - np.log(m)],
                     fmt="o", color=c, capsize=3, ms=5, label=f"splitting, λ = {lr:g} (95%)")
        b = [r for r in pts if r["brute_escapes"] >= chain.MIN_EVENTS]
        if b:
            xb = np.array([r["barrier_over_temperature"] for r in b])
            rb = np.array([r["brute_rate"] for r in b])
            eb = np.array([r["brute_rate_se"] for r in b])
            ax1.errorbar(xb + 0.15, -np.log(rb), yerr=2 * eb / rb, fmt="s", mfc="none",
                         color=c, capsize=2, ms=5)
        cur = next((cv for cv in summary["curves"]["mfpt_vs_x"] if cv["learning_rate"] == lr),
                   None)
        if cur is not None:
            ax1.plot(cur["barrier_over_temperature"], np.log(cur["tau"]), "-", color=c,
                     alpha=0.6, lw=2)
        ax2.errorbar(x, m / np.array([r["tau"] for r in pts]) - 1,
                     yerr=2 * np.array([r["mfpt_se"] for r in pts]) / np.array(
                         [r["tau"] for r in pts]), fmt="o", color=c, capsize=3, ms=5,
                     label=f"λ = {lr:g}")
    ax1.plot([], [], "k-", alpha=0.6, lw=2, label="Nyström oracle ln τ")
    ax1.plot([], [], "ks", mfc="none", label="brute force (flux walkers, ±2 SE)")
    ax1.set_xlabel("ΔL/T  (T = λσ²/2)")
    ax1.set_ylabel("ln(mean escape time / steps)")
    where = (f"sharp well, a = {cfg['curvature']:g}" if cfg["potential"] == "sharp-well"
             else "double well")
    ax1.set_title(f"{where}: splitting vs the exact oracle")
    ax1.legend(fontsize=7)
    ax2.axhline(0, color="k", lw=1)
    ax2.set_xlabel("ΔL/T")
    ax2.set_ylabel("τ̂ / τ − 1  (±2 SE)")
    ax2.set_title("relative error of the splitting estimate")
    ax2.legend(fontsize=7)
    fig.suptitle("Escape of SGD by flux × adaptive multilevel splitting")
    return {"escape": fig}
