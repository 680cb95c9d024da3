"""Study 5 (stationary part): finite-learning-rate SGD on quadratics and linear regression.

Liu, Ziyin & Ueda, "Noise and Fluctuation of Finite Learning Rate Stochastic
Gradient Descent", ICML 2021 (arXiv:2012.03636); Ziyin, Liu, Mori & Ueda,
"Strength of Minibatch Noise in SGD", ICLR 2022 (arXiv:2102.05375).

* ``lzu-stationary``: ``½ wᵀKw`` with Gaussian gradient noise of covariance C
  (non-commuting when ``rotation`` ≠ 0) under heavy-ball SGD; the measured
  stationary covariance against Theorem 1, and the continuous-time answer.
* ``lzu-minibatch``: online linear regression with state-dependent minibatch
  noise, for SGD and damped Newton / natural gradient, against Theorem 2.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from sgdlab import engine, theory
from sgdlab._validate import fail
from sgdlab.experiments import Experiment, Outcome, Param, quantity, register
from sgdlab.optim import Optimizer
from sgdlab.problems import linear_regression, noisy_quadratic

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


def _validate_stationary(cfg):
    d = len(cfg["curvature"])
    if len(cfg["noise_var"]) not in (1, d):
        fail("noise_var", cfg["noise_var"], f"expected 1 or {d} values (one per curvature)")
    if cfg["rotation"] != 0 and d < 2:
        fail("rotation", cfg["rotation"], "a rotation needs at least 2 dimensions (curvature)")
    if cfg["burn_in"] >= cfg["steps"]:
        fail("burn_in", cfg["burn_in"], f"must be smaller than steps={cfg['steps']}")


def _prediction(lr, K, C, mu):
    """(Theorem 1 covariance, continuous-time covariance, note)."""
    try:
        sigma = theory.lzu_covariance(lr, K, C, momentum=mu)
    except theory.NoStationaryDistribution as e:
        return None, None, str(e)
    cont = scipy.linalg.solve_continuous_lyapunov(K, lr / (1 - mu) * C)
    return sigma, cont, None


def _studies_stationary(cfg, seed):
    K, C = _matrices(cfg)
    problem = noisy_quadratic(K, C)
    return {"stationary": engine.Study(
        problem, Optimizer("momentum"),
        {"learning_rate": cfg["learning_rate"], "momentum": cfg["momentum"]},
        steps=cfg["steps"], seeds=cfg["seeds"], seed=seed, observe=None,
        stationary=engine.Stationary(("w_outer", "risk"), burn_in=cfg["burn_in"], n_batches=10))}


def _analyze_stationary(cfg, datasets) -> Outcome:
    K, C = _matrices(cfg)
    d = K.shape[0]
    ds = datasets["stationary"]
    quantities, notes = [], []
    for i, lr in enumerate(cfg["learning_rate"]):
        for j, mu in enumerate(cfg["momentum"]):
            sigma, _, note = _prediction(lr, K, C, mu)
            if note:
                notes.append(f"learning_rate={lr:g}, momentum={mu:g}: {note}")
            est = ds.stationary_w_outer_mean.values[i, j]
            se = ds.stationary_w_outer_se.values[i, j]
            coords = {"learning_rate": lr, "momentum": mu}
            for a in range(d):
                quantities.append(quantity(
                    "variance", {**coords, "dim": a}, est[a, a], se[a, a],
                    None if sigma is None else sigma[a, a], note=note))
            if cfg["rotation"] != 0:
                for a in range(d):
                    for b in range(a + 1, d):
                        quantities.append(quantity(
                            "covariance", {**coords, "dim": [a, b]}, est[a, b], se[a, b],
                            None if sigma is None else sigma[a, b], note=note))
            quantities.append(quantity(
                "excess_loss", coords, ds.stationary_risk_mean.values[i, j],
                ds.stationary_risk_se.values[i, j],
                None if sigma is None else theory.excess_loss(K, sigma), note=note))
            n_div = int(ds.n_diverged.values[i, j])
            if n_div:
                notes.append(f"learning_rate={lr:g}, momentum={mu:g}: {n_div} of {cfg['seeds']} "
                             "members diverged")
    return Outcome(quantities, notes)


def _figures_stationary(results, summary):
    from matplotlib.figure import Figure

    cfg = summary["config"]
    K, C = _matrices(cfg)
    d = K.shape[0]
    fig = Figure(figsize=(5.5 * d, 4.2))
    axes = fig.subplots(1, d, squeeze=False)[0]
    lrs = np.asarray(cfg["learning_rate"])
    for a, ax in enumerate(axes):
        for j, mu in enumerate(cfg["momentum"]):
            qs = [q for q in summary["quantities"] if q["name"] == "variance"
                  and q["coords"]["momentum"] == mu and q["coords"]["dim"] == a]
            x = np.array([q["coords"]["learning_rate"] for q in qs])
            y = np.array([np.nan if q["value"] is None else q["value"] for q in qs])
            e = np.array([np.nan if q["se"] is None else q["se"] for q in qs])
            color = f"C{j}"
            ax.errorbar(x, y, yerr=2 * e, fmt="o", color=color, capsize=3,
                        label=f"measured, μ={mu:g} (±2 SE)")
            grid = np.linspace(lrs.min() * 0.5, lrs.max() * 1.05, 200)
            exact, cont = [], []
            for lr in grid:
                s, c, _ = _prediction(lr, K, C, mu)
                exact.append(np.nan if s is None else s[a, a])
                cont.append(np.nan if c is None else c[a, a])
            ax.plot(grid, exact, "-", color=color, label=f"exact (Theorem 1), μ={mu:g}")
            ax.plot(grid, cont, "--", color=color, alpha=0.6, label=f"continuous time, μ={mu:g}")
        ax.set_yscale("log")
        ax.set_xlabel("learning rate λ")
        ax.set_ylabel(f"stationary Var(w_{a}) = E[w_{a}²]")
        ax.set_title(f"dimension {a}: k = {K[a, a]:g}")
        ax.legend(fontsize=7)
    fig.suptitle("SGD on ½wᵀKw with gradient noise: stationary variance vs learning rate")
    fig.tight_layout()
    return {"variance_vs_lr": fig}


register(Experiment(
    name="lzu-stationary", study="5",
    title="stationary covariance of SGD with momentum on a noisy quadratic vs Liu-Ziyin-Ueda",
    params=(
        Param("curvature", float, [1.0], "diagonal of K", list=True, low=0.0, low_open=True),
        Param("noise_var", float, [1.0], "eigenvalues of the noise covariance C", list=True,
              low=0.0),
        Param("rotation", float, 0.0, "angle θ: C = R(θ) diag(noise_var) R(θ)ᵀ (radians)"),
        Param("learning_rate", float, [0.1, 0.5, 1.0, 1.5, 1.9], "learning rates λ", list=True,
              low=0.0, low_open=True),
        Param("momentum", float, [0.0], "heavy-ball momentum μ", list=True, low=0.0,
              high=0.999),
        Param("steps", int, 4000, "SGD steps per member", low=2),
        Param("burn_in", int, 1000, "steps discarded before time averaging", low=0),
        Param("seeds", int, 4000, "members per grid point", low=2),
    ),
    presets={
        "quick": {"learning_rate": [0.1, 0.5, 1.0, 1.5, 1.9], "momentum": [0.0, 0.5],
                  "steps": 4000, "burn_in": 1000, "seeds": 4000},
        "paper": {"curvature": [1.0, 0.5, 0.25], "noise_var": [1.0, 0.5, 2.0], "rotation": 0.6,
                  "learning_rate": [0.05, 0.2, 0.5, 1.0, 1.5, 1.9], "momentum": [0.0, 0.5, 0.9],
                  "steps": 20000, "burn_in": 5000, "seeds": 20000},
    },
    studies=_studies_stationary, analyze=_analyze_stationary, figures=_figures_stationary,
    validate=_validate_stationary,
))


# --------------------------------------------------------------------------- lzu-minibatch


METHODS = ("sgd", "newton", "ngd")


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
            # Gaussian likelihood is A, so NGD preconditions with A⁻¹ like damped Newton
            pre = None if method == "sgd" else np.linalg.inv(A)
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
    for S in cfg["batch_size"]:
        for method in cfg["method"]:
            ds = datasets[f"S{S}_{method}"]
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
                    for a in range(d):
                        quantities.append(quantity(
                            "variance", {**coords, "dim": a}, est[a, a], se[a, a],
                            None if sigma is None else sigma[a, a], note=note))
                    quantities.append(quantity(
                        "train_loss", coords, ds.stationary_risk_mean.values[i, j],
                        ds.stationary_risk_se.values[i, j],
                        None if sigma is None else
                        theory.linreg_train_loss(A, sigma, cfg["label_noise"]), note=note))
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
    lrs = np.asarray(cfg["learning_rate"])
    mu0 = cfg["momentum"][0]
    for ax, method in zip(axes, methods, strict=True):
        for k, S in enumerate(cfg["batch_size"]):
            qs = [q for q in summary["quantities"] if q["name"] == "variance"
                  and q["coords"]["method"] == method and q["coords"]["batch_size"] == S
                  and q["coords"]["dim"] == 0 and q["coords"]["momentum"] == mu0]
            x = np.array([q["coords"]["learning_rate"] for q in qs])
            y = np.array([np.nan if q["value"] is None else q["value"] for q in qs])
            e = np.array([np.nan if q["se"] is None else q["se"] for q in qs])
            ax.errorbar(x, y, yerr=2 * e, fmt="o", color=f"C{k}", capsize=3,
                        label=f"measured, S={S} (±2 SE)")
            grid = np.linspace(lrs.min() * 0.5, lrs.max() * 1.1, 200)
            pred = [(_minibatch_prediction(method, lr, A, cfg["label_noise"], S, mu0)[0])
                    for lr in grid]
            ax.plot(grid, [np.nan if p is None else p[0, 0] for p in pred], "-", color=f"C{k}",
                    label=f"Theorem 2, S={S}")
        ax.set_yscale("log")
        ax.set_xlabel("learning rate λ")
        ax.set_ylabel("stationary Var(w₀ − w*₀)")
        ax.set_title(f"{method}, μ = {mu0:g}")
        ax.legend(fontsize=7)
    fig.suptitle("Online linear regression: minibatch noise vs batch size")
    fig.tight_layout()
    return {"variance_vs_lr": fig}


register(Experiment(
    name="lzu-minibatch", study="5",
    title="minibatch-noise linear regression (SGD, damped Newton, NGD) vs Ziyin et al.",
    params=(
        Param("input_cov", float, [1.0, 0.5], "diagonal of the input covariance A", list=True,
              low=0.0, low_open=True),
        Param("label_noise", float, 1.0, "label-noise variance σ²", low=0.0),
        Param("batch_size", int, [1, 4], "minibatch sizes S", list=True, low=1),
        Param("learning_rate", float, [0.1, 0.3], "learning rates λ", list=True, low=0.0,
              low_open=True),
        Param("momentum", float, [0.0], "heavy-ball momentum μ", list=True, low=0.0,
              high=0.999),
        Param("method", str, ["sgd", "newton"], "update rule", list=True, choices=METHODS),
        Param("steps", int, 3000, "SGD steps per member", low=2),
        Param("burn_in", int, 500, "steps discarded before time averaging", low=0),
        Param("seeds", int, 2000, "members per grid point", low=2),
    ),
    presets={
        "quick": {},
        "paper": {"input_cov": [1.0, 0.5, 0.25], "batch_size": [1, 2, 8, 32],
                  "learning_rate": [0.05, 0.1, 0.2, 0.4], "momentum": [0.0, 0.5],
                  "method": ["sgd", "newton", "ngd"], "steps": 20000, "burn_in": 4000,
                  "seeds": 20000},
    },
    studies=_studies_minibatch, analyze=_analyze_minibatch, figures=_figures_minibatch,
    validate=_validate_minibatch,
))

