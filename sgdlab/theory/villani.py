"""Gopalani, Mukherjee (arXiv:2210.11452) and Shi, Su, Jordan (arXiv:2004.06977):
Gibbs-limit loss gaps and the sigmoid convexity threshold."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from sgdlab.theory._checks import (
    as_output,
    check_1d,
    finite_array,
    fmt,
    positive_int,
)


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
    D = positive_int(n_params, "n_params")
    return as_output(D * finite_array(s, "s") / 4)


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
    h = finite_array(hessian_eigs, "hessian_eigs").reshape(-1)
    ss = float(finite_array(s, "s"))
    check_1d(ss, h, 0.0)
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

        import scipy.optimize  # here: it is a quarter second of ``import sgdlab``

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
                f"minimiser not found: gradient norm {fmt(gnorm)} > grad_tol = "
                f"{fmt(grad_tol)} ({res.message}); try another w0 or method"
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
    X = finite_array(X, "X")
    X = X.reshape(X.shape[0], -1) if X.ndim else X.reshape(1, 1)
    yy = finite_array(y, "y").reshape(-1)
    aa = finite_array(a, "a").reshape(-1)
    r2 = float(np.max(np.sum(X * X, axis=1)))
    a_max = float(np.max(np.abs(aa)))
    y_max = float(np.max(np.abs(yy)))
    return r2 * (
        float(aa @ aa) / 16 + a_max / (6 * math.sqrt(3)) * (y_max + float(np.sum(np.abs(aa))))
    )


ACTIVATION_BOUNDS = {
    # (sup|σ|, sup|σ'|, sup|σ''|) over the real line
    "sigmoid": (1.0, 0.25, 1.0 / (6.0 * math.sqrt(3.0))),
    "tanh": (1.0, 1.0, 4.0 / (3.0 * math.sqrt(3.0))),
    "softplus": (math.inf, 1.0, 0.25),
}
"""Bounds of the smooth activations used by :func:`convexity_threshold`."""


def convexity_threshold(X: Any, y: Any, a: Any, activation: str = "sigmoid") -> float:
    """Sufficient weight decay for the depth-2 objective of Gopalani & Mukherjee.

    With B0 = sup|σ|, B1 = sup|σ'|, B2 = sup|σ''| (:data:`ACTIVATION_BOUNDS`), the
    data term's Hessian ``(1/n) Σ_i [J_i J_iᵀ − r_i ∇²f_i]`` (J_i = ∂f(x_i)/∂W,
    r_i = y_i − f(x_i)) has norm at most

      λ* = max_i‖x_i‖² (B1² ‖a‖² + max_j|a_j| · B2 · (max_i|y_i| + B0 ‖a‖₁)),

    so for λ > λ* the Hessian of L̃ lies between (λ − λ*)·I and (λ + λ*)·I: L̃ is
    strongly convex with a unique minimiser. For the sigmoid (B1 = 1/4,
    B2 = 1/(6√3), B0 = 1) this is :func:`sigmoid_convexity_threshold`. With
    a_j = ±c at width p: ‖a‖² = pc², ‖a‖₁ = pc, so λ* grows like p for c = 1,
    tends to a constant for c = 1/√p and falls like 1/p for c = 1/p.
    Gopalani & Mukherjee, arXiv:2210.11452.

    Args:
      X, y, a: inputs ``(n, d)``, labels ``(n,)``, output weights ``(p,)``.
      activation: ``sigmoid``, ``tanh`` or ``softplus``.

    Returns:
      λ*; ``inf`` for the unbounded softplus (no finite bound of this form).

    Raises:
      ValueError: an unknown activation or non-finite input.
    """
    if activation not in ACTIVATION_BOUNDS:
        raise ValueError(f"activation={activation!r} is invalid: expected one of "
                         + ", ".join(ACTIVATION_BOUNDS))
    b0, b1, b2 = ACTIVATION_BOUNDS[activation]
    X = finite_array(X, "X")
    X = X.reshape(X.shape[0], -1) if X.ndim else X.reshape(1, 1)
    yy = finite_array(y, "y").reshape(-1)
    aa = finite_array(a, "a").reshape(-1)
    if math.isinf(b0):
        return math.inf
    r2 = float(np.max(np.sum(X * X, axis=1)))
    return r2 * (b1 * b1 * float(aa @ aa) + float(np.max(np.abs(aa))) * b2
                 * (float(np.max(np.abs(yy))) + b0 * float(np.sum(np.abs(aa)))))


class StationaryLaw1D(NamedTuple):
    """Result of :func:`sgd_stationary_law_1d`: density values at quadrature nodes."""

    nodes: np.ndarray
    weights: np.ndarray
    density: np.ndarray
    leak: float

    def expect(self, fn: Callable[[np.ndarray], np.ndarray]) -> float:
        """E[fn(w)] under the law."""
        return float(np.sum(self.weights * self.density * fn(self.nodes)))


def sgd_stationary_law_1d(grad: Callable[[np.ndarray], np.ndarray], s: float, lo: float,
                          hi: float, n_nodes: int = 400) -> StationaryLaw1D:
    """The exact stationary law of the 1-D chain ``w' = w − s(U'(w) + ξ)``, ξ ~ N(0, 1).

    The chain's transition density is ``k(w → w') = N(w'; w − sU'(w), s²)``; its
    stationary density solves ``π(w') = ∫ k(w → w') π(w) dw``. Nyström method:
    on Gauss–Legendre nodes w_k (weights ω_k) of ``[lo, hi]``,
    ``π(w_j) = Σ_k ω_k k(w_k → w_j) π(w_k)``, solved with the normalisation
    ``Σ_j ω_j π(w_j) = 1``; ``leak`` is the mass one step sends outside the
    interval. This is the SGD chain itself, not its Gibbs limit ``∝ exp(−2U/s)``:
    the two differ at O(s).

    Args:
      grad: U' (vectorized NumPy function).
      s: step size > 0.
      lo, hi: the interval, wide enough that π is negligible outside.
      n_nodes: number of nodes.

    Returns:
      :class:`StationaryLaw1D` (density normalised on the nodes).
    """
    s = float(finite_array(s, "s"))
    if not s > 0:
        raise ValueError(f"s={fmt(s)} is invalid: expected a number > 0")
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"[lo, hi] = [{lo}, {hi}] is invalid: expected finite lo < hi")
    n = positive_int(n_nodes, "n_nodes")
    t, w = np.polynomial.legendre.leggauss(n)
    x = 0.5 * (hi - lo) * t + 0.5 * (hi + lo)
    w = 0.5 * (hi - lo) * w
    mean = x - s * np.asarray(grad(x), dtype=np.float64)          # from node k
    K = np.exp(-0.5 * ((x[:, None] - mean[None, :]) / s) ** 2) / (s * math.sqrt(2 * math.pi))
    M = K * w[None, :]                                             # M[j, k]
    # π = Mπ with the normalisation Σ ω_j π_j = 1 in place of the first equation
    A = M - np.eye(n)
    A[0, :] = w
    rhs = np.zeros(n)
    rhs[0] = 1.0
    dens = np.linalg.solve(A, rhs)
    leak = 1.0 - float(np.sum(w * (M @ dens)))
    return StationaryLaw1D(x, w, dens, leak)
