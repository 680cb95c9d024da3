"""Study 4: over-parameterized two-layer ReLU nets under gradient descent (lazy training).

Du, Zhai, Póczos & Singh, "Gradient Descent Provably Optimizes Over-parameterized
Neural Networks", ICLR 2019 (arXiv:1810.02054): ``f(x) = m^{-1/2} Σ_r a_r ReLU(w_r·x)``
with fixed ``a_r = ±1``, inputs on the unit sphere, ``L = ½ Σ_i (f(x_i) - y_i)²`` and
full-batch GD on W (:func:`sgdlab.problems.du_two_layer`). As the width m grows the
Gram matrix ``H(0)`` concentrates on ``H∞`` (``λ0 = λ_min(H∞) > 0``), the weights
barely move (``max_r ‖w_r(k) - w_r(0)‖ ∝ m^{-1/2}``), the fraction of activation
patterns that flip vanishes like ``m^{-1/2}``, and the loss follows the kernel
dynamics ``u(k) - y = (I - ηH∞)^k (u(0) - y)``.

What is checked against a closed form, and why only that:

* ``lambda0``: ``E[H(0)] = H∞`` exactly at every width (each entry of ``H(0)`` is an
  average of m i.i.d. indicators with mean ``H∞_ij``), so the Rayleigh quotient
  ``v0ᵀH(0)v0`` along the bottom eigenvector ``v0`` of ``H∞`` has mean ``λ0`` at any
  m. ``λ_min(H(0))`` itself is a concave function of ``H(0)`` and lies below ``λ0``
  by O(1/m) (reported as ``lambda_min_H0``, no prediction).
* ``flip_slope``, ``distance_slope``: log-log slopes of the final flip fraction and
  maximal weight distance against m, with their 95% intervals, against -1/2.
* ``loss``: reported without a prediction. The kernel (m → ∞) prediction, averaged
  over each member's own ``u(0)`` (:func:`sgdlab.theory.du_kernel_loss`), is drawn
  in the figure: at finite m the O(m^{-1/2}) spread of ``H(0)`` around ``H∞``
  changes the late decay rates by about ``ηk‖H(0) - H∞‖``, far above the Monte
  Carlo error at these sizes.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab import analysis, engine, models, theory
from sgdlab._validate import fail
from sgdlab.experiments import Experiment, Outcome, Param, quantity, register
from sgdlab.optim import Optimizer
from sgdlab.problems import DU_LABELS, du_two_layer

PREDICTED_SLOPE = -0.5
SEED_STRIDE = 1000
"""Width i runs from base seed ``seed + SEED_STRIDE·i``: independent ensembles per width
(with one base seed the first rows of W(0) would coincide across widths)."""


def _problem(cfg, width):
    return du_two_layer(width, n_data=cfg["n_samples"], dim=cfg["input_dim"],
                        labels=cfg["labels"], data_seed=cfg["data_seed"])


def _data(problem):
    """The fixed data set as NumPy arrays: X (n, d), y (n,), H∞ (n, n)."""
    d = problem.data.init(jax.random.key(0))  # fixed by data_seed, the key is unused
    return (np.asarray(d["X"], float), np.asarray(d["y"], float),
            np.asarray(d["H_inf"], float))


def _spectral_observable(H_inf: np.ndarray):
    """``[λ_min(H), ‖H - H∞‖₂, v0ᵀHv0]`` of the current Gram matrix H, in one call.

    One batched ``eigvalsh`` on ``[H, H - H∞]`` instead of the problem's separate
    ``lambda_min_H`` and ``kernel_deviation`` observables: two LAPACK eigen-solver
    calls in one vmapped recording program can hang XLA:CPU (seen with jax 0.10.1
    on two cores).
    """
    v0 = np.linalg.eigh(H_inf)[1][:, 0]

    def spectral(o):
        H = models.du_gram(o.params["W"], o.data["X"])
        ev = jnp.linalg.eigvalsh(jnp.stack([H, H - o.data["H_inf"]]))
        v = jnp.asarray(v0, dtype=H.dtype)
        return jnp.stack([ev[0, 0], jnp.max(jnp.abs(ev[1])), v @ H @ v])

    return spectral


def _rms_distance(o):
    """Root mean square over neurons of ``‖w_r(k) - w_r(0)‖``, i.e. ``‖W(k) - W(0)‖_F/√m``."""
    if o.params0 is None:
        fail("keep_init", False, "rms_distance needs the initial parameters (keep_init=True)")
    dW = o.params["W"] - o.params0["W"]
    return jnp.sqrt(jnp.mean(jnp.sum(dW * dW, axis=1)))


def _validate(cfg):
    widths = cfg["width"]
    if len(set(widths)) != len(widths):
        fail("width", widths, "widths must be distinct")
    if len(widths) < 3:
        fail("width", widths, "give at least 3 widths (the slopes vs m need 3 points)")
    problem = _problem(cfg, widths[0])
    H = _data(problem)[2]
    lam_max = float(np.linalg.eigvalsh(H)[-1])
    if cfg["learning_rate"] * lam_max >= 2.0:
        fail("learning_rate", cfg["learning_rate"], f"the kernel dynamics need η·λ_max(H∞) < 2 "
             f"(λ_max = {lam_max:.4g}: η < {2.0 / lam_max:.4g})")


def _studies(cfg, seed):
    studies = {}
    spectral = None
    for i, m in enumerate(cfg["width"]):
        problem = _problem(cfg, m)
        if spectral is None:
            spectral = _spectral_observable(_data(problem)[2])
        studies[f"m{m}"] = engine.Study(
            problem, Optimizer("sgd"), {"learning_rate": cfg["learning_rate"]},
            steps=cfg["steps"], seeds=cfg["seeds"], seed=seed + SEED_STRIDE * i, keep_init=True,
            observe=engine.Observe(("train_loss", "flip_fraction", "max_distance",
                                    ("rms_distance", _rms_distance), ("spectral", spectral),
                                    "residual"),
                                   at="linear", num=cfg["records"]))
    return studies


# --------------------------------------------------------------------------- analysis


def _mean_se(values):
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return (float(v.mean()) if v.size else math.nan), math.nan
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))


def _analyze(cfg, datasets) -> Outcome:
    widths = cfg["width"]
    problem = _problem(cfg, widths[0])
    _, y, H_inf = _data(problem)
    lam0 = float(problem.config["lambda0"])
    lr = cfg["learning_rate"]
    quantities, notes = [], []
    final = {"flip_fraction": [], "max_distance": []}
    extra = {"lambda0": lam0, "lambda_max": float(np.linalg.eigvalsh(H_inf)[-1]),
             "kernel_loss": {}, "fits": {}}
    for m in widths:
        ds = datasets[f"m{m}"]
        steps = np.asarray(ds.step.values)
        K = int(steps[-1])
        spec = np.asarray(ds.spectral.values, float)           # (seed, step, 3)
        v, s = _mean_se(spec[:, 0, 2])
        quantities.append(quantity(
            "lambda0", {"width": m}, v, s, lam0,
            note="v0ᵀH(0)v0 (v0: bottom eigenvector of H∞); E[H(0)] = H∞ at any width"))
        v, s = _mean_se(spec[:, 0, 0])
        quantities.append(quantity(
            "lambda_min_H0", {"width": m}, v, s, None,
            note=f"λ_min(H(0)) is below λ0 = {lam0:.5g} by O(1/m) (concave in H(0))"))
        mean = np.asarray(ds.train_loss_mean.values, float)
        n = np.asarray(ds.train_loss_n.values, float)
        se = np.sqrt(np.asarray(ds.train_loss_var.values, float) / np.maximum(n, 1))
        for k, mk, sk in zip(steps, mean, se, strict=True):
            quantities.append(quantity(
                "loss", {"width": m, "step": int(k)}, mk, sk, None,
                note="kernel prediction exact only as m → ∞ (drawn in the figure)"))
        residual = np.asarray(ds.residual.values, float)       # (seed, step, n)
        u0 = residual[:, 0, :] + y
        ok = np.all(np.isfinite(u0), axis=1)
        kern = np.array([theory.du_kernel_loss(H_inf, y, u, lr, steps) for u in u0[ok]])
        extra["kernel_loss"][str(m)] = {"step": steps.tolist(),
                                        "loss": kern.mean(axis=0).tolist()}
        for name in ("flip_fraction", "max_distance"):
            v, s = _mean_se(np.asarray(ds[name].values, float)[:, -1])
            final[name].append((v, s))
            quantities.append(quantity(
                name, {"width": m, "step": K}, v, s, None,
                note="theory: O(m^(-1/2)) (tested by the slope vs m)"))
        for idx, k in ((0, 0), (-1, K)):
            v, s = _mean_se(spec[:, idx, 1])
            quantities.append(quantity(
                "kernel_deviation", {"width": m, "step": k}, v, s, None,
                note="‖H(k) - H∞‖₂; O(m^(-1/2)), no closed-form constant"))
        n_div = int(ds.n_diverged.values)
        if n_div:
            notes.append(f"width {m}: {n_div} of {cfg['seeds']} members diverged")
    mw = np.asarray(widths, float)
    for slope_name, name in (("flip_slope", "flip_fraction"), ("distance_slope", "max_distance")):
        means = np.array([v for v, _ in final[name]])
        ses = np.array([s for _, s in final[name]])
        try:
            fit = analysis.fit_power_law(mw, means, ses)
        except ValueError as e:
            notes.append(f"{slope_name}: no fit ({e})")
            quantities.append(quantity(slope_name, {"step": cfg["steps"]}, math.nan, math.nan,
                                       PREDICTED_SLOPE, ci=(math.nan, math.nan), note=str(e)))
            continue
        extra["fits"][name] = {"slope": fit.estimate, "intercept": fit.intercept, "lo": fit.lo,
                               "hi": fit.hi, "chi2_dof": fit.chi2_dof}
        quantities.append(quantity(
            slope_name, {"step": cfg["steps"], "m_min": int(mw.min()), "m_max": int(mw.max())},
            fit.estimate, fit.se, PREDICTED_SLOPE, ci=(fit.lo, fit.hi),
            note=f"WLS fit of the per-width means (independent ensembles) over "
                 f"{len(widths)} widths; chi2/dof {fit.chi2_dof:.2g}"))
    notes.append(f"λ0 = λ_min(H∞) = {lam0:.6g}; η·λ0 = {lr * lam0:.4g} (the paper's "
                 f"η = O(λ0/n²) would be ~{lam0 / cfg['n_samples'] ** 2:.2g}: too slow for "
                 f"{cfg['steps']} steps)")
    return Outcome(quantities, notes, {"du": extra})


# --------------------------------------------------------------------------- figures


def _final(summary, name, step=None):
    qs = [q for q in summary["quantities"] if q["name"] == name
          and (step is None or q["coords"].get("step") == step)]
    w = np.array([q["coords"]["width"] for q in qs], float)
    v = np.array([np.nan if q["value"] is None else q["value"] for q in qs], float)
    e = np.array([np.nan if q["se"] is None else q["se"] for q in qs], float)
    return w, v, e


def _figures(results, summary):
    from matplotlib.figure import Figure

    cfg = summary["config"]
    extra = summary.get("du", {"kernel_loss": {}, "fits": {}})
    z = 1.959963984540054
    fig = Figure(figsize=(17.0, 4.6), layout="constrained")
    ax_loss, ax_flip, ax_dist, ax_ker = fig.subplots(1, 4)
    for j, m in enumerate(cfg["width"]):
        ds = results.get(f"m{m}")
        if ds is None:
            continue
        color = f"C{j}"
        steps = np.asarray(ds.step.values)
        mean = np.asarray(ds.train_loss_mean.values, float)
        n = np.asarray(ds.train_loss_n.values, float)
        se = np.sqrt(np.asarray(ds.train_loss_var.values, float) / np.maximum(n, 1))
        ax_loss.plot(steps, mean, "-o", ms=2.5, color=color, label=f"m = {m}")
        ax_loss.fill_between(steps, np.clip(mean - z * se, mean * 1e-3, None), mean + z * se,
                             color=color, alpha=0.25, linewidth=0)
        kern = extra["kernel_loss"].get(str(m))
        if kern is not None:
            ax_loss.plot(kern["step"], kern["loss"], "--", color=color, lw=1.0)
    ax_loss.plot([], [], "--", color="0.3", label="kernel (m → ∞) prediction, same u(0)")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("GD step k")
    ax_loss.set_ylabel("training loss ½‖u(k) - y‖² (mean ± 1.96 SE)")
    ax_loss.set_title(f"loss vs k (n={cfg['n_samples']}, d={cfg['input_dim']}, "
                      f"η={cfg['learning_rate']:g})")
    ax_loss.legend(fontsize=7)

    K = cfg["steps"]
    for ax, name, ylabel in ((ax_flip, "flip_fraction", "fraction of flipped patterns"),
                             (ax_dist, "max_distance", "max_r ‖w_r(K) - w_r(0)‖")):
        w, v, e = _final(summary, name, K)
        ax.errorbar(w, v, yerr=z * e, fmt="o", capsize=3, color="C0",
                    label="measured (±1.96 SE)")
        fit = extra["fits"].get(name)
        if fit is not None and w.size:
            ww = np.geomspace(w.min(), w.max(), 50)
            ax.plot(ww, np.exp(fit["intercept"]) * ww ** fit["slope"], "-", color="C1",
                    label=f"fit: slope {fit['slope']:.3f} [{fit['lo']:.3f}, {fit['hi']:.3f}]")
            ax.plot(ww, 0.5 * v[0] * (ww / w[0]) ** PREDICTED_SLOPE, ":", color="0.3",
                    label="m^(-1/2) reference (offset ×½)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("width m")
        ax.set_ylabel(f"{ylabel} at k = {K}")
        ax.legend(fontsize=7)
    ax_flip.set_title("activation-pattern flips vs width")
    ax_dist.set_title("largest first-layer weight movement vs width")

    for k, marker, label in ((0, "o", "‖H(0) - H∞‖₂"), (K, "s", f"‖H({K}) - H∞‖₂")):
        w, v, e = _final(summary, "kernel_deviation", k)
        ax_ker.errorbar(w, v, yerr=z * e, fmt=marker, capsize=3, label=f"{label} (±1.96 SE)")
    w, v, _ = _final(summary, "kernel_deviation", 0)
    if w.size:
        ww = np.geomspace(w.min(), w.max(), 50)
        ax_ker.plot(ww, 0.5 * v[0] * (ww / w[0]) ** PREDICTED_SLOPE, ":", color="0.3",
                    label="m^(-1/2) reference (offset ×½)")
    ax_ker.set_xscale("log")
    ax_ker.set_yscale("log")
    ax_ker.set_xlabel("width m")
    ax_ker.set_ylabel("spectral norm")
    ax_ker.set_title(f"Gram matrix vs H∞ (λ0 = {extra.get('lambda0', float('nan')):.4g})")
    ax_ker.legend(fontsize=7)
    fig.suptitle("Over-parameterized two-layer ReLU net, full-batch GD on W "
                 "(Du, Zhai, Póczos & Singh 2019)")
    return {"du-overparam": fig}


EXPERIMENT = register(Experiment(
    name="du-overparam", study="4",
    title="two-layer ReLU nets under GD: flips and weight movement ∝ m^(-1/2), λ0 (Du et al.)",
    params=(
        Param("n_samples", int, 50, "number of training points n (uniform on the sphere)",
              low=2),
        Param("input_dim", int, 50, "input dimension d", low=2),
        Param("width", int, [64, 256, 1024, 4096], "hidden widths m (one study each)",
              list=True, low=1),
        Param("learning_rate", float, 0.2, "GD step size η (loss ½Σ_i, a sum)", low=0.0,
              low_open=True),
        Param("steps", int, 100, "full-batch GD steps (epochs)", low=1),
        Param("seeds", int, 16, "members per width", low=2),
        Param("records", int, 21, "linearly spaced record steps (0 and steps included)", low=2,
              high=1000),
        Param("labels", str, "gaussian", "labels: N(0, 1) or a random teacher net",
              choices=DU_LABELS),
        Param("data_seed", int, 0, "seed of the fixed data set", low=0),
    ),
    presets={
        "quick": {},
        "paper": {"n_samples": 1000, "input_dim": 1000,
                  "width": [100, 316, 1000, 3162, 10000], "learning_rate": 0.2, "steps": 100,
                  "seeds": 8, "records": 11},
    },
    studies=_studies, analyze=_analyze, figures=_figures, validate=_validate,
))
