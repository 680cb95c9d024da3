"""Member state, carried recorder states, keys and small tree helpers."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class MemberState(NamedTuple):
    """One member's state (leading axes ``[seed, grid]`` inside the engine)."""

    params: Any
    opt_state: Any
    loss: jnp.ndarray           # float, the last step's minibatch loss
    grad_norm: jnp.ndarray      # float, the last step's gradient norm
    params0: Any                # initial params, or None
    diverged_step: jnp.ndarray  # int32, -1 while alive
    event_step: jnp.ndarray     # int32, -1 until the first-passage event


class Carry(NamedTuple):
    """What a compiled segment carries from step to step."""

    members: MemberState
    records: tuple              # the recorders' states (Observe, Stationary, user ones)
    data: Any                   # data drawn once (shared, or per seed with a seed axis)


STREAM_VERSION = 1
"""The version of the random streams (how keys and normals are derived from the seed).

Version 1: a member's keys are ``fold_in(fold_in(key(seed), 0), seed_index)`` ->
init ``fold_in(k, 0)``, data ``fold_in(k, 1)``, noise ``fold_in(k, 2)``; step ``t``
uses ``fold_in(data_key, t)`` (and ``fold_in(noise_key, t)`` split per parameter
leaf); data drawn once per study from ``fold_in(key(seed), 1)``. Any change to these
derivations must increase it: results and checkpoints record it, and a checkpoint
of another version is refused on resume.
"""


def _seed_keys(base_seed, seed_index):
    root = jax.random.key(base_seed)
    k = jax.random.fold_in(jax.random.fold_in(root, 0), seed_index)
    return jax.random.fold_in(k, 0), jax.random.fold_in(k, 1), jax.random.fold_in(k, 2)


def shared_key(base_seed):
    """The key of everything drawn once per study (shared data sets, eval samples)."""
    return jax.random.fold_in(jax.random.key(base_seed), 1)


def _norm(tree) -> jnp.ndarray:
    """Euclidean norm of a pytree."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree)))


def _all_finite(tree) -> jnp.ndarray:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _max_abs(tree) -> jnp.ndarray:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.max(jnp.stack([jnp.max(jnp.abs(x)) for x in leaves]))


def _select(pred, new, old):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), new, old)
