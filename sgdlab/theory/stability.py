"""Stability of heavy-ball SGD on a quadratic (the companion matrix's spectral radius)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from sgdlab.theory._checks import (
    NoStationaryDistribution,
    finite_array,
    fmt,
    lr_matrix,
    momentum_violation,
    square_matrix,
)


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
    mu = float(finite_array(momentum, "momentum"))
    k = finite_array(curvature_eigs, "curvature_eigs")
    lr_a = finite_array(lr, "lr")
    if k.ndim == 2:
        d = k.shape[0]
        lam, scalar = lr_matrix(lr_a, d)
        if scalar:
            p = float(lr_a) * np.linalg.eigvalsh(square_matrix(k, "K"))
        else:
            p = np.linalg.eigvals(lam @ square_matrix(k, "K"))
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
    violation = momentum_violation(mu)
    if violation:
        rho = _companion_radius(p, mu) if p.size else abs(mu)
        return Stability(False, violation, rho)
    rho = _companion_radius(p, mu)
    if np.iscomplexobj(p):
        if rho >= 1:
            return Stability(
                False,
                f"spectral radius of the (w_t, w_t-1) transition matrix = {fmt(rho)} ≥ 1",
                rho,
            )
        return Stability(True, "", rho)
    if p.size:
        pmin, pmax = float(np.min(p)), float(np.max(p))
        if pmin <= 0:
            return Stability(False, f"{label} = {fmt(pmin)} ≤ 0", rho)
        if pmax >= 2 * (1 + mu):
            return Stability(False, f"{label} = {fmt(pmax)} ≥ 2(1+μ) = {fmt(2 * (1 + mu))}", rho)
    return Stability(True, "", rho)


def is_stable(lr: Any, curvature_eigs: Any, momentum: float = 0.0) -> bool:
    """True iff :func:`stability` finds a stationary distribution (same arguments)."""
    return stability(lr, curvature_eigs, momentum).stable


def require_stable(lr: Any, curvature: Any, momentum: float) -> None:
    s = stability(lr, curvature, momentum)
    if not s.stable:
        raise NoStationaryDistribution(s.reason)
