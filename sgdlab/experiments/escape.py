"""Study 5 (escape): how long finite-learning-rate SGD takes to leave a minimum.

Liu, Ziyin & Ueda, "Noise and Fluctuation of Finite Learning Rate Stochastic
Gradient Descent", ICML 2021 (arXiv:2012.03636), escape section; minibatch noise
as in Ziyin, Liu, Mori & Ueda, ICLR 2022 (arXiv:2102.05375).

The chain is 1-D SGD ``w_{t+1} = w_t − λ(U'(w_t) + ζ_t)`` in a potential of
:func:`sgdlab.problems.potential_1d`:

* ``sharp-well``: ``U = a w²/2`` with absorbing walls at ``|w| ≥ wall``, barrier
  ``ΔL = a·wall²/2``;
* ``double-well``: ``U = (w² − 1)²/4``, escaped once ``w > threshold``, barrier
  ``max U`` on ``[−1, threshold]`` (1/4 at the default threshold 0).

Each member starts at ``minimum + start`` and runs until the first step after
which it is outside the non-escaped region (``FirstPassage("escaped")``,
frozen there); members still inside after ``max_steps`` are right-censored.

Noise and the temperature. With gradient-noise variance σ² the continuous-time
temperature is ``T = λσ²/2``. ``barrier_over_temperature`` (x = ΔL/T, a list)
fixes σ² = 2ΔL/(λx) for every learning rate; ``noise_var > 0`` instead fixes the
variance of one example's gradient noise (σ² = noise_var/S for a minibatch of S)
and x then follows per learning rate (``barrier_over_temperature`` is ignored,
and there is no Arrhenius fit).

* ``batch_size`` 1: Gaussian noise ζ ~ N(0, σ²), added by the engine as its
  traced ``noise_std`` hyperparameter (the problem itself carries no noise).
  Because σ depends on both λ and x while the engine's grid is a Cartesian
  product of named hyperparameters, there is **one study per learning rate**
  (``S1_lr{i}``), with ``learning_rate`` fixed and ``noise_std`` swept over the
  barrier values. Every such study has the same static structure (one problem
  object, the same shapes and ``max_steps``), so they share one compiled program.
* ``batch_size`` S > 1: minibatch noise, the mean of S draws (with replacement)
  from ``N_DATA`` fixed per-example tilts, scaled by the problem's traced
  ``noise_scale`` hyperparameter (:func:`sgdlab.problems.potential_1d`). The
  tilts have per-example variance S, so the minibatch mean has variance
  ``noise_scale²`` and ``noise_scale = σ`` does not depend on S. Again one study
  per learning rate (``minibatch_lr{i}``), ``noise_scale`` swept over the
  barrier values, and S a **static sweep** (``static={"batch_size": [...]}``:
  the batch size fixes the shapes of the program, so one program per S, shared
  by all learning rates; one Dataset with a ``batch_size`` dimension).
* With ``noise_var`` given: one study ``S1`` with λ in the grid and, for S > 1,
  one study ``minibatch`` with λ in the grid and the static batch_size sweep
  (tilts of variance ``noise_var``, ``noise_scale`` 1).

So a run compiles one program for S = 1 plus one per S > 1 (``--dry-run``
counts them). Member keys depend only on the seed index, so all studies and
grid points of one S see the same random numbers (common random numbers across
λ and x).

Summary quantities (checked against exact discrete-time oracles of the same chain
with the same escape rule; no continuous-time approximation enters a check):

* ``mfpt`` per (λ, x, S): the censored maximum-likelihood mean first-passage time
  ``Σ times / #escaped`` (:func:`sgdlab.analysis.mean_first_passage`; the plain
  mean when nobody is censored), with the model-free ratio-estimator standard
  error. Prediction: the exact mean first-passage time τ of the chain from the
  Nyström solution of ``τ(x) = 1 + ∫ p(x→y) τ(y) dy``
  (:func:`sgdlab.theory.mfpt_nystrom_converged`, Gaussian noise) or, for
  minibatch noise, the same equation with the exact law of the minibatch mean
  (S-fold convolution of the empirical law of the tilts, built afresh with
  their exact per-example variance S·σ² -- not through ``noise_scale`` or the
  engine) solved by collocation with linear interpolation. Step convention: the
  engine's ``event_step`` is the number of updates after which the walker is
  first outside the region, which is
  the τ of the oracle (the walker leaves at step t ≥ 1). The estimator's exact
  target under censoring at ``c = max_steps`` is ``Σ_{t<c} S(t) / (1 − S(c))``
  (S the survival function of the chain, computed from the oracle's kernel); it
  equals τ when censoring is negligible, and it is the prediction compared. With
  fewer than ``MIN_EVENTS`` escapes there is no measurement and the check fails.
* ``escape_rate`` per (λ, x, S): the per-step escape probability in the
  exponential tail. Members still inside after ``t_tail`` steps are followed on
  (left truncation; residual times right-censored at ``max_steps``) and the rate
  is the censored exponential/geometric MLE ``#escaped / Σ residual times``
  (:func:`sgdlab.analysis.exponential_rate_mle`). Prediction: ``1 − ρ`` with ρ
  the leading eigenvalue of the killed chain (the survival function decays as
  ρ^t); ``t_tail`` is the step after which the exact hazard is within 10⁻³ of
  ``1 − ρ``. This tests that escape times are exponential; ``1/τ`` is *not*
  the tail rate (the start at the minimum adds a transient). With fewer than
  ``MIN_TAIL_EVENTS`` escapes after ``t_tail`` it is reported without a check.
* ``arrhenius_slope`` per (λ, S), with three or more barrier values: the weighted
  fit of ``ln mfpt = a + slope·x`` (:func:`sgdlab.analysis.fit_exponential_rate`,
  whose rate is −slope) with its 95% interval, against the same weighted fit
  through the oracle's ln τ at the same x (the exact prediction of what the fit
  estimates). The barrier values of one learning rate share their random numbers
  (common random numbers), so their mfpt errors are positively correlated; the
  slope's standard error and normal 95% interval use the covariance of the ln mfpt
  estimated member by member (delta method; :func:`slope_se_correlated`), not the
  independent-errors SE of the fit (kept as ``se_independent``, larger). The
  summary also holds the continuous-time slope 1 and the sharp-well
  effective-temperature slope ``(2 − λa)/2`` (:func:`sgdlab.theory.arrhenius_slope`)
  for comparison: both are approximations and are not checked.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from sgdlab import analysis, engine, theory
from sgdlab._validate import fail
from sgdlab.experiments import Experiment, Outcome, Param, _escape_figures, quantity, register
from sgdlab.experiments import _escape_splitting as _splitting
from sgdlab.experiments._escape_chain import MIN_EVENTS, N_DATA
from sgdlab.experiments._escape_chain import Cell as _Cell
from sgdlab.experiments._escape_chain import barrier as _barrier
from sgdlab.experiments._escape_chain import cells as _cells
from sgdlab.experiments._escape_chain import fit_slope as _fit_slope
from sgdlab.experiments._escape_chain import fixed_noise as _fixed_noise
from sgdlab.experiments._escape_chain import problem as _problem
from sgdlab.experiments._escape_chain import region as _region
from sgdlab.experiments._escape_chain import tau_only as _tau_only
from sgdlab.optim import Optimizer
from sgdlab.problems import POTENTIALS
from sgdlab.theory.escape import (
    ChainOracle,
    gaussian_kernel,
    kernel_tau,
    lattice_kernel,
    minibatch_noise_law,
    oracle_from_kernel,
)

ORACLE_TOL = 1e-4
"""Relative convergence tolerance of the minibatch (lattice) oracle under grid refinement."""
Z95 = 1.959963984540054
"""Normal quantile of the 95% slope interval."""
MIN_TAIL_EVENTS = 30
"""Fewest escapes after ``t_tail`` for an ``escape_rate`` measurement (fewer: reported
without a prediction)."""


# --------------------------------------------------------------------------- configuration




class _Entry(NamedTuple):
    """One study of the run and where its cells lie in its Dataset."""

    name: str
    sizes: tuple[int, ...] | None  # the static batch_size sweep (S > 1), or None (S = 1)
    hparams: dict
    cells: list[tuple[int, int, int]]  # (S, i, j) of each flat row (static dims first)


def _layout(cfg) -> list[_Entry]:
    """The studies, in run order.

    ``cells`` lists the (S, i, j) cell of each row of the study's Dataset flattened
    over everything but ``seed``: the static ``batch_size`` dimension (minibatch
    studies) first, then the traced grid in the order of ``hparams``.
    """
    cells = _cells(cfg)
    lrs = cfg["learning_rate"]
    out = []
    if 1 in cfg["batch_size"]:
        mine = [c for c in cells if c.S == 1]
        if _fixed_noise(cfg):
            out.append(_Entry("S1", None, {"learning_rate": list(lrs),
                                           "noise_std": math.sqrt(mine[0].s2)},
                              [(1, c.i, c.j) for c in mine]))
        else:
            for i, lr in enumerate(lrs):
                row = [c for c in mine if c.i == i]
                out.append(_Entry(f"S1_lr{i}", None,
                                  {"learning_rate": lr,
                                   "noise_std": [math.sqrt(c.s2) for c in row]},
                                  [(1, c.i, c.j) for c in row]))
    sizes = tuple(S for S in cfg["batch_size"] if S > 1)
    if not sizes:
        return out
    if _fixed_noise(cfg):
        out.append(_Entry("minibatch", sizes, {"learning_rate": list(lrs)},
                          [(S, i, 0) for S in sizes for i in range(len(lrs))]))
        return out
    xs = cfg["barrier_over_temperature"]
    for i, lr in enumerate(lrs):
        row = [c for c in cells if c.S == sizes[0] and c.i == i]  # σ does not depend on S
        out.append(_Entry(f"minibatch_lr{i}", sizes,
                          {"learning_rate": lr, "noise_scale": [math.sqrt(c.s2) for c in row]},
                          [(S, i, j) for S in sizes for j in range(len(xs))]))
    return out


def _minibatch_problem(cfg, S: int):
    """The minibatch-noise chain with a batch of S; its traced ``noise_scale`` is σ.

    Without ``noise_var`` the tilts have per-example variance S, so that the mean of
    S of them has variance 1 and ``noise_scale`` = σ = √(2ΔL/(λx)) for every S (one
    grid for the static batch_size sweep); with ``noise_var`` the tilts have that
    variance and ``noise_scale`` stays 1.
    """
    return _problem(cfg, cfg["noise_var"] if _fixed_noise(cfg) else float(S), S)


def _validate(cfg):
    kind = cfg["potential"]
    for key in ("learning_rate", "barrier_over_temperature", "batch_size"):
        if len(set(cfg[key])) != len(cfg[key]):
            fail(key, cfg[key], "expected distinct values")
    if kind == "sharp-well":
        a = cfg["curvature"]
        bad = [lr for lr in cfg["learning_rate"] if not lr * a < 2]
        if bad:
            fail("learning_rate", bad[0], f"the well is unstable unless learning_rate·curvature "
                 f"< 2 (curvature={a:g})")
        if not abs(cfg["start"]) < cfg["wall"]:
            fail("start", cfg["start"], f"the start must lie inside the walls (|start| < "
                 f"wall={cfg['wall']:g})")
    else:
        bad = [lr for lr in cfg["learning_rate"] if not lr < 1]
        if bad:
            fail("learning_rate", bad[0], "the double well's minimum (curvature 2) is unstable "
                 "unless learning_rate < 1")
        if not cfg["threshold"] > -1:
            fail("threshold", cfg["threshold"], "must lie above the minimum at w = -1")
        if not -1 + cfg["start"] < cfg["threshold"]:
            fail("start", cfg["start"], f"the start -1 + start must lie below the threshold "
                 f"{cfg['threshold']:g}")
    if cfg["estimator"] == "splitting":
        _splitting.validate(cfg)
    if max(cfg["batch_size"]) > N_DATA:
        fail("batch_size", max(cfg["batch_size"]), f"expected at most N = {N_DATA} (the "
             "minibatch variant draws from N per-example tilts)")


def _studies(cfg, seed):
    if cfg["estimator"] == "splitting":
        return {}  # splitting runs its own compiled programs in analyze (_escape_splitting)
    gaussian = _problem(cfg)  # one object: every Gaussian study shares one compile
    minibatch = {S: _minibatch_problem(cfg, S) for S in cfg["batch_size"] if S > 1}

    def minibatch_problem(batch_size):  # one object per S: shared by the λ studies
        return minibatch[batch_size]

    studies = {}
    for e in _layout(cfg):
        if e.sizes is None:
            problem, static = gaussian, None
        else:
            problem, static = minibatch_problem, {"batch_size": list(e.sizes)}
        studies[e.name] = engine.Study(
            problem, Optimizer("sgd"), e.hparams, steps=cfg["max_steps"], seeds=cfg["seeds"],
            seed=seed, observe=None, first_passage=engine.FirstPassage("escaped", freeze=True),
            static=static)
    return studies


# --------------------------------------------------------------------------- exact oracles




def oracle(cfg, cell: _Cell) -> ChainOracle:
    """The exact escape statistics of the chain of one cell."""
    dU, lo, hi, x0 = _region(cfg, cell)
    if cell.S == 1:
        tau, n, _ = theory.mfpt_nystrom_converged(dU, cell.lr, cell.s2, lo, hi, x0=x0)
        P, k0 = gaussian_kernel(dU, cell.lr, cell.s2, lo, hi, x0, n)
        return oracle_from_kernel(P, k0, cfg["max_steps"], P.shape[0], tau)
    z = np.asarray(_problem(cfg, cell.S * cell.s2, cell.S).data.init(None), dtype=np.float64)
    atoms, probs = minibatch_noise_law(z, cell.S)
    width = cell.lr * math.sqrt(cell.s2)
    m = 10 * max(20, math.ceil(10 * (hi - lo) / width / 10))
    prev = None
    while True:
        P, k0 = lattice_kernel(dU, cell.lr, atoms, probs, lo, hi, x0, m)
        tau = kernel_tau(P, k0)
        if prev is not None and abs(tau - prev) <= ORACLE_TOL * tau:
            break
        if m >= 6400:
            raise RuntimeError(f"minibatch escape oracle not converged at {m} nodes "
                               f"(last change {abs(tau - prev) / tau:.2g})")
        prev, m = tau, 2 * m
    return oracle_from_kernel(P, k0, cfg["max_steps"], m + 1, tau)


# --------------------------------------------------------------------------- measurement


def _member_times(cfg, datasets) -> dict[tuple[int, int, int], tuple[np.ndarray, ...]]:
    """``(S, i, j) -> (times, censored, n_diverged)`` for every cell.

    A member's time is its event step, or (censored) ``max_steps``, or (censored)
    the step it diverged at: it had not escaped by then.
    """
    out = {}
    for e in _layout(cfg):
        ev, cens, div = _rows(datasets[e.name], e, cfg["seeds"])
        for g, key in enumerate(e.cells):
            dv = div[g] >= 0
            t = analysis.escape_times(ev[g], cens[g], cfg["max_steps"])
            t = np.where(dv & cens[g], div[g], t)
            out[key] = (t, cens[g], int(np.sum(dv & cens[g])))
    return out


def _rows(ds, entry: _Entry, seeds: int) -> tuple[np.ndarray, ...]:
    """``(event_step, event_censored, diverged_step)`` of a study as ``[cell, seed]`` arrays,
    rows in the order of ``entry.cells``."""
    dims = (*(("batch_size",) if entry.sizes is not None else ()),
            *(k for k, v in entry.hparams.items() if np.ndim(v) == 1), "seed")
    out = []
    for var in ("event_step", "event_censored", "diverged_step"):
        da = ds[var]
        if set(da.dims) != set(dims):
            raise ValueError(f"escape: {entry.name}.{var} has dims {da.dims}, expected {dims}")
        if entry.sizes is not None:
            da = da.sel(batch_size=list(entry.sizes))
        out.append(np.asarray(da.transpose(*dims).values).reshape(-1, seeds))
    return tuple(out)


def _influence(num: np.ndarray, den: np.ndarray) -> tuple[float, np.ndarray]:
    """``r = Σnum/Σden`` and its per-member influence ψ (delta method), ``r̂ − r ≈ Σψ``.

    ``‖ψ‖`` is the sandwich standard error (with the n/(n − 1) correction); for two
    ratios over the same members (common random numbers) ``ψ_a·ψ_b`` is their
    covariance.
    """
    n = num.size
    r = float(num.sum() / den.sum())
    psi = (num - r * den) / float(den.sum()) * math.sqrt(n / (n - 1))
    return r, psi


def _ratio(num: np.ndarray, den: np.ndarray) -> tuple[float, float]:
    """``Σnum/Σden`` with its delta-method (sandwich) standard error over members."""
    r, psi = _influence(num, den)
    return r, float(np.sqrt(psi @ psi))


def measure_mfpt(times, censored) -> tuple[float, float, int]:
    """Censored MLE of the mean first-passage time, its model-free SE, the escapes.

    The estimate is :func:`sgdlab.analysis.mean_first_passage` (total time at
    risk over escapes; the plain mean without censoring); the SE is the
    ratio estimator's delta-method SE, ``std/√n`` without censoring.
    """
    escaped = ~np.asarray(censored, dtype=bool)
    if not escaped.any():
        return math.nan, math.nan, 0
    fp = analysis.mean_first_passage(times, censored)
    _, se = _ratio(np.asarray(times, float), escaped.astype(float))
    return float(fp.mean), se, int(fp.n_events)


def measure_tail_rate(times, censored, t_tail: int) -> tuple[float, float, int]:
    """Escape rate per step after ``t_tail`` (left-truncated, right-censored MLE).

    Members still inside after ``t_tail`` steps contribute their residual time
    ``t − t_tail``; the rate is :func:`sgdlab.analysis.exponential_rate_mle` on
    those (#escapes / Σ residual times: the exact MLE of a geometric per-step
    hazard) with the ratio estimator's SE.
    """
    times = np.asarray(times, float)
    censored = np.asarray(censored, dtype=bool)
    alive = times > t_tail
    r, c = times[alive] - t_tail, censored[alive]
    if r.size < 2 or (~c).sum() == 0:
        return math.nan, math.nan, int((~c).sum())
    mle = analysis.exponential_rate_mle(r, c)
    _, se = _ratio((~c).astype(float), r)
    return float(mle.rate), se, int(mle.n_events)


def _num(x: float) -> float | None:
    """A JSON-safe number (None for NaN)."""
    return float(x) if math.isfinite(x) else None




def slope_se_correlated(x, mean, se, cov_log) -> float:
    """SE of the weighted-least-squares slope of :func:`_fit_slope` when the ln means
    have the covariance ``cov_log`` (the weights stay ``(mean/se)²``).

    The slope is linear in y = ln mean: ``slope = c·y`` with c the second row of
    ``(XᵀWX)⁻¹XᵀW``, X = [1, x], W = diag((mean/se)²); so ``Var = c Σ cᵀ``.
    """
    x = np.asarray(x, float)
    w = (np.asarray(mean, float) / np.asarray(se, float)) ** 2
    X = np.column_stack([np.ones_like(x), x])
    c = np.linalg.solve(X.T @ (w[:, None] * X), X.T * w)[1]
    return float(math.sqrt(c @ np.asarray(cov_log, float) @ c))


def _analyze(cfg, datasets, seed: int = 0, checkpoint_dir=None) -> Outcome:
    """The outcome of a run; ``seed`` is the run's seed (the splitting estimator's keys),
    ``checkpoint_dir`` where the splitting estimator checkpoints its finished chunks."""
    if cfg["estimator"] == "splitting":
        return _splitting.analyze(cfg, datasets, seed, checkpoint_dir)
    cells = _cells(cfg)
    times = _member_times(cfg, datasets)
    quantities, notes, oracles, influence = [], [], {}, {}
    rows = []
    dL = _barrier(cfg)
    c = cfg["max_steps"]
    if _fixed_noise(cfg):
        notes.append(f"noise_var={cfg['noise_var']:g} fixes the noise; barrier_over_temperature "
                     "is not used (ΔL/T follows per learning rate; no Arrhenius fit)")
    for cell in cells:
        orc = oracles[(cell.S, cell.i, cell.j)] = oracle(cfg, cell)
        t, cens, n_div = times[(cell.S, cell.i, cell.j)]
        label = ", ".join(f"{k}={v:g}" for k, v in cell.coords.items())
        if n_div:
            notes.append(f"{label}: {n_div} members diverged before escaping (censored there)")
        mfpt, se, n_ev = measure_mfpt(t, cens)
        if n_ev:
            influence[(cell.S, cell.i, cell.j)] = _influence(t, (~cens).astype(float))[1] / mfpt
        n_cens = int(np.sum(cens))
        note = None
        if n_ev < MIN_EVENTS:
            mfpt, se = math.nan, math.nan
            note = (f"only {n_ev} members escaped within max_steps={c} (need {MIN_EVENTS}): "
                    "run longer")
            notes.append(f"{label}: mfpt not measured ({note})")
        elif n_cens:
            note = (f"{n_cens} of {t.size} censored at max_steps; the MLE's exact target is "
                    f"{orc.tau_censored:.5g} (uncensored τ = {orc.tau:.5g})")
        src = "nystrom" if cell.S == 1 else "lattice collocation"
        quantities.append(quantity("mfpt", cell.coords, mfpt, se, orc.tau_censored, oracle=src,
                                   note=note))
        rate, rse, n_tail = measure_tail_rate(t, cens, orc.t_tail)
        note = (f"escapes after t_tail = {orc.t_tail} steps (residual times); 1/τ = "
                f"{1 / orc.tau:.5g}")
        if n_tail < MIN_TAIL_EVENTS:
            rate, rse = math.nan, math.nan
            note = (f"only {n_tail} escapes after t_tail = {orc.t_tail} steps (need "
                    f"{MIN_TAIL_EVENTS}): lower the barrier or raise max_steps/seeds")
            notes.append(f"{label}: escape_rate not measured ({note})")
        quantities.append(quantity("escape_rate", cell.coords, rate, rse,
                                   orc.hazard if math.isfinite(rate) else None,
                                   oracle=f"{src} leading eigenvalue" if math.isfinite(rate)
                                   else None, note=note))
        temps = (theory.arrhenius_sharp_well(cell.lr, cfg["curvature"], cell.s2)
                 if cfg["potential"] == "sharp-well" else None)
        rows.append({**cell.coords, "noise_var": cell.s2, "temperature": cell.lr * cell.s2 / 2,
                     "effective_temperature": None if temps is None else temps.effective,
                     "tau": orc.tau,
                     "tau_censored": orc.tau_censored, "hazard": orc.hazard,
                     "t_tail": orc.t_tail, "nodes": orc.nodes, "mfpt": _num(mfpt),
                     "mfpt_se": _num(se), "rate": _num(rate), "rate_se": _num(rse),
                     "censored": n_cens, "diverged": n_div})
    arrhenius = []
    xs = cfg["barrier_over_temperature"]
    if not _fixed_noise(cfg) and len(xs) >= 3:
        for S in cfg["batch_size"]:
            for lr in cfg["learning_rate"]:
                row = [r for r in rows if r["batch_size"] == S and r["learning_rate"] == lr]
                x = np.array([r["barrier_over_temperature"] for r in row])
                m = np.array([np.nan if r["mfpt"] is None else r["mfpt"] for r in row])
                e = np.array([np.nan if r["mfpt_se"] is None else r["mfpt_se"] for r in row])
                coords = {"learning_rate": lr, "batch_size": S}
                sharp = (theory.arrhenius_slope(lr, cfg["curvature"])
                         if cfg["potential"] == "sharp-well" else None)
                entry = {**coords, "continuous": 1.0, "sharp_well": sharp}
                if not (np.all(np.isfinite(m)) and np.all(e > 0)):
                    quantities.append(quantity("arrhenius_slope", coords, math.nan, math.nan,
                                               None, note="an mfpt is missing"))
                    arrhenius.append(entry)
                    continue
                slope, se_indep, _, _, a = _fit_slope(x, m, e)
                psi = np.array([influence[(S, r_i, j)] for r_i, j in
                                ((cfg["learning_rate"].index(lr), j) for j in range(len(x)))])
                sse = slope_se_correlated(x, m, e, psi @ psi.T)
                lo, hi = slope - Z95 * sse, slope + Z95 * sse
                tau_c = np.array([r["tau_censored"] for r in row])
                pred, _, _, _, a_pred = _fit_slope(x, tau_c, tau_c * e / m)
                note = f"continuous time: 1; sharp-well T_eff: {sharp:.4g}" if sharp is not None \
                    else "continuous time: 1 (no closed-form discrete slope for a smooth barrier)"
                quantities.append(quantity("arrhenius_slope", coords, slope, sse, pred,
                                           ci=(lo, hi), note=note,
                                           oracle="nystrom" if S == 1 else
                                           "lattice collocation"))
                entry.update(slope=slope, se=sse, se_independent=se_indep, lo=lo, hi=hi,
                             intercept=a, predicted=pred, predicted_intercept=a_pred)
                arrhenius.append(entry)
    elif not _fixed_noise(cfg):
        notes.append("fewer than 3 barrier_over_temperature values: no Arrhenius fit")
    extra = {"barrier": dL, "cells": rows, "arrhenius": arrhenius,
             "curves": _curves(cfg),
             "survival": _survival_curves(cfg, cells, oracles)}
    return Outcome(quantities, notes, extra)


def _curves(cfg) -> dict:
    """Oracle τ on fine grids (Gaussian noise only) for the figures."""
    out: dict = {"mfpt_vs_lr": [], "mfpt_vs_x": []}
    if 1 not in cfg["batch_size"]:
        return out
    lrs = np.asarray(cfg["learning_rate"])
    hi_lr = 2 / cfg["curvature"] if cfg["potential"] == "sharp-well" else 1.0
    grid = np.unique(np.concatenate([lrs, np.geomspace(lrs.min(), lrs.max(), 15)]))
    grid = grid[grid < hi_lr]
    dL = _barrier(cfg)
    if _fixed_noise(cfg):
        series = [("noise_var", cfg["noise_var"], lambda lr: cfg["noise_var"])]
    else:
        series = [("barrier_over_temperature", x, lambda lr, x=x: 2 * dL / (lr * x))
                  for x in cfg["barrier_over_temperature"]]
    for key, value, s2_of in series:
        taus = []
        for lr in grid:
            cell = _Cell(1, -1, -1, float(lr), 2 * dL / (lr * s2_of(lr)), s2_of(lr))
            taus.append(_tau_only(cfg, cell))
        out["mfpt_vs_lr"].append({key: value, "learning_rate": grid.tolist(), "tau": taus})
    if not _fixed_noise(cfg) and len(cfg["barrier_over_temperature"]) >= 2:
        xs = np.asarray(cfg["barrier_over_temperature"])
        xg = np.linspace(xs.min(), xs.max(), 9)
        for lr in cfg["learning_rate"]:
            taus = [_tau_only(cfg, _Cell(1, -1, -1, lr, float(x), 2 * dL / (lr * x)))
                    for x in xg]
            out["mfpt_vs_x"].append({"learning_rate": lr, "barrier_over_temperature":
                                     xg.tolist(), "tau": taus})
    return out




def _survival_picks(cfg, cells) -> list[_Cell]:
    """A few cells for the survival panel: smallest and largest λ at the middle barrier."""
    S = cfg["batch_size"][0]
    j = (len(cfg["barrier_over_temperature"]) // 2) if not _fixed_noise(cfg) else 0
    mine = [c for c in cells if c.S == S and c.j == j]
    picks = [mine[0]] if len(mine) == 1 else [mine[0], mine[-1]]
    if len(mine) >= 4:
        picks.insert(1, mine[len(mine) // 2])
    return picks


def _survival_curves(cfg, cells, oracles) -> list[dict]:
    out = []
    for cell in _survival_picks(cfg, cells):
        orc = oracles[(cell.S, cell.i, cell.j)]
        end = min(cfg["max_steps"], math.ceil(5 * orc.tau))
        t = np.arange(end + 1.0) if end <= 400 else np.unique(np.round(np.linspace(0, end, 200)))
        out.append({**cell.coords, "tau": orc.tau, "t": t.tolist(),
                    "survival": orc.survival(t).tolist()})
    return out


# --------------------------------------------------------------------------- figures


def _figures(results, summary):
    cfg = summary["config"]
    survival = []
    if cfg.get("estimator", "brute") != "splitting":
        for sv in summary["survival"]:
            row = next(r for r in summary["cells"] if r["learning_rate"] == sv["learning_rate"]
                       and r["batch_size"] == sv["batch_size"]
                       and r["barrier_over_temperature"] == sv["barrier_over_temperature"])
            entry, g = _locate(cfg, row)
            ev, cens, _ = _rows(results[entry.name], entry, cfg["seeds"])
            t = analysis.escape_times(ev[g], cens[g], cfg["max_steps"])
            survival.append(analysis.kaplan_meier(t, cens[g]))
    return _escape_figures.figures(summary, survival)


def _locate(cfg, row) -> tuple[_Entry, int]:
    """The study and the row of its cells holding a cell of the summary."""
    i = cfg["learning_rate"].index(row["learning_rate"])
    cells = [c for c in _cells(cfg) if c.S == row["batch_size"] and c.i == i
             and round(c.x, 6) == row["barrier_over_temperature"]]
    target = (cells[0].S, cells[0].i, cells[0].j)
    for e in _layout(cfg):
        if target in e.cells:
            return e, e.cells.index(target)
    raise KeyError(row)




_w_score = _splitting.w_score
"""The double well's reaction coordinate w (notebooks/escape_splitting.py uses it)."""


def effective_temperature_table(potential: str, learning_rates, x_pair=(16.0, 20.0),
                                curvature: float = 1.0, wall: float = 1.0,
                                threshold: float = 0.0) -> list[dict]:
    """Where the discrete effective temperature predicts the Arrhenius slope, with numbers.

    For each λ: the oracle's local slope d ln τ / d(ΔL/T) between the two barrier
    values of ``x_pair`` (exact Nyström τ), the continuous-time slope 1, and the
    effective-temperature slope ``T/T_eff = (2 − λh)/2`` with h the curvature of
    the minimum (a for the sharp well, 2 for the double well), and their relative
    errors. The sharp well is a quadratic up to its wall, where T_eff is the exact
    stationary temperature; the double well's barrier is a smooth saddle.
    """
    cfg = _exp().resolve("quick", {"potential": potential, "curvature": curvature,
                                   "wall": wall, "threshold": threshold,
                                   "learning_rate": list(learning_rates)})
    dL = _barrier(cfg)
    h = curvature if potential == "sharp-well" else 2.0
    out = []
    for lr in learning_rates:
        lt = [math.log(_tau_only(cfg, _Cell(1, -1, -1, lr, x, 2 * dL / (lr * x))))
              for x in x_pair]
        slope = (lt[1] - lt[0]) / (x_pair[1] - x_pair[0])
        teff = (2 - lr * h) / 2
        out.append({"learning_rate": lr, "oracle_slope": slope, "teff_slope": teff,
                    "teff_rel_error": teff / slope - 1, "continuous_rel_error": 1 / slope - 1})
    return out


def _exp():
    from sgdlab.experiments import get
    return get("escape")


register(Experiment(
    name="escape", study="5",
    title="escape time of SGD from a sharp or smooth minimum vs the exact Nyström oracle and "
          "the Arrhenius law (Liu-Ziyin-Ueda)",
    params=(
        Param("potential", str, "sharp-well", "sharp-well: U = a w²/2 with absorbing walls; "
              "double-well: U = (w²−1)²/4, escaped past threshold", choices=POTENTIALS),
        Param("curvature", float, 1.0, "a of the sharp well (the double well is fixed)",
              low=0.0, low_open=True),
        Param("wall", float, 1.0, "sharp well: escaped once |w| ≥ wall (barrier a·wall²/2)",
              low=0.0, low_open=True),
        Param("threshold", float, 0.0, "double well: escaped once w > threshold (0: the "
              "barrier top)"),
        Param("start", float, 0.0, "initial position relative to the minimum (w0 = 0 + start "
              "for the sharp well, −1 + start for the double well)"),
        Param("learning_rate", float, [0.3, 0.7, 1.1, 1.5], "learning rates λ", list=True,
              low=0.0, low_open=True),
        Param("noise_var", float, 0.0, "variance of one example's gradient noise (a batch of "
              "S has noise_var/S); 0: set it from barrier_over_temperature", low=0.0),
        Param("barrier_over_temperature", float, [3.0, 4.0, 5.0], "ΔL/T with T = λσ²/2: sets "
              "σ² = 2ΔL/(λ·value) per learning rate (unused when noise_var > 0)", list=True,
              low=0.0, low_open=True),
        Param("batch_size", int, [1], "1: Gaussian gradient noise; S > 1: minibatch noise from "
              f"{N_DATA} per-example tilts", list=True, low=1),
        Param("max_steps", int, 2500, "SGD steps at most; members not escaped by then are "
              "right-censored", low=1),
        Param("seeds", int, 3000, "members per grid point", low=2),
        Param("estimator", str, "brute", "brute: an ensemble run to max_steps (censored); "
              "splitting: flux × adaptive multilevel splitting (sgdlab.splitting), for mean "
              "escape times far beyond brute force", choices=_splitting.ESTIMATORS),
        Param("replicas", int, 8, "splitting: independent replicas; standard errors and 95% "
              "intervals (Student t) come from their spread; the 4-SE mfpt check wants ≥ 8, "
              "and 16 where the rate per replica is heavy-tailed (high barriers; with "
              "target_rel_se they also size the second stage)",
              low=2),
        Param("walkers", int, 256, "splitting: brute-force flux walkers per replica (they count "
              "crossings of the basin level and are recycled at the start on escape)", low=1),
        Param("flux_steps", int, 400, "splitting: SGD steps per flux walker", low=1),
        Param("burn_in", int, 100, "splitting: leading flux steps not counted (relaxation "
              "from the start)", low=0),
        Param("particles", int, 512, "splitting: AMS population per replica (more: smaller "
              "SE; too few and the population dies out)", low=2),
        Param("kill_fraction", float, 0.5, "splitting: fraction of particles killed and "
              "cloned per AMS iteration", low=0.0, high=0.99, low_open=True),
        Param("levels", int, 100, "splitting: levels of the score between the basin level "
              "and the escape level", low=1),
        Param("substeps", int, 8, "splitting: sub-kicks per SGD step (K > 1 splits the "
              "Gaussian kick so a jump crosses levels gradually; same chain at whole steps)",
              low=1),
        Param("basin", float, 0.25, "splitting: basin level as a fraction of the way from "
              "the minimum to the escape level (score |w| sharp well, w double well)",
              low=0.0, high=0.99, low_open=True),
        Param("max_trial_steps", int, 20000, "splitting: SGD steps one AMS trial may take",
              low=1),
        Param("score", str, "auto", "splitting: the reaction coordinate. position: |w| (sharp "
              "well), w (double well); drift: the noiseless next position w − λU'(w) (double "
              "well; the basin then excludes the states a step throws out of it, which matters "
              "once the minimum oscillates, λU'' > 1); nearest: max(w, θ + w_L − w), θ minus "
              "the distance to the nearer point from which a step escapes (θ, or the far-left "
              "w_L that the drift throws onto θ; double well); auto: position, or nearest in "
              "the double well where λU'' > 1", choices=_splitting.SCORES),
        Param("trials_from", str, "auto", "splitting: where the AMS trials start. crossing: "
              "the states just past the basin level (forward flux); basin: the basin states, "
              "so the kick that leaves the basin is split over sub-kicks too (for escapes by "
              "one large kick); auto: basin in the double well where λU'' > 1 with score "
              "auto or nearest, crossing elsewhere", choices=_splitting.TRIALS_FROM),
        Param("target_rel_se", float, 0.0, "splitting: when > 0, a second stage of replicas "
              "(up to max_replicas in all) sized from the first stage's spread to reach this "
              "relative SE of 1/τ; 0: off", low=0.0),
        Param("max_replicas", int, 64, "splitting: most replicas the second stage may bring "
              "the total to", low=2),
    ),
    presets={
        "quick": {},
        "paper": {"learning_rate": [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.3, 1.6, 1.8],
                  "barrier_over_temperature": [3.0, 4.0, 5.0, 6.0], "batch_size": [1, 4],
                  "max_steps": 40000, "seeds": 20000},
    },
    studies=_studies, analyze=_analyze, figures=_figures, validate=_validate,
))
