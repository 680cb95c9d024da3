"""Liu, Ziyin, Ueda (arXiv:2012.03636): the stationary covariance of SGD with momentum
and matrix learning rates on a quadratic; finite-data-set noise.

Beside Theorem 1 (:func:`lzu_covariance`) the module solves the stationary
covariance of *any* linear recursion z_{t+1} = A z_t + B ξ_t from a user-given
update matrix (:func:`stationary_covariance_linear`, the augmented discrete
Lyapunov equation), with the update matrices of heavy ball, optax's Nesterov and
iterate averaging (:func:`heavy_ball_transition`, :func:`nesterov_transition`,
:func:`ema_transition`), and of noise correlated within a period, such as the
minibatches of one epoch of random reshuffling
(:func:`stationary_covariance_periodic`, :func:`reshuffle_noise_cov`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg

from sgdlab.theory._checks import (
    NoStationaryDistribution,
    as_output,
    check_1d,
    check_momentum,
    finite_array,
    fmt,
    lr_matrix,
    positive_int,
    psd_matrix,
    require_momentum,
    square_matrix,
)
from sgdlab.theory.stability import require_stable


def _noise_var(noise_var: Any) -> np.ndarray:
    s2 = finite_array(noise_var, "noise_var")
    if np.any(s2 < 0):
        raise ValueError(f"noise_var must be ≥ 0, got {noise_var!r}")
    return s2


def _heavy_ball_inputs(lr: Any, K: Any, C: Any, momentum: Any) -> tuple[Any, ...]:
    """Checked (μ, K, C, Λ) of heavy ball on ½ wᵀKw with noise covariance C; stable."""
    mu = check_momentum(momentum)
    K = square_matrix(K, "K")
    C = psd_matrix(C, "C", K.shape[0])
    lam, _ = lr_matrix(lr, K.shape[0])
    require_stable(lr, K, mu)
    return mu, K, C, lam


def _linear_chain(A: Any, B: Any) -> tuple[np.ndarray, np.ndarray]:
    """Checked update matrix A (n, n) and noise input B (n, m) of z' = Az + Bξ."""
    A = finite_array(A, "A")
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square matrix, got shape {A.shape}")
    B = finite_array(B, "B")
    if B.ndim == 1:
        B = B[:, None]
    if B.ndim != 2 or B.shape[0] != A.shape[0]:
        raise ValueError(f"B must have shape ({A.shape[0]}, m), got {B.shape}")
    return A, B


def _require_contracting(A: np.ndarray) -> None:
    rho = float(np.max(np.abs(np.linalg.eigvals(A)))) if A.size else 0.0
    if rho >= 1:
        raise NoStationaryDistribution(f"spectral radius of the update matrix A = {fmt(rho)} ≥ 1")


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
    s2 = _noise_var(noise_var)
    v = lam * s2 * (1 + mu) / (k * (1 - mu) * (2 * (1 + mu) - lam * k))
    return as_output(v)


def continuous_time_variance_1d(
    lr: Any, curvature: Any, noise_var: Any, momentum: Any = 0.0
) -> float | np.ndarray:
    """Stationary variance predicted by the continuous-time (SDE) limit, 1-D.

    Var(w) = λσ² / (2k(1−μ)). It underestimates the exact discrete-time
    :func:`lzu_variance_1d` by the factor 1 − λk/(2(1+μ)).
    Liu, Ziyin, Ueda, arXiv:2012.03636 (the baseline they correct).

    Arguments, return value and errors as in :func:`lzu_variance_1d`, except
    that NoStationaryDistribution is raised only if λk ≤ 0 or |μ| ≥ 1 (no upper
    bound on λ in continuous time).
    """
    lam = finite_array(lr, "lr")
    k = finite_array(curvature, "curvature")
    mu = finite_array(momentum, "momentum")
    s2 = finite_array(noise_var, "noise_var")
    lam, k, mu, s2 = np.broadcast_arrays(lam, k, mu, s2)
    require_momentum(mu)
    if np.any(lam * k <= 0):
        raise NoStationaryDistribution(f"λk = {fmt(np.min(lam * k))} ≤ 0")
    s2 = _noise_var(noise_var)
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
    mu, K, C, lam = _heavy_ball_inputs(lr, K, C, momentum)
    d = K.shape[0]
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
    mu, K, C, lam = _heavy_ball_inputs(lr, K, C, momentum)
    d = K.shape[0]
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


def stationary_covariance_linear(A: Any, B: Any, noise_cov: Any) -> np.ndarray:
    """Exact stationary covariance of any linear recursion driven by white noise.

    For the chain z_{t+1} = A z_t + B ξ_t with ξ_t independent across steps,
    E ξ_t = 0 and Cov ξ_t = ``noise_cov`` (= C), the stationary covariance Σ_z
    solves the discrete Lyapunov equation

      Σ_z = A Σ_z Aᵀ + B C Bᵀ,

    which has a unique positive semi-definite solution iff the spectral radius
    of A is < 1 (``scipy.linalg.solve_discrete_lyapunov``). Every linear
    optimizer on a quadratic ½ wᵀKw with additive gradient noise is such a
    chain on an augmented state (parameters plus optimizer memory): see
    :func:`heavy_ball_transition`, :func:`nesterov_transition` and
    :func:`ema_transition` for the update matrices, or build your own. This is
    the augmented-state form of Liu, Ziyin, Ueda, arXiv:2012.03636, Theorem 1.

    Args:
      A: the update matrix, square (n, n); need not be symmetric.
      B: the noise input matrix, (n, m).
      noise_cov: C, symmetric positive semi-definite (m, m).

    Returns:
      Σ_z = Cov(z_t) at stationarity, symmetric (n, n). The parameter block is
      the leading (d, d) block when the parameters come first in z (as in the
      transition builders of this module).

    Raises:
      NoStationaryDistribution: the spectral radius of A is ≥ 1.
      ValueError: malformed input (shapes, non-finite entries, C not PSD).
    """
    A, B = _linear_chain(A, B)
    C = psd_matrix(np.atleast_2d(finite_array(noise_cov, "noise_cov")), "noise_cov",
                   B.shape[1])
    _require_contracting(A)
    S = scipy.linalg.solve_discrete_lyapunov(A, B @ C @ B.T)
    return 0.5 * (S + S.T)


def stationary_covariance_periodic(A: Any, B: Any, period_noise_cov: Any,
                                   period: int) -> np.ndarray:
    """Phase-averaged stationary covariance of a linear recursion with periodic noise.

    The chain z_{t+1} = A z_t + B ξ_t where the noise of one period,
    (ξ_1, ..., ξ_E) with E = ``period``, has the joint covariance Γ =
    ``period_noise_cov`` (E·m × E·m, blocks Γ_ij = Cov(ξ_i, ξ_j)) and different
    periods are independent -- e.g. the minibatches of one epoch of random
    reshuffling (:func:`reshuffle_noise_cov`). With
    Q_r = Cov(Σ_{j<r} A^{r−1−j} B ξ_j), the covariance at the start of a period
    solves V_0 = A^E V_0 (A^E)ᵀ + Q_E, the one r steps in is
    V_r = A^r V_0 (A^r)ᵀ + Q_r, and the time average over a period,
    (1/E) Σ_{r<E} V_r, is returned (what a long time average measures). With
    Γ block-diagonal (independent noise) it equals
    :func:`stationary_covariance_linear` for any E.

    Args:
      A: update matrix (n, n), spectral radius < 1.
      B: noise input matrix (n, m).
      period_noise_cov: Γ, symmetric positive semi-definite (E·m, E·m).
      period: E ≥ 1.

    Returns:
      The phase-averaged covariance of z, symmetric (n, n).

    Raises:
      NoStationaryDistribution: the spectral radius of A is ≥ 1.
      ValueError: malformed input.
    """
    A, B = _linear_chain(A, B)
    E = positive_int(period, "period")
    m = B.shape[1]
    G = psd_matrix(np.atleast_2d(finite_array(period_noise_cov, "period_noise_cov")),
                   "period_noise_cov", E * m)
    _require_contracting(A)
    n = A.shape[0]
    powers = [np.eye(n)]
    for _ in range(E):
        powers.append(A @ powers[-1])
    Q = [np.zeros((n, n))]
    for r in range(1, E + 1):
        M = np.hstack([powers[r - 1 - j] @ B for j in range(r)])  # (n, r·m)
        Q.append(M @ G[: r * m, : r * m] @ M.T)
    V0 = scipy.linalg.solve_discrete_lyapunov(powers[E], Q[E])
    avg = sum(powers[r] @ V0 @ powers[r].T + Q[r] for r in range(E)) / E
    return 0.5 * (avg + avg.T)


def reshuffle_noise_cov(K: Any, centers_cov: Any, batch_size: int, n_data: int) -> np.ndarray:
    """Joint covariance of one epoch's minibatch noise under random reshuffling.

    For ℓ_i(w) = ½(w − c_i)ᵀK(w − c_i), an epoch draws a random permutation of
    the N centres and cuts it into E = N // S disjoint batches (``mode=
    "without_replacement"`` of :mod:`sgdlab.data`; a remainder is left out).
    The batch noises ξ_j = K(c̄_{B_j} − c̄) have

      Cov(ξ_i, ξ_i) = K C_c K (N−S)/(S(N−1)),   Cov(ξ_i, ξ_j) = −K C_c K/(N−1)  (i ≠ j),

    (C_c with 1/N normalisation), so each batch has the without-replacement
    noise of :func:`finite_data_noise_cov` but the batches of an epoch are
    negatively correlated (with S | N they sum to zero). Epochs are independent.
    Use with :func:`stationary_covariance_periodic` (period E).

    Args:
      K: symmetric Hessian, (d, d).
      centers_cov: C_c (1/N normalisation), (d, d).
      batch_size: S with 1 ≤ S ≤ N.
      n_data: N ≥ 2.

    Returns:
      Γ, symmetric (E·d, E·d), blocks ordered by batch.

    Raises:
      ValueError: malformed input or S > N.
    """
    K = square_matrix(K, "K")
    d = K.shape[0]
    Cc = psd_matrix(centers_cov, "centers_cov", d)
    S = positive_int(batch_size, "batch_size")
    N = positive_int(n_data, "n_data")
    if N < 2 or S > N:
        raise ValueError(f"need integers 2 ≤ n_data and batch_size ≤ n_data, got {N}, {S}")
    E = N // S
    block = K @ Cc @ K
    G = np.kron(np.ones((E, E)), -block / (N - 1))
    G += np.kron(np.eye(E), block * ((N - S) / (S * (N - 1)) + 1 / (N - 1)))
    return 0.5 * (G + G.T)


def _transition_setup(lr: Any, K: Any, momentum: Any) -> tuple[np.ndarray, np.ndarray, float]:
    mu = float(finite_array(momentum, "momentum"))
    K = square_matrix(K, "K")
    lam, _ = lr_matrix(lr, K.shape[0])
    return lam, K, mu


def heavy_ball_transition(lr: Any, K: Any, momentum: float = 0.0) -> tuple[np.ndarray, ...]:
    """Update matrices (A, B) of heavy-ball SGD on ½ wᵀKw, for :func:`stationary_covariance_linear`.

    The optax/PyTorch form with a matrix rate Λ (= λ·P for a preconditioner P):
    g_t = K w_{t−1} + ξ_t, m_t = μ m_{t−1} + g_t, w_t = w_{t−1} − Λ m_t. On
    z_t = (w_t, m_t):

      A = [[I − ΛK, −μΛ], [K, μI]],   B = [[−Λ], [I]].

    Its w-block stationary covariance equals :func:`lzu_covariance` (Liu, Ziyin,
    Ueda, arXiv:2012.03636, Theorem 1).

    Args:
      lr: scalar λ or a (d, d) symmetric matrix Λ.
      K: symmetric Hessian, (d, d).
      momentum: μ.

    Returns:
      (A, B) with shapes (2d, 2d) and (2d, d).
    """
    return _trace_transition(lr, K, momentum, nesterov=False)


def _trace_transition(lr: Any, K: Any, momentum: Any, nesterov: bool) -> tuple[np.ndarray, ...]:
    """(A, B) on z = (w, m) of optax's ``trace(μ, nesterov)`` followed by a step of −Λ."""
    lam, K, mu = _transition_setup(lr, K, momentum)
    eye = np.eye(K.shape[0])
    if nesterov:  # w_t = w_{t−1} − Λ(g_t + μ m_t)
        A = np.block([[eye - (1 + mu) * lam @ K, -mu * mu * lam], [K, mu * eye]])
        B = np.vstack([-(1 + mu) * lam, eye])
    else:  # w_t = w_{t−1} − Λ m_t
        A = np.block([[eye - lam @ K, -mu * lam], [K, mu * eye]])
        B = np.vstack([-lam, eye])
    return A, B


def nesterov_transition(lr: Any, K: Any, momentum: float = 0.0) -> tuple[np.ndarray, ...]:
    """Update matrices (A, B) of Nesterov SGD on ½ wᵀKw, optax's ``nesterov=True`` form.

    optax (``optax.sgd(lr, momentum, nesterov=True)``, i.e. ``trace(μ, nesterov=True)``
    then a step of −Λ): g_t = K w_{t−1} + ξ_t, m_t = μ m_{t−1} + g_t,
    w_t = w_{t−1} − Λ (g_t + μ m_t). On z_t = (w_t, m_t):

      A = [[I − (1+μ)ΛK, −μ²Λ], [K, μI]],   B = [[−(1+μ)Λ], [I]].

    In 1-D with p = λk the chain is stable iff 0 < p < 2(1+μ)/(1+2μ) (for
    0 ≤ μ < 1), a smaller range than heavy ball's 2(1+μ). At μ = 0 it is plain
    SGD. Use with :func:`stationary_covariance_linear`. Arguments and return
    value as in :func:`heavy_ball_transition`.
    """
    return _trace_transition(lr, K, momentum, nesterov=True)


def ema_transition(lr: Any, K: Any, decay: float) -> tuple[np.ndarray, ...]:
    """Update matrices (A, B) of plain SGD plus an exponential average of its iterates.

    w_t = w_{t−1} − Λ(K w_{t−1} + ξ_t) and w̄_t = β w̄_{t−1} + (1−β) w_t (iterate
    averaging with decay β, optax's ``ema`` convention). On z_t = (w_t, w̄_t):

      A = [[I − ΛK, 0], [(1−β)(I − ΛK), βI]],   B = [[−Λ], [−(1−β)Λ]].

    The w̄-block of :func:`stationary_covariance_linear` is the averaged
    iterate's covariance; in 1-D with ρ = 1 − λk it is
    Var(w) (1−β)(1+βρ) / ((1+β)(1−βρ)).

    Args:
      lr: scalar λ or a (d, d) symmetric matrix Λ.
      K: symmetric Hessian, (d, d).
      decay: β in [0, 1).

    Returns:
      (A, B) with shapes (2d, 2d) and (2d, d).

    Raises:
      ValueError: β outside [0, 1).
    """
    lam, K, beta = _transition_setup(lr, K, decay)
    if not 0 <= beta < 1:
        raise ValueError(f"decay must be in [0, 1), got {decay!r}")
    eye = np.eye(K.shape[0])
    M = eye - lam @ K
    A = np.block([[M, np.zeros_like(M)], [(1 - beta) * M, beta * eye]])
    B = np.vstack([-lam, -(1 - beta) * lam])
    return A, B


def stationary_covariance_lyapunov(lr: Any, K: Any, C: Any, momentum: float = 0.0) -> np.ndarray:
    """Stationary covariance of heavy-ball SGD from the augmented Lyapunov equation.

    An independent reference for :func:`lzu_covariance`. The update
    w_{t+1} = w_t − Λ(K w_t + ξ_t) + μ(w_t − w_{t−1}) is the linear chain
    z_{t+1} = A z_t + B ξ_t on z_t = (w_t, w_{t−1}) with

      A = [[(1+μ)I − ΛK, −μI], [I, 0]],   B = [[−Λ], [0]],

    whose stationary covariance solves Σ_z = A Σ_z Aᵀ + B C Bᵀ
    (:func:`stationary_covariance_linear`). The w-block of Σ_z is returned.
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
    mu, K, C, lam = _heavy_ball_inputs(lr, K, C, momentum)
    d = K.shape[0]
    eye = np.eye(d)
    A = np.block([[(1 + mu) * eye - lam @ K, -mu * eye], [eye, np.zeros((d, d))]])
    B = np.vstack([-lam, np.zeros((d, d))])
    S = stationary_covariance_linear(A, B, C)[:d, :d]
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
