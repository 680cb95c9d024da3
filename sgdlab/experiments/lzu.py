"""Study 5 (stationary part): finite-learning-rate SGD on quadratics and linear regression.

Liu, Ziyin & Ueda, "Noise and Fluctuation of Finite Learning Rate Stochastic
Gradient Descent", ICML 2021 (arXiv:2012.03636); Ziyin, Liu, Mori & Ueda,
"Strength of Minibatch Noise in SGD", ICLR 2022 (arXiv:2102.05375).

* ``lzu-stationary``: ``½ wᵀKw`` with Gaussian gradient noise of covariance C
  (non-commuting when ``rotation`` ≠ 0) under heavy-ball SGD; the measured
  stationary covariance against Theorem 1, and the continuous-time answer. Two
  extra studies (``extras``):

  - ``nesterov``: optax's Nesterov SGD on the same problem, against the exact
    stationary covariance of its linear recursion (the augmented discrete
    Lyapunov equation, :func:`sgdlab.theory.lzu.stationary_covariance_linear`);
  - ``finite_data``: a finite data set of N quadratics sharing K, centres of
    covariance ``C_c = R diag(noise_var) Rᵀ``, minibatches of S drawn with
    replacement or as independent S-subsets (coordinate ``replacement``); the
    noise is ``C = K C_c K/S``, times ``(N−S)/(N−1)`` without replacement, and
    the stationary covariance is Theorem 1's with that C
    (``finite_data_variance``); their ratio is ``(N−S)/(N−1)``
    (``finite_data_ratio``);
  - ``reshuffle``: the same data set under epoch reshuffling (``mode=
    "without_replacement"`` of :mod:`sgdlab.data`: disjoint batches of a random
    permutation). Each batch has the without-replacement C, but the batches of
    an epoch are negatively correlated, so Theorem 1 does not apply: the
    prediction is the exact phase-averaged covariance of the periodic chain
    (:func:`sgdlab.theory.lzu.stationary_covariance_periodic`)
    (``reshuffle_variance``), and the notes give its ratio to the i.i.d. formula.

* ``lzu-minibatch``: online linear regression with state-dependent minibatch
  noise, for SGD and damped Newton, against Theorem 2. (``method=ngd`` is the
  same update as damped Newton here: the Fisher of the unit-variance Gaussian
  likelihood is A, the Hessian. It is kept as a key, not as a separate claim.)
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg

from sgdlab import engine, theory
from sgdlab._validate import fail
from sgdlab.experiments import Experiment, Outcome, Param, quantity, register
from sgdlab.optim import Optimizer
from sgdlab.problems import finite_quadratic, linear_regression, noisy_quadratic
from sgdlab.theory.lzu import (
    heavy_ball_transition,
    nesterov_transition,
    reshuffle_noise_cov,
    stationary_covariance_linear,
    stationary_covariance_periodic,
)

ORACLE_THEOREM1 = "LZU Theorem 1 (linear solve)"
ORACLE_NESTEROV = "augmented discrete Lyapunov solve (optax Nesterov)"
ORACLE_FINITE = "LZU Theorem 1 with C = K C_c K/S [·(N−S)/(N−1)]"
ORACLE_RATIO = "(N−S)/(N−1) (finite-data noise)"
ORACLE_RESHUFFLE = "periodic Lyapunov solve (epoch reshuffling)"
ORACLE_LINREG = "Ziyin et al. Theorem 2 (closed form)"
ORACLE_NEWTON = "damped Newton closed form (Ziyin et al.)"
ORACLE_NGD = "damped Newton closed form (NGD: Fisher = A = Hessian)"
EXTRAS = ("nesterov", "finite_data", "reshuffle", "none")


# --------------------------------------------------------------------------- figures


def _measured(summary, name, **match):
    """(learning rates, values, SEs) of the quantities ``name`` whose coords match."""
    qs = [q for q in summary["quantities"] if q["name"] == name
          and all(q["coords"].get(k) == v for k, v in match.items())]
    x = np.array([q["coords"]["learning_rate"] for q in qs])
    y = np.array([np.nan if q["value"] is None else q["value"] for q in qs])
    e = np.array([np.nan if q["se"] is None else q["se"] for q in qs])
    return x, y, e


def _panel(ax, summary, name, match, label, color, curves, grid, marker="o"):
    """Measured points (±2 SE) of one quantity and its predicted curves vs learning rate.

    ``curves`` are ``(label, lr -> value or None, line style)``.
    """
    x, y, e = _measured(summary, name, **match)
    ax.errorbar(x, y, yerr=2 * e, fmt=marker, color=color, capsize=3,
                label=f"measured, {label} (±2 SE)")
    for curve_label, fn, style in curves:
        vals = [fn(lr) for lr in grid]
        ax.plot(grid, [np.nan if v is None else v for v in vals], style, color=color,
                alpha=1.0 if style == "-" else 0.6, label=f"{curve_label}, {label}")


def _grid(lrs, lo=0.5, hi=1.05):
    lrs = np.asarray(lrs)
    return np.linspace(lrs.min() * lo, lrs.max() * hi, 200)


def _finish(ax, ylabel, title):
    ax.set_yscale("log")
    ax.set_xlabel("learning rate λ")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)


# --------------------------------------------------------------------------- lzu-stationary


def _rotation(theta: float, d: int) -> np.ndarray:
    r = np.eye(d)
    if d >= 2:
        c, s = np.cos(theta), np.sin(theta)
        r[:2, :2] = [[c, -s], [s, c]]
    return r


def _matrices(cfg):
    d = len(cfg["curvature"])
    K = np.diag(cfg["curvature"])
    nv = np.asarray(cfg["noise_var"], dtype=float)
    if nv.size == 1:
        nv = np.full(d, nv[0])
    R = _rotation(cfg["rotation"], d)
    C = R @ np.diag(nv) @ R.T
    return K, C


def _extras(cfg) -> set[str]:
    return set(cfg["extras"]) - {"none"}


def _validate_stationary(cfg):
    d = len(cfg["curvature"])
    if len(cfg["noise_var"]) not in (1, d):
        fail("noise_var", cfg["noise_var"], f"expected 1 or {d} values (one per curvature)")
    if cfg["rotation"] != 0 and d < 2:
        fail("rotation", cfg["rotation"], "a rotation needs at least 2 dimensions (curvature)")
    if cfg["burn_in"] >= cfg["steps"]:
        fail("burn_in", cfg["burn_in"], f"must be smaller than steps={cfg['steps']}")
    if "none" in cfg["extras"] and len(cfg["extras"]) > 1:
        fail("extras", cfg["extras"], "'none' cannot be combined with other extras")
    if {"finite_data", "reshuffle"} & set(cfg["extras"]):
        if cfg["n_data"] <= d:
            fail("n_data", cfg["n_data"], f"expected more data points than dimensions ({d})")
        if cfg["finite_batch_size"] > cfg["n_data"]:
            fail("finite_batch_size", cfg["finite_batch_size"],
                 f"expected at most n_data={cfg['n_data']}")
        if len(set(cfg["replacement"])) != len(cfg["replacement"]):
            fail("replacement", cfg["replacement"], "expected each of true/false at most once")


def _prediction(lr, K, C, mu):
    """(Theorem 1 covariance, continuous-time covariance, note)."""
    try:
        sigma = theory.lzu_covariance(lr, K, C, momentum=mu)
    except theory.NoStationaryDistribution as e:
        return None, None, str(e)
    cont = scipy.linalg.solve_continuous_lyapunov(K, lr / (1 - mu) * C)
    return sigma, cont, None


def nesterov_prediction(lr, K, C, mu):
    """(stationary covariance of optax's Nesterov SGD, note) from its linear recursion."""
    d = K.shape[0]
    try:
        A, B = nesterov_transition(lr, K, mu)
        return stationary_covariance_linear(A, B, C)[:d, :d], None
    except theory.NoStationaryDistribution as e:
        return None, str(e)


def finite_noise(cfg, replacement: bool) -> np.ndarray:
    """C = K C_c K/S (·(N−S)/(N−1) without replacement) of the finite-data study."""
    K, Cc = _matrices(cfg)
    return theory.finite_data_noise_cov(K, Cc, cfg["finite_batch_size"], cfg["n_data"],
                                        replacement=replacement)


def _finite_prediction(cfg, lr, replacement):
    K, _ = _matrices(cfg)
    try:
        return theory.lzu_covariance(lr, K, finite_noise(cfg, replacement)), None
    except theory.NoStationaryDistribution as e:
        return None, str(e)


def reshuffle_prediction(cfg, lr):
    """(phase-averaged covariance of plain SGD under epoch reshuffling, note)."""
    K, Cc = _matrices(cfg)
    d = K.shape[0]
    N, S = cfg["n_data"], cfg["finite_batch_size"]
    try:
        A, B = heavy_ball_transition(lr, K, 0.0)
        G = reshuffle_noise_cov(K, Cc, S, N)
        return stationary_covariance_periodic(A, B, G, N // S)[:d, :d], None
    except theory.NoStationaryDistribution as e:
        return None, str(e)


def _finite_problem(cfg, mode):
    K, Cc = _matrices(cfg)
    return finite_quadratic(K, n_data=cfg["n_data"], centers_cov=Cc,
                            batch_size=cfg["finite_batch_size"], mode=mode)


def _finite_name(replacement: bool) -> str:
    return "finite_with" if replacement else "finite_without"


def _studies_stationary(cfg, seed):
    K, C = _matrices(cfg)
    problem = noisy_quadratic(K, C)
    studies = {"stationary": engine.Study(
        problem, Optimizer("momentum"),
        {"learning_rate": cfg["learning_rate"], "momentum": cfg["momentum"]},
        steps=cfg["steps"], seeds=cfg["seeds"], seed=seed, observe=None,
        stationary=engine.Stationary(("w_outer", "risk"), burn_in=cfg["burn_in"], n_batches=10))}
    extras = _extras(cfg)
    if "nesterov" in extras:
        studies["nesterov"] = engine.Study(
            problem, Optimizer("nesterov"),
            {"learning_rate": cfg["nesterov_learning_rate"],
             "momentum": cfg["nesterov_momentum"]},
            steps=cfg["steps"], seeds=cfg["seeds"], seed=seed, observe=None,
            stationary=engine.Stationary(("w_outer", "risk"), burn_in=cfg["burn_in"]))
    modes = {}
    if "finite_data" in extras:
        modes.update({_finite_name(r): "with_replacement" if r else "independent_subsets"
                      for r in cfg["replacement"]})
    if "reshuffle" in extras:
        modes["finite_reshuffle"] = "without_replacement"
    for name, mode in modes.items():
        studies[name] = engine.Study(
            _finite_problem(cfg, mode), Optimizer("sgd"),
            {"learning_rate": cfg["finite_learning_rate"]},
            steps=cfg["steps"], seeds=cfg["finite_seeds"], seed=seed, observe=None,
            stationary=engine.Stationary(("w_outer",), burn_in=cfg["burn_in"]))
    return studies


def _covariance_quantities(prefix, coords, est, se, sigma, d, offdiag, note, oracle):
    """Per-dimension variances (and off-diagonal covariances) against ``sigma``."""
    out = []
    for a in range(d):
        out.append(quantity(f"{prefix}variance", {**coords, "dim": a}, est[a, a], se[a, a],
                            None if sigma is None else sigma[a, a], oracle=oracle, note=note))
    if offdiag:
        for a in range(d):
            for b in range(a + 1, d):
                out.append(quantity(f"{prefix}covariance", {**coords, "dim": [a, b]},
                                    est[a, b], se[a, b], None if sigma is None else sigma[a, b],
                                    oracle=oracle, note=note))
    return out


def _diverged_note(ds, index, coords, seeds):
    n_div = int(ds.n_diverged.values[index])
    if not n_div:
        return None
    return (", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in coords.items())
            + f": {n_div} of {seeds} members diverged")


def _analyze_stationary(cfg, datasets) -> Outcome:
    K, C = _matrices(cfg)
    d = K.shape[0]
    offdiag = cfg["rotation"] != 0
    quantities, notes = [], []
    runs = [("", datasets["stationary"], cfg["momentum"], cfg["learning_rate"])]
    if "nesterov" in _extras(cfg):
        runs.append(("nesterov_", datasets["nesterov"], cfg["nesterov_momentum"],
                     cfg["nesterov_learning_rate"]))
    for prefix, ds, mus, lrs in runs:
        for i, lr in enumerate(lrs):
            for j, mu in enumerate(mus):
                if prefix:
                    sigma, note = nesterov_prediction(lr, K, C, mu)
                    oracle = ORACLE_NESTEROV
                else:
                    sigma, _, note = _prediction(lr, K, C, mu)
                    oracle = ORACLE_THEOREM1
                coords = {"learning_rate": lr, "momentum": mu}
                label = "nesterov, " if prefix else ""
                if note:
                    notes.append(f"{label}learning_rate={lr:g}, momentum={mu:g}: {note}")
                quantities += _covariance_quantities(
                    prefix, coords, ds.stationary_w_outer_mean.values[i, j],
                    ds.stationary_w_outer_se.values[i, j], sigma, d, offdiag, note, oracle)
                quantities.append(quantity(
                    f"{prefix}excess_loss", coords, ds.stationary_risk_mean.values[i, j],
                    ds.stationary_risk_se.values[i, j],
                    None if sigma is None else theory.excess_loss(K, sigma),
                    oracle=None if sigma is None else "½Tr(KΣ), " + oracle, note=note))
                div = _diverged_note(ds, (i, j), coords, cfg["seeds"])
                if div:
                    notes.append(label + div)
    if "finite_data" in _extras(cfg):
        q, n = _analyze_finite(cfg, datasets)
        quantities += q
        notes += n
    if "reshuffle" in _extras(cfg):
        q, n = _analyze_reshuffle(cfg, datasets)
        quantities += q
        notes += n
    return Outcome(quantities, notes)


def _analyze_reshuffle(cfg, datasets):
    K, _ = _matrices(cfg)
    d = K.shape[0]
    ds = datasets["finite_reshuffle"]
    quantities, notes = [], []
    if (cfg["steps"] - cfg["burn_in"]) % (cfg["n_data"] // cfg["finite_batch_size"]):
        notes.append("reshuffle: steps − burn_in is not a multiple of the batches per epoch; "
                     "the time average weights the epoch's phases unequally")
    for i, lr in enumerate(cfg["finite_learning_rate"]):
        sigma, note = reshuffle_prediction(cfg, lr)
        iid, _ = _finite_prediction(cfg, lr, False)
        if note:
            notes.append(f"reshuffle, learning_rate={lr:g}: {note}")
        elif iid is not None:
            ratios = ", ".join(f"{sigma[a, a] / iid[a, a]:.3g}" for a in range(d))
            notes.append(f"reshuffle, learning_rate={lr:g}: exact variance / independent-"
                         f"subsets formula = {ratios} (per dim)")
        est = ds.stationary_w_outer_mean.values[i]
        se = ds.stationary_w_outer_se.values[i]
        for a in range(d):
            quantities.append(quantity(
                "reshuffle_variance", {"learning_rate": lr, "dim": a}, est[a, a], se[a, a],
                None if sigma is None else sigma[a, a], oracle=ORACLE_RESHUFFLE, note=note))
        div = _diverged_note(ds, i, {"learning_rate": lr}, cfg["finite_seeds"])
        if div:
            notes.append("reshuffle: " + div)
    return quantities, notes


def _analyze_finite(cfg, datasets):
    K, _ = _matrices(cfg)
    d = K.shape[0]
    N, S = cfg["n_data"], cfg["finite_batch_size"]
    quantities, notes, var = [], [], {}
    for repl in cfg["replacement"]:
        ds = datasets[_finite_name(repl)]
        for i, lr in enumerate(cfg["finite_learning_rate"]):
            sigma, note = _finite_prediction(cfg, lr, repl)
            coords = {"replacement": repl, "learning_rate": lr}
            if note:
                notes.append(f"finite data, replacement={repl}, learning_rate={lr:g}: {note}")
            est = ds.stationary_w_outer_mean.values[i]
            se = ds.stationary_w_outer_se.values[i]
            for a in range(d):
                var[repl, i, a] = (est[a, a], se[a, a])
                quantities.append(quantity(
                    "finite_data_variance", {**coords, "dim": a}, est[a, a], se[a, a],
                    None if sigma is None else sigma[a, a], oracle=ORACLE_FINITE, note=note))
            div = _diverged_note(ds, i, coords, cfg["finite_seeds"])
            if div:
                notes.append("finite data: " + div)
    if set(cfg["replacement"]) == {True, False}:
        factor = (N - S) / (N - 1)
        for i, lr in enumerate(cfg["finite_learning_rate"]):
            for a in range(d):
                (v1, s1), (v0, s0) = var[True, i, a], var[False, i, a]
                r = v0 / v1
                se = abs(r) * math.sqrt((s0 / v0) ** 2 + (s1 / v1) ** 2)
                ok = math.isfinite(r) and math.isfinite(se)
                quantities.append(quantity(
                    "finite_data_ratio", {"learning_rate": lr, "dim": a},
                    r if ok else math.nan, se if ok else math.nan, factor,
                    oracle=ORACLE_RATIO))
    return quantities, notes


def _curve(fn, a, b=None):
    """lr -> entry (a, b) of the covariance ``fn(lr)`` returns, or None."""
    b = a if b is None else b

    def value(lr):
        s = fn(lr)
        return None if s is None else s[a, b]
    return value


def _figures_stationary(results, summary):
    from matplotlib.figure import Figure

    cfg = summary["config"]
    K, C = _matrices(cfg)
    d = K.shape[0]
    extras = _extras(cfg)
    figs = {}
    fig = Figure(figsize=(5.5 * d, 4.2))
    axes = fig.subplots(1, d, squeeze=False)[0]
    for a, ax in enumerate(axes):
        for j, mu in enumerate(cfg["momentum"]):
            _panel(ax, summary, "variance", {"momentum": mu, "dim": a}, f"μ={mu:g}", f"C{j}",
                   [("exact (Theorem 1)", _curve(lambda lr, mu=mu: _prediction(lr, K, C, mu)[0],
                                                 a), "-"),
                    ("continuous time", _curve(lambda lr, mu=mu: _prediction(lr, K, C, mu)[1],
                                               a), "--")],
                   _grid(cfg["learning_rate"]))
        if "nesterov" in extras:
            off = len(cfg["momentum"])
            for j, mu in enumerate(cfg["nesterov_momentum"]):
                _panel(ax, summary, "nesterov_variance", {"momentum": mu, "dim": a},
                       f"Nesterov μ={mu:g}", f"C{off + j}",
                       [("exact (Lyapunov)",
                         _curve(lambda lr, mu=mu: nesterov_prediction(lr, K, C, mu)[0], a),
                         "-")],
                       _grid(cfg["nesterov_learning_rate"]), marker="s")
        _finish(ax, f"stationary Var(w_{a}) = E[w_{a}²]", f"dimension {a}: k = {K[a, a]:g}")
    fig.suptitle("SGD on ½wᵀKw with gradient noise: stationary variance vs learning rate")
    fig.tight_layout()
    figs["variance_vs_lr"] = fig
    if {"finite_data", "reshuffle"} & extras:
        fig = Figure(figsize=(5.5 * d, 4.2))
        axes = fig.subplots(1, d, squeeze=False)[0]
        replacement = cfg["replacement"] if "finite_data" in extras else []
        for a, ax in enumerate(axes):
            for j, repl in enumerate(replacement):
                _panel(ax, summary, "finite_data_variance", {"replacement": repl, "dim": a},
                       "with replacement" if repl else "without replacement", f"C{j}",
                       [("Theorem 1, C = KC_cK/S" + ("" if repl else "·(N−S)/(N−1)"),
                         _curve(lambda lr, r=repl: _finite_prediction(cfg, lr, r)[0], a), "-")],
                       _grid(cfg["finite_learning_rate"], lo=0.2))
            if "reshuffle" in extras:
                _panel(ax, summary, "reshuffle_variance", {"dim": a}, "epoch reshuffling",
                       f"C{len(replacement)}",
                       [("periodic Lyapunov",
                         _curve(lambda lr: reshuffle_prediction(cfg, lr)[0], a), "-")],
                       _grid(cfg["finite_learning_rate"], lo=0.2), marker="s")
            _finish(ax, f"stationary Var(w_{a} − c̄_{a})", f"dimension {a}: k = {K[a, a]:g}")
        fig.suptitle(f"Finite data set (N = {cfg['n_data']}, S = {cfg['finite_batch_size']}): "
                     "minibatch noise with and without replacement, and epoch reshuffling")
        fig.tight_layout()
        figs["finite_data"] = fig
    return figs


register(Experiment(
    name="lzu-stationary", study="5",
    title="stationary covariance of SGD with momentum on a noisy quadratic vs Liu-Ziyin-Ueda",
    params=(
        Param("curvature", float, [1.0], "diagonal of K", list=True, low=0.0, low_open=True),
        Param("noise_var", float, [1.0], "eigenvalues of the noise covariance C (and of the "
              "centres' covariance C_c of the finite-data study)", list=True, low=0.0),
        Param("rotation", float, 0.0, "angle θ: C = R(θ) diag(noise_var) R(θ)ᵀ (radians)"),
        Param("learning_rate", float, [0.1, 0.5, 1.0, 1.5, 1.9], "learning rates λ", list=True,
              low=0.0, low_open=True),
        Param("momentum", float, [0.0], "heavy-ball momentum μ", list=True, low=0.0,
              high=0.999),
        Param("steps", int, 4000, "SGD steps per member", low=2),
        Param("burn_in", int, 1000, "steps discarded before time averaging", low=0),
        Param("seeds", int, 4000, "members per grid point", low=2),
        Param("extras", str, ["nesterov", "finite_data", "reshuffle"],
              "extra studies beside heavy ball ('none' for none)", list=True, choices=EXTRAS),
        Param("nesterov_learning_rate", float, [0.1, 0.5, 1.0, 1.4],
              "learning rates of the Nesterov study (stable iff λk < 2(1+μ)/(1+2μ))",
              list=True, low=0.0, low_open=True),
        Param("nesterov_momentum", float, [0.5], "Nesterov momentum μ (optax nesterov=True)",
              list=True, low=0.0, high=0.999),
        Param("n_data", int, 16, "finite-data study: number N of quadratics", low=2),
        Param("finite_batch_size", int, 4, "finite-data study: minibatch size S", low=1),
        Param("replacement", bool, [True, False], "finite-data study: draw minibatches with "
              "replacement (true) or as independent S-subsets (false)", list=True),
        Param("finite_learning_rate", float, [0.1, 0.5, 1.5], "finite-data and reshuffle studies: "
              "learning rates (plain SGD)", list=True, low=0.0, low_open=True),
        Param("finite_seeds", int, 1000, "finite-data and reshuffle studies: members per grid "
              "point", low=2),
    ),
    presets={
        "quick": {"learning_rate": [0.1, 0.5, 1.0, 1.5, 1.9], "momentum": [0.0, 0.5],
                  "steps": 4000, "burn_in": 1000, "seeds": 4000},
        "paper": {"curvature": [1.0, 0.5, 0.25], "noise_var": [1.0, 0.5, 2.0], "rotation": 0.6,
                  "learning_rate": [0.05, 0.2, 0.5, 1.0, 1.5, 1.9], "momentum": [0.0, 0.5, 0.9],
                  "nesterov_learning_rate": [0.05, 0.2, 0.5, 1.0, 1.3],
                  "nesterov_momentum": [0.5, 0.9], "n_data": 64, "finite_batch_size": 16,
                  "finite_learning_rate": [0.2, 1.0, 1.8], "finite_seeds": 20000,
                  "steps": 20000, "burn_in": 5000, "seeds": 20000},
    },
    studies=_studies_stationary, analyze=_analyze_stationary, figures=_figures_stationary,
    validate=_validate_stationary,
))


# --------------------------------------------------------------------------- lzu-minibatch


METHODS = ("sgd", "newton", "ngd")
_MINIBATCH_ORACLE = {"sgd": ORACLE_LINREG, "newton": ORACLE_NEWTON, "ngd": ORACLE_NGD}


def _validate_minibatch(cfg):
    if cfg["burn_in"] >= cfg["steps"]:
        fail("burn_in", cfg["burn_in"], f"must be smaller than steps={cfg['steps']}")


def _minibatch_prediction(method, lr, A, noise_var, S, mu):
    try:
        if method == "sgd":
            sigma = theory.linreg_covariance(lr, A, noise_var, S, momentum=mu)
        elif method == "newton":
            sigma = theory.damped_newton_covariance(lr, A, noise_var, S, momentum=mu)
        else:
            sigma = theory.natural_gradient_covariance(lr, A, noise_var, S, momentum=mu)
    except theory.NoStationaryDistribution as e:
        return None, str(e)
    return sigma, None


def _studies_minibatch(cfg, seed):
    A = np.diag(cfg["input_cov"])
    studies = {}
    for S in cfg["batch_size"]:
        problem = linear_regression(A, np.sqrt(cfg["label_noise"]), S, reduction="half_mean")
        for method in cfg["method"]:
            # natural gradient: the Fisher of linear regression with unit-variance
            # Gaussian likelihood is A, so NGD preconditions with A⁻¹ like damped Newton;
            # SGD with the identity (the same numbers: P g with P = I is g exactly), so
            # that every method of a batch size runs one compiled program (the matrix is
            # an argument of the program, not part of it)
            pre = np.eye(len(A)) if method == "sgd" else np.linalg.inv(A)
            studies[f"S{S}_{method}"] = engine.Study(
                problem, Optimizer("momentum", preconditioner=pre),
                {"learning_rate": cfg["learning_rate"], "momentum": cfg["momentum"]},
                steps=cfg["steps"], seeds=cfg["seeds"], seed=seed, observe=None,
                stationary=engine.Stationary(("w_outer", "risk"), burn_in=cfg["burn_in"]))
    return studies


def _analyze_minibatch(cfg, datasets) -> Outcome:
    A = np.diag(cfg["input_cov"])
    d = A.shape[0]
    quantities, notes = [], []
    if "ngd" in cfg["method"]:
        notes.append("method=ngd is damped Newton on this problem (the Fisher of the "
                     "unit-variance Gaussian likelihood is A, the Hessian): same update, same "
                     "prediction, not a separate claim")
    for S in cfg["batch_size"]:
        for method in cfg["method"]:
            ds = datasets[f"S{S}_{method}"]
            oracle = _MINIBATCH_ORACLE[method]
            for i, lr in enumerate(cfg["learning_rate"]):
                for j, mu in enumerate(cfg["momentum"]):
                    sigma, note = _minibatch_prediction(method, lr, A, cfg["label_noise"], S, mu)
                    coords = {"learning_rate": lr, "batch_size": S, "momentum": mu,
                              "method": method}
                    if note:
                        notes.append(", ".join(f"{k}={v}" for k, v in coords.items()) + ": "
                                     + note)
                    est = ds.stationary_w_outer_mean.values[i, j]
                    se = ds.stationary_w_outer_se.values[i, j]
                    quantities += _covariance_quantities("", coords, est, se, sigma, d, False,
                                                         note, oracle)
                    quantities.append(quantity(
                        "train_loss", coords, ds.stationary_risk_mean.values[i, j],
                        ds.stationary_risk_se.values[i, j],
                        None if sigma is None else
                        theory.linreg_train_loss(A, sigma, cfg["label_noise"]),
                        oracle=None if sigma is None else "½(Tr(AΣ) + σ²), " + oracle,
                        note=note))
                    n_div = int(ds.n_diverged.values[i, j])
                    if n_div:
                        notes.append(", ".join(f"{k}={v}" for k, v in coords.items())
                                     + f": {n_div} of {cfg['seeds']} members diverged")
    return Outcome(quantities, notes)


def _figures_minibatch(results, summary):
    from matplotlib.figure import Figure

    cfg = summary["config"]
    A = np.diag(cfg["input_cov"])
    methods = cfg["method"]
    fig = Figure(figsize=(5.2 * len(methods), 4.2))
    axes = fig.subplots(1, len(methods), squeeze=False)[0]
    mu0 = cfg["momentum"][0]
    for ax, method in zip(axes, methods, strict=True):
        for k, S in enumerate(cfg["batch_size"]):
            _panel(ax, summary, "variance",
                   {"method": method, "batch_size": S, "dim": 0, "momentum": mu0}, f"S={S}",
                   f"C{k}",
                   [("Theorem 2", _curve(lambda lr, S=S, m=method: _minibatch_prediction(
                       m, lr, A, cfg["label_noise"], S, mu0)[0], 0), "-")],
                   _grid(cfg["learning_rate"], hi=1.1))
        _finish(ax, "stationary Var(w₀ − w*₀)", f"{method}, μ = {mu0:g}")
    fig.suptitle("Online linear regression: minibatch noise vs batch size")
    fig.tight_layout()
    return {"variance_vs_lr": fig}


register(Experiment(
    name="lzu-minibatch", study="5",
    title="minibatch-noise linear regression (SGD, damped Newton) vs Ziyin et al.",
    params=(
        Param("input_cov", float, [1.0, 0.5], "diagonal of the input covariance A", list=True,
              low=0.0, low_open=True),
        Param("label_noise", float, 1.0, "label-noise variance σ²", low=0.0),
        Param("batch_size", int, [1, 4], "minibatch sizes S", list=True, low=1),
        Param("learning_rate", float, [0.1, 0.3], "learning rates λ", list=True, low=0.0,
              low_open=True),
        Param("momentum", float, [0.0], "heavy-ball momentum μ", list=True, low=0.0,
              high=0.999),
        Param("method", str, ["sgd", "newton"], "update rule (ngd = damped Newton here: the "
              "Fisher is A)", list=True, choices=METHODS),
        Param("steps", int, 3000, "SGD steps per member", low=2),
        Param("burn_in", int, 500, "steps discarded before time averaging", low=0),
        Param("seeds", int, 2000, "members per grid point", low=2),
    ),
    presets={
        "quick": {},
        "paper": {"input_cov": [1.0, 0.5, 0.25], "batch_size": [1, 2, 8, 32],
                  "learning_rate": [0.05, 0.1, 0.2, 0.4], "momentum": [0.0, 0.5],
                  "method": ["sgd", "newton"], "steps": 20000, "burn_in": 4000,
                  "seeds": 20000},
    },
    studies=_studies_minibatch, analyze=_analyze_minibatch, figures=_figures_minibatch,
    validate=_validate_minibatch,
))
