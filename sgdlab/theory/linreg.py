"""Ziyin, Liu, Mori, Ueda (arXiv:2102.05375): online linear regression with
state-dependent minibatch noise; damped Newton and natural gradient."""

from __future__ import annotations

from typing import Any

import numpy as np

from sgdlab.theory._checks import (
    NoStationaryDistribution,
    check_momentum,
    finite_array,
    fmt,
    positive_int,
    spd_matrix,
)
from sgdlab.theory.lzu import excess_loss


def _linreg_inputs(
    lr: Any, A: Any, label_noise_var: Any, batch_size: Any, momentum: Any
) -> tuple[float, float, np.ndarray, float, int]:
    """Checked (μ, λ, A, σ², S) of the online linear-regression formulas."""
    mu = check_momentum(momentum)
    lam = float(finite_array(lr, "lr"))
    if lam <= 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    A = spd_matrix(A, "A")
    s2 = float(finite_array(label_noise_var, "label_noise_var"))
    if s2 < 0:
        raise ValueError(f"label_noise_var must be ≥ 0, got {label_noise_var!r}")
    return mu, lam, A, s2, positive_int(batch_size, "batch_size")


def linreg_covariance(
    lr: Any,
    A: Any,
    label_noise_var: Any,
    batch_size: int,
    momentum: float = 0.0,
    precond: Any = None,
) -> np.ndarray:
    """Stationary covariance of SGD on online linear regression (state-dependent noise).

    Setting: fresh x ~ N(0, A) each step, y = w*ᵀx + ε with Var ε = σ²,
    per-step loss ½·mean over a batch of S of (wᵀx − y)², heavy-ball momentum μ,
    update w_t = w_{t−1} − Λ m_t with Λ = lr·I or lr·P. With w* = 0,

      Σ = (σ²/S) (1 + κ/S) Λ G⁻¹,
      G = 2(1−μ)I − ((1−μ)/(1+μ) + 1/S) ΛA,
      κ = Tr[ΛAG⁻¹] / (1 − Tr[ΛAG⁻¹]/S).

    Ziyin, Liu, Mori, Ueda, arXiv:2102.05375, Theorem 2 (with momentum). The
    formula solves Theorem 1 of arXiv:2012.03636 with the state-dependent
    noise C(Σ) = [AΣA + (Tr(AΣ) + σ²)A]/S (Gaussian fourth moment
    E[xxᵀΣxxᵀ] = 2AΣA + Tr(AΣ)A) and is exact when Λ commutes with A, so
    ΛA is symmetric with real eigenvalues (Λ = λI, Λ = λA⁻¹, any polynomial
    in A). A preconditioner that does not commute with A is rejected.

    Args:
      lr: scalar λ > 0.
      A: input covariance, symmetric positive definite (d, d).
      label_noise_var: σ² ≥ 0.
      batch_size: S ≥ 1.
      momentum: μ with |μ| < 1.
      precond: optional symmetric positive definite P commuting with A.

    Returns:
      Σ = E[(w − w*)(w − w*)ᵀ] at stationarity, symmetric (d, d).

    Raises:
      NoStationaryDistribution: G is not positive definite or
        1 − Tr[ΛAG⁻¹]/S ≤ 0 (no finite second moment).
      ValueError: malformed input, or P not commuting with A.
    """
    mu, lam, A, s2, S = _linreg_inputs(lr, A, label_noise_var, batch_size, momentum)
    d = A.shape[0]
    if precond is None:
        L = lam * np.eye(d)
    else:
        P = spd_matrix(precond, "precond", d)
        comm = float(np.max(np.abs(P @ A - A @ P)))
        if comm > 1e-10 * float(np.max(np.abs(P))) * float(np.max(np.abs(A))):
            raise ValueError(
                f"precond must commute with A for the closed form (max |PA − AP| = "
                f"{fmt(comm)}); solve the second-moment recursion instead"
            )
        L = lam * P
    M = L @ A
    M = 0.5 * (M + M.T)  # symmetric because Λ and A commute
    G = 2 * (1 - mu) * np.eye(d) - ((1 - mu) / (1 + mu) + 1 / S) * M
    g_min = float(np.linalg.eigvalsh(G)[0])
    if g_min <= 0:
        raise NoStationaryDistribution(
            "G = 2(1−μ)I − ((1−μ)/(1+μ) + 1/S)ΛA is not positive definite: "
            f"smallest eigenvalue = {fmt(g_min)} ≤ 0"
        )
    Ginv = np.linalg.inv(G)
    tr = float(np.trace(M @ Ginv))
    denom = 1 - tr / S
    if denom <= 0:
        raise NoStationaryDistribution(f"1 − Tr[ΛAG⁻¹]/S = {fmt(denom)} ≤ 0")
    kappa = tr / denom
    Sigma = (s2 / S) * (1 + kappa / S) * (L @ Ginv)
    return 0.5 * (Sigma + Sigma.T)


def linreg_train_loss(A: Any, Sigma: Any, label_noise_var: Any) -> float:
    """Expected training loss of online linear regression: ½(Tr(AΣ) + σ²).

    E[½(wᵀx − y)²] for x ~ N(0, A), label noise σ², and w − w* with second
    moment Σ. Ziyin, Liu, Mori, Ueda, arXiv:2102.05375.

    Args:
      A: input covariance, (d, d).
      Sigma: second moment of w − w*, (d, d).
      label_noise_var: σ².

    Returns:
      The loss.

    Raises:
      ValueError: non-finite input or mismatched shapes.
    """
    return excess_loss(A, Sigma) + 0.5 * float(finite_array(label_noise_var, "label_noise_var"))


def damped_newton_covariance(
    lr: Any, A: Any, label_noise_var: Any, batch_size: int, momentum: float = 0.0
) -> np.ndarray:
    """Stationary covariance of damped Newton (Λ = λA⁻¹) on online linear regression.

    Σ = λσ² / (gS − λD) · A⁻¹,  g = 2(1−μ) − ((1−μ)/(1+μ) + 1/S) λ,

    D = dim. This is :func:`linreg_covariance` with P = A⁻¹ (ΛA = λI, G = gI).
    Ziyin, Liu, Mori, Ueda, arXiv:2102.05375 (second-order methods).

    Args:
      lr: λ > 0.
      A: input covariance (= the Hessian), symmetric positive definite (D, D).
      label_noise_var: σ² ≥ 0.
      batch_size: S ≥ 1.
      momentum: μ with |μ| < 1.

    Returns:
      Σ, symmetric (D, D).

    Raises:
      NoStationaryDistribution: g ≤ 0 or gS − λD ≤ 0.
      ValueError: malformed input.
    """
    mu, lam, A, s2, S = _linreg_inputs(lr, A, label_noise_var, batch_size, momentum)
    D = A.shape[0]
    g = 2 * (1 - mu) - ((1 - mu) / (1 + mu) + 1 / S) * lam
    if g <= 0:
        raise NoStationaryDistribution(f"g = 2(1−μ) − ((1−μ)/(1+μ) + 1/S)λ = {fmt(g)} ≤ 0")
    den = g * S - lam * D
    if den <= 0:
        raise NoStationaryDistribution(f"gS − λD = {fmt(den)} ≤ 0")
    Ainv = np.linalg.inv(A)
    return lam * s2 / den * 0.5 * (Ainv + Ainv.T)


def natural_gradient_covariance(
    lr: Any, A: Any, label_noise_var: Any, batch_size: int, momentum: float = 0.0
) -> np.ndarray:
    """Stationary covariance of natural-gradient SGD on online linear regression.

    For the Gaussian linear model with unit-variance likelihood the Fisher
    information is E[xxᵀ] = A, the same matrix as the Hessian, so natural
    gradient with rate λ is Λ = λA⁻¹ -- exactly damped Newton. This function
    therefore returns :func:`damped_newton_covariance` (see it for the formula
    and the errors raised). If the Fisher were taken with the label-noise
    variance, F = A/σ², the rate is rescaled: pass λσ² instead.
    Ziyin, Liu, Mori, Ueda, arXiv:2102.05375.

    Args:
      lr: λ > 0.
      A: input covariance = Fisher, symmetric positive definite (D, D).
      label_noise_var: σ² ≥ 0.
      batch_size: S ≥ 1.
      momentum: μ with |μ| < 1.

    Returns:
      Σ, symmetric (D, D).
    """
    return damped_newton_covariance(lr, A, label_noise_var, batch_size, momentum)
