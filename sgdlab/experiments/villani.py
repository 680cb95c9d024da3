"""Study 2: noisy SGD on regularized depth-2 nets and its Gibbs limit.

Gopalani & Mukherjee, "Global Convergence of SGD On Two Layer Neural Nets",
arXiv:2210.11452 (2022); Shi, Su & Jordan, "On learning rates and Schrödinger
operators", arXiv:2004.06977.

``villani`` trains ``f(x) = Σ_j a_j σ(w_j·x)`` (a = ±c fixed, σ smooth) on a fixed data
set with ``L̃(W) = (1/2n) Σ_i (y_i − f(x_i))² + (λ/2)‖W‖²`` by the noisy full-batch
update ``W ← W − s(∇L̃(W) + ξ)``, ξ ~ N(0, I) (``learning_rate = s``,
``noise_std = 1``), whose continuous limit has the Gibbs law μ_s ∝ exp(−2L̃/s).

Every prediction comes from :mod:`sgdlab.theory.gibbs`, a float64 NumPy/JAX
implementation of L̃ with hand-written derivatives that shares no code with the
engine or the problem: the global minimiser and its Hessian (trust-region
Newton from several starts) and the Gibbs law's gap ``E_μ[L̃] − min L̃`` (a
preconditioned MALA sampler with its MCSE). Three blocks:

* **main** (``activation`` × ``width`` at ``reg``, ``output_scale``; near-quadratic
  when λ dominates): ``stationary_gap`` per start against the Gibbs gap plus the
  chain's discretization bias ``Σ_i (s/4)(sh_i/2)/(1 − sh_i/2)``;
  ``start_gap_difference`` (far − near start, predicted 0); ``quadratic_miss_z``
  ((SGD − quadratic formula)/SE, ``equal`` 0); ``gibbs_gap`` (reported);
  ``discretization_slope``: the relative difference (SGD − Gibbs)/Gibbs = κ·s fitted
  through the origin over the step sizes, κ against mean(h)/2, and
  ``discretization_fit_chi2`` (its residuals against their SEs);
* **data term** (``data_term_*``: tanh, a = ±1, width 2, λ far below the
  sufficient threshold): the same ``stationary_gap`` and ``start_gap_difference``
  checks, and ``quadratic_miss_z`` ``greater`` than 10 at the largest step size:
  the quadratic (Laplace / discrete-quadratic) prediction fails, the Gibbs one holds;
* **λ sweep** (``sweep_*``: widths × λ across the sufficient threshold, λ a traced
  problem hyperparameter, one compile per width and start): ``convergence_rate``,
  the exponential decay rate (per unit time t = s·k) of the two starts' mean-loss
  difference, ``greater`` than 0 wherever λ is above the threshold (reported below).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from sgdlab import analysis, engine
from sgdlab._validate import fail
from sgdlab.experiments import Experiment, Outcome, Param, quantity, register
from sgdlab.optim import Optimizer
from sgdlab.problems import SMOOTH_ACTIVATIONS, regularized_two_layer
from sgdlab.problems.villani import OUTPUT_SCALES, output_weight
from sgdlab.theory import gibbs
from sgdlab.theory import villani as tv

STARTS = ("near", "far")
_START_LABEL = {"near": "W₀ = 0 (near W*)", "far": "W₀ = far_scale·1 (far)"}
ORACLE_GIBBS = "MALA sampler (theory.gibbs) + discrete-time bias"
ORACLE_QUAD = "discrete-time quadratic formula (Hessian from theory.gibbs)"
_JACKKNIFE_GROUPS = 8


def _validate(cfg):
    for pre in ("", "data_term_"):
        steps, burn = cfg[pre + "steps"], cfg[pre + "burn_in"]
        if burn >= steps:
            fail(pre + "burn_in", burn, f"must be smaller than {pre}steps={steps}")
        if steps - burn < 10:
            fail(pre + "burn_in", burn, "leave at least 10 steps after the burn-in "
                 "(10 batch means)")
    for key in ("activation", "width", "step_size", "sweep_width", "sweep_reg"):
        if len(set(cfg[key])) != len(cfg[key]):
            fail(key, cfg[key], "expected distinct values")
    if cfg["gibbs_steps"] < 10:
        fail("gibbs_steps", cfg["gibbs_steps"], "expected at least 10 (10 batch means)")
    if cfg["sweep"] and cfg["sweep_seeds"] < 2 * _JACKKNIFE_GROUPS:
        fail("sweep_seeds", cfg["sweep_seeds"], f"expected at least {2 * _JACKKNIFE_GROUPS} "
             f"({_JACKKNIFE_GROUPS} jackknife groups of 2)")


# --------------------------------------------------------------------------- data and problems


def data(cfg, activation: str, width: int, output_scale: str):
    """The fixed data set ``(X, y, a)`` as float32-representable float64 NumPy arrays.

    X uniform on the unit sphere of R^input_dim, a_j = ±c (c from ``output_scale``),
    teacher labels ``y = Σ_j a_j σ(w*_j·x)`` with w*_j ~ N(0, I), all from
    ``data_seed`` (the draws of :func:`sgdlab.problems.regularized_two_layer`).
    The engine trains on these values in float32 and the oracle reads the same
    values in float64.
    """
    rng = np.random.default_rng(cfg["data_seed"])
    z = rng.standard_normal((cfg["n_samples"], cfg["input_dim"]))
    X = z / np.linalg.norm(z, axis=1, keepdims=True)
    a = rng.choice([-1.0, 1.0], size=width) * output_weight(width, output_scale)
    w_star = rng.standard_normal((width, cfg["input_dim"]))
    y = gibbs.activation_derivatives(activation, X @ w_star.T, order=1)[0] @ a
    f32 = lambda v: np.asarray(v, np.float32).astype(np.float64)  # noqa: E731
    return f32(X), f32(y), f32(a)


def _problem(cfg, activation: str, width: int, start: str, *, reg: float | None = None,
             output_scale: str | None = None, data_activation: str | None = None):
    X, y, a = data(cfg, data_activation or activation, width,
                   output_scale or cfg["output_scale"])
    return regularized_two_layer(width, reg=cfg["reg"] if reg is None else reg,
                                 activation=activation, X=X, y=y, a=a,
                                 init="zeros" if start == "near" else "far",
                                 init_scale=cfg["far_scale"], reduction="half_mean", mode="full")


def _blocks(cfg) -> list[dict]:
    """The gap configurations: the main grid, then the data-term one."""
    out = [{"block": "main", "activation": act, "width": w, "output_scale": cfg["output_scale"],
            "reg": cfg["reg"], "steps": cfg["steps"], "burn_in": cfg["burn_in"]}
           for act in cfg["activation"] for w in cfg["width"]]
    if cfg["data_term"]:
        out.append({"block": "data_term", "activation": cfg["data_term_activation"],
                    "width": cfg["data_term_width"],
                    "output_scale": cfg["data_term_output_scale"], "reg": cfg["data_term_reg"],
                    "steps": cfg["data_term_steps"], "burn_in": cfg["data_term_burn_in"]})
    return out


def _name(activation: str, width: int, start: str, block: str = "main") -> str:
    base = f"{activation}_p{width}_{start}"
    return base if block == "main" else f"{block}_{base}"


def _studies(cfg, seed):
    studies = {}
    for b in _blocks(cfg):
        for k, start in enumerate(STARTS):
            # independent ensembles for the two starts (base seeds differ), so the
            # difference of their stationary averages has the SE of independent means
            studies[_name(b["activation"], b["width"], start, b["block"])] = engine.Study(
                _problem(cfg, b["activation"], b["width"], start, reg=b["reg"],
                         output_scale=b["output_scale"]),
                Optimizer("sgd"), {"learning_rate": cfg["step_size"], "noise_std": 1.0},
                steps=b["steps"], seeds=cfg["seeds"], seed=2 * seed + k,
                observe=engine.Observe(("empirical_loss",), at="log", num=cfg["records"],
                                       members=False),
                stationary=engine.Stationary(("empirical_loss",), burn_in=b["burn_in"],
                                             n_batches=10))
    if cfg["sweep"]:
        for width in cfg["sweep_width"]:
            for k, start in enumerate(STARTS):
                studies[f"sweep_p{width}_{start}"] = engine.Study(
                    _problem(cfg, cfg["sweep_activation"], width, start,
                             reg=cfg["sweep_reg"][0], output_scale=cfg["sweep_output_scale"]),
                    Optimizer("sgd"), {"learning_rate": cfg["sweep_step_size"],
                                       "noise_std": 1.0, "reg": cfg["sweep_reg"]},
                    steps=cfg["sweep_steps"], seeds=cfg["sweep_seeds"], seed=2 * seed + k + 2,
                    observe=engine.Observe(("empirical_loss",), at="log", num=cfg["records"],
                                           members=True, stats=False))
    return studies


# --------------------------------------------------------------------------- oracles


def objective(cfg, activation: str, width: int, *, reg: float | None = None,
              output_scale: str | None = None) -> gibbs.TwoLayerObjective:
    """The independent float64 L̃ of :mod:`sgdlab.theory.gibbs` on the experiment's data."""
    X, y, a = data(cfg, activation, width, output_scale or cfg["output_scale"])
    return gibbs.TwoLayerObjective(X, y, a, cfg["reg"] if reg is None else reg, activation)


def minimum(cfg, activation: str, width: int, *, reg: float | None = None,
            output_scale: str | None = None, n_random: int = 8) -> tuple[gibbs.GibbsMinimum, dict]:
    """The global minimiser of L̃ and its Hessian (independent oracle), plus data facts.

    Starts: W = 0, the far start and ``n_random`` N(0, 1) draws.
    """
    obj = objective(cfg, activation, width, reg=reg, output_scale=output_scale)
    w_far = np.full(obj.shape, cfg["far_scale"])
    vm = gibbs.minimize(obj, starts=[w_far], seed=cfg["data_seed"], n_random=n_random)
    thr = tv.convexity_threshold(obj.X, obj.y, obj.a, activation)
    facts = {"threshold": thr if math.isfinite(thr) else None,
             "loss_far": float(obj.value(w_far)), "n_local_minima": vm.n_local}
    return vm, facts


def thresholds(cfg) -> dict:
    """The sufficient threshold λ* for every output scaling × width (sweep and main widths)."""
    widths = sorted(set(cfg["width"]) | set(cfg["sweep_width"]) | {1, 4, 16, 64})
    out = {}
    for act in sorted({*cfg["activation"], cfg["sweep_activation"]} - {"softplus"}):
        out[act] = {}
        for scale in OUTPUT_SCALES:
            out[act][scale] = {}
            for w in widths:
                X, y, a = data(cfg, act, w, scale)
                out[act][scale][str(w)] = tv.convexity_threshold(X, y, a, act)
    return out


def _quad(eigs, s):
    try:
        return tv.discrete_gap(eigs, s), gibbs.discretization_bias(eigs, s)
    except ValueError:
        return None, None


# --------------------------------------------------------------------------- analysis


def _gap_block(cfg, b, datasets, quantities, notes, seed):
    act, width, block = b["activation"], b["width"], b["block"]
    vm, facts = minimum(cfg, act, width, reg=b["reg"], output_scale=b["output_scale"])
    obj = objective(cfg, act, width, reg=b["reg"], output_scale=b["output_scale"])
    eigs = vm.hessian_eigs
    D = eigs.size
    steps_s = cfg["step_size"]
    where = f"{block}: activation={act}, width={width}, a=±{b['output_scale']}, λ={b['reg']:g}"
    gg = gibbs.gibbs_gap(obj, steps_s, vm, chains=cfg["gibbs_chains"], steps=cfg["gibbs_steps"],
                         warmup=cfg["gibbs_warmup"], seed=seed)
    if gg[0].minimum.loss_min < vm.loss_min:
        notes.append(f"{where}: the Gibbs sampler found a lower basin; minimum searched again")
        vm = gg[0].minimum
        eigs = vm.hessian_eigs
    thr = facts["threshold"]
    if thr is not None and b["reg"] <= thr:
        notes.append(f"{where}: λ is below the sufficient threshold λ* = {thr:.3g}; "
                     f"{facts['n_local_minima']} distinct local minim(a) found from "
                     "10 starts; the gaps are measured from the lowest")
    base = {"activation": act, "width": width, "output_scale": b["output_scale"],
            "reg": b["reg"], "block": block}
    extra = {k: b[k] for k in ("steps", "burn_in")}
    rows = []
    for i, s in enumerate(steps_s):
        g = gg[i]
        quad, bias = _quad(eigs, s)
        pred = None if bias is None else g.gap + bias
        quantities.append(quantity(
            "gibbs_gap", {**base, "step_size": s}, g.gap, g.mcse, oracle=None,
            note=f"MALA {g.sample.chains} chains × {g.sample.steps} steps, acceptance "
                 f"{g.sample.acceptance:.2f}, batch-means ratio "
                 f"{g.sample.batch_means_ratio:.2f}; Laplace D·s/4 = {g.laplace:.5g}"))
        gaps = {}
        for start in STARTS:
            ds = datasets[_name(act, width, start, block)]
            sel = {"learning_rate": s}
            value = float(ds.stationary_empirical_loss_mean.sel(sel)) - vm.loss_min
            se = float(ds.stationary_empirical_loss_se.sel(sel))
            gaps[start] = (value, se)
            quantities.append(quantity(
                "stationary_gap", {**base, "step_size": s, "start": start}, value,
                math.hypot(se, g.mcse), pred, oracle=ORACLE_GIBBS,
                note=None if pred is not None else "0 < s·h_i < 2 fails: no prediction"))
            n_div = int(ds.n_diverged.sel(sel))
            if n_div:
                notes.append(f"{where}, s={s:g}, start={start}: {n_div} of {cfg['seeds']} "
                             "members diverged (left out)")
            sm = analysis.stationary_mean(ds.stationary_empirical_loss.sel(sel).values)
            if np.isfinite(sm.ratio) and sm.ratio > 1.5:
                notes.append(f"{where}, s={s:g}, start={start}: across-member SE / within-member "
                             f"batch-means SE = {sm.ratio:.2f} (> 1.5: burn-in unfinished or "
                             "batches short)")
        (vf, sf), (vn, sn) = gaps["far"], gaps["near"]
        quantities.append(quantity(
            "start_gap_difference", {**base, "step_size": s}, vf - vn, math.hypot(sf, sn), 0.0,
            oracle="one stationary law",
            note="far minus near start, independent ensembles"))
        w_f, w_n = 1 / sf ** 2, 1 / sn ** 2
        pooled = (w_f * vf + w_n * vn) / (w_f + w_n)
        pooled_se = 1 / math.sqrt(w_f + w_n)
        rows.append((s, pooled, pooled_se, g, quad, bias))
        if quad is not None:
            z = (pooled - quad) / pooled_se
            largest = s == max(steps_s)
            if block == "main":
                quantities.append(quantity(
                    "quadratic_miss_z", {**base, "step_size": s}, z, 1.0, 0.0,
                    oracle=ORACLE_QUAD, note=f"(SGD gap − quadratic {quad:.5g}) / SE, both "
                    "starts pooled; the quadratic formula holds where λ dominates"))
            else:
                quantities.append(quantity(
                    "quadratic_miss_z", {**base, "step_size": s}, abs(z), 1.0,
                    10.0 if largest else None, criterion="greater" if largest else None,
                    oracle=ORACLE_QUAD if largest else None,
                    note=f"|SGD gap − quadratic {quad:.5g}| / SE, both starts pooled; the "
                    f"Gibbs gap is {g.gap / (D * s / 4):.3f} × Laplace here"))
    # the relative SGD − Gibbs difference is first order in s: r = κ s through the origin
    fit = [(s, (v - g.gap) / g.gap, math.hypot(se, g.mcse) / g.gap, bias / (D * s / 4))
           for s, v, se, g, _, bias in rows if bias is not None]
    if len(fit) >= 2:
        s_, r_, e_, rq = (np.array(c) for c in zip(*fit, strict=True))
        wts = 1 / e_ ** 2

        def through_origin(r):
            return float(np.sum(wts * s_ * r) / np.sum(wts * s_ ** 2))

        kappa = through_origin(r_)
        kappa_se = float(1 / math.sqrt(np.sum(wts * s_ ** 2)))
        # the same fit applied to the quadratic chain's exact relative bias (its s → 0
        # limit is mean(h)/2; at finite s it also sees the small (sh/2)² terms)
        kappa_quad = through_origin(rq)
        chi2 = float(np.sum(((r_ - kappa * s_) / e_) ** 2))
        dof = len(fit) - 1
        claim = block == "main" and len(fit) >= 3
        quantities.append(quantity(
            "discretization_slope", base, kappa, kappa_se, kappa_quad if claim else None,
            oracle=ORACLE_QUAD if claim else None,
            note=f"(SGD − Gibbs)/Gibbs = κ·s fitted through the origin over {len(fit)} step "
                 f"sizes; the same fit to the quadratic chain's relative bias gives "
                 f"{kappa_quad:.4g} (first order: mean(h)/2 = {np.mean(eigs) / 2:.4g})"))
        limit = float(stats.chi2.ppf(0.999, dof))
        quantities.append(quantity(
            "discretization_fit_chi2", base, chi2, float("nan"), limit if claim else None,
            ci=(chi2, chi2) if claim else None, criterion="less" if claim else None,
            oracle="χ² quantile 0.999" if claim else None,
            note=f"residuals of the through-origin fit vs their SEs, {dof} dof (p = "
                 f"{stats.chi2.sf(chi2, dof):.3g})"))
    return {**base, **extra, "loss_min": vm.loss_min, "hessian_eigs": eigs.tolist(), "n_params": D,
            **facts, "laplace_gap": {str(s): D * s / 4 for s in steps_s},
            "quadratic_gap": {str(r[0]): r[4] for r in rows},
            "gibbs_gap": {str(r[0]): [r[3].gap, r[3].mcse] for r in rows},
            "sgd_gap": {str(r[0]): [r[1], r[2]] for r in rows}}


def _decay_rate(t, near, far, window_min: int = 3):
    """Fit ln(E_far − E_near) = c − ρ t over the records where the difference is resolved.

    ``near``, ``far``: per-member values (seed, step). The window runs from the
    first record after t = 0 to the last record before the difference first falls
    under 5 standard errors. Returns (ρ, its jackknife SE over seed groups, the
    window's (t_first, t_last)), or None when fewer than ``window_min`` records
    are resolved.
    """
    def diff(mn, mf):
        return mf.mean(0) - mn.mean(0)

    d = diff(near, far)
    se = np.sqrt(near.var(0, ddof=1) / near.shape[0] + far.var(0, ddof=1) / far.shape[0])
    ok = (t > 0) & (d > 5 * se) & np.isfinite(d)
    idx = np.flatnonzero(t > 0)
    window = []
    for i in idx:
        if not ok[i]:
            break
        window.append(i)
    if len(window) < window_min:
        return None
    w = np.array(window)

    def slope(dd):
        if np.any(dd[w] <= 0):
            return np.nan
        return -np.polyfit(t[w], np.log(dd[w]), 1)[0]

    rho = slope(d)
    G = _JACKKNIFE_GROUPS
    gn = np.array_split(np.arange(near.shape[0]), G)
    gf = np.array_split(np.arange(far.shape[0]), G)
    reps = np.array([slope(diff(np.delete(near, gn[g], 0), np.delete(far, gf[g], 0)))
                     for g in range(G)])
    se_rho = math.sqrt((G - 1) / G * np.sum((reps - reps.mean()) ** 2))
    return float(rho), float(se_rho), (float(t[w[0]]), float(t[w[-1]]))


def _sweep(cfg, datasets, quantities, notes):
    act, scale, s = cfg["sweep_activation"], cfg["sweep_output_scale"], cfg["sweep_step_size"]
    table = []
    for width in cfg["sweep_width"]:
        near = datasets[f"sweep_p{width}_near"]
        far = datasets[f"sweep_p{width}_far"]
        X, y, a = data(cfg, act, width, scale)
        thr = tv.convexity_threshold(X, y, a, act)
        for lam in cfg["sweep_reg"]:
            vm, _ = minimum(cfg, act, width, reg=lam, output_scale=scale, n_random=0)
            sel = {"reg": lam}
            yn = near.empirical_loss.sel(sel).transpose("seed", "step").values
            yf = far.empirical_loss.sel(sel).transpose("seed", "step").values
            t = near.step.values * s
            fit = _decay_rate(t, yn, yf)
            above = math.isfinite(thr) and lam > thr
            coords = {"activation": act, "width": width, "output_scale": scale, "reg": lam,
                      "step_size": s}
            h_min = float(vm.hessian_eigs[0])
            row = {**coords, "threshold": thr if math.isfinite(thr) else None, "h_min": h_min,
                   "above": above, "loss_min": vm.loss_min}
            if fit is None:
                quantities.append(quantity(
                    "convergence_rate", coords, float("nan"), float("nan"),
                    0.0 if above else None, criterion="greater" if above else None,
                    oracle="Villani: exponential convergence" if above else None,
                    note="fewer than 3 records with a resolved far − near difference"))
            else:
                rho, rho_se, win = fit
                row.update(rate=rho, rate_se=rho_se, window=win)
                quad_rate = (f"{-2 * math.log1p(-s * h_min) / s:.3g}" if s * h_min < 1
                             else "none (s·h_min ≥ 1)")
                quantities.append(quantity(
                    "convergence_rate", coords, rho, rho_se, 0.0 if above else None,
                    criterion="greater" if above else None,
                    oracle="Villani: exponential convergence" if above else None,
                    note=f"ln(E_far L̃ − E_near L̃) slope per unit time t = s·k over t ∈ "
                         f"[{win[0]:.3g}, {win[1]:.3g}], jackknife SE over "
                         f"{_JACKKNIFE_GROUPS} seed groups; λ* = {thr:.3g}, "
                         f"λ/λ* = {lam / thr:.3g}; the quadratic with the Hessian at the "
                         f"minimiser gives −2 ln(1 − s·h_min)/s = {quad_rate}"))
            table.append(row)
    return table


def _analyze(cfg, datasets) -> Outcome:
    quantities, notes, minima = [], [], []
    for i, b in enumerate(_blocks(cfg)):
        minima.append(_gap_block(cfg, b, datasets, quantities, notes, seed=cfg["data_seed"] + i))
    sweep = _sweep(cfg, datasets, quantities, notes) if cfg["sweep"] else []
    notes.append("stationary_gap: time average of L̃ after burn_in (10 batches), SE across "
                 "members, minus min L̃ of the independent oracle; predicted by the Gibbs gap "
                 "E_μ[L̃] − min L̃ (μ ∝ exp(−2L̃/s), MALA) plus the chain's discretization bias "
                 "Σ(s/4)(sh/2)/(1 − sh/2) of the quadratic at the minimiser")
    notes.append("sufficient threshold λ* = max‖x‖²(B1²‖a‖² + max|a|·B2·(max|y| + B0‖a‖₁)) "
                 "bounds the data Hessian: with a = ±c at width p it grows like p for c = 1, "
                 "is about constant for c = 1/√p and falls like 1/p for c = 1/p (table "
                 "'thresholds' in the summary)")
    return Outcome(quantities, notes, {"villani": minima, "sweep": sweep,
                                       "thresholds": thresholds(cfg)})


# --------------------------------------------------------------------------- figures


def _figures(results, summary):
    from matplotlib.figure import Figure

    from sgdlab.plots import plot_mean_band

    cfg = summary["config"]
    minima = summary["villani"]
    rows = len(minima)
    figs = {}
    fig = Figure(figsize=(16, 4.3 * rows), layout="constrained")
    axes = fig.subplots(rows, 3, squeeze=False)
    steps_s = np.asarray(cfg["step_size"], dtype=float)
    for r, m in enumerate(minima):
        act, width, block = m["activation"], m["width"], m["block"]
        ax_k, ax_s, ax_r = axes[r]
        for j, start in enumerate(STARTS):
            ds = results[_name(act, width, start, block)]
            k = ds.step.values
            keep = k >= 1
            for i, s in enumerate(cfg["step_size"]):
                sel = {"learning_rate": s}
                mean = ds.empirical_loss_mean.sel(sel).values - m["loss_min"]
                se = np.sqrt(ds.empirical_loss_var.sel(sel).values
                             / ds.empirical_loss_n.sel(sel).values)
                plot_mean_band(ax_k, k[keep], mean[keep],
                               np.maximum(mean - 1.96 * se, mean * 0.5)[keep],
                               (mean + 1.96 * se)[keep], label=f"s = {s:g}, {start}",
                               color=f"C{i}", ls="-" if j == 0 else "--")
        for i, s in enumerate(cfg["step_size"]):
            g = m["gibbs_gap"].get(str(s))
            if g is not None:
                ax_k.axhline(g[0], color=f"C{i}", lw=0.8, ls=":")
        ax_k.set_xscale("log")
        ax_k.set_yscale("log")
        ax_k.set_xlabel("step k")
        ax_k.set_ylabel("E[L̃(W_k)] − min L̃")
        ax_k.set_title(f"{block}: {act}, p = {width}, a = ±{m['output_scale']}, "
                       f"λ = {m['reg']:g} (solid near, dashed far; dotted Gibbs)", fontsize=9)
        ax_k.legend(fontsize=7, ncol=2)
        lap = np.array([m["laplace_gap"][str(s)] for s in steps_s])
        sgd = np.array([m["sgd_gap"][str(s)] for s in steps_s])
        gib = np.array([m["gibbs_gap"][str(s)] for s in steps_s])
        quad = np.array([np.nan if m["quadratic_gap"][str(s)] is None
                         else m["quadratic_gap"][str(s)] for s in steps_s])
        ax_s.errorbar(steps_s, sgd[:, 0] / lap, yerr=2 * sgd[:, 1] / lap, fmt="o", capsize=2,
                      label="SGD (both starts, ±2 SE)")
        ax_s.errorbar(steps_s * 1.03, gib[:, 0] / lap, yerr=2 * gib[:, 1] / lap, fmt="s",
                      capsize=2, label="Gibbs (MALA, ±2 MCSE)")
        ax_s.plot(steps_s, quad / lap, "k-", lw=1, label="discrete quadratic (s/4)Σ1/(1−sh/2)")
        ax_s.axhline(1.0, ls="--", color="0.5", label="Laplace D·s/4")
        ax_s.set_xscale("log")
        ax_s.set_xlabel("step size s")
        ax_s.set_ylabel("gap / (D·s/4)")
        ax_s.set_title("stationary gap relative to Laplace", fontsize=9)
        ax_s.legend(fontsize=7)
        rel = (sgd[:, 0] - gib[:, 0]) / gib[:, 0]
        rel_se = np.hypot(sgd[:, 1], gib[:, 1]) / gib[:, 0]
        ax_r.errorbar(steps_s, rel, yerr=2 * rel_se, fmt="o", capsize=2,
                      label="(SGD − Gibbs)/Gibbs (±2 SE)")
        s_line = np.linspace(0, steps_s.max() * 1.1, 50)
        ax_r.plot(s_line, s_line * np.mean(m["hessian_eigs"]) / 2, "k--", lw=1,
                  label="first order s·mean(h)/2")
        slope = [q for q in summary["quantities"] if q["name"] == "discretization_slope"
                 and q["coords"]["block"] == block and q["coords"]["activation"] == act
                 and q["coords"]["width"] == width]
        if slope and slope[0]["value"] is not None:
            ax_r.plot(s_line, slope[0]["value"] * s_line, "-", color="C3", lw=1,
                      label=f"fit κ·s, κ = {slope[0]['value']:.3g}")
        ax_r.axhline(0, color="0.7", lw=0.5)
        ax_r.set_xlabel("step size s")
        ax_r.set_ylabel("relative difference")
        ax_r.set_title("discretization bias of the SGD chain vs Gibbs", fontsize=9)
        ax_r.legend(fontsize=7)
    fig.suptitle("Noisy SGD W ← W − s(∇L̃ + ξ) on regularized two-layer nets: stationary gap vs "
                 "the Gibbs law exp(−2L̃/s) (independent MALA sampler)")
    figs["stationary_gap"] = fig
    sweep = summary.get("sweep") or []
    if sweep:
        widths = sorted({r["width"] for r in sweep})
        fig2 = Figure(figsize=(5 * (len(widths) + 1), 4), layout="constrained")
        ax = fig2.subplots(1, len(widths) + 1, squeeze=False)[0]
        for c, width in enumerate(widths):
            near = results[f"sweep_p{width}_near"]
            far = results[f"sweep_p{width}_far"]
            t = near.step.values * cfg["sweep_step_size"]
            for i, lam in enumerate(cfg["sweep_reg"]):
                d = (far.empirical_loss.sel(reg=lam).mean("seed")
                     - near.empirical_loss.sel(reg=lam).mean("seed")).values
                ax[c].plot(t[t > 0], np.abs(d[t > 0]), "-", color=f"C{i}", label=f"λ = {lam:g}")
            ax[c].set_yscale("log")
            ax[c].set_xlabel("time t = s·k")
            ax[c].set_ylabel("|E_far L̃ − E_near L̃|")
            ax[c].set_title(f"p = {width}", fontsize=9)
            ax[c].legend(fontsize=7)
        for j, width in enumerate(widths):
            rs = [r for r in sweep if r["width"] == width and r.get("rate") is not None]
            x = np.array([r["reg"] / r["threshold"] for r in rs])
            ax[-1].errorbar(x * (1 + 0.04 * j), [r["rate"] for r in rs],
                            yerr=[2 * r["rate_se"] for r in rs], fmt="o-", capsize=2,
                            label=f"p = {width}")
        ax[-1].axvline(1.0, color="0.5", ls="--", label="sufficient threshold")
        ax[-1].set_xscale("log")
        ax[-1].set_yscale("log")
        ax[-1].set_xlabel("λ / λ*")
        ax[-1].set_ylabel("convergence rate (per unit time)")
        ax[-1].legend(fontsize=7)
        fig2.suptitle(f"λ sweep ({cfg['sweep_activation']}, a = ±{cfg['sweep_output_scale']}, "
                      f"s = {cfg['sweep_step_size']:g}): the two starts' mean-loss difference")
        figs["lambda_sweep"] = fig2
    return figs


register(Experiment(
    name="villani", study="2",
    title="noisy SGD on regularized two-layer nets: stationary loss gap vs the Gibbs law "
          "(Gopalani-Mukherjee, Shi-Su-Jordan)",
    params=(
        Param("width", int, [8], "hidden units p of the main block", list=True, low=1),
        Param("input_dim", int, 4, "input dimension d (inputs on the unit sphere)", low=1),
        Param("n_samples", int, 64, "size n of the fixed data set", low=1),
        Param("activation", str, ["sigmoid"], "activations σ of the main block", list=True,
              choices=SMOOTH_ACTIVATIONS),
        Param("reg", float, 0.5, "L2 regularization λ of the main block", low=0.0,
              low_open=True),
        Param("output_scale", str, "1/p", "output weights a = ±1, ±1/√p or ±1/p (main block)",
              choices=OUTPUT_SCALES),
        Param("step_size", float, [0.05, 0.1, 0.2], "step sizes s (swept in the grid)",
              list=True, low=0.0, low_open=True),
        Param("far_scale", float, 2.0, "the far start: every entry of W₀ equals far_scale",
              low=0.0),
        Param("data_seed", int, 0, "seed of the data set, the teacher and a", low=0),
        Param("records", int, 30, "log-spaced record steps of E[L̃] vs k", low=3),
        Param("steps", int, 1500, "noisy SGD steps per member (main block)", low=2),
        Param("burn_in", int, 500, "steps discarded before the time average (main block)",
              low=0),
        Param("seeds", int, 128, "members per step size and start", low=2),
        Param("data_term", bool, True, "run the data-term block"),
        Param("data_term_activation", str, "tanh", "activation of the data-term block",
              choices=SMOOTH_ACTIVATIONS),
        Param("data_term_width", int, 2, "width of the data-term block", low=1),
        Param("data_term_output_scale", str, "1", "output scaling of the data-term block",
              choices=OUTPUT_SCALES),
        Param("data_term_reg", float, 0.05, "λ of the data-term block", low=0.0,
              low_open=True),
        Param("data_term_steps", int, 2500, "noisy SGD steps per member (data-term block)",
              low=2),
        Param("data_term_burn_in", int, 1000, "burn-in of the data-term block", low=0),
        Param("gibbs_chains", int, 128, "MALA chains per step size", low=2),
        Param("gibbs_steps", int, 1000, "MALA steps averaged per chain", low=10),
        Param("gibbs_warmup", int, 500, "MALA warm-up steps (step-size adaptation)", low=0),
        Param("sweep", bool, True, "run the λ sweep"),
        Param("sweep_width", int, [4, 16, 64], "widths of the λ sweep", list=True, low=1),
        Param("sweep_reg", float, [0.02, 0.08, 0.32, 1.28], "λ values of the sweep (traced)",
              list=True, low=0.0, low_open=True),
        Param("sweep_activation", str, "sigmoid", "activation of the λ sweep",
              choices=SMOOTH_ACTIVATIONS),
        Param("sweep_output_scale", str, "1/sqrt_p", "output scaling of the λ sweep",
              choices=OUTPUT_SCALES),
        Param("sweep_step_size", float, 0.1, "step size of the λ sweep", low=0.0,
              low_open=True),
        Param("sweep_steps", int, 600, "steps per member of the λ sweep", low=2),
        Param("sweep_seeds", int, 32, "members per λ and start in the sweep", low=2),
    ),
    presets={
        "quick": {},
        "paper": {"width": [8, 32, 128], "activation": ["sigmoid", "tanh", "softplus"],
                  "step_size": [0.0125, 0.025, 0.05, 0.1], "steps": 20000, "burn_in": 6000,
                  "data_term_steps": 40000, "data_term_burn_in": 12000,
                  "seeds": 4096, "gibbs_chains": 1024, "gibbs_steps": 10000,
                  "sweep_steps": 4000, "sweep_seeds": 256,
                  "sweep_reg": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]},
    },
    studies=_studies, analyze=_analyze, figures=_figures, validate=_validate,
))
