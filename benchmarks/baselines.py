"""The JAX baselines the engine is timed against, built from the same sgdlab problem.

Both baselines use the problem's own ``init``, ``loss`` and ``data.batch`` and the
optimizer's own optax transformation, so they do the same arithmetic per member as
the engine; what differs is how members are laid out:

* :func:`per_seed_loop` -- ``jit(lax.scan)`` of one member, called from Python once
  per seed and per grid point (the program is compiled once; hyperparameters are
  traced arguments).
* :func:`naive_vmap` -- ``jit(vmap(lax.scan))`` over all members, each member with
  its own key and its own data drawn inside its scan step (no common random
  numbers: a seed's batch is drawn once per grid point, not once per seed).

They record less than the engine (the last loss, plus a post-burn-in running sum
of ``stat(params)`` when given), no divergence bookkeeping and no statistics, which
favours them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

import sgdlab as sl
from sgdlab import engine


def shared_data(problem: sl.problems.Problem, seed: int = 0):
    """The problem's study-wide data (fixed set, teacher, eval sample), or None."""
    if not problem.data.shared:
        raise ValueError("the baselines support shared data sources only")
    return problem.data.init(engine.shared_key(seed))


def member_fn(problem: sl.problems.Problem, optimizer: sl.Optimizer, steps: int,
              stat: Callable | None = None, burn_in: int = 0):
    """One member's whole run: ``(key, hp, data) -> (last loss, stat sum)``.

    The member's key is split into an init key and a data key; step ``t``'s batch
    is ``problem.data.batch(data, data_key, t)`` as in the engine.
    """
    def member(key, hp: Mapping[str, jnp.ndarray], data):
        init_key, data_key = jax.random.split(key)
        params = problem.init(init_key)
        tx = optimizer.build(hp)
        acc0 = jnp.zeros((), jnp.result_type(float))

        def body(carry, t):
            params, state, _, acc = carry
            batch = problem.data.batch(data, data_key, t)
            loss, grads = jax.value_and_grad(problem.loss)(params, batch, hp)
            updates, state = tx.update(grads, state, params)
            params = optax.apply_updates(params, updates)
            if stat is not None:
                acc = acc + jnp.where(t > burn_in, stat(params), 0.0)
            return (params, state, loss, acc), None

        carry = (params, tx.init(params), jnp.zeros((), acc0.dtype), acc0)
        (_, _, loss, acc), _ = jax.lax.scan(body, carry, jnp.arange(1, steps + 1))
        return loss, acc

    return member


def member_inputs(study: sl.Study, seed: int = 0):
    """Keys ``[M]`` and per-member hyperparameters ``{name: [M]}``, grid-major."""
    flat = study.flat_hparams()
    hp = {k: jnp.asarray(np.repeat(v, study.seeds)) for k, v in flat.items()}
    keys = jax.random.split(jax.random.key(seed), study.n_members)
    return keys, hp


def naive_vmap(study: sl.Study, steps: int, stat=None, burn_in: int = 0):
    """``run() -> outputs``: jit(vmap(scan)) over all ``study.n_members`` members."""
    fn = jax.jit(jax.vmap(member_fn(study.problem, study.optimizer, steps, stat, burn_in),
                          in_axes=(0, 0, None)))
    keys, hp = member_inputs(study)
    data = shared_data(study.problem, study.seed)
    return lambda: fn(keys, hp, data)


def per_seed_loop(study: sl.Study, steps: int, members: int, stat=None, burn_in: int = 0):
    """``run() -> outputs``: a Python loop over the first ``members`` members.

    Members are taken spread over the grid (member ``i`` of the grid-major order
    at stride ``n_members // members``), so every grid point's values appear.
    """
    fn = jax.jit(member_fn(study.problem, study.optimizer, steps, stat, burn_in))
    keys, hp = member_inputs(study)
    data = shared_data(study.problem, study.seed)
    stride = max(study.n_members // members, 1)
    idx = [i * stride for i in range(members)]
    hps = [{k: v[i] for k, v in hp.items()} for i in idx]
    ks = [keys[i] for i in idx]

    def run():
        return [fn(k, h, data) for k, h in zip(ks, hps, strict=True)]

    return run
