"""Member state, carried recorder states, keys and small tree helpers."""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab import data as data_lib
from sgdlab.engine._threefry import host_threefry2x32


class MemberState(NamedTuple):
    """One member's state (leading axes ``[seed, grid]`` inside the engine).

    (*) Computed (at step 0 and every step) only when something may read it: a recorded
    observable or first-passage predicate whose traced program takes it as an input, or a
    user recorder (it sees this state). Otherwise it holds 0.
    """

    params: Any
    opt_state: Any
    loss: jnp.ndarray           # float, the last step's minibatch loss (*)
    grad_norm: jnp.ndarray      # float, the last step's gradient norm (*)
    params0: Any                # initial params, or None
    diverged_step: jnp.ndarray  # int32, -1 while alive
    event_step: jnp.ndarray     # int32, -1 until the first-passage event


class Carry(NamedTuple):
    """What a compiled segment carries from step to step."""

    members: MemberState
    records: tuple              # the recorders' states (Observe, Stationary, user ones)
    data: Any                   # data drawn once (shared, or per seed with a seed axis)


STREAM_VERSION = 5
"""The version of the random streams (how keys and normals are derived from the seed).

A member's keys are ``fold_in(fold_in(key(seed), 0), seed_index)`` -> init
``fold_in(k, 0)``, data ``fold_in(k, 1)``, noise ``fold_in(k, 2)``; step ``t`` draws
its batch with ``fold_in(data_key, t)`` (the problem's data source); data drawn once
per study come from ``fold_in(key(seed), 1)``.

Gradient noise (version 2) is drawn in fixed blocks of :func:`noise_block` steps,
one call per block and parameter leaf: steps ``t = 1, 2, ...`` fall in block
``b = (t - 1) // B`` at row ``(t - 1) % B``, and block ``b`` of leaf ``i`` is
``normal(split(fold_in(noise_key, b), n_leaves)[i], (B,) + leaf.shape)``. Blocks
are defined by step numbers, never by segments, so segment length, chunking and
ensemble size change no bit; every grid point of a seed reads the same normals
(common random numbers). Version 1 drew each step's noise with its own
``fold_in(noise_key, t)``.

Version 3: :func:`sgdlab.models.mlp_init` draws a network with one normal call
(the weights of every layer in order, then the biases), where version 2 split the
init key into one key per weight and bias array.

Version 4: a data source with a ``block`` (:mod:`sgdlab.data`: online sources with
i.i.d. rows, ``noisy_quadratic``, ``linear_regression``, ``mlp_regression``,
``potential_1d``'s Gaussian noise) is read in fixed blocks of
:func:`sgdlab.data.block_steps` steps, one draw from ``block_key(data_key, b)`` per
block, where version 3 drew every step's batch from ``fold_in(data_key, t)``
(:func:`sgdlab.data.step_batch` is the batch of step ``t`` either way).

Version 5: ``linear_regression`` draws a block's inputs and label noise with one
``normal(key, (n, d + 1))`` (columns ``:d`` the inputs' standard normals, column ``d``
the noise), and ``du_two_layer``'s network is one ``normal(key, (width, dim + 1))``
(``W``, and ``a`` the signs of column ``dim``), where version 4 split the key into two
draws; and :func:`sgdlab.data.block_key` is one ``fold_in(data_key, 2³¹ + b)``, where
version 4 folded in a tag and then ``b``. Each random call is one more Threefry hash for
XLA to compile.

Any change to these derivations must increase the version: results, checkpoints
and ``summary.json`` record it, and a checkpoint of another version is refused on
resume.
"""

NOISE_BLOCK_ELEMENTS = data_lib.BLOCK_ELEMENTS
"""At most this many normals per seed in one noise block (see :func:`noise_block`)."""


def noise_block(n_params: int) -> int:
    """Steps per block of gradient noise for a member with ``n_params`` numbers.

    A power of two from 1 to 64, the largest with ``B * n_params <= 4096``: long
    blocks for the small models where key derivation dominates, one step per block
    for large ones. A function of the model alone, so the stream is too.
    """
    return data_lib.steps_per_block(n_params)


def member_keys(base_seed, seed_index):
    """A member's ``(init, data, noise)`` keys: ``fold_in(k, 0..2)`` of
    ``k = fold_in(fold_in(key(base_seed), 0), seed_index)`` (the same for every grid point)."""
    root = jax.random.key(base_seed)
    k = jax.random.fold_in(jax.random.fold_in(root, 0), seed_index)
    return jax.random.fold_in(k, 0), jax.random.fold_in(k, 1), jax.random.fold_in(k, 2)


def seed_key_data(base_seed, seed_index) -> np.ndarray:
    """The key data of every seed's :func:`member_keys`, derived on the host.

    ``[S, 3, *key shape]`` (uint32) for the ``S`` seed indices: index 0, 1, 2 along
    the second axis are the init, data and noise keys, the same bits as
    ``jax.random.key_data(member_keys(base_seed, i))``. The programs take them as an
    argument (``jax.random.wrap_key_data``), so none compiles the key derivation (five
    hashes in every init and segment program before; benchmarks/RESULTS.md): with JAX's
    default Threefry keys they are hashed in NumPy, with another key implementation JAX
    derives them.
    """
    idx = np.asarray(seed_index)
    if not _host_keys():
        return np.asarray(_device_seed_key_data(np.uint32(base_seed), idx.astype(np.int32)))
    root = _host_fold_in(_host_key(base_seed), 0)
    out = np.empty(idx.shape + (3, 2), np.uint32)
    flat_idx, flat_out = idx.reshape(-1).astype(np.uint32), out.reshape(-1, 3, 2)
    which = np.arange(3, dtype=np.uint32)
    for lo in range(0, flat_idx.size, _HOST_BLOCK):  # blocks that stay in the CPU's cache
        k = _host_fold_in(root, flat_idx[lo:lo + _HOST_BLOCK])
        flat_out[lo:lo + _HOST_BLOCK] = _host_fold_in(k[:, None], which)
    return out


_HOST_BLOCK = 1 << 14
"""Seeds hashed together on the host: 10⁶ seeds took 0.6 s in one block and about a
fifth of it in blocks of 2¹⁴."""


def chunk_key_data(base_seed, start: int, size: int) -> np.ndarray:
    """:func:`seed_key_data` of the seed indices ``start .. start + size - 1`` (a chunk),
    read-only. Small chunks are kept (a rerun of a small study does not hash again:
    about 0.2 ms of a 4 ms run of 8 members)."""
    if size <= _KEPT_CHUNK and _host_keys():
        return _kept_chunk(int(np.uint32(base_seed)), int(start), int(size))
    return _read_only(seed_key_data(base_seed, np.arange(start, start + size)))


_KEPT_CHUNK = 4096
"""Chunks of at most this many seeds are kept by :func:`chunk_key_data` (96 KB each)."""


@functools.lru_cache(maxsize=64)
def _kept_chunk(seed: int, start: int, size: int) -> np.ndarray:
    return _read_only(seed_key_data(seed, np.arange(start, start + size)))


def shared_key_data(base_seed) -> np.ndarray:
    """The key data of :func:`shared_key` (uint32, the key's shape), on the host,
    read-only."""
    if not _host_keys():
        return np.asarray(jax.random.key_data(shared_key(np.uint32(base_seed))))
    return _host_shared(int(np.uint32(base_seed)))


@functools.lru_cache(maxsize=64)
def _host_shared(seed: int) -> np.ndarray:
    return _read_only(_host_fold_in(_host_key(seed), 1))


def _read_only(arr: np.ndarray) -> np.ndarray:
    """``arr``, no longer writeable (a kept array is handed to every caller)."""
    arr.flags.writeable = False
    return arr


def _host_keys() -> bool:
    return jax.config.jax_default_prng_impl == "threefry2x32"


def _host_key(seed) -> np.ndarray:
    """``key_data(key(seed))`` of a 32-bit seed: the words ``(0, seed)``."""
    return np.array([0, np.uint32(seed)], np.uint32)


def _host_fold_in(key: np.ndarray, data) -> np.ndarray:
    """``key_data(fold_in(key, data))``: the hash of the counter ``(0, data)`` under the
    key's two words (``key`` ``[..., 2]``, ``data`` broadcast against ``key[..., 0]``)."""
    data = np.asarray(data, np.uint32)
    a, b = host_threefry2x32(key[..., 0], key[..., 1], np.zeros_like(data), data)
    return np.stack([a, b], axis=-1)


@jax.jit
def _device_seed_key_data(base_seed, seed_index):
    keys = jax.vmap(member_keys, in_axes=(None, 0))(base_seed, seed_index)
    return jax.random.key_data(jnp.stack(keys, axis=1))


@functools.cache
def abstract_key() -> jax.ShapeDtypeStruct:
    """The shape and dtype of a typed key, for ``jax.eval_shape`` (``jax.random.key(0)``
    would dispatch a hash on the device, and compile it once per process)."""
    return jax.eval_shape(jax.random.key, jax.ShapeDtypeStruct((), jnp.int32))


def shared_key(base_seed):
    """The key of everything drawn once per study (shared data sets, eval samples)."""
    return jax.random.fold_in(jax.random.key(base_seed), 1)


def _norm(tree) -> jnp.ndarray:
    """Euclidean norm of a pytree."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree)))


def _all_within(tree, bound: float) -> jnp.ndarray:
    """Whether every element of ``tree`` is finite and, for a finite ``bound``, at most
    ``bound`` in absolute value: one elementwise test and one AND-reduction per leaf.
    ``|x| <= bound`` is False for NaN and ±inf; a leaf whose dtype cannot hold ``bound``
    (1e6 is inf in float16) is tested with ``isfinite``. Never a max-reduction: XLA:CPU's
    vectorized max over 2^15 or more elements can drop a NaN (benchmarks/RESULTS.md)."""
    def within(x):
        beyond = jnp.issubdtype(x.dtype, jnp.inexact) and bound >= float(jnp.finfo(x.dtype).max)
        return jnp.isfinite(x) if math.isinf(bound) or beyond else jnp.abs(x) <= bound
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(within(x)) for x in leaves]))


def _select(pred, new, old):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), new, old)
