"""Closed forms and exact numerical oracles for the SGD results that sgdlab reproduces.

Everything here is plain NumPy/SciPy in float64; JAX is used only by
:func:`villani_minimizer_and_hessian`, which differentiates a user-supplied JAX
loss. The functions are grouped by the paper they come from:

* Liu, Ziyin, Ueda, arXiv:2012.03636 -- stationary covariance of SGD (with
  heavy-ball momentum and matrix learning rates) on a quadratic loss;
  finite-data-set noise.
* Ziyin, Liu, Mori, Ueda, arXiv:2102.05375 -- online linear regression with
  state-dependent minibatch noise; damped Newton and natural gradient.
* Du, Zhai, Poczos, Singh, arXiv:1810.02054 -- infinite-width Gram matrices and
  the linearised (kernel) training dynamics of two-layer ReLU nets.
* Exact discrete-time mean first-passage times of 1-D SGD (Nystrom method) and
  Arrhenius temperatures.
* Hutzenthaler, Jentzen, Pohl, Riekert, Scarpa, arXiv:2112.07369 -- the
  "dead network" special case under constant targets.
* Gopalani, Mukherjee, arXiv:2210.11452 and Shi, Su, Jordan, arXiv:2004.06977 --
  Gibbs-limit loss gaps and the sigmoid convexity threshold.

Conventions (they differ between papers and are kept per paper):

* Heavy-ball momentum is always ``m_t = mu m_{t-1} + g_t; w_t = w_{t-1} - lr m_t``
  (the optax/PyTorch form), i.e. ``w_{t+1} = w_t - Lambda g(w_t) + mu (w_t - w_{t-1})``.
* A learning rate is a positive scalar ``lr`` or a symmetric matrix ``Lambda``.
* Parameters for which no stationary distribution (or finite second moment)
  exists raise :class:`NoStationaryDistribution`, a ``ValueError`` whose message
  starts with ``"no stationary distribution: "`` and names the failed condition
  with its numbers. Malformed input (wrong shapes, non-finite values,
  non-symmetric matrices) raises a plain ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.special
from jax.flatten_util import ravel_pytree

__all__ = [
    "NoStationaryDistribution",
    "Stability",
    "Temperatures",
    "VillaniMinimum",
    "stability",
    "is_stable",
    "lzu_variance_1d",
    "continuous_time_variance_1d",
    "lzu_covariance_commuting",
    "lzu_covariance",
    "stationary_covariance_lyapunov",
    "excess_loss",
    "excess_loss_sgd",
    "finite_data_noise_cov",
    "linreg_covariance",
    "linreg_train_loss",
    "damped_newton_covariance",
    "natural_gradient_covariance",
    "du_H_inf",
    "du_G_inf",
    "du_lambda0",
    "du_kernel_loss",
    "du_rate_bound",
    "du_distance_bound",
    "mfpt_nystrom",
    "mfpt_nystrom_converged",
    "arrhenius_sharp_well",
    "arrhenius_slope",
    "escape_rate_from_mfpt",
    "dead_network_risk",
    "dead_network_risk_schedule",
    "dead_risk_inv_asymptotic",
    "dead_risk_inv_sq_limit",
    "laplace_gap",
    "discrete_gap",
    "villani_minimizer_and_hessian",
    "sigmoid_convexity_threshold",
]


# ---------------------------------------------------------------------------
# Errors and input checking
# ---------------------------------------------------------------------------


class NoStationaryDistribution(ValueError):
    """Raised when SGD with the given parameters has no stationary second moment.

    The message starts with ``"no stationary distribution: "`` and states the
    condition that failed, with its numbers, e.g.
    ``"no stationary distribution: λk = 2.5 ≥ 2(1+μ) = 2.0"``.
    """

    def __init__(self, reason: str):
        super().__init__(f"no stationary distribution: {reason}")
        self.reason = reason


def _fmt(x: float) -> str:
    """Short, unambiguous rendering of a number for error messages (2.0, 2.5, 1e-07)."""
    s = f"{float(x):.6g}"
    if s.lstrip("-").isdigit():
        s += ".0"
    return s


def _finite(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a float64 array; raise ValueError if any entry is not finite."""
    a = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite, got {x!r}")
    return a


def _square(x: Any, name: str, d: int | None = None) -> np.ndarray:
    """Return ``x`` as a finite, symmetric float64 (d, d) matrix (exactly symmetrised)."""
    a = _finite(x, name)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {a.shape}")
    if d is not None and a.shape[0] != d:
        raise ValueError(f"{name} must have shape ({d}, {d}), got {a.shape}")
    scale = max(float(np.max(np.abs(a))), 1e-300)
    asym = float(np.max(np.abs(a - a.T)))
    if asym > 1e-10 * scale:
        raise ValueError(f"{name} must be symmetric, max |{name} - {name}ᵀ| = {_fmt(asym)}")
    return 0.5 * (a + a.T)


def _spd(x: Any, name: str, d: int | None = None) -> np.ndarray:
    """Return ``x`` as a symmetric positive definite matrix, or raise ValueError."""
    a = _square(x, name, d)
    lo = float(np.linalg.eigvalsh(a)[0])
    if lo <= 0:
        raise ValueError(f"{name} must be positive definite, smallest eigenvalue = {_fmt(lo)}")
    return a


def _psd(x: Any, name: str, d: int | None = None) -> np.ndarray:
    """Return ``x`` as a symmetric positive semi-definite matrix (tolerance 1e-12 relative)."""
    a = _square(x, name, d)
    ev = np.linalg.eigvalsh(a)
    if ev[0] < -1e-12 * max(float(np.max(np.abs(ev))), 1e-300):
        raise ValueError(
            f"{name} must be positive semi-definite, smallest eigenvalue = {_fmt(ev[0])}"
        )
    return a


def _momentum(momentum: Any) -> float:
    """Validate the momentum coefficient: finite, |μ| < 1 (else NoStationaryDistribution)."""
    mu = float(_finite(momentum, "momentum"))
    if abs(mu) >= 1:
        raise NoStationaryDistribution(f"|μ| = {_fmt(abs(mu))} ≥ 1")
    return mu


def _lr_matrix(lr: Any, d: int) -> tuple[np.ndarray, bool]:
    """Return (Λ as a (d, d) matrix, whether lr was a scalar)."""
    a = _finite(lr, "lr")
    if a.ndim == 0:
        return float(a) * np.eye(d), True
    return _square(a, "lr", d), False


# ---------------------------------------------------------------------------
# Stability of heavy-ball SGD on a quadratic
# ---------------------------------------------------------------------------


class Stability(NamedTuple):
    """Outcome of :func:`stability`.

    Attributes:
      stable: True iff the mean dynamics of the (w_t, w_{t-1}) chain are contracting.
      reason: empty when stable, otherwise the failed condition with its numbers.
      spectral_radius: spectral radius of the (w_t, w_{t-1}) transition matrix
        (its per-step contraction factor; ≥ 1 when unstable).
    """

    stable: bool
    reason: str
    spectral_radius: float


def _companion_radius(p: np.ndarray, mu: float) -> float:
    """Largest |z| over the roots of z² − (1+μ−p) z + μ = 0, for every p."""
    p = np.asarray(p, dtype=np.complex128)
    b = 1.0 + mu - p
    disc = np.sqrt(b * b - 4.0 * mu)
    roots = np.concatenate([(b + disc) / 2.0, (b - disc) / 2.0])
    return float(np.max(np.abs(roots))) if roots.size else 0.0


def stability(lr: Any, curvature_eigs: Any, momentum: float = 0.0) -> Stability:
    """Whether heavy-ball SGD on L = ½ wᵀKw has a stationary distribution.

    The noiseless update w_{t+1} = w_t − ΛK w_t + μ(w_t − w_{t−1}) acts on
    z_t = (w_t, w_{t−1}) through A = [[(1+μ)I − ΛK, −μI], [I, 0]], whose
    eigenvalues are the roots of z² − (1+μ−p) z + μ = 0 for each eigenvalue p
    of ΛK. For real p the Jury conditions give: stable iff |μ| < 1 and
    0 < p < 2(1+μ); with a scalar rate p = λk. For complex p (a non-symmetric
    ΛK) the criterion is the spectral radius of A being < 1.

    From Liu, Ziyin, Ueda, arXiv:2012.03636 (stability condition of Theorem 1).

    Args:
      lr: scalar learning rate λ, or a symmetric matrix Λ (then ``curvature_eigs``
        must be the matrix K).
      curvature_eigs: the eigenvalues k of K (1-D array or scalar), or the matrix
        K itself (2-D).
      momentum: heavy-ball coefficient μ.

    Returns:
      A :class:`Stability` (stable, reason, spectral_radius).

    Raises:
      ValueError: non-finite input, or a matrix Λ with eigenvalues given
        instead of K.
    """
    mu = float(_finite(momentum, "momentum"))
    k = _finite(curvature_eigs, "curvature_eigs")
    lr_a = _finite(lr, "lr")
    if k.ndim == 2:
        d = k.shape[0]
        lam, scalar = _lr_matrix(lr_a, d)
        if scalar:
            p = float(lr_a) * np.linalg.eigvalsh(_square(k, "K"))
        else:
            p = np.linalg.eigvals(lam @ _square(k, "K"))
        label = "λk" if scalar else "eigenvalue of ΛK"
    else:
        if lr_a.ndim != 0:
            raise ValueError("a matrix learning rate needs the matrix K, not its eigenvalues")
        p = (float(lr_a) * k).ravel()
        label = "λk"
    p = np.asarray(p)
    if np.iscomplexobj(p):
        scale = max(float(np.max(np.abs(p))), 1e-300) if p.size else 1.0
        if np.all(np.abs(p.imag) <= 1e-12 * scale):
            p = p.real
    if abs(mu) >= 1:
        rho = _companion_radius(p, mu) if p.size else abs(mu)
        return Stability(False, f"|μ| = {_fmt(abs(mu))} ≥ 1", rho)
    rho = _companion_radius(p, mu)
    if np.iscomplexobj(p):
        if rho >= 1:
            return Stability(
                False,
                f"spectral radius of the (w_t, w_t-1) transition matrix = {_fmt(rho)} ≥ 1",
                rho,
            )
        return Stability(True, "", rho)
    if p.size:
        pmin, pmax = float(np.min(p)), float(np.max(p))
        if pmin <= 0:
            return Stability(False, f"{label} = {_fmt(pmin)} ≤ 0", rho)
        if pmax >= 2 * (1 + mu):
            return Stability(False, f"{label} = {_fmt(pmax)} ≥ 2(1+μ) = {_fmt(2 * (1 + mu))}", rho)
    return Stability(True, "", rho)


def is_stable(lr: Any, curvature_eigs: Any, momentum: float = 0.0) -> bool:
    """True iff :func:`stability` finds a stationary distribution (same arguments)."""
    return stability(lr, curvature_eigs, momentum).stable


def _require_stable(lr: Any, curvature: Any, momentum: float) -> None:
    s = stability(lr, curvature, momentum)
    if not s.stable:
        raise NoStationaryDistribution(s.reason)


# ---------------------------------------------------------------------------
# Liu--Ziyin--Ueda: stationary covariance on a quadratic
# ---------------------------------------------------------------------------


def _check_1d(lr: Any, curvature: Any, momentum: Any) -> tuple[np.ndarray, ...]:
    lam = _finite(lr, "lr")
    k = _finite(curvature, "curvature")
    mu = _finite(momentum, "momentum")
    lam, k, mu = np.broadcast_arrays(lam, k, mu)
    bad_mu = np.abs(mu) >= 1
    if np.any(bad_mu):
        raise NoStationaryDistribution(f"|μ| = {_fmt(np.abs(mu[bad_mu]).flat[0])} ≥ 1")
    p = lam * k
    low = p <= 0
    if np.any(low):
        raise NoStationaryDistribution(f"λk = {_fmt(p[low].flat[0])} ≤ 0")
    high = p >= 2 * (1 + mu)
    if np.any(high):
        i = np.flatnonzero(high.ravel())[0]
        raise NoStationaryDistribution(
            f"λk = {_fmt(p.flat[i])} ≥ 2(1+μ) = {_fmt(2 * (1 + mu.flat[i]))}"
        )
    return lam, k, mu


def _out(x: np.ndarray) -> float | np.ndarray:
    return float(x) if np.ndim(x) == 0 else x


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
    lam, k, mu = _check_1d(lr, curvature, momentum)
    s2 = _finite(noise_var, "noise_var")
    if np.any(s2 < 0):
        raise ValueError(f"noise_var must be ≥ 0, got {noise_var!r}")
    v = lam * s2 * (1 + mu) / (k * (1 - mu) * (2 * (1 + mu) - lam * k))
    return _out(v)


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
    lam = _finite(lr, "lr")
    k = _finite(curvature, "curvature")
    mu = _finite(momentum, "momentum")
    s2 = _finite(noise_var, "noise_var")
    lam, k, mu, s2 = np.broadcast_arrays(lam, k, mu, s2)
    if np.any(np.abs(mu) >= 1):
        raise NoStationaryDistribution(f"|μ| = {_fmt(np.max(np.abs(mu)))} ≥ 1")
    if np.any(lam * k <= 0):
        raise NoStationaryDistribution(f"λk = {_fmt(np.min(lam * k))} ≤ 0")
    if np.any(s2 < 0):
        raise ValueError(f"noise_var must be ≥ 0, got {noise_var!r}")
    return _out(lam * s2 / (2 * k * (1 - mu)))


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
    mu = _momentum(momentum)
    K = _square(K, "K")
    d = K.shape[0]
    C = _psd(C, "C", d)
    lam, _ = _lr_matrix(lr, d)
    _require_stable(lr, K, mu)
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
    mu = _momentum(momentum)
    K = _square(K, "K")
    d = K.shape[0]
    C = _psd(C, "C", d)
    lam, _ = _lr_matrix(lr, d)
    _require_stable(lr, K, mu)
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
    mu = _momentum(momentum)
    K = _square(K, "K")
    d = K.shape[0]
    C = _psd(C, "C", d)
    lam, _ = _lr_matrix(lr, d)
    _require_stable(lr, K, mu)
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
    K = _finite(K, "K")
    S = _finite(Sigma, "Sigma")
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
    lam = float(_finite(lr, "lr")) if np.ndim(lr) == 0 else None
    if lam is None:
        raise ValueError("excess_loss_sgd takes a scalar learning rate")
    K = _square(K, "K")
    d = K.shape[0]
    C = _psd(C, "C", d)
    _require_stable(lam, K, 0.0)
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
    K = _square(K, "K")
    d = K.shape[0]
    Cc = _psd(centers_cov, "centers_cov", d)
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


# ---------------------------------------------------------------------------
# Online linear regression with minibatch noise (arXiv:2102.05375)
# ---------------------------------------------------------------------------


def _positive_int(x: Any, name: str) -> int:
    n = int(x)
    if n != x or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {x!r}")
    return n


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
    mu = _momentum(momentum)
    lam = float(_finite(lr, "lr"))
    if lam <= 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    A = _spd(A, "A")
    d = A.shape[0]
    s2 = float(_finite(label_noise_var, "label_noise_var"))
    if s2 < 0:
        raise ValueError(f"label_noise_var must be ≥ 0, got {label_noise_var!r}")
    S = _positive_int(batch_size, "batch_size")
    if precond is None:
        L = lam * np.eye(d)
    else:
        P = _spd(precond, "precond", d)
        comm = float(np.max(np.abs(P @ A - A @ P)))
        if comm > 1e-10 * float(np.max(np.abs(P))) * float(np.max(np.abs(A))):
            raise ValueError(
                f"precond must commute with A for the closed form (max |PA − AP| = "
                f"{_fmt(comm)}); solve the second-moment recursion instead"
            )
        L = lam * P
    M = L @ A
    M = 0.5 * (M + M.T)  # symmetric because Λ and A commute
    G = 2 * (1 - mu) * np.eye(d) - ((1 - mu) / (1 + mu) + 1 / S) * M
    g_min = float(np.linalg.eigvalsh(G)[0])
    if g_min <= 0:
        raise NoStationaryDistribution(
            "G = 2(1−μ)I − ((1−μ)/(1+μ) + 1/S)ΛA is not positive definite: "
            f"smallest eigenvalue = {_fmt(g_min)} ≤ 0"
        )
    Ginv = np.linalg.inv(G)
    tr = float(np.trace(M @ Ginv))
    denom = 1 - tr / S
    if denom <= 0:
        raise NoStationaryDistribution(f"1 − Tr[ΛAG⁻¹]/S = {_fmt(denom)} ≤ 0")
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
    return excess_loss(A, Sigma) + 0.5 * float(_finite(label_noise_var, "label_noise_var"))


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
    mu = _momentum(momentum)
    lam = float(_finite(lr, "lr"))
    if lam <= 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    A = _spd(A, "A")
    D = A.shape[0]
    s2 = float(_finite(label_noise_var, "label_noise_var"))
    if s2 < 0:
        raise ValueError(f"label_noise_var must be ≥ 0, got {label_noise_var!r}")
    S = _positive_int(batch_size, "batch_size")
    g = 2 * (1 - mu) - ((1 - mu) / (1 + mu) + 1 / S) * lam
    if g <= 0:
        raise NoStationaryDistribution(f"g = 2(1−μ) − ((1−μ)/(1+μ) + 1/S)λ = {_fmt(g)} ≤ 0")
    den = g * S - lam * D
    if den <= 0:
        raise NoStationaryDistribution(f"gS − λD = {_fmt(den)} ≤ 0")
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


# ---------------------------------------------------------------------------
# Du et al. (arXiv:1810.02054): two-layer ReLU nets in the lazy regime
# ---------------------------------------------------------------------------


def _cosines(X: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = _finite(X, "X")
    if X.ndim != 2:
        raise ValueError(f"X must have shape (n, d), got {X.shape}")
    gram = X @ X.T
    norms = np.sqrt(np.diag(gram))
    if np.any(norms == 0):
        raise ValueError("inputs must be non-zero")
    cos = np.clip(gram / np.outer(norms, norms), -1.0, 1.0)
    return gram, norms, cos


def du_H_inf(X: Any) -> np.ndarray:
    """Infinite-width first-layer Gram matrix H∞ of a two-layer ReLU net.

    H∞_ij = E_{w~N(0,I)}[x_i·x_j 1{wᵀx_i ≥ 0, wᵀx_j ≥ 0}]
          = x_i·x_j (π − arccos cos θ_ij) / (2π),

    cos θ_ij = x_i·x_j/(‖x_i‖‖x_j‖), clipped to [−1, 1]. For unit inputs (the
    paper's setting) cos θ = x_i·x_j. Du, Zhai, Poczos, Singh,
    arXiv:1810.02054, eq. for H∞ (Section 3).

    Args:
      X: inputs as rows, shape (n, d).

    Returns:
      H∞, symmetric (n, n).

    Raises:
      ValueError: non-finite or zero inputs.
    """
    gram, _, cos = _cosines(X)
    H = gram * (np.pi - np.arccos(cos)) / (2 * np.pi)
    return 0.5 * (H + H.T)


def du_G_inf(X: Any) -> np.ndarray:
    """Infinite-width second-layer Gram matrix G∞ (training the output layer too).

    G∞_ij = E_{w~N(0,I)}[ReLU(wᵀx_i) ReLU(wᵀx_j)]
          = ‖x_i‖‖x_j‖ (sin θ + (π − θ) cos θ) / (2π),

    the degree-1 arc-cosine kernel; for unit inputs the norms are 1.
    Du, Zhai, Poczos, Singh, arXiv:1810.02054 (Section 3, second layer).

    Args:
      X: inputs as rows, shape (n, d).

    Returns:
      G∞, symmetric (n, n).

    Raises:
      ValueError: non-finite or zero inputs.
    """
    _, norms, cos = _cosines(X)
    theta = np.arccos(cos)
    G = np.outer(norms, norms) * (np.sin(theta) + (np.pi - theta) * cos) / (2 * np.pi)
    return 0.5 * (G + G.T)


def du_lambda0(X: Any) -> float:
    """λ0 = λ_min(H∞), positive when no two inputs are parallel (Du et al., arXiv:1810.02054).

    Args:
      X: inputs as rows, shape (n, d).

    Returns:
      The smallest eigenvalue of :func:`du_H_inf` (X).
    """
    return float(np.linalg.eigvalsh(du_H_inf(X))[0])


def du_kernel_loss(H: Any, y: Any, u0: Any, lr: Any, steps: Any) -> float | np.ndarray:
    """Loss ½‖u(k) − y‖² predicted by the linearised (kernel) GD dynamics.

    With L = ½ Σ_i (u_i − y_i)² (a sum, the paper's convention), full-batch GD
    in the infinite-width limit gives u(k) − y = (I − ηH)^k (u(0) − y), so with
    H = Σ_i λ_i v_i v_iᵀ and c_i = v_iᵀ(u(0) − y):

      ½‖u(k) − y‖² = ½ Σ_i (1 − ηλ_i)^{2k} c_i².

    Du, Zhai, Poczos, Singh, arXiv:1810.02054 (the kernel dynamics behind
    Theorem 4.1).

    Args:
      H: symmetric Gram matrix (usually H∞), (n, n).
      y: labels, (n,).
      u0: network outputs at initialisation, (n,).
      lr: step size η.
      steps: int or array of step counts k ≥ 0.

    Returns:
      ½‖u(k) − y‖² for each k (float for scalar ``steps``).

    Raises:
      ValueError: malformed input or negative steps.
    """
    H = _square(H, "H")
    n = H.shape[0]
    y = _finite(y, "y").reshape(-1)
    u0 = _finite(u0, "u0").reshape(-1)
    if y.shape != (n,) or u0.shape != (n,):
        raise ValueError(f"y and u0 must have shape ({n},), got {y.shape}, {u0.shape}")
    eta = float(_finite(lr, "lr"))
    k = _finite(steps, "steps")
    if np.any(k < 0):
        raise ValueError("steps must be ≥ 0")
    lam, V = np.linalg.eigh(H)
    c2 = (V.T @ (u0 - y)) ** 2
    base = np.abs(1 - eta * lam)
    decay = base[:, None] ** (2 * k.reshape(-1)[None, :])
    out = 0.5 * (c2 @ decay)
    return _out(out.reshape(k.shape))


def du_rate_bound(lr: Any, lambda0: Any, steps: Any, initial_loss: Any) -> float | np.ndarray:
    """Linear-rate bound of Du et al.: L(k) ≤ (1 − ηλ0/2)^k L(0).

    Theorem 4.1 of Du, Zhai, Poczos, Singh, arXiv:1810.02054 states it for
    ‖u(k) − y‖²; the bound is homogeneous, so ``initial_loss`` may be
    ‖u(0) − y‖² or ½‖u(0) − y‖² and the output has the same normalisation.

    Args:
      lr: η > 0.
      lambda0: λ0 > 0.
      steps: int or array of k ≥ 0.
      initial_loss: L(0) ≥ 0.

    Returns:
      (1 − ηλ0/2)^k · L(0).

    Raises:
      ValueError: non-finite input, or ηλ0 outside (0, 2].
    """
    eta = float(_finite(lr, "lr"))
    l0 = float(_finite(lambda0, "lambda0"))
    if not 0 < eta * l0 <= 2:
        raise ValueError(f"the bound needs 0 < ηλ0 ≤ 2, got ηλ0 = {_fmt(eta * l0)}")
    k = _finite(steps, "steps")
    return _out((1 - eta * l0 / 2) ** k * float(_finite(initial_loss, "initial_loss")))


def du_distance_bound(n: int, m: int, lambda0: Any, residual_norm: Any) -> float:
    """Bound R' on how far each first-layer weight moves during GD.

    R' = 4 √n ‖y − u(0)‖ / (√m λ0),

    the radius of the discrete-time analysis of Du, Zhai, Poczos, Singh,
    arXiv:1810.02054 (Section 4): with ‖u(k) − y‖² ≤ (1 − ηλ0/2)^k ‖u(0) − y‖²,
    ‖w_r(k+1) − w_r(k)‖ ≤ η √n ‖u(k) − y‖/√m, and summing the geometric series
    Σ_k (1 − ηλ0/2)^{k/2} ≤ 4/(ηλ0) gives the constant 4. (The gradient-flow
    version of Section 3 has 2 instead.) The constant is the paper's, not 1.

    Args:
      n: number of training points.
      m: width.
      lambda0: λ0 > 0.
      residual_norm: ‖y − u(0)‖ (Euclidean norm, not squared).

    Returns:
      R'.

    Raises:
      ValueError: non-finite or non-positive input.
    """
    l0 = float(_finite(lambda0, "lambda0"))
    if n < 1 or m < 1 or l0 <= 0:
        raise ValueError(f"need n, m ≥ 1 and λ0 > 0, got {n}, {m}, {_fmt(l0)}")
    r = float(_finite(residual_norm, "residual_norm"))
    return 4 * math.sqrt(n) * r / (math.sqrt(m) * l0)


# ---------------------------------------------------------------------------
# Exact mean first-passage times of 1-D SGD (Nystrom) and Arrhenius temperatures
# ---------------------------------------------------------------------------


def _gauss_legendre_panels(
    lo: float, hi: float, n_panels: int, order: int
) -> tuple[np.ndarray, np.ndarray]:
    xg, wg = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(lo, hi, n_panels + 1)
    half = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[:-1] + edges[1:])
    nodes = (mid[:, None] + half[:, None] * xg[None, :]).ravel()
    weights = (half[:, None] * wg[None, :]).ravel()
    return nodes, weights


def _mfpt_setup(grad_U, lr, noise_var, lo, hi, order):
    lam = float(_finite(lr, "lr"))
    s2 = float(_finite(noise_var, "noise_var"))
    lo = float(_finite(lo, "lo"))
    hi = float(_finite(hi, "hi"))
    if lam <= 0 or s2 <= 0:
        raise ValueError(f"need lr > 0 and noise_var > 0, got {lr!r}, {noise_var!r}")
    if not lo < hi:
        raise ValueError(f"need lo < hi, got {lo!r}, {hi!r}")
    if int(order) != order or order < 2:
        raise ValueError(f"order must be an integer ≥ 2, got {order!r}")
    width = lam * math.sqrt(s2)
    min_panels = math.ceil((hi - lo) / (2.0 * width))
    return lam, width, lo, hi, min_panels


def _mfpt_solve(grad_U, lam, width, lo, hi, n_nodes, order, x0):
    n_panels = max(1, math.ceil(n_nodes / order))
    y, w = _gauss_legendre_panels(lo, hi, n_panels, order)

    def mean_of(x):
        g = np.asarray(grad_U(x), dtype=np.float64)
        if g.shape != x.shape or not np.all(np.isfinite(g)):
            raise ValueError("grad_U must return finite values of the input's shape")
        return x - lam * g

    norm = 1.0 / (width * math.sqrt(2 * math.pi))

    def kernel(x):  # p(x -> y_j) w_j, shape (len(x), n)
        z = (y[None, :] - mean_of(x)[:, None]) / width
        return norm * np.exp(-0.5 * z * z) * w[None, :]

    P = kernel(y)
    tau = np.linalg.solve(np.eye(y.size) - P, np.ones(y.size))
    return 1.0 + kernel(x0) @ tau, y.size


def mfpt_nystrom(
    grad_U: Callable[[np.ndarray], Any],
    lr: Any,
    noise_var: Any,
    lo: Any,
    hi: Any,
    n_nodes: int = 200,
    x0: Any = None,
    *,
    order: int = 10,
) -> float | np.ndarray:
    """Exact mean first-passage time of 1-D SGD with Gaussian gradient noise (Nyström).

    Chain: w_{t+1} = w_t − λ(U'(w_t) + σ ξ_t), ξ_t ~ N(0, 1). The walker has
    escaped at the first step t ≥ 1 after which w_t ∉ [lo, hi] (checked once per
    step, after the step; the start may lie anywhere). The mean number of steps
    τ(x) solves the Fredholm equation of the second kind

      τ(x) = 1 + ∫_lo^hi p(x → y) τ(y) dy,
      p(x → y) = N(y; x − λU'(x), (λσ)²).

    Nyström method: composite Gauss–Legendre quadrature (``order`` nodes on
    each of equal panels) gives (I − P W) τ = 1 on the nodes y_j, and then
    τ(x0) = 1 + Σ_j w_j p(x0 → y_j) τ_j. The kernel is a Gaussian of width λσ
    in y, so the panel width is capped at 2λσ (≥ 5 nodes per standard
    deviation at order 10): the node count actually used is
    max(n_nodes, order·⌈(hi − lo)/(2λσ)⌉), rounded up to a multiple of
    ``order``. Memory and time are O(n²) and O(n³). Check convergence with
    :func:`mfpt_nystrom_converged`. The method is the exact discrete-time oracle
    for the escape experiments of Liu, Ziyin, Ueda, arXiv:2012.03636.

    To model escape through one side only (e.g. over the barrier of a double
    well) put the other bound where the chain never goes (a negligible kernel
    mass leaks there); the result is then insensitive to that bound.

    Args:
      grad_U: vectorised U', mapping a float64 array to an array of its shape.
      lr: λ > 0.
      noise_var: σ² > 0, the variance of the gradient noise.
      lo, hi: the non-escaped region [lo, hi].
      n_nodes: minimum number of quadrature nodes.
      x0: starting point(s); default the midpoint (lo + hi)/2.
      order: Gauss–Legendre nodes per panel.

    Returns:
      τ(x0) in steps (float for scalar x0, else an array of x0's shape).

    Raises:
      ValueError: malformed input or a grad_U with non-finite output.
    """
    lam, width, lo, hi, min_panels = _mfpt_setup(grad_U, lr, noise_var, lo, hi, order)
    n = max(int(n_nodes), min_panels * order)
    x = np.asarray((lo + hi) / 2 if x0 is None else _finite(x0, "x0"), dtype=np.float64)
    tau, _ = _mfpt_solve(grad_U, lam, width, lo, hi, n, order, x.reshape(-1))
    return _out(tau.reshape(x.shape))


def mfpt_nystrom_converged(
    grad_U: Callable[[np.ndarray], Any],
    lr: Any,
    noise_var: Any,
    lo: Any,
    hi: Any,
    n_nodes: int = 200,
    x0: Any = None,
    *,
    tol: float = 1e-6,
    max_nodes: int = 8192,
    order: int = 10,
) -> tuple[float, int, float]:
    """:func:`mfpt_nystrom` with the node count doubled until τ(x0) has converged.

    Starting from max(n_nodes, the resolution floor of :func:`mfpt_nystrom`),
    the node count is doubled until |τ_2n − τ_n| / |τ_2n| < ``tol``.

    Args:
      grad_U, lr, noise_var, lo, hi, x0, order: as in :func:`mfpt_nystrom`
        (x0 a scalar).
      n_nodes: starting node count.
      tol: relative-change tolerance.
      max_nodes: the largest node count tried.

    Returns:
      (tau, n_nodes, rel_change): the finer value, the node count that gave it,
      and the relative change on the last doubling.

    Raises:
      RuntimeError: not converged by ``max_nodes`` (raise it or loosen ``tol``).
      ValueError: malformed input.
    """
    lam, width, lo, hi, min_panels = _mfpt_setup(grad_U, lr, noise_var, lo, hi, order)
    x = np.array([(lo + hi) / 2 if x0 is None else float(_finite(x0, "x0"))])
    n = max(int(n_nodes), min_panels * order)
    n = order * math.ceil(n / order)
    prev, _ = _mfpt_solve(grad_U, lam, width, lo, hi, n, order, x)
    rel = math.inf
    while 2 * n <= max_nodes:
        n *= 2
        cur, _ = _mfpt_solve(grad_U, lam, width, lo, hi, n, order, x)
        rel = abs(float(cur[0]) - float(prev[0])) / abs(float(cur[0]))
        if rel < tol:
            return float(cur[0]), n, rel
        prev = cur
    raise RuntimeError(
        f"MFPT not converged to tol = {_fmt(tol)} by {n} nodes (last relative change "
        f"{_fmt(rel)}); increase max_nodes"
    )


class Temperatures(NamedTuple):
    """Effective temperatures of SGD in a quadratic well (see :func:`arrhenius_sharp_well`).

    Attributes:
      effective: discrete-time T_eff = λσ²/(2 − λa).
      continuous: continuous-time T = λσ²/2.
    """

    effective: float
    continuous: float


def arrhenius_sharp_well(lr: Any, curvature: Any, noise_var: Any) -> Temperatures:
    """Temperatures that set escape rates from a sharp quadratic minimum.

    In a well U = a w²/2 the exact stationary variance is λσ²/(a(2 − λa))
    (:func:`lzu_variance_1d`, μ = 0), i.e. a Boltzmann law exp(−U/T_eff) with
    T_eff = λσ²/(2 − λa); the continuous-time (SDE) temperature is T = λσ²/2.
    Liu, Ziyin, Ueda, arXiv:2012.03636 (escape section).

    Args:
      lr: λ > 0.
      curvature: a > 0.
      noise_var: σ² ≥ 0.

    Returns:
      ``Temperatures(effective, continuous)``.

    Raises:
      NoStationaryDistribution: unless 0 < λa < 2.
    """
    lam, a, _ = _check_1d(lr, curvature, 0.0)
    s2 = float(_finite(noise_var, "noise_var"))
    if s2 < 0:
        raise ValueError(f"noise_var must be ≥ 0, got {noise_var!r}")
    lam, a = float(lam), float(a)
    return Temperatures(lam * s2 / (2 - lam * a), lam * s2 / 2)


def arrhenius_slope(lr: Any, curvature: Any, discrete: bool = True) -> float:
    """Predicted slope of ln τ against ΔL/T with T = λσ²/2.

    Continuous time: ln τ ≈ ΔL/T + const, slope 1. With the discrete-time
    temperature of a sharp well, ln τ ≈ ΔL/T_eff, so the slope against ΔL/T is
    T/T_eff = (2 − λa)/2. Liu, Ziyin, Ueda, arXiv:2012.03636. (For a smooth
    barrier with a saddle the discrete correction is different.)

    Args:
      lr: λ > 0.
      curvature: the curvature a of the well.
      discrete: return (2 − λa)/2 if True, else 1.

    Returns:
      The slope.

    Raises:
      NoStationaryDistribution: unless 0 < λa < 2.
    """
    lam, a, _ = _check_1d(lr, curvature, 0.0)
    return (2 - float(lam) * float(a)) / 2 if discrete else 1.0


def escape_rate_from_mfpt(tau: Any) -> float | np.ndarray:
    """Escape rate per step, 1/τ.

    Exact for an exponentially distributed escape time; for metastable wells
    (ΔL/T ≫ 1) the escape time is approximately exponential, so this is the
    Kramers/Arrhenius rate. Liu, Ziyin, Ueda, arXiv:2012.03636.

    Args:
      tau: mean first-passage time(s) > 0.

    Returns:
      1/τ.

    Raises:
      ValueError: τ not finite and positive.
    """
    t = _finite(tau, "tau")
    if np.any(t <= 0):
        raise ValueError(f"tau must be > 0, got {tau!r}")
    return _out(1.0 / t)


# ---------------------------------------------------------------------------
# Constant targets, dead network (Hutzenthaler et al., arXiv:2112.07369)
# ---------------------------------------------------------------------------


def _steps_array(steps: Any, n_max: int | None) -> np.ndarray:
    k = np.asarray(steps)
    if not np.issubdtype(k.dtype, np.integer):
        kf = _finite(k, "steps")
        if np.any(kf != np.round(kf)):
            raise ValueError("steps must be integers")
        k = kf.astype(np.int64)
    if np.any(k < 0) or (n_max is not None and np.any(k > n_max)):
        raise ValueError(f"steps must lie in [0, {n_max}]")
    return k


def dead_network_risk(c0_minus_xi: Any, gamma: Any, steps: Any = None) -> float | np.ndarray:
    """Exact risk of the dead ReLU network under SGD, any step-size schedule.

    When every hidden unit is inactive on the input support only the output
    bias c moves; with the risk (c − ξ)² (no ½) its gradient is 2(c − ξ), so

      c_n − ξ = Π_{k=1..n} (1 − 2γ_k) (c_0 − ξ),   L_n = (c_n − ξ)².

    Hutzenthaler, Jentzen, Pohl, Riekert, Scarpa, arXiv:2112.07369 (the
    degenerate case of their setting).

    Args:
      c0_minus_xi: c_0 − ξ.
      gamma: step sizes γ_1, ..., γ_N (1-D array).
      steps: int or array of n in [0, N]; default all n = 0..N.

    Returns:
      L_n for each requested n.

    Raises:
      ValueError: non-finite input or steps out of range.
    """
    c = float(_finite(c0_minus_xi, "c0_minus_xi"))
    g = _finite(gamma, "gamma").reshape(-1)
    f = np.concatenate([[1.0], np.cumprod((1 - 2 * g) ** 2)])
    risk = c * c * f
    if steps is None:
        return risk
    k = _steps_array(steps, g.size)
    return _out(risk[k])


def dead_network_risk_schedule(
    c0_minus_xi: Any, gamma0: Any, alpha: Any, n0: Any, steps: Any
) -> float | np.ndarray:
    """Exact dead-network risk for γ_k = γ0/(k + n0)^α, k = 1, 2, ..., in log space.

    L_n = (c_0 − ξ)² exp(Σ_{k≤n} 2 log|1 − 2γ_k|), the log-sum accumulated in
    chunks of 2²⁰ terms with log1p (memory O(chunk) for any n); a factor
    1 − 2γ_k = 0 makes the risk exactly 0 from step k on. See
    :func:`dead_network_risk`; Hutzenthaler et al., arXiv:2112.07369.

    Args:
      c0_minus_xi: c_0 − ξ.
      gamma0: γ0 > 0.
      alpha: exponent α ≥ 0 (α = 1: non-summable 1/k; α = 2: summable).
      n0: offset n0 ≥ 0 (k + n0 > 0).
      steps: int or array of n ≥ 0.

    Returns:
      L_n for each requested n.

    Raises:
      ValueError: malformed input.
    """
    c = float(_finite(c0_minus_xi, "c0_minus_xi"))
    g0 = float(_finite(gamma0, "gamma0"))
    a = float(_finite(alpha, "alpha"))
    off = float(_finite(n0, "n0"))
    if off + 1 <= 0:
        raise ValueError(f"need 1 + n0 > 0, got n0 = {n0!r}")
    k = _steps_array(steps, None)
    flat = k.reshape(-1)
    order = np.argsort(flat, kind="stable")
    out = np.empty(flat.size)
    logsum = 0.0
    done = 0  # terms k = 1..done are in logsum
    chunk = 1 << 20
    for idx in order:
        target = int(flat[idx])
        while done < target and np.isfinite(logsum):
            m = min(chunk, target - done)
            kk = np.arange(done + 1, done + m + 1, dtype=np.float64)
            x = -2.0 * g0 / (kk + off) ** a
            terms = np.empty_like(x)
            inside = x > -1
            terms[inside] = 2 * np.log1p(x[inside])
            with np.errstate(divide="ignore"):
                terms[~inside] = 2 * np.log(np.abs(1 + x[~inside]))
            logsum += float(np.sum(terms))
            done += m
        out[idx] = c * c * math.exp(logsum) if np.isfinite(logsum) else 0.0
    return _out(out.reshape(k.shape))


def dead_risk_inv_asymptotic(g: Any, n: Any, c0: Any) -> float | np.ndarray:
    """Large-n dead-network risk for γ_k = g/k: (c_0 − ξ)² n^{−4g} / Γ(1 − 2g)².

    From Π_{k≤n}(1 − 2g/k) = Γ(n + 1 − 2g)/(Γ(1 − 2g) Γ(n + 1)) ~ n^{−2g}/Γ(1 − 2g).
    Stated for 0 < g < 1/2 (the paper's small-step regime); computed with 1/Γ,
    so it stays valid for larger g and gives 0 when 2g is a positive integer
    (the product is then exactly zero). The risk → 0: Σγ_k = ∞.
    Hutzenthaler et al., arXiv:2112.07369 (dead-network case).

    Args:
      g: g > 0.
      n: step(s) n ≥ 1.
      c0: c_0 − ξ.

    Returns:
      The asymptotic risk.

    Raises:
      ValueError: non-finite input, g ≤ 0 or n < 1.
    """
    gg = float(_finite(g, "g"))
    nn = _finite(n, "n")
    if gg <= 0 or np.any(nn < 1):
        raise ValueError(f"need g > 0 and n ≥ 1, got {g!r}, {n!r}")
    c = float(_finite(c0, "c0"))
    return _out(c * c * nn ** (-4 * gg) * scipy.special.rgamma(1 - 2 * gg) ** 2)


def dead_risk_inv_sq_limit(g: Any, c0: Any) -> float:
    """Limit of the dead-network risk for the summable γ_k = g/k².

    L_∞ = [sin(π√(2g)) / (π√(2g))]² (c_0 − ξ)² > 0 (unless √(2g) is an
    integer), by Euler's product sin(πz)/(πz) = Π_k (1 − z²/k²) with z² = 2g:
    the risk stalls because Σγ_k < ∞. Hutzenthaler et al., arXiv:2112.07369.

    Args:
      g: g > 0.
      c0: c_0 − ξ.

    Returns:
      L_∞.

    Raises:
      ValueError: non-finite input or g ≤ 0.
    """
    gg = float(_finite(g, "g"))
    if gg <= 0:
        raise ValueError(f"need g > 0, got {g!r}")
    c = float(_finite(c0, "c0"))
    z = math.sqrt(2 * gg)
    return (math.sin(math.pi * z) / (math.pi * z)) ** 2 * c * c


# ---------------------------------------------------------------------------
# Gibbs limit for regularised depth-2 nets (arXiv:2210.11452, arXiv:2004.06977)
# ---------------------------------------------------------------------------


def laplace_gap(n_params: int, s: Any) -> float | np.ndarray:
    """Laplace (small-s) stationary gap E[L̃] − min L̃ ≈ D s / 4.

    SGD W ← W − s(∇L̃ + ξ), ξ ~ N(0, I), has the continuous-time Gibbs law
    ∝ exp(−2L̃/s); near a non-degenerate minimiser this is Gaussian with
    covariance (s/2)H⁻¹, so E[L̃ − L̃*] ≈ ½Tr(H (s/2)H⁻¹) = Ds/4.
    Shi, Su, Jordan, arXiv:2004.06977; Gopalani, Mukherjee, arXiv:2210.11452.

    Args:
      n_params: D, the number of trained parameters.
      s: step size(s) s > 0.

    Returns:
      D s / 4.

    Raises:
      ValueError: non-finite input.
    """
    D = _positive_int(n_params, "n_params")
    return _out(D * _finite(s, "s") / 4)


def discrete_gap(hessian_eigs: Any, s: Any) -> float:
    """Discrete-time stationary gap of SGD with unit Gaussian noise, quadratic approximation.

    (s/4) Σ_i 1/(1 − s h_i/2). In an eigen-direction with curvature h the
    update w ← w − s(h w + ξ) has Var w = s/(h(2 − s h)), so
    E[½ h w²] = s/(2(2 − s h)) = (s/4)/(1 − s h/2); summing over directions
    gives the formula, which reduces to :func:`laplace_gap` as s → 0.
    Gopalani, Mukherjee, arXiv:2210.11452 (Gibbs limit); the correction follows
    Liu, Ziyin, Ueda, arXiv:2012.03636.

    Args:
      hessian_eigs: eigenvalues h_i of the Hessian at the minimiser.
      s: step size s > 0.

    Returns:
      The gap.

    Raises:
      NoStationaryDistribution: unless 0 < s h_i < 2 for every i.
    """
    h = _finite(hessian_eigs, "hessian_eigs").reshape(-1)
    ss = float(_finite(s, "s"))
    _check_1d(ss, h, 0.0)
    return float(ss / 4 * np.sum(1 / (1 - ss * h / 2)))


class VillaniMinimum(NamedTuple):
    """Result of :func:`villani_minimizer_and_hessian`.

    Attributes:
      w_min: the minimiser, as a pytree of float64 NumPy arrays shaped like w0.
      loss_min: the loss there.
      hessian_eigs: ascending eigenvalues of the Hessian of the flattened loss.
    """

    w_min: Any
    loss_min: float
    hessian_eigs: np.ndarray


def villani_minimizer_and_hessian(
    loss_fn: Callable[[Any], Any],
    w0: Any,
    *,
    method: str = "BFGS",
    gtol: float = 1e-10,
    maxiter: int = 10_000,
    newton_steps: int = 20,
    grad_tol: float = 1e-8,
) -> VillaniMinimum:
    """Deterministic minimiser of a JAX loss and the Hessian spectrum there, in float64.

    Runs ``scipy.optimize.minimize`` (BFGS by default) with the JAX gradient,
    then polishes with Newton steps using ``jax.hessian`` of the loss on the
    flattened parameter vector (accepted while the gradient norm decreases).
    All JAX work runs inside ``jax.enable_x64(True)``, so ``loss_fn`` must be
    traceable in float64. Used to evaluate :func:`discrete_gap` for the
    regularised depth-2 nets of Gopalani, Mukherjee, arXiv:2210.11452.

    Args:
      loss_fn: scalar JAX function of a pytree shaped like ``w0``.
      w0: starting point (any pytree of arrays).
      method: a gradient-based ``scipy.optimize.minimize`` method.
      gtol: gradient tolerance passed to SciPy.
      maxiter: SciPy iteration cap.
      newton_steps: maximum number of Newton polishing steps.
      grad_tol: required final gradient norm (Euclidean).

    Returns:
      ``VillaniMinimum(w_min, loss_min, hessian_eigs)``.

    Raises:
      RuntimeError: the final gradient norm exceeds ``grad_tol``.
    """
    with jax.enable_x64(True):
        tree64 = jax.tree.map(lambda a: jnp.asarray(a, dtype=jnp.float64), w0)
        flat0, unravel = ravel_pytree(tree64)

        def flat_loss(v):
            return loss_fn(unravel(v))

        val_grad = jax.jit(jax.value_and_grad(flat_loss))
        hess = jax.jit(jax.hessian(flat_loss))

        def fun(v):
            val, g = val_grad(jnp.asarray(v, dtype=jnp.float64))
            return float(val), np.asarray(g, dtype=np.float64)

        res = scipy.optimize.minimize(
            fun,
            np.asarray(flat0, dtype=np.float64),
            jac=True,
            method=method,
            options={"gtol": gtol, "maxiter": maxiter},
        )
        v = np.asarray(res.x, dtype=np.float64)
        val, g = fun(v)
        gnorm = float(np.linalg.norm(g))
        for _ in range(newton_steps):
            if gnorm == 0.0:
                break
            H = np.asarray(hess(jnp.asarray(v)), dtype=np.float64)
            try:
                step = np.linalg.solve(0.5 * (H + H.T), g)
            except np.linalg.LinAlgError:
                break
            v_new = v - step
            val_new, g_new = fun(v_new)
            gn_new = float(np.linalg.norm(g_new))
            if not gn_new < gnorm:
                break
            v, val, g, gnorm = v_new, val_new, g_new, gn_new
        if gnorm > grad_tol:
            raise RuntimeError(
                f"minimiser not found: gradient norm {_fmt(gnorm)} > grad_tol = "
                f"{_fmt(grad_tol)} ({res.message}); try another w0 or method"
            )
        H = np.asarray(hess(jnp.asarray(v)), dtype=np.float64)
        eigs = np.linalg.eigvalsh(0.5 * (H + H.T))
        w_min = jax.tree.map(lambda a: np.asarray(a, dtype=np.float64), unravel(jnp.asarray(v)))
    return VillaniMinimum(w_min, val, eigs)


def sigmoid_convexity_threshold(X: Any, y: Any, a: Any) -> float:
    """Sufficient weight decay for the sigmoid depth-2 objective (width-free form).

    For f(x) = Σ_j a_j σ(w_jᵀx) with σ the logistic sigmoid (|σ'| ≤ 1/4,
    |σ''| ≤ 1/(6√3), 0 < σ < 1) and L̃(W) = (1/2n)Σ_i(y_i − f(x_i))² + (λ/2)‖W‖²,
    the regularisation must exceed

      max_i‖x_i‖² (‖a‖²/16 + max_j|a_j|/(6√3) · (max_i|y_i| + ‖a‖₁)).

    Gopalani, Mukherjee, arXiv:2210.11452.

    Args:
      X: inputs as rows, (n, d).
      y: labels, (n,).
      a: fixed output weights, (p,).

    Returns:
      The threshold.

    Raises:
      ValueError: non-finite input.
    """
    X = _finite(X, "X")
    X = X.reshape(X.shape[0], -1) if X.ndim else X.reshape(1, 1)
    yy = _finite(y, "y").reshape(-1)
    aa = _finite(a, "a").reshape(-1)
    r2 = float(np.max(np.sum(X * X, axis=1)))
    a_max = float(np.max(np.abs(aa)))
    y_max = float(np.max(np.abs(yy)))
    return r2 * (
        float(aa @ aa) / 16 + a_max / (6 * math.sqrt(3)) * (y_max + float(np.sum(np.abs(aa))))
    )
