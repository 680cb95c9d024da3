"""Per-example losses with their scaling made explicit.

The papers sgdlab reproduces disagree on how a minibatch loss is scaled, and the
step size means something different under each convention:

* ``"half_mean"`` -- ``(1/2S) Σ_i ℓ_i`` (Liu, Ziyin & Ueda 2021, arXiv:2012.03636);
* ``"mean"``      -- ``(1/S) Σ_i ℓ_i`` without the ½ (Hutzenthaler et al. 2021,
  arXiv:2112.07369, risk ``E[(N(X) - ξ)²]``);
* ``"half_sum"``  -- ``½ Σ_i ℓ_i`` over the samples (Du et al. 2019, arXiv:1810.02054);
* ``"sum"``       -- ``Σ_i ℓ_i``.

There is deliberately no default: every problem names its reduction.
"""

from __future__ import annotations

import jax.numpy as jnp

from sgdlab._validate import choice

REDUCTIONS = ("half_mean", "mean", "half_sum", "sum")


def check_reduction(reduction: str) -> str:
    """Validate a reduction name (ValueError listing the allowed ones)."""
    return choice("reduction", reduction, REDUCTIONS)


def reduce(per_example: jnp.ndarray, reduction: str) -> jnp.ndarray:
    """Reduce per-example losses (leading axis = examples) with the named scaling."""
    if reduction == "half_mean":
        return 0.5 * jnp.mean(per_example)
    if reduction == "mean":
        return jnp.mean(per_example)
    if reduction == "half_sum":
        return 0.5 * jnp.sum(per_example)
    if reduction == "sum":
        return jnp.sum(per_example)
    check_reduction(reduction)
    raise AssertionError("unreachable")


def squared_error(pred: jnp.ndarray, target: jnp.ndarray, reduction: str) -> jnp.ndarray:
    """Squared error ``(pred - target)²`` per example, reduced with ``reduction``.

    Args:
      pred: predictions, shape ``(S,)`` or ``(S, k)``.
      target: targets broadcastable to ``pred``.
      reduction: one of :data:`REDUCTIONS`.
    """
    err = (pred - target) ** 2
    if err.ndim > 1:
        err = jnp.sum(err.reshape(err.shape[0], -1), axis=1)
    return reduce(err, reduction)
