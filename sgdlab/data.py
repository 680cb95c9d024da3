"""Data sources: where a member's minibatch at step ``t`` comes from.

A :class:`DataSource` is a pair of pure functions:

* ``init(key) -> data`` -- anything drawn once (a fixed data set, an evaluation
  sample). With ``shared=True`` it is drawn once for the whole study from the
  study's shared key; otherwise once per seed, from that seed's key.
* ``batch(data, key, t) -> batch`` -- the minibatch of step ``t`` (1-based; step 0
  is the batch used only to report the initial loss). ``key`` is the seed's data
  key; the source derives everything from ``(key, t)`` so any step can be
  reproduced on its own, and every grid point of a seed sees the same stream
  (common random numbers).

Minibatch modes for a fixed data set of ``N`` examples and batch size ``S`` (the
``mode`` argument of :func:`fixed`; the papers differ, so it is always named):

* ``"with_replacement"`` -- ``S`` indices i.i.d. uniform on ``{0..N-1}``; the
  minibatch-noise covariance is ``C/S`` (Liu, Ziyin & Ueda 2021, arXiv:2012.03636);
* ``"without_replacement"`` -- epoch ``e`` is a random permutation (from
  ``fold_in(key, e)``) cut into ``N // S`` consecutive batches; a remainder of
  ``N mod S`` examples is left out of that epoch. Each batch is a uniform random
  ``S``-subset, so the noise covariance gains the factor ``(N - S)/(N - 1)``
  (Ziyin, Liu, Mori & Ueda 2022, arXiv:2102.05375);
* ``"full"`` -- every step uses the whole data set (gradient descent; Du et al.
  2019, arXiv:1810.02054; Gopalani & Mukherjee 2022, arXiv:2210.11452).

Online sources (:func:`online`) draw fresh i.i.d. samples every step (Hutzenthaler
et al. 2021, arXiv:2112.07369; online linear regression in arXiv:2102.05375).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sgdlab._validate import choice, fail, positive_int

MODES = ("with_replacement", "without_replacement", "full")


class DataSource(NamedTuple):
    """How a member gets its data (see the module docstring)."""

    init: Callable[[jax.Array], Any]
    batch: Callable[[Any, jax.Array, jax.Array], Any]
    shared: bool = False
    batch_size: int = 1
    description: str = ""


def online(sample: Callable[[jax.Array, int], Any], batch_size: int,
           description: str = "online") -> DataSource:
    """Fresh i.i.d. samples each step: ``batch = sample(fold_in(key, t), batch_size)``."""
    batch_size = positive_int("batch_size", batch_size)

    def batch(data, key, t):
        del data
        return sample(jax.random.fold_in(key, t), batch_size)

    return DataSource(init=lambda key: None, batch=batch, shared=True,
                      batch_size=batch_size, description=description)


def fixed(make: Callable[[jax.Array], tuple[Any, ...]], n_data: int, batch_size: int,
          mode: str, shared: bool = False, description: str = "fixed") -> DataSource:
    """A fixed data set ``make(key) -> (x, y, ...)`` (leading axis ``n_data``).

    Args:
      make: draws the data set (arrays with leading axis ``n_data``).
      n_data: number of examples ``N``.
      batch_size: ``S`` (ignored for ``mode="full"``, which uses ``S = N``).
      mode: one of :data:`MODES`.
      shared: one data set for the whole study (True) or one per seed (False).

    Raises:
      ValueError: unknown mode, or ``S > N`` without replacement.
    """
    n_data = positive_int("n_data", n_data)
    choice("mode", mode, MODES)
    if mode == "full":
        batch_size = n_data
    batch_size = positive_int("batch_size", batch_size)
    if mode == "without_replacement" and batch_size > n_data:
        fail("batch_size", batch_size,
             f"drawing without replacement needs batch_size <= n_data = {n_data}")
    per_epoch = max(n_data // batch_size, 1)

    def batch(data, key, t):
        if mode == "full":
            return data
        if mode == "with_replacement":
            idx = jax.random.randint(jax.random.fold_in(key, t), (batch_size,), 0, n_data)
        else:
            i = jnp.maximum(t - 1, 0)
            epoch, pos = i // per_epoch, i % per_epoch
            perm = jax.random.permutation(jax.random.fold_in(key, epoch), n_data)
            idx = jax.lax.dynamic_slice(perm, (pos * batch_size,), (batch_size,))
        return jax.tree_util.tree_map(lambda a: a[idx], data)

    return DataSource(init=make, batch=batch, shared=shared, batch_size=batch_size,
                      description=f"{description} ({mode}, N={n_data}, S={batch_size})")


def gaussian(cov_sqrt: jnp.ndarray) -> Callable[[jax.Array, int], jnp.ndarray]:
    """Sampler of ``x ~ N(0, L Lᵀ)`` rows, given ``L = cov_sqrt`` (shape ``(d, d)``)."""
    def sample(key, n):
        return jax.random.normal(key, (n, cov_sqrt.shape[0])) @ cov_sqrt.T
    return sample


def uniform_box(low: float, high: float, dim: int) -> Callable[[jax.Array, int], jnp.ndarray]:
    """Sampler of rows uniform on ``[low, high]^dim``."""
    if not high > low:
        fail("box", (low, high), "need high > low")
    def sample(key, n):
        return jax.random.uniform(key, (n, dim), minval=low, maxval=high)
    return sample
