"""Input checking shared by the theory modules, and the no-stationary-law error."""

from __future__ import annotations

from typing import Any

import numpy as np

from sgdlab._validate import fmt, momentum_violation


class NoStationaryDistribution(ValueError):
    """Raised when SGD with the given parameters has no stationary second moment.

    The message starts with ``"no stationary distribution: "`` and states the
    condition that failed, with its numbers, e.g.
    ``"no stationary distribution: λk = 2.5 ≥ 2(1+μ) = 2.0"``.
    """

    def __init__(self, reason: str):
        super().__init__(f"no stationary distribution: {reason}")
        self.reason = reason


def finite_array(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a float64 array; raise ValueError if any entry is not finite."""
    a = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite, got {x!r}")
    return a


def square_matrix(x: Any, name: str, d: int | None = None) -> np.ndarray:
    """Return ``x`` as a finite, symmetric float64 (d, d) matrix (exactly symmetrised)."""
    a = finite_array(x, name)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {a.shape}")
    if d is not None and a.shape[0] != d:
        raise ValueError(f"{name} must have shape ({d}, {d}), got {a.shape}")
    scale = max(float(np.max(np.abs(a))), 1e-300)
    asym = float(np.max(np.abs(a - a.T)))
    if asym > 1e-10 * scale:
        raise ValueError(f"{name} must be symmetric, max |{name} - {name}ᵀ| = {fmt(asym)}")
    return 0.5 * (a + a.T)


def spd_matrix(x: Any, name: str, d: int | None = None) -> np.ndarray:
    """Return ``x`` as a symmetric positive definite matrix, or raise ValueError."""
    a = square_matrix(x, name, d)
    lo = float(np.linalg.eigvalsh(a)[0])
    if lo <= 0:
        raise ValueError(f"{name} must be positive definite, smallest eigenvalue = {fmt(lo)}")
    return a


def psd_matrix(x: Any, name: str, d: int | None = None) -> np.ndarray:
    """Return ``x`` as a symmetric positive semi-definite matrix (tolerance 1e-12 relative)."""
    a = square_matrix(x, name, d)
    ev = np.linalg.eigvalsh(a)
    if ev[0] < -1e-12 * max(float(np.max(np.abs(ev))), 1e-300):
        raise ValueError(
            f"{name} must be positive semi-definite, smallest eigenvalue = {fmt(ev[0])}"
        )
    return a


def check_momentum(momentum: Any) -> float:
    """Validate the momentum coefficient: finite, |μ| < 1 (else NoStationaryDistribution)."""
    mu = float(finite_array(momentum, "momentum"))
    require_momentum(mu)
    return mu


def require_momentum(mu: Any) -> None:
    """Raise NoStationaryDistribution unless every |μ| < 1 (the one momentum bound)."""
    reason = momentum_violation(mu)
    if reason is not None:
        raise NoStationaryDistribution(reason)


def lr_matrix(lr: Any, d: int) -> tuple[np.ndarray, bool]:
    """Return (Λ as a (d, d) matrix, whether lr was a scalar)."""
    a = finite_array(lr, "lr")
    if a.ndim == 0:
        return float(a) * np.eye(d), True
    return square_matrix(a, "lr", d), False


def check_1d(lr: Any, curvature: Any, momentum: Any) -> tuple[np.ndarray, ...]:
    lam = finite_array(lr, "lr")
    k = finite_array(curvature, "curvature")
    mu = finite_array(momentum, "momentum")
    lam, k, mu = np.broadcast_arrays(lam, k, mu)
    require_momentum(mu)
    p = lam * k
    low = p <= 0
    if np.any(low):
        raise NoStationaryDistribution(f"λk = {fmt(p[low].flat[0])} ≤ 0")
    high = p >= 2 * (1 + mu)
    if np.any(high):
        i = np.flatnonzero(high.ravel())[0]
        raise NoStationaryDistribution(
            f"λk = {fmt(p.flat[i])} ≥ 2(1+μ) = {fmt(2 * (1 + mu.flat[i]))}"
        )
    return lam, k, mu


def as_output(x: np.ndarray) -> float | np.ndarray:
    return float(x) if np.ndim(x) == 0 else x


def positive_int(x: Any, name: str) -> int:
    n = int(x)
    if n != x or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {x!r}")
    return n
