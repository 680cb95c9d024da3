"""arXiv:2304.08172 (pointwise convergence of mini-batch GD to a ball indicator): the ramp model.

The solvable instance of the paper's mechanism is the ReLU ramp
``f_a(x) = ReLU(1 - ReLU(a(|x|² - r²)))`` with one trained scalar ``a``, the target
``f°(x) = 1{|x| ≤ r}`` and inputs ``X`` uniform on ``[-1, 1)^d``. With
``u = |X|² - r²`` the ramp errs only on the shell ``0 < u < 1/a``, where
``f_a - f° = 1 - au``. Everything below is an exact integral over that shell,
plain NumPy in float64, and none of it evaluates the network or its loss.

* ``U`` has the density ``ρ(u) = K (r² + u)^{d/2 - 1}`` for ``-r² < u ≤ 1 - r²``
  (the ball of radius ``√(r² + u)`` inside the cube), ``K = π^{d/2} / (Γ(d/2) 2^d)``;
  ``ρ(0) = π/4`` in d = 2.
* One sample's descent direction under the loss ``½(f_a - f°)²`` is
  ``g = u(1 - au) 1{0 < u < 1/a}`` (``∂_a f_a = -u`` on the shell), so mini-batch
  GD moves ``a ← a + ηκ·mean_batch(g)``, ``κ`` the loss scale (:func:`ramp_loss_scale`).
  Since ``g ≥ 0``, ``a_t`` never decreases.
* Its mean ``D(a) = E g = a^{-2} ∫_0^1 ρ(v/a) v(1 - v) dv``, with
  ``D' = -a^{-3} ∫_0^1 ρ(v/a) v² dv`` and ``D'' = ρ(1/a) a^{-4}`` (Leibniz), and its
  second moment ``E g² = a^{-3} ∫_0^1 ρ(v/a) v²(1 - v)² dv``. In d = 2:
  ``D = π/(24a²)``, so ``a³ ≈ a0³ + ηκρ(0)t/2``.

The ensemble mean follows the population-gradient recursion plus its minibatch-noise
correction (:func:`ramp_mean_recursion`): with ``m = E a`` and ``P = Var a``, to
second order in the fluctuation,

  ``m ← m + ηκ[D(m) + ½D''(m)P]``,  ``P ← P(1 + ηκD'(m))² + (ηκ)² Var(g)/S``.

``P`` settles near ``ηκ/(20S)`` in d = 2, so the noise correction of ``m`` is
``≈ 3P/m``, O(η). Because ``a_t`` is monotone, the first time ``T(δ)`` that the
point at ``|x| = r + δ`` is fitted exactly (``a_t ≥ a*(δ) = 1/((r+δ)² - r²)``)
satisfies ``P(T ≤ t) = P(a_t ≥ a*)``; with a Gaussian law of ``a_t`` this gives
the law of ``T`` (:func:`ramp_passage`), and the slope of ``E ln T`` against
``ln δ`` (:func:`ramp_time_slope`), which tends to -3 as ``δ → 0``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import special

from sgdlab.theory._checks import as_output, finite_array, fmt, positive_int

_GL_X, _GL_W = np.polynomial.legendre.leggauss(96)
_GL_X, _GL_W = 0.5 * (_GL_X + 1.0), 0.5 * _GL_W
_REDUCTIONS = ("half_mean", "mean", "half_sum", "sum")


def _check_geometry(radius: Any, dim: Any) -> tuple[float, int]:
    r = float(finite_array(radius, "radius"))
    if not 0.0 < r < 1.0:
        raise ValueError(f"radius must lie in (0, 1), got {fmt(r)}")
    return r, positive_int(dim, "dim")


def _check_a(a: Any, radius: float) -> np.ndarray:
    a = finite_array(a, "a")
    lo = 1.0 / (1.0 - radius * radius)
    if np.any(a < lo * (1.0 - 1e-12)):
        raise ValueError(f"a must be >= 1/(1 - r²) = {fmt(lo)} (the ramp inside the unit ball, "
                         f"where the shell integrals hold), got {fmt(np.min(a))}")
    return a


def ramp_loss_scale(reduction: str = "half_mean", batch_size: int = 1) -> float:
    """``κ``: the gradient of the reduced loss over that of ``½·mean`` (1, 2, S, 2S)."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is invalid: expected one of "
                         + ", ".join(_REDUCTIONS))
    s = positive_int(batch_size, "batch_size")
    return (1.0 if reduction.startswith("half") else 2.0) * (s if reduction.endswith("sum")
                                                              else 1.0)


def ramp_shell_density(u: Any, radius: float = 0.5, dim: int = 2) -> float | np.ndarray:
    """Density of ``U = |X|² - r²`` for ``X`` uniform on ``[-1, 1)^d``, ``-r² < u ≤ 1 - r²``.

    ``ρ(u) = K (r² + u)^{d/2 - 1}``, ``K = π^{d/2} / (Γ(d/2) 2^d)``: the surface
    ``|S^{d-1}| s^{(d-1)/2}`` of the sphere ``|x|² = s`` over the cube's volume
    ``2^d``, times ``d√s/ds = 1/(2√s)``.
    """
    r, d = _check_geometry(radius, dim)
    u = finite_array(u, "u")
    if np.any(u <= -r * r) or np.any(u > 1.0 - r * r + 1e-12):
        raise ValueError(f"u must lie in (-r², 1 - r²] = ({fmt(-r * r)}, {fmt(1 - r * r)}]")
    k = math.pi ** (d / 2) / math.gamma(d / 2) / 2.0**d
    return as_output(k * (r * r + u) ** (d / 2 - 1))


def _integral(a: np.ndarray, r: float, d: int, weight) -> np.ndarray:
    """``∫_0^1 ρ(v/a) weight(v) dv`` by 96-node Gauss–Legendre (exact for even d)."""
    k = math.pi ** (d / 2) / math.gamma(d / 2) / 2.0**d
    base = r * r + _GL_X / a[..., None]
    return k * np.sum(_GL_W * weight(_GL_X) * base ** (d / 2 - 1), axis=-1)


def ramp_shell_moment(a: Any, radius: float = 0.5, dim: int = 2,
                      power: int = 1) -> float | np.ndarray:
    """``E|f_a(X) - f°(X)|^p = a^{-1} ∫_0^1 ρ(v/a)(1 - v)^p dv``.

    ``p = 0`` is the shell's probability ``P(0 < u < 1/a)``, ``p = 1`` the L¹ error
    (``π/(8a)`` in d = 2), ``p = 2`` twice the population loss ``½E(f_a - f°)²``
    (``π/(12a)`` in d = 2).
    """
    r, d = _check_geometry(radius, dim)
    a = _check_a(a, r)
    return as_output(_integral(a, r, d, lambda v: (1.0 - v) ** power) / a)


def ramp_drift(a: Any, radius: float = 0.5, dim: int = 2) -> dict[str, float | np.ndarray]:
    """One sample's descent direction ``g = u(1 - au)1{0 < u < 1/a}``: mean, derivatives, variance.

    Returns ``{"D": E g, "D1": dD/da, "D2": d²D/da², "var": Var g}``; in d = 2
    ``D = π/(24a²)``, ``D1 = -π/(12a³)``, ``D2 = π/(4a⁴)``, ``var = π/(120a³) - D²``.
    """
    r, d = _check_geometry(radius, dim)
    a = _check_a(a, r)
    dd = _integral(a, r, d, lambda v: v * (1.0 - v)) / a**2
    d1 = -_integral(a, r, d, lambda v: v * v) / a**3
    k = math.pi ** (d / 2) / math.gamma(d / 2) / 2.0**d
    d2 = k * (r * r + 1.0 / a) ** (d / 2 - 1) / a**4
    e2 = _integral(a, r, d, lambda v: (v * (1.0 - v)) ** 2) / a**3
    return {"D": as_output(dd), "D1": as_output(d1), "D2": as_output(d2),
            "var": as_output(e2 - dd * dd)}


class _Chebyshev:
    """``h(b)`` on ``[0, b_max]`` as a Chebyshev series, evaluated by Clenshaw on Python floats.

    The recursion runs one step at a time; a scalar Clenshaw sum is several times
    faster than a NumPy call per step. The degree is the smallest whose tail is
    below 1e-15 of the series' size (1 for d = 2, where ``ρ`` is constant).
    """

    def __init__(self, fn, b_max: float):
        for n in (8, 16, 32, 64, 128, 256, 512):
            x = np.cos(np.pi * (np.arange(n) + 0.5) / n)
            c = np.polynomial.chebyshev.chebfit(x, fn(0.5 * b_max * (x + 1.0)), n - 1)
            scale = np.max(np.abs(c))
            big = np.flatnonzero(np.abs(c) > 1e-15 * scale)
            if big.size == 0 or big[-1] < n - 4:
                break
        self.c = [float(v) for v in c[: (big[-1] + 1 if big.size else 1)]]
        self.scale = 2.0 / b_max

    def __call__(self, b: float) -> float:
        x = self.scale * b - 1.0
        x2 = 2.0 * x
        b1 = b2 = 0.0
        for ck in reversed(self.c[1:]):
            b1, b2 = ck + x2 * b1 - b2, b1
        return self.c[0] + x * b1 - b2


def ramp_mean_recursion(a0: float, lr: float, steps: int, *, radius: float = 0.5, dim: int = 2,
                        batch_size: int = 1, reduction: str = "half_mean",
                        noise: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of ``a_t`` (t = 0..steps) under online mini-batch GD on the ramp.

    ``m ← m + ηκ[D(m) + ½D''(m)P]``, ``P ← P(1 + ηκD'(m))² + (ηκ)² Var(g)/S``
    (the module docstring), from ``m_0 = a0``, ``P_0 = 0``. With ``noise=False``
    it is the population-gradient recursion ``a ← a + ηκD(a)`` and ``P = 0``.
    The neglected terms are of third order in the fluctuation of ``a``.

    Args:
      a0: the initial ``a`` (the same for every member), ``>= 1/(1 - r²)``.
      lr: η.
      steps: number of updates.
      radius, dim: r and d.
      batch_size: S (fresh uniform samples each step).
      reduction: the loss scaling (:func:`ramp_loss_scale`).
      noise: include the minibatch-noise correction.

    Returns:
      ``(m, P)``, each of shape ``(steps + 1,)``.
    """
    r, d = _check_geometry(radius, dim)
    a0 = float(_check_a(a0, r))
    lr = float(finite_array(lr, "lr"))
    if lr <= 0:
        raise ValueError(f"lr must be positive, got {fmt(lr)}")
    steps = positive_int(steps, "steps")
    s = positive_int(batch_size, "batch_size")
    step = lr * ramp_loss_scale(reduction, s)
    k = math.pi ** (d / 2) / math.gamma(d / 2) / 2.0**d
    q = d / 2 - 1
    b_max = 1.0 / a0

    def vec(weight):
        return lambda b: _integral(1.0 / np.maximum(b, 1e-300), r, d, weight)

    i1 = _Chebyshev(vec(lambda v: v * (1.0 - v)), b_max)      # a²D
    i2 = _Chebyshev(vec(lambda v: v * v), b_max)              # -a³D'
    i3 = _Chebyshev(vec(lambda v: (v * (1.0 - v)) ** 2), b_max)  # a³E g²
    m = np.empty(steps + 1)
    p = np.zeros(steps + 1)
    mt, pt, r2 = a0, 0.0, r * r
    m[0] = mt
    var_scale = step * step / s
    for t in range(1, steps + 1):
        b = 1.0 / mt
        b2 = b * b
        dd = b2 * i1(b)
        if noise:
            d1 = -b2 * b * i2(b)
            d2 = k * (r2 + b) ** q * b2 * b2
            var = b2 * b * i3(b) - dd * dd
            mt, pt = (mt + step * (dd + 0.5 * d2 * pt),
                      pt * (1.0 + step * d1) ** 2 + var_scale * var)
            p[t] = pt
        else:
            mt = mt + step * dd
        m[t] = mt
    return m, p


def ramp_threshold(delta: Any, radius: float = 0.5) -> float | np.ndarray:
    """``a*(δ) = 1/((r + δ)² - r²)``: the ramp fits the point at ``|x| = r + δ`` iff ``a ≥ a*``."""
    r = float(finite_array(radius, "radius"))
    delta = finite_array(delta, "delta")
    if np.any(delta <= 0):
        raise ValueError("delta must be positive")
    return as_output(1.0 / ((r + delta) ** 2 - r * r))


def ramp_passage(mean: Any, var: Any, a_star: Any) -> dict[str, np.ndarray]:
    """Law of ``T = min{t : a_t ≥ a*}`` from the mean and variance of ``a_t`` (Gaussian marginals).

    ``a_t`` is non-decreasing, so ``P(T ≤ t) = P(a_t ≥ a*) = Φ((m_t - a*)/√P_t)``
    (a step where ``P_t = 0``), made non-decreasing in t by a running maximum.

    Args:
      mean, var: ``m_t``, ``P_t`` for t = 0..N (:func:`ramp_mean_recursion`).
      a_star: thresholds, shape ``(J,)``; each must exceed ``m_0`` (so ``T ≥ 1``).

    Returns:
      ``{"log_mean": E ln T, "mean": E T, "censored": P(T > N),
      "deterministic": min{t : m_t ≥ a*}}`` (the last is N + 1 when never reached),
      the moments taken over ``T ≤ N`` and renormalized.
    """
    m = finite_array(mean, "mean").reshape(-1)
    v = finite_array(var, "var").reshape(-1)
    a_star = np.atleast_1d(finite_array(a_star, "a_star"))
    if m.shape != v.shape:
        raise ValueError(f"mean and var must have the same shape, got {m.shape} and {v.shape}")
    if np.any(a_star <= m[0]):
        raise ValueError(f"every a_star must exceed m_0 = {fmt(m[0])}")
    sd = np.sqrt(np.maximum(v, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (m[None, :] - a_star[:, None]) / sd[None, :]
    cdf = np.where(sd[None, :] > 0, special.ndtr(z),
                   (m[None, :] >= a_star[:, None]).astype(float))
    cdf = np.maximum.accumulate(cdf, axis=1)
    pmf = np.diff(cdf, axis=1)                        # P(T = t), t = 1..N
    t = np.arange(1, m.size, dtype=float)
    mass = pmf.sum(axis=1)
    det = np.array([np.searchsorted(m, x, side="left") for x in a_star], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"log_mean": pmf @ np.log(t) / mass, "mean": pmf @ t / mass,
                "censored": 1.0 - cdf[:, -1], "deterministic": det}


def ramp_time_slope(deltas: Any, mean: Any, var: Any, radius: float = 0.5) -> dict[str, Any]:
    """Predicted slope of ``ln T(δ)`` against ``ln δ`` (least squares over the given δ).

    ``gaussian``: the slope of ``E ln T(δ)`` under :func:`ramp_passage`; it is
    also the mean of the per-member least-squares slopes (both are linear in
    ``ln T``). ``deterministic``: the slope of the passage times of ``m_t``.
    ``asymptotic``: -3 (``a* ~ 1/(2rδ)`` and ``a³ ∝ t``). Over a finite range the
    slope is steeper: ``d ln a*/d ln δ = -(2r + 2δ)/(2r + δ)`` and ``a0`` offsets ``t``.
    """
    deltas = np.atleast_1d(finite_array(deltas, "deltas"))
    if deltas.size < 2:
        raise ValueError("need at least two deltas")
    law = ramp_passage(mean, var, ramp_threshold(deltas, radius))
    x = np.log(deltas)

    def slope(y):
        xc = x - x.mean()
        return float(xc @ (y - y.mean()) / (xc @ xc))

    return {"gaussian": slope(law["log_mean"]),
            "deterministic": slope(np.log(law["deterministic"])), "asymptotic": -3.0,
            "log_mean": law["log_mean"], "mean": law["mean"],
            "censored": law["censored"], "deterministic_times": law["deterministic"]}


__all__ = ["ramp_loss_scale", "ramp_shell_density", "ramp_shell_moment", "ramp_drift",
           "ramp_mean_recursion", "ramp_threshold", "ramp_passage", "ramp_time_slope"]
