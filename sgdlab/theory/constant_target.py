"""Hutzenthaler, Jentzen, Pohl, Riekert, Scarpa (arXiv:2112.07369): the dead network
under constant targets."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.special

from sgdlab.theory._checks import as_output, finite_array


def _steps_array(steps: Any, n_max: int | None) -> np.ndarray:
    k = np.asarray(steps)
    if not np.issubdtype(k.dtype, np.integer):
        kf = finite_array(k, "steps")
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
    c = float(finite_array(c0_minus_xi, "c0_minus_xi"))
    g = finite_array(gamma, "gamma").reshape(-1)
    f = np.concatenate([[1.0], np.cumprod((1 - 2 * g) ** 2)])
    risk = c * c * f
    if steps is None:
        return risk
    k = _steps_array(steps, g.size)
    return as_output(risk[k])


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
    c = float(finite_array(c0_minus_xi, "c0_minus_xi"))
    g0 = float(finite_array(gamma0, "gamma0"))
    a = float(finite_array(alpha, "alpha"))
    off = float(finite_array(n0, "n0"))
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
    return as_output(out.reshape(k.shape))


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
    gg = float(finite_array(g, "g"))
    nn = finite_array(n, "n")
    if gg <= 0 or np.any(nn < 1):
        raise ValueError(f"need g > 0 and n ≥ 1, got {g!r}, {n!r}")
    c = float(finite_array(c0, "c0"))
    return as_output(c * c * nn ** (-4 * gg) * scipy.special.rgamma(1 - 2 * gg) ** 2)


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
    gg = float(finite_array(g, "g"))
    if gg <= 0:
        raise ValueError(f"need g > 0, got {g!r}")
    c = float(finite_array(c0, "c0"))
    z = math.sqrt(2 * gg)
    return (math.sin(math.pi * z) / (math.pi * z)) ** 2 * c * c


def dead_network_mean_risk(target: Any, bias_scale: Any, gamma0: Any, alpha: Any, n0: Any,
                           steps: Any) -> float | np.ndarray:
    """E[L_n] of the dead network when the output bias starts at c_0 ~ N(0, bias_scale²).

    ``L_n = (c_0 − ξ)² Π_{k≤n}(1 − 2γ_k)²`` for ``γ_k = γ0/(k + n0)^α``
    (:func:`dead_network_risk_schedule`) and ``E[(c_0 − ξ)²] = ξ² + bias_scale²``, so

      E[L_n] = (ξ² + bias_scale²) Π_{k≤n}(1 − 2γ_k)².

    Hutzenthaler et al., arXiv:2112.07369 (the degenerate case of their setting).

    Args:
      target: ξ.
      bias_scale: standard deviation of c_0 (≥ 0).
      gamma0, alpha, n0: the schedule.
      steps: int or array of n ≥ 0.

    Returns:
      E[L_n] for each requested n.

    Raises:
      ValueError: malformed input.
    """
    xi = float(finite_array(target, "target"))
    s = float(finite_array(bias_scale, "bias_scale"))
    if s < 0:
        raise ValueError(f"need bias_scale ≥ 0, got {bias_scale!r}")
    return dead_network_risk_schedule(math.sqrt(xi * xi + s * s), gamma0, alpha, n0, steps)
