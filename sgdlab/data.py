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

Blocks of steps. A source may also give ``block(data, key, b, B)``: the batches of
the ``B`` steps ``t = bB + 1, ..., bB + B`` stacked on a leading axis, drawn from
``block_key(key, b)`` in one call. Then the engine reads step ``t``'s batch as row
``(t - 1) % B`` of block ``(t - 1) // B`` (``B`` = :func:`block_steps`, a function of
the batch's size alone), one key derivation per block of steps instead of one per
step; ``batch`` still gives step 0's batch. :func:`step_batch` is the batch of any
step, whichever way the source draws it. Blocks are fixed by step numbers, so the
stream does not depend on how a run is cut into segments or chunks.

Rows computed alone. A source whose block is a counter-based draw may also give
``row(data, key, j, B)``: row ``j`` of the block drawn from block key ``key``
(``block(data, k, b, B)[j]`` for ``key = block_key(k, b)``, the same bits), computed
without the other rows. Then the engine computes each step's batch when the step needs
it, and never holds a block of every seed in memory (for 10⁵ seeds × 64 steps that is
25.6 MB, out of the CPU's cache). :func:`normal_row` is row ``j`` of a
``jax.random.normal`` block, computed alone; :func:`normal_noise` is a source of standard
normal noise built that way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry2x32_p

from sgdlab._validate import choice, fail, positive_int

MODES = ("with_replacement", "without_replacement", "full")


BLOCK_ELEMENTS = 4096
"""At most this many numbers per seed in one block of batches (see :func:`block_steps`)."""

BLOCK_TAG = 2**31
"""``block_key(key, b) = fold_in(key, BLOCK_TAG + b)`` (as uint32): steps ``t < 2³¹`` use
``fold_in(key, t)``, so no block key is a step's key."""


class DataSource(NamedTuple):
    """How a member gets its data (see the module docstring).

    ``block`` (optional): ``block(data, key, b, B)`` -> the batches of steps
    ``bB + 1 .. bB + B`` with a leading axis ``B``, drawn from :func:`block_key`; each
    row must have the law of one step's ``batch`` and rows must be independent.

    ``row`` (optional, with ``block``): ``row(data, key, j, B)`` -> row ``j`` of the
    block drawn from the block key ``key``, bitwise
    ``block(data, k, b, B)[j]`` for ``key = block_key(k, b)``, computed alone (see the
    module docstring and :func:`normal_row`).
    """

    init: Callable[[jax.Array], Any]
    batch: Callable[[Any, jax.Array, jax.Array], Any]
    shared: bool = False
    batch_size: int = 1
    description: str = ""
    block: Callable[[Any, jax.Array, jax.Array, int], Any] | None = None
    row: Callable[[Any, jax.Array, jax.Array, int], Any] | None = None


def block_key(key: jax.Array, b) -> jax.Array:
    """The key of block ``b`` of a seed's data key: ``fold_in(key, 2³¹ + b)``, one hash
    (random-stream version 5), distinct from every step's key ``fold_in(key, t)``."""
    return jax.random.fold_in(key, jnp.asarray(b, jnp.uint32) | jnp.uint32(BLOCK_TAG))


def rows_alone(dtype=None) -> bool:
    """Whether rows of a block can be computed alone: JAX's default Threefry keys with
    ``jax_threefry_partitionable`` (JAX's default), where every number is the hash of its
    own position; with ``dtype``, also whether :func:`normal_row` does so for ``dtype``
    normals (float32 or float64). Otherwise :func:`normal_row` draws the whole block and
    takes the row (the same bits, B times the work), and the engine draws whole blocks
    (a source's ``row`` is then not used)."""
    keys = bool(jax.config.jax_threefry_partitionable) \
        and str(jax.config.jax_default_prng_impl) == "threefry2x32"
    return keys and (dtype is None or np.dtype(dtype) in (np.dtype(np.float32),
                                                          np.dtype(np.float64)))


def normal_row(key: jax.Array, j, B: int, shape=(), dtype=None) -> jax.Array:
    """Row ``j`` of ``jax.random.normal(key, (B,) + shape, dtype)``, the same bits,
    computed alone when :func:`rows_alone` (else drawn whole and indexed).

    With partitionable Threefry, the number at flat position ``p`` of a draw is made from
    ``threefry2x32(key, (p >> 32, p mod 2³²))`` alone (its two words XORed for 32 bits,
    joined for 64), then mapped to a uniform on ``[nextafter(-1, 0), 1)`` through its
    mantissa bits and to a normal by ``√2 erfinv``, as ``jax.random.normal`` does. Row
    ``j`` holds positions ``j·n … j·n + n - 1`` (``n`` the numbers of ``shape``).
    ``tests/test_engine.py`` compares it with ``jax.random.normal`` bit for bit.
    """
    dtype = np.dtype(jnp.result_type(float) if dtype is None else dtype)
    shape = tuple(shape)
    n = math.prod(shape)
    if not rows_alone(dtype) or B * n >= 2**32:
        return jax.lax.dynamic_index_in_dim(jax.random.normal(key, (B,) + shape, dtype),
                                            j, 0, False)
    k = jax.random.key_data(key)
    u32 = np.uint32
    pos = jnp.asarray(j).astype(u32) * u32(n) + jax.lax.iota(u32, n).reshape(shape)
    hi, lo = threefry2x32_p.bind(k[0], k[1], jnp.zeros_like(pos), pos)
    finfo = jnp.finfo(dtype)
    nbits, nmant = finfo.bits, finfo.nmant
    if nbits == 64:
        uint = np.uint64
        bits = jax.lax.shift_left(hi.astype(uint), jnp.asarray(32, uint)) | lo.astype(uint)
    else:
        uint, bits = u32, hi ^ lo
    float_bits = jax.lax.shift_right_logical(bits, jnp.asarray(nbits - nmant, uint))
    float_bits = float_bits | jnp.asarray(np.array(1.0, dtype).view(uint), uint)
    floats = jax.lax.bitcast_convert_type(float_bits, dtype) - jnp.array(1.0, dtype)
    lo_v = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype), dtype=dtype)
    minval = jax.lax.convert_element_type(lo_v, dtype)
    maxval = jax.lax.convert_element_type(np.array(1.0, dtype), dtype)
    u = jax.lax.max(minval, floats * (maxval - minval) + minval)
    return jax.lax.mul(np.array(np.sqrt(2), dtype), jax.lax.erf_inv(u))


def block_steps(source: DataSource, data: Any = None) -> int:
    """Steps per block of ``source`` (1 when it draws step by step).

    A power of two from 1 to 64, the largest with ``B ×`` (numbers in one batch)
    ``≤ BLOCK_ELEMENTS``: a function of the batch's shape alone, so the stream is too.
    """
    if source.block is None:
        return 1
    shapes = jax.eval_shape(lambda d: source.batch(d, jax.random.key(0), jnp.int32(1)), data)
    return steps_per_block(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes)))


def steps_per_block(n_numbers: int) -> int:
    """The largest power of two from 1 to 64 with ``B × n_numbers ≤ BLOCK_ELEMENTS``: the
    block length of a stream that draws ``n_numbers`` per step and seed (data blocks here,
    gradient-noise blocks in :func:`sgdlab.engine.noise_block`)."""
    b = 64
    while b > 1 and b * max(1, int(n_numbers)) > BLOCK_ELEMENTS:
        b //= 2
    return b


def step_batch(source: DataSource, data: Any, key: jax.Array, t) -> Any:
    """The batch the engine gives a seed with data key ``key`` at step ``t``.

    ``source.batch(data, key, t)`` for a source without blocks and at step 0; else
    row ``(t - 1) % B`` of ``source.block(data, key, (t - 1) // B, B)``.
    """
    t = jnp.asarray(t, jnp.int32)
    if source.block is None:
        return source.batch(data, key, t)
    B = block_steps(source, data)
    i = jnp.maximum(t - 1, 0)
    rows = source.block(data, key, i // B, B)
    row = jax.tree_util.tree_map(lambda x: jax.lax.dynamic_index_in_dim(x, i % B, 0, False),
                                 rows)
    first = source.batch(data, key, t)
    return jax.tree_util.tree_map(lambda a, b: jnp.where(t == 0, a, b), first, row)


def _stacked(sample: Callable[[jax.Array, int], Any], batch_size: int):
    """``block`` of an i.i.d.-rows sampler: ``sample(key, B·n)`` cut into ``B`` batches."""
    def block(data, key, b, B):
        del data
        rows = sample(block_key(key, b), B * batch_size)
        return jax.tree_util.tree_map(lambda x: x.reshape((B, batch_size) + x.shape[1:]), rows)
    return block


def online(sample: Callable[[jax.Array, int], Any], batch_size: int,
           description: str = "online", iid_rows: bool = False) -> DataSource:
    """Fresh i.i.d. samples each step: ``batch = sample(fold_in(key, t), batch_size)``.

    With ``iid_rows=True`` (``sample(key, n)`` returns arrays of ``n`` independent rows
    with a leading axis ``n``), steps are drawn in blocks: one ``sample(block_key(key,
    b), B·batch_size)`` cut into the ``B`` batches of block ``b`` (module docstring).
    """
    batch_size = positive_int("batch_size", batch_size)

    def batch(data, key, t):
        del data
        return sample(jax.random.fold_in(key, t), batch_size)

    return DataSource(init=lambda key: None, batch=batch, shared=True,
                      batch_size=batch_size, description=description,
                      block=_stacked(sample, batch_size) if iid_rows else None)


def normal_noise(shape, description: str = "ξ ~ N(0, I)") -> DataSource:
    """Standard normal noise of ``shape`` each step, drawn in blocks whose rows are
    computed alone: ``batch = normal(fold_in(key, t), shape)`` at step 0, then row ``j``
    of ``normal(block_key(key, b), (B,) + shape)`` (:func:`normal_row`). The default
    float dtype; batch size 1 (one draw per step)."""
    shape = tuple(int(n) for n in shape)

    def batch(data, key, t):
        del data
        return jax.random.normal(jax.random.fold_in(key, t), shape)

    def block(data, key, b, B):
        del data
        return jax.random.normal(block_key(key, b), (B,) + shape)

    def row(data, key, j, B):
        del data
        return normal_row(key, j, B, shape)

    return DataSource(init=lambda key: None, batch=batch, shared=True, batch_size=1,
                      description=description, block=block, row=row)


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
