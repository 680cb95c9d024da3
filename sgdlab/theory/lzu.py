"""Liu, Ziyin, Ueda (arXiv:2012.03636): the stationary covariance of SGD with momentum
and matrix learning rates on a quadratic; finite-data-set noise."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.special

from sgdlab.theory._checks import (
    NoStationaryDistribution,
    as_output,
    check_1d,
    check_momentum,
    finite_array,
    fmt,
    lr_matrix,
    psd_matrix,
    square_matrix,
)
from sgdlab.theory.stability import require_stable


def lzu_variance_1d(
    lr: Any, curvature: Any, noise_var: Any, momentum: Any = 0.0
) -> float | np.ndarray:
    """Exact stationary variance of 1-D heavy-ball SGD on L = ½ k w².

    Var(w) = λσ²(1+μ) / [k (1−μ) (2(1+μ) − λk)],

    for w_{t+1} = w_t − λ(k w_t + ξ_t) + μ(w_t − w_{t−1}) with E ξ = 0,
    Var ξ = σ². Liu, Ziyin, Ueda, arXiv:2012.03636 (1-D case of Theorem 1).
    Arguments broadcast against each other.

    Args:
      lr: learning rate λ > 0.
      curvature: k > 0.
      noise_var: gradient-noise variance σ² ≥ 0.
      momentum: μ with |μ| < 1.

    Returns:
      The variance (float, or an array for array input).

    Raises:
      NoStationaryDistribution: unless 0 < λk < 2(1+μ) and |μ| < 1.
      ValueError: non-finite input or negative noise variance.
    """
    lam, k, mu = check_1d(lr, curvature, momentum)
    s2 = finite_array(noise_var, "noise_var")
    if np.any(s2 < 0):
        raise ValueError(f"noise_var must be ≥ 0, got {noise_var!r}")
    v = lam * s2 * (1 + mu) / (k * (1 - mu) * (2 * (1 + mu) - lam * k))
    return as_output(v)


def continuous_time_variance_1d(
    lr: Any, curvature: Any, noise_var: Any, momentum: Any = 0.0
) -> float | np.ndarray:
    """Stationary variance predicted by the continuous-time (SDE) limit, 1-D.

    Var(w) = λσ² / (2k(1−μ)). It underestimates the exact discrete-time
    :func:`lzu_variance_1d` by the factor 1 − λk/(2(1+μ)).
    Liu, Ziyin, Ueda, arXiv:2012.03636 (the baseline they correct).

    Args:
      lr: learning rate λ > 0.
      curvature: k > 0.
      noise_var: gradient-noise variance σ² ≥ 0.
      momentum: μ with |μ| < 1.

    Returns:
      The variance (float, or an array for array input).

    Raises:
      NoStationaryDistribution: if λk ≤ 0 or |μ| ≥ 1 (no upper bound on λ in
        continuous time).
      ValueError: non-finite input or negative noise variance.
    """
    lam = finite_array(lr, "lr")
    k = finite_array(curvature, "curvature")
    mu = finite_array(momentum, "momentum")
    s2 = finite_array(noise_var, "noise_var")
    lam, k, mu, s2 = np.broadcast_arrays(lam, k, mu, s2)
    if np.any(np.abs(mu) >= 1):
        raise NoStationaryDistribution(f"|μ| = {fmt(np.max(np.abs(mu)))} ≥ 1")
    if np.any(lam * k <= 0):
        raise NoStationaryDistribution(f"λk = {fmt(np.min(lam * k))} ≤ 0")
    if np.any(s2 < 0):
        raise ValueError(f"noise_var must be ≥ 0, got {noise_var!r}")
    return as_output(lam * s2 / (2 * k * (1 - mu)))


def lzu_covariance_commuting(lr: Any, K: Any, C: Any, momentum: float = 0.0) -> np.ndarray:
    """Stationary covariance of heavy-ball SGD on ½ wᵀKw when K and C commute.

    Σ = (1+μ)/(1−μ) · [K (2(1+μ)I − ΛK)]⁻¹ Λ C,

    which for a scalar rate is λ(1+μ)/(1−μ) · [K(2(1+μ)I − λK)]⁻¹ C.
    Liu, Ziyin, Ueda, arXiv:2012.03636 (Theorem 1 specialised to commuting
    K, C, Λ). This formula is *only* correct when K, C (and Λ) commute; it is
    returned for any input so that its error can be measured against
    :func:`lzu_covariance`. The result is symmetrised, ½(X + Xᵀ).

    Args:
      lr: scalar λ > 0 or symmetric matrix Λ commuting with K.
      K: symmetric positive definite Hessian, shape (d, d).
      C: symmetric positive semi-definite gradient-noise covariance, (d, d).
      momentum: μ with |μ| < 1.

    Returns:
      Σ, shape (d, d).

    Raises:
      NoStationaryDistribution: unstable (see :func:`stability`).
      ValueError: malformed input.
    """
    mu = check_momentum(momentum)
    K = square_matrix(K, "K")
    d = K.shape[0]
    C = psd_matrix(C, "C", d)
    lam, _ = lr_matrix(lr, d)
    require_stable(lr, K, mu)
    M = K @ (2 * (1 + mu) * np.eye(d) - lam @ K)
    X = (1 + mu) / (1 - mu) * np.linalg.solve(M, lam @ C)
    return 0.5 * (X + X.T)


def lzu_covariance(lr: Any, K: Any, C: Any, momentum: float = 0.0) -> np.ndarray:
    """Exact stationary covariance of heavy-ball SGD on ½ wᵀKw (Theorem 1, any K, C).

    Solves, for symmetric Σ,

      (1−μ)(ΛKΣ + ΣKΛ) − (1+μ²)/(1−μ²) ΛKΣKΛ
          + μ/(1−μ²) (ΛKΛKΣ + ΣKΛKΛ) = ΛCΛ

    as a d²×d² linear system built from Kronecker products (row-major
    vectorisation: vec(AXB) = (A ⊗ Bᵀ) vec X). Here g_t = K w_{t−1} + ξ_t with
    Cov ξ = C, and the update is m_t = μ m_{t−1} + g_t, w_t = w_{t−1} − Λ m_t.
    Cost O(d⁶); meant for d up to a few tens. Liu, Ziyin, Ueda,
    arXiv:2012.03636, Theorem 1.

    Args:
      lr: scalar λ > 0 or a symmetric matrix Λ (e.g. a preconditioner).
      K: symmetric Hessian, shape (d, d) (positive definite for stability).
      C: symmetric positive semi-definite gradient-noise covariance, (d, d).
      momentum: μ with |μ| < 1.

    Returns:
      Σ = E[w wᵀ] at stationarity (minimum at 0), symmetric (d, d).

    Raises:
      NoStationaryDistribution: the chain is unstable (see :func:`stability`).
      ValueError: malformed input.
    """
    mu = check_momentum(momentum)
    K = square_matrix(K, "K")
    d = K.shape[0]
    C = psd_matrix(C, "C", d)
    lam, _ = lr_matrix(lr, d)
    require_stable(lr, K, mu)
    eye = np.eye(d)
    M = lam @ K  # ΛK; its transpose is KΛ
    M2 = M @ M
    a = 1 - mu
    b = (1 + mu * mu) / (1 - mu * mu)
    c = mu / (1 - mu * mu)
    op = (
        a * (np.kron(M, eye) + np.kron(eye, M))
        - b * np.kron(M, M)
        + c * (np.kron(M2, eye) + np.kron(eye, M2))
    )
    rhs = (lam @ C @ lam).ravel()
    X = np.linalg.solve(op, rhs).reshape(d, d)
    return 0.5 * (X + X.T)


def stationary_covariance_lyapunov(lr: Any, K: Any, C: Any, momentum: float = 0.0) -> np.ndarray:
    """Stationary covariance of heavy-ball SGD from the augmented Lyapunov equation.

    An independent reference for :func:`lzu_covariance`. The update
    w_{t+1} = w_t − Λ(K w_t + ξ_t) + μ(w_t − w_{t−1}) is the linear chain
    z_{t+1} = A z_t + B ξ_t on z_t = (w_t, w_{t−1}) with

      A = [[(1+μ)I − ΛK, −μI], [I, 0]],   B = [[−Λ], [0]],

    whose stationary covariance solves Σ_z = A Σ_z Aᵀ + B C Bᵀ
    (``scipy.linalg.solve_discrete_lyapunov``). The w-block of Σ_z is returned.
    The setting is that of Liu, Ziyin, Ueda, arXiv:2012.03636.

    Args:
      lr: scalar λ or symmetric matrix Λ.
      K: symmetric Hessian, (d, d).
      C: symmetric positive semi-definite noise covariance, (d, d).
      momentum: μ with |μ| < 1.

    Returns:
      Σ = Cov(w_t) at stationarity, symmetric (d, d).

    Raises:
      NoStationaryDistribution: the chain is unstable.
      ValueError: malformed input.
    """
    mu = check_momentum(momentum)
    K = square_matrix(K, "K")
    d = K.shape[0]
    C = psd_matrix(C, "C", d)
    lam, _ = lr_matrix(lr, d)
    require_stable(lr, K, mu)
    eye = np.eye(d)
    A = np.block([[(1 + mu) * eye - lam @ K, -mu * eye], [eye, np.zeros((d, d))]])
    B = np.vstack([-lam, np.zeros((d, d))])
    Sz = scipy.linalg.solve_discrete_lyapunov(A, B @ C @ B.T)
    S = Sz[:d, :d]
    return 0.5 * (S + S.T)


def excess_loss(K: Any, Sigma: Any) -> float:
    """Stationary excess loss of a quadratic: E[½ wᵀKw] = ½ Tr(KΣ) (mean at the minimum).

    Liu, Ziyin, Ueda, arXiv:2012.03636.

    Args:
      K: Hessian, (d, d).
      Sigma: covariance of w around the minimum, (d, d).

    Returns:
      ½ Tr(KΣ).

    Raises:
      ValueError: non-finite input or mismatched shapes.
    """
    K = finite_array(K, "K")
    S = finite_array(Sigma, "Sigma")
    if K.ndim != 2 or K.shape != S.shape or K.shape[0] != K.shape[1]:
        raise ValueError(f"K and Sigma must be square of equal shape, got {K.shape}, {S.shape}")
    return 0.5 * float(np.sum(K * S.T))


def excess_loss_sgd(lr: Any, K: Any, C: Any) -> float:
    """Stationary excess loss of plain SGD (μ = 0, scalar λ), any K, C.

    ½ Tr(KΣ) = (λ/2) Tr[(2I − λK)⁻¹ C]. (Multiply Theorem 1 at μ = 0,
    λ(KΣ + ΣK) − λ²KΣK = λ²C, by (2I − λK)⁻¹ and take the trace.)
    Liu, Ziyin, Ueda, arXiv:2012.03636.

    Args:
      lr: scalar λ > 0.
      K: symmetric positive definite Hessian, (d, d).
      C: gradient-noise covariance, (d, d).

    Returns:
      The excess loss.

    Raises:
      NoStationaryDistribution: unless 0 < λk < 2 for all eigenvalues k of K.
      ValueError: malformed input or a matrix learning rate.
    """
    lam = float(finite_array(lr, "lr")) if np.ndim(lr) == 0 else None
    if lam is None:
        raise ValueError("excess_loss_sgd takes a scalar learning rate")
    K = square_matrix(K, "K")
    d = K.shape[0]
    C = psd_matrix(C, "C", d)
    require_stable(lam, K, 0.0)
    return 0.5 * lam * float(np.trace(np.linalg.solve(2 * np.eye(d) - lam * K, C)))



# ---------------------------------------------------------------------------
# Finite data set noise
# ---------------------------------------------------------------------------


def finite_data_noise_cov(
    K: Any,
    centers_cov: Any,
    batch_size: int,
    n_data: int | None = None,
    replacement: bool = True,
) -> np.ndarray:
    """Minibatch gradient-noise covariance for per-sample losses sharing a Hessian.

    With ℓ_i(w) = ½(w − c_i)ᵀK(w − c_i), i = 1..N, the minibatch gradient is
    K(w − c̄_B) and its noise K(c̄ − c̄_B) is independent of w, with covariance

      C = K C_c K / S                 (S draws with replacement)
      C = K C_c K / S · (N−S)/(N−1)   (a uniformly random S-subset, without)

    where C_c = (1/N) Σ_i (c_i − c̄)(c_i − c̄)ᵀ is the covariance of the centres
    with **1/N normalisation** (the population covariance of the finite set).
    Liu, Ziyin, Ueda, arXiv:2012.03636.

    Args:
      K: symmetric Hessian, (d, d).
      centers_cov: C_c as defined above (1/N normalisation), (d, d).
      batch_size: S ≥ 1.
      n_data: N; required without replacement (1 ≤ S ≤ N, N ≥ 2).
      replacement: whether the S indices are drawn with replacement.

    Returns:
      C, symmetric (d, d).

    Raises:
      ValueError: malformed input or inconsistent S, N.
    """
    K = square_matrix(K, "K")
    d = K.shape[0]
    Cc = psd_matrix(centers_cov, "centers_cov", d)
    S = int(batch_size)
    if S != batch_size or S < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    C = K @ Cc @ K / S
    if not replacement:
        if n_data is None:
            raise ValueError("n_data is required when sampling without replacement")
        N = int(n_data)
        if N != n_data or N < 2 or S > N:
            raise ValueError(f"need integers 2 ≤ n_data and batch_size ≤ n_data, got {N}, {S}")
        C = C * (N - S) / (N - 1)
    return 0.5 * (C + C.T)
