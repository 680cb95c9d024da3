"""Study 2: noisy SGD on regularized depth-2 nets and its Gibbs limit.

Gopalani & Mukherjee, "Global Convergence of SGD On Two Layer Neural Nets",
arXiv:2210.11452 (2022); Shi, Su & Jordan, "On learning rates and Schrödinger
operators", arXiv:2004.06977.

``villani`` trains ``f(x) = Σ_j a_j σ(w_j·x)`` (a fixed, σ smooth) on a fixed data set
with ``L̃(W) = (1/2n) Σ_i (y_i − f(x_i))² + (λ/2)‖W‖²`` by the noisy full-batch update
``W ← W − s(∇L̃(W) + ξ)``, ξ ~ N(0, I) (``learning_rate = s``, ``noise_std = 1``),
whose continuous limit has the Gibbs law ∝ exp(−2L̃/s). Above the convexity
threshold L̃ is a Villani function and the law of SGD converges to a unique
stationary law from any start. Reported:

* ``stationary_gap``: the stationary ``E[L̃] − min L̃`` (time average after the
  burn-in, standard error across members) per activation, width, step size and
  start, against the discrete-time value ``(s/4) Σ_i 1/(1 − s h_i/2)`` (h_i the
  Hessian eigenvalues at the minimiser); the Laplace value ``D s/4`` is drawn
  for comparison;
* ``start_gap_difference``: far start minus near start (independent ensembles),
  predicted 0: one stationary law whatever the initial distribution.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from sgdlab import analysis, engine, theory
from sgdlab._validate import fail
from sgdlab.experiments import Experiment, Outcome, Param, quantity, register
from sgdlab.optim import Optimizer
from sgdlab.problems import SMOOTH_ACTIVATIONS, regularized_two_layer

STARTS = ("near", "far")
_START_LABEL = {"near": "W₀ = 0 (near W*)", "far": "W₀ = far_scale·1 (far)"}


def _validate(cfg):
    if cfg["burn_in"] >= cfg["steps"]:
        fail("burn_in", cfg["burn_in"], f"must be smaller than steps={cfg['steps']}")
    if cfg["steps"] - cfg["burn_in"] < 10:
        fail("burn_in", cfg["burn_in"], "leave at least 10 steps after the burn-in "
             "(10 batch means)")
    for key in ("activation", "width", "step_size"):
        if len(set(cfg[key])) != len(cfg[key]):
            fail(key, cfg[key], "expected distinct values")


def _problem(cfg, activation: str, width: int, start: str):
    init = "zeros" if start == "near" else "far"
    return regularized_two_layer(width, reg=cfg["reg"], activation=activation,
                                 n_data=cfg["n_samples"], dim=cfg["input_dim"],
                                 labels="teacher", init=init, init_scale=cfg["far_scale"],
                                 reduction="half_mean", mode="full",
                                 data_seed=cfg["data_seed"])


def _name(activation: str, width: int, start: str) -> str:
    return f"{activation}_p{width}_{start}"


def _studies(cfg, seed):
    studies = {}
    for act in cfg["activation"]:
        for width in cfg["width"]:
            for k, start in enumerate(STARTS):
                # independent ensembles for the two starts (base seeds differ), so the
                # difference of their stationary averages has the SE of independent means
                studies[_name(act, width, start)] = engine.Study(
                    _problem(cfg, act, width, start), Optimizer("sgd"),
                    {"learning_rate": cfg["step_size"], "noise_std": 1.0},
                    steps=cfg["steps"], seeds=cfg["seeds"], seed=2 * seed + k,
                    observe=engine.Observe(("empirical_loss",), at="log", num=cfg["records"],
                                           members=False),
                    stationary=engine.Stationary(("empirical_loss",), burn_in=cfg["burn_in"],
                                                 n_batches=10))
    return studies


def minimum(cfg, activation: str, width: int) -> tuple[theory.VillaniMinimum, dict]:
    """The minimiser of L̃ and its Hessian spectrum (float64), plus the data facts.

    The data set is the one the engine trains on (float32 values of the problem's
    data, widened exactly to float64).
    """
    problem = _problem(cfg, activation, width, "near")
    data = problem.data.init(jax.random.key(0))
    X = np.asarray(data["X"], dtype=np.float64)
    y = np.asarray(data["y"], dtype=np.float64)
    a = np.asarray(data["a"], dtype=np.float64)

    def loss(W):
        return problem.loss(W, (X, y), {})

    vm = theory.villani_minimizer_and_hessian(loss, np.zeros((width, cfg["input_dim"])))
    w0_far = np.full((width, cfg["input_dim"]), cfg["far_scale"])
    facts = {"threshold": theory.sigmoid_convexity_threshold(X, y, a)
             if activation == "sigmoid" else None,
             "loss_far": float(_widened(loss, w0_far))}
    return vm, facts


def _widened(loss, W):
    with jax.enable_x64(True):
        return loss(np.asarray(W, dtype=np.float64))


def _prediction(eigs, s):
    try:
        return theory.discrete_gap(eigs, s), None
    except theory.NoStationaryDistribution as e:
        return None, str(e)


def _analyze(cfg, datasets) -> Outcome:
    quantities, notes, minima = [], [], []
    for act in cfg["activation"]:
        for width in cfg["width"]:
            vm, facts = minimum(cfg, act, width)
            eigs = vm.hessian_eigs
            D = eigs.size
            minima.append({"activation": act, "width": width, "loss_min": vm.loss_min,
                           "hessian_eigs": eigs.tolist(), "n_params": D, **facts,
                           "laplace_gap": {str(s): float(theory.laplace_gap(D, s))
                                           for s in cfg["step_size"]}})
            where = f"activation={act}, width={width}"
            if eigs[0] <= 0:
                notes.append(f"{where}: the Hessian at the stationary point found is not "
                             f"positive definite (h_min = {eigs[0]:.3g}); no prediction")
            thr = facts["threshold"]
            if thr is not None and cfg["reg"] <= thr:
                notes.append(f"{where}: reg = {cfg['reg']:g} is below the sufficient convexity "
                             f"threshold {thr:.3g}: L̃ need not be convex, the minimiser found "
                             "from W = 0 may be local")
            gaps = {}
            for start in STARTS:
                ds = datasets[_name(act, width, start)]
                for i, s in enumerate(cfg["step_size"]):
                    sel = {"learning_rate": s}
                    value = float(ds.stationary_empirical_loss_mean.sel(sel)) - vm.loss_min
                    se = float(ds.stationary_empirical_loss_se.sel(sel))
                    pred, why = _prediction(eigs, s) if eigs[0] > 0 else (None, "no minimum")
                    coords = {"activation": act, "width": width, "step_size": s, "start": start}
                    quantities.append(quantity(
                        "stationary_gap", coords, value, se, pred,
                        note=why or f"discrete-time (s/4)Σ1/(1−s·h_i/2); Laplace D·s/4 = "
                                    f"{D * s / 4:.5g}"))
                    gaps[start, i] = (value, se)
                    n_div = int(ds.n_diverged.sel(sel))
                    if n_div:
                        notes.append(f"{where}, step_size={s:g}, start={start}: {n_div} of "
                                     f"{cfg['seeds']} members diverged (left out)")
                    sm = analysis.stationary_mean(ds.stationary_empirical_loss.sel(sel).values)
                    if np.isfinite(sm.ratio) and sm.ratio > 1.5:
                        notes.append(f"{where}, step_size={s:g}, start={start}: across-member SE "
                                     f"/ within-member batch-means SE = {sm.ratio:.2f} (> 1.5: "
                                     "burn-in unfinished or batches short)")
            for i, s in enumerate(cfg["step_size"]):
                (vf, sf), (vn, sn) = gaps["far", i], gaps["near", i]
                quantities.append(quantity(
                    "start_gap_difference", {"activation": act, "width": width, "step_size": s},
                    vf - vn, math.hypot(sf, sn), 0.0,
                    note="far minus near start, independent ensembles: one stationary law"))
            # how much of the far start can be left in the time average (convex bound)
            if eigs[0] > 0:
                s_min = min(cfg["step_size"])
                rate = (1 - s_min * eigs[0]) ** 2
                if rate < 1:
                    left = (facts["loss_far"] - vm.loss_min) * rate ** cfg["burn_in"]
                    notes.append(f"{where}: initial excess of the far start "
                                 f"{facts['loss_far'] - vm.loss_min:.3g}; the contraction "
                                 f"(1 − s·h_min)^(2·burn_in) of a coupling leaves ~{left:.2g} "
                                 f"at the burn-in (s = {s_min:g}, h_min = {eigs[0]:.3g})")
    notes.append("stationary_gap: time average of L̃ over the steps after burn_in (10 batches), "
                 "SE across independent members; predicted by the quadratic (harmonic) "
                 "discrete-time formula, exact for a quadratic L̃ and accurate to O(s²) "
                 "anharmonic terms otherwise")
    return Outcome(quantities, notes, {"villani": minima})


def _figures(results, summary):
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    from sgdlab.plots import plot_mean_band

    cfg = summary["config"]
    minima = summary["villani"]
    rows = len(minima)
    fig = Figure(figsize=(16, 4.3 * rows), layout="constrained")
    axes = fig.subplots(rows, 3, squeeze=False)
    steps_s = np.asarray(cfg["step_size"], dtype=float)
    s_fine = np.geomspace(steps_s.min() * 0.8, steps_s.max() * 1.25, 200)
    for r, m in enumerate(minima):
        act, width, eigs = m["activation"], m["width"], np.asarray(m["hessian_eigs"])
        D = m["n_params"]
        ax_k, ax_s, ax_n = axes[r]
        for j, start in enumerate(STARTS):
            ds = results[_name(act, width, start)]
            k = ds.step.values
            keep = k >= 1
            for i, s in enumerate(cfg["step_size"]):
                sel = {"learning_rate": s}
                mean = ds.empirical_loss_mean.sel(sel).values - m["loss_min"]
                se = np.sqrt(ds.empirical_loss_var.sel(sel).values
                             / ds.empirical_loss_n.sel(sel).values)
                plot_mean_band(ax_k, k[keep], mean[keep],
                               np.maximum(mean - 1.96 * se, mean * 0.5)[keep],
                               (mean + 1.96 * se)[keep],
                               label=f"s = {s:g}, {start}", color=f"C{i}",
                               ls="-" if j == 0 else "--")
        for i, s in enumerate(cfg["step_size"]):
            pred, _ = _prediction(eigs, s) if eigs[0] > 0 else (None, None)
            if pred is not None:
                ax_k.axhline(pred, color=f"C{i}", lw=0.8, ls=":")
        ax_k.set_xscale("log")
        ax_k.set_yscale("log")
        ax_k.set_xlabel("step k")
        ax_k.set_ylabel("E[L̃(W_k)] − min L̃")
        ax_k.set_title(f"{act}, width {width}: both starts (solid: near, dashed: far; "
                       "dotted: prediction)", fontsize=9)
        ax_k.legend(fontsize=7, ncol=2)
        pred_fine = np.array([_prediction(eigs, s)[0] if eigs[0] > 0 else None
                              for s in s_fine], dtype=float)
        ax_s.plot(s_fine, pred_fine, "-", color="0.2", label="discrete time (s/4)Σ1/(1−s·h_i/2)")
        ax_s.plot(s_fine, D * s_fine / 4, "--", color="0.5", label=f"Laplace D·s/4 (D = {D})")
        ax_n.plot(s_fine, pred_fine / (D * s_fine / 4), "-", color="0.2",
                  label="discrete time")
        ax_n.axhline(1.0, ls="--", color="0.5", label="Laplace")
        for j, start in enumerate(STARTS):
            qs = [q for q in summary["quantities"] if q["name"] == "stationary_gap"
                  and q["coords"]["activation"] == act and q["coords"]["width"] == width
                  and q["coords"]["start"] == start]
            x = np.array([q["coords"]["step_size"] for q in qs]) * (1 + 0.03 * (2 * j - 1))
            y = np.array([np.nan if q["value"] is None else q["value"] for q in qs])
            e = np.array([np.nan if q["se"] is None else q["se"] for q in qs])
            lap = D * np.array([q["coords"]["step_size"] for q in qs]) / 4
            kw = dict(fmt="o" if j == 0 else "s", ms=4, capsize=2, color=f"C{j}",
                      label=f"measured, {_START_LABEL[start]} (±2 SE)")
            ax_s.errorbar(x, y, yerr=2 * e, **kw)
            ax_n.errorbar(x, y / lap, yerr=2 * e / lap, **kw)
        ax_s.set_xscale("log")
        ax_s.set_yscale("log")
        ax_s.set_xlabel("step size s")
        ax_s.set_ylabel("stationary E[L̃] − min L̃")
        ax_s.set_title(f"stationary gap vs s (reg λ = {cfg['reg']:g})", fontsize=9)
        ax_s.legend(fontsize=7)
        ax_n.set_xscale("log")
        for ax in (ax_s, ax_n):
            ax.set_xticks(steps_s, [f"{v:g}" for v in steps_s])
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax_s.set_yticks(D * steps_s / 4, [f"{v:.3g}" for v in D * steps_s / 4])
        ax_s.yaxis.set_minor_formatter(NullFormatter())
        ax_n.set_xlabel("step size s")
        ax_n.set_ylabel("gap / (D·s/4)")
        ax_n.set_title("gap relative to the Laplace value", fontsize=9)
        ax_n.legend(fontsize=7)
    fig.suptitle("Noisy SGD W ← W − s(∇L̃ + ξ) on a regularized two-layer net: convergence to "
                 "the stationary law and its loss gap")
    return {"stationary_gap": fig}


register(Experiment(
    name="villani", study="2",
    title="noisy SGD on regularized two-layer nets: stationary loss gap vs the Gibbs limit "
          "(Gopalani-Mukherjee, Shi-Su-Jordan)",
    params=(
        Param("width", int, [8], "hidden units p (one study pair per width)", list=True, low=1),
        Param("input_dim", int, 4, "input dimension d (inputs on the unit sphere)", low=1),
        Param("n_samples", int, 64, "size n of the fixed data set", low=1),
        Param("activation", str, ["sigmoid", "tanh"], "activations σ", list=True,
              choices=SMOOTH_ACTIVATIONS),
        Param("reg", float, 0.5, "L2 regularization λ (static)", low=0.0, low_open=True),
        Param("step_size", float, [0.025, 0.05, 0.1], "step sizes s (swept in the grid)",
              list=True, low=0.0, low_open=True),
        Param("far_scale", float, 2.0, "the far start: every entry of W₀ equals far_scale",
              low=0.0),
        Param("data_seed", int, 0, "seed of the data set, the teacher and a", low=0),
        Param("records", int, 30, "log-spaced record steps of E[L̃] vs k", low=3),
        Param("steps", int, 2500, "noisy SGD steps per member", low=2),
        Param("burn_in", int, 800, "steps discarded before the time average", low=0),
        Param("seeds", int, 256, "members per step size and start", low=2),
    ),
    presets={
        "quick": {},
        "paper": {"width": [8, 32, 128], "activation": ["sigmoid", "tanh", "softplus"],
                  "step_size": [0.00625, 0.0125, 0.025], "steps": 20000, "burn_in": 4000,
                  "seeds": 4096},
    },
    studies=_studies, analyze=_analyze, figures=_figures, validate=_validate,
))
