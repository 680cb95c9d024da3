"""The compiled program: one member's step, vmapped over grid and seeds, scanned over steps."""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sgdlab import data as data_lib
from sgdlab._validate import fail
from sgdlab.engine import _checks
from sgdlab.engine._state import (
    Carry,
    MemberState,
    _all_within,
    _norm,
    _select,
    abstract_key,
    chunk_key_data,
    noise_block,
    shared_key_data,
)
from sgdlab.engine._study import Study, _builtin_observables, _resolve, float_dtype
from sgdlab.problems import Observation, Problem


class _Stream(NamedTuple):
    """A blocked random stream of a segment: ``B`` steps per block; ``one_seed(a, d, b)``
    draws one seed's block ``b`` (leaves ``[B, ...]``) from its per-seed args ``a`` (a
    leading seed axis in ``per_seed``) and the shared args ``d`` (``shared``, broadcast per
    seed, or None). With ``keys`` a step's row is computed alone: ``keys(a, b)`` gives one
    seed's keys of block ``b`` and ``row(keys, d, j)`` its row ``j`` (the same bits as row
    ``j`` of ``one_seed``), so no block of every seed is held in memory."""
    B: int
    one_seed: Callable
    per_seed: Any
    shared: Any
    keys: Callable | None = None
    row: Callable | None = None


TRACE_COUNT = 0
"""Number of times a segment program has been traced (read it with :func:`trace_count`)."""


def trace_count() -> int:
    """How many times a segment program has been traced so far (a compile-count probe).

    Read it before and after a run: an unchanged count means the run reused a
    compiled program (new grid values of the same shapes never retrace).
    """
    return TRACE_COUNT


def jit_flat(fn, donate: tuple[int, ...] = ()):
    """``jax.jit(fn)`` whose compiled program returns the flat leaves of ``fn``'s output
    (the wrapper rebuilds the tree). ``donate``: positions of arguments whose buffers the
    program may reuse for its outputs (the caller drops them: the segment's carry).

    Every program is compiled at XLA's default options: the init compiled at LLVM's
    cheaper level (tried, 2026-12-02) rounded its step-0 statistics differently on one and
    on two devices (benchmarks/RESULTS.md).

    JAX's persistent cache keys a program by its StableHLO, which names every output by its
    pytree path (``jax.result_info``). Two studies whose programs compute the same thing
    but whose states nest differently (an optimizer chain with a preconditioner, say)
    would compile the same program twice; with flat outputs the key is the computation's.
    """
    out_tree = []

    def flat(*args, **kw):
        leaves, tree = jax.tree_util.tree_flatten(fn(*args, **kw))
        out_tree[:] = [tree]
        return leaves

    flat.__name__ = flat.__qualname__ = fn.__name__  # the program's name in logs and caches
    jitted = jax.jit(flat, donate_argnums=donate)

    def call(*args, **kw):
        leaves = jitted(*args, **kw)
        return jax.tree_util.tree_unflatten(out_tree[0], leaves)

    call.lower = jitted.lower
    return call


def _reads(fn, obs: Observation, field: str) -> bool:
    """Whether ``fn(obs)`` may depend on ``obs.<field>``: the field is an input of some
    operation of ``fn``'s traced program (one that is then unused counts too). A function
    that cannot be traced alone (it passed the checks under ``eval_shape``) counts as a
    reader."""
    try:
        jaxpr = jax.make_jaxpr(lambda x, o: fn(o._replace(**{field: x})))(
            getattr(obs, field), obs).jaxpr
    except Exception:  # noqa: BLE001 - keep the value; the run reports real errors
        return True
    x = jaxpr.invars[0]
    return any(v is x for v in jaxpr.outvars) or any(
        v is x for e in jaxpr.eqns for v in e.invars)


class _Analysis(NamedTuple):
    """What a program needs to know of the study's functions before tracing them."""

    abstract: _checks.Abstract  # their checked shapes
    track_loss: bool            # some recorded function reads the step's loss
    track_grad_norm: bool       # ... or its gradient norm


_ANALYSES: dict[tuple, _Analysis] = {}
"""Analyses by static configuration (:func:`_static_key`): a run builds a probe program for
its plan and then its own, and both would check and trace the same functions."""


def _analysis(study: Study, event_fn, observables) -> _Analysis:
    """Check the study's functions (:func:`_checks.check_study`) and find which of the
    member state's loss and gradient norm the recorded ones read. A user recorder sees the
    member state itself, so with one both are kept."""
    def make():
        a = _checks.check_study(study, event_fn, observables)
        readers = list(observables.values()) + ([event_fn] if event_fn else [])
        custom = bool(study.recorders)
        return _Analysis(a, custom or any(_reads(f, a.observation, "loss") for f in readers),
                         custom or any(_reads(f, a.observation, "grad_norm") for f in readers))
    return remember(_ANALYSES, _static_key(study, 0, 0, 0), make)


class _Program:
    """The compiled functions of one static configuration."""

    def __init__(self, study: Study, chunk_seeds: int, segment_steps: int):
        self.study = study
        self.chunk_seeds = chunk_seeds
        self.segment_steps = segment_steps
        problem = study.problem
        self.recorders = study.recorder_list()
        self._use(problem)
        self.obs_fns = dict(self.resolve(s, "observe") for s in
                            (study.observe.observables if study.observe else ()))
        self.stat_fns = dict(self.resolve(s, "stationary") for s in
                             (study.stationary.observables if study.stationary else ()))
        self.keep_init = study.keep_init or "distance" in self.obs_fns or \
            "distance" in self.stat_fns
        fp = study.first_passage
        self.freeze_on_event = fp is not None and fp.freeze
        self.event_every = fp.every if fp is not None else 1
        checked = {**self.obs_fns, **self.stat_fns}
        analysis = _analysis(study, self.event_fn, checked)
        self.abstract = analysis.abstract
        self.event_shape = () if self.event_fn is None else tuple(self.abstract.event.shape)
        if fp is not None and fp.names is not None and \
                (self.event_shape == () or len(fp.names) != self.event_shape[0]):
            fail("first_passage.names", fp.names, f"expected one name per event; the predicate "
                 f"returns shape {self.event_shape}")
        # the step's loss and gradient norm cost an output per member-step (the norm a
        # reduction too, and at step 0 a backward pass): computed only when read
        self.track_loss, self.track_grad_norm = analysis.track_loss, analysis.track_grad_norm
        self.norm_dtype = jnp.result_type(*jax.tree_util.tree_leaves(self.abstract.params))
        self.noise = "noise_std" in study.hparams
        self.member_map = study.resolved_member_layout() == "map"
        self.data_axis = None if problem.data.shared else 0
        self.record_steps = study.observe.steps_for(study.steps) if study.observe else None
        self.bound = float(study.divergence_bound)
        # every recorder takes t = 0 in update: the first segment records step 0 (one copy
        # of the recording code, in the segment, instead of a second one in the init)
        self.zero_step = bool(self.recorders) and all(
            getattr(r, "update_at_step_zero", False) for r in self.recorders)
        self.optimizer_arrays = None  # the optimizer's arrays while a program is traced
        self.init = jit_flat(self._init)
        self.segment = jit_flat(self._segment, donate=(0,))

    def _use(self, problem: Problem):
        """Resolve the recorded functions against ``problem`` (inside a program: the
        problem bound to the traced arrays)."""
        study = self.study
        self.problem = problem
        self._available = _builtin_observables(problem)
        fp = study.first_passage
        self.event_fn = None
        if fp is not None:
            self.event_fn = problem.events[fp.predicate] if isinstance(fp.predicate, str) \
                else fp.predicate

    def _traced(self, fn, arrays, *args):
        """Run ``fn`` with the problem and the optimizer bound to ``arrays`` (the program's
        argument: ``(problem arrays, optimizer arrays)``, see :func:`program_inputs`)."""
        concrete = self.study.problem
        problem_arrays, self.optimizer_arrays = (None, None) if arrays is None else arrays
        self._use(concrete.bound(problem_arrays))
        try:
            return fn(*args)
        finally:
            self._use(concrete)
            self.optimizer_arrays = None

    # ---- the recording context (what a recorder sees; see sgdlab.engine._recorders)
    @property
    def block(self) -> int:
        """Seeds per statistics block."""
        return self.study.block

    @property
    def update_at_step_zero(self) -> bool:
        """Whether the first segment calls every recorder's ``update`` at ``t = 0``."""
        return self.zero_step

    def resolve(self, spec, where: str = "recorder"):
        """``(name, fn)`` of an observable name or ``(name, fn)`` pair, for this problem."""
        return _resolve(spec, self._available, where)

    def evaluate(self, fn, members: MemberState, hp, data, t):
        """``fn(Observation)`` of every member of the chunk: ``[S, G, ...]``."""
        return self._evaluate(fn, members, hp, data, t)

    def live(self, members: MemberState, valid):
        """``[S, G]``: valid seeds (not padding) whose member has not diverged."""
        return self._live(members, valid)

    @property
    def gdims(self) -> tuple[str, ...]:
        """The Dataset dimensions of the grid (host side)."""
        return tuple(self.study.grid)

    def grid_first(self, arr):
        """``[S, G, rest...]`` -> ``[G..., S, rest...]`` (host side)."""
        s = arr.shape[0]
        arr = arr.reshape((s,) + self.study.grid_shape + arr.shape[2:])
        return np.moveaxis(arr, 0, len(self.study.grid_shape))

    def grid_unflat(self, arr):
        """``[G, rest...]`` -> ``[G..., rest...]`` (host side)."""
        return arr.reshape(self.study.grid_shape + arr.shape[1:])

    # ---- one member
    def _observation(self, ms: MemberState, t, hp, data) -> Observation:
        return Observation(ms.params, ms.opt_state, ms.loss, ms.grad_norm, ms.params0, t, hp, data)

    def _member_step(self, ms: MemberState, batch, noise, hp, t, data):
        study = self.study
        alive = (ms.diverged_step < 0) & (t <= study.steps)
        if self.zero_step:  # t = 0 only records (see _segment_body)
            alive = alive & (t >= 1)
        if self.freeze_on_event:
            if self.event_shape == ():
                alive = alive & (ms.event_step < 0)
            else:  # a vector of events: freeze once all of them happened
                alive = alive & jnp.any(ms.event_step < 0)
        loss, grads = jax.value_and_grad(self.problem.loss)(ms.params, batch, hp)
        if self.noise:
            grads = jax.tree_util.tree_map(lambda g, z: g + hp["noise_std"] * z, grads, noise)
        tx = study.optimizer.build(hp, self.optimizer_arrays)
        updates, opt_state = tx.update(grads, ms.opt_state, ms.params)
        params = optax.apply_updates(ms.params, updates)
        ok = jnp.isfinite(loss) & _all_within(params, self.bound)
        keep = alive & ok
        new = ms._replace(
            params=_select(keep, params, ms.params),
            opt_state=_select(keep, opt_state, ms.opt_state),
            loss=jnp.where(keep, loss, ms.loss) if self.track_loss else ms.loss,
            grad_norm=jnp.where(keep, _norm(grads), ms.grad_norm) if self.track_grad_norm
            else ms.grad_norm,
            diverged_step=jnp.where(alive & ~ok, t, ms.diverged_step),
        )
        if self.event_fn is not None:
            def check(event_step):
                hit = keep & (event_step < 0) & self.event_fn(self._observation(new, t, hp, data))
                return jnp.where(hit, t, event_step)
            if self.event_every == 1:
                event_step = check(ms.event_step)
            else:  # t is the same for every member: a real branch, the predicate is skipped
                event_step = jax.lax.cond(t % self.event_every == 0, check, lambda e: e,
                                          ms.event_step)
            new = new._replace(event_step=event_step)
        return new

    def _noise_blocks(self, noise_k, params) -> _Stream:
        """The block noise of a chunk (see ``STREAM_VERSION``): ``one_seed(key, None, b)``
        gives one seed's normals of block ``b`` (leaves ``[B, ...]``, shared by the seed's
        grid points); with float32 or float64 parameters each step's row is computed alone
        from the block's keys (``data.normal_row``, the same bits)."""
        shapes = [(x.shape[2:], x.dtype) for x in jax.tree_util.tree_leaves(params)]
        B = noise_block(sum(math.prod(sh) for sh, _ in shapes))

        def keys(key, b):
            return jax.random.split(jax.random.fold_in(key, b), len(shapes))

        def one_seed(key, shared, b):
            del shared
            return tuple(jax.random.normal(k, (B,) + sh, dt)
                         for k, (sh, dt) in zip(keys(key, b), shapes, strict=True))

        def row(ks, d, j):
            del d
            return tuple(data_lib.normal_row(ks[i], j, B, sh, dt)
                         for i, (sh, dt) in enumerate(shapes))

        alone = all(data_lib.rows_alone(dt) for _, dt in shapes)
        return _Stream(B, one_seed, noise_k, None, keys if alone else None, row)

    def _data_blocks(self, data_k, data) -> _Stream:
        """A source that draws blocks of steps (``sgdlab.data``): ``one_seed((key, d), None,
        b)`` (per-seed data) or ``one_seed(key, data, b)`` (shared data) gives one seed's
        batches of block ``b`` (leaves ``[B, ...]``). Shared data is broadcast over each
        group of seeds inside the draw (see :meth:`_per_seed_data`), not over the whole
        chunk. A source with ``row`` computes each step's batch alone from the block key."""
        source = self.problem.data
        first = data if self.data_axis is None else jax.tree_util.tree_map(lambda x: x[0], data)
        B = data_lib.block_steps(source, first)
        keys = None
        if source.row is not None and data_lib.rows_alone():
            def keys(a, b):
                return data_lib.block_key(a[0] if self.data_axis == 0 else a, b)

        def row(kb, d, j):
            return source.row(d, kb, j, B)

        if self.data_axis == 0:
            def one_seed(a, shared, b):
                return source.block(a[1], a[0], b, B)
            return _Stream(B, one_seed, (data_k, data), None, keys, row)

        def one_seed_shared(a, d, b):
            return source.block(d, a, b, B)
        return _Stream(B, one_seed_shared, data_k, data, keys, row)

    # ---- all members of a chunk
    def _per_seed_data(self, data, n_seeds):
        """Data with a leading seed axis.

        Shared data is broadcast rather than closed over: a contraction of a
        seed-batched operand with an unbatched one is lowered by XLA to a single
        matrix product whose blocking (and rounding) depends on the number of
        seeds, while a batched product is computed seed by seed. Broadcasting keeps
        every member's bits independent of the ensemble size and chunking.
        """
        if self.data_axis == 0:
            return data
        return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n_seeds,) + x.shape), data)

    def _evaluate(self, fn, members: MemberState, hp, data, t):
        def per_seed(ms_g, d):
            return jax.vmap(lambda ms, h: fn(self._observation(ms, t, h, d)))(ms_g, hp)
        data = self._per_seed_data(data, members.diverged_step.shape[0])
        return jax.vmap(per_seed)(members, data)

    def _live(self, members: MemberState, valid):
        return valid[:, None] & (members.diverged_step < 0)

    def _init(self, hp, seed_keys, valid, shared, arrays=None):
        return self._traced(self._init_body, arrays, hp, seed_keys, valid, shared)

    def _init_body(self, hp, seed_keys, valid, shared):
        study, problem = self.study, self.problem
        init_k, data_k = _keys(seed_keys, 0), _keys(seed_keys, 1)
        if problem.data.shared:
            data = problem.data.init(jax.random.wrap_key_data(shared))
        else:
            data = jax.vmap(problem.data.init)(data_k)
        g = study.n_grid
        params_s = jax.vmap(problem.init)(init_k)

        def per_seed(p, dk, d):
            batch = problem.data.batch(d, dk, jnp.int32(0))

            def per_member(h):
                opt_state = study.optimizer.build(h, self.optimizer_arrays).init(p)
                if self.track_grad_norm:  # the backward pass only when its norm is read
                    loss, grads = jax.value_and_grad(problem.loss)(p, batch, h)
                    return (p, opt_state, loss, _norm(grads))
                zero = jnp.zeros((), self.abstract.loss.dtype)
                loss = problem.loss(p, batch, h) if self.track_loss else zero
                return (p, opt_state, loss, jnp.zeros((), self.norm_dtype))
            return jax.vmap(per_member)(hp)

        # a barrier between drawing and using: without it XLA fuses the draws of the
        # parameters and data into the step-0 loss and may merge the seeds' products into
        # one, whose rounding then depends on the chunk size (as the segments' does not)
        params_s, data_s = jax.lax.optimization_barrier(
            (params_s, self._per_seed_data(data, seed_keys.shape[0])))
        params, opt_state, loss, gnorm = jax.vmap(per_seed)(params_s, data_k, data_s)
        s = seed_keys.shape[0]
        members = MemberState(
            params=params, opt_state=opt_state, loss=loss, grad_norm=gnorm,
            params0=params if self.keep_init else None,
            diverged_step=jnp.full((s, g), -1, jnp.int32),
            event_step=jnp.full((s, g) + self.event_shape, -1, jnp.int32))
        t0 = jnp.int32(0)
        if self.event_fn is not None:
            hit = self._evaluate(self.event_fn, members, hp, data, t0)
            members = members._replace(event_step=jnp.where(hit, 0, -1).astype(jnp.int32))
        records = tuple(r.init(self, members, hp, data, valid) for r in self.recorders)
        return Carry(members, records, data)

    def _segment(self, carry: Carry, t0, hp, seed_keys, valid, shared, arrays=None,
                 n_segments=None):
        """``n_segments`` (traced; default 1) consecutive segments from step ``t0``.

        The count is an argument of the one compiled program, so the run loop sizes
        each call by time (see ``_loop._Pacer``) without compiling again; the steps
        are the same computation whatever the count, so results do not depend on it.
        The program reuses ``carry``'s buffers for its result (donated: the loop drops the
        old carry), so members updated in place are not copied first.
        """
        global TRACE_COUNT
        TRACE_COUNT += 1
        n = jnp.int32(1) if n_segments is None else n_segments
        S = self.segment_steps

        def one(i, c):
            return self._traced(self._segment_body, arrays, c, t0 + i * S, hp, seed_keys,
                                valid, shared)
        return jax.lax.fori_loop(jnp.int32(0), jnp.asarray(n, jnp.int32), one, carry)

    def _segment_body(self, carry: Carry, t0, hp, seed_keys, valid, shared):
        del shared  # data drawn once are in the carry
        problem = self.problem
        data_k, noise_k = _keys(seed_keys, 1), _keys(seed_keys, 2)
        data = carry.data

        def per_seed(ms_g, batch, noise, d, t):
            return jax.vmap(self._member_step, in_axes=(0, None, None, 0, None, None))(
                ms_g, batch, noise, hp, t, d)

        data_s = self._per_seed_data(data, seed_keys.shape[0])
        treedef = jax.tree_util.tree_structure(carry.members.params)
        streams: dict[str, _Stream] = {}
        if self.noise:
            streams["noise"] = self._noise_blocks(noise_k, carry.members.params)
        if problem.data.block is not None:
            streams["data"] = self._data_blocks(data_k, data)

        def step(c: Carry, t, row):
            noise = jax.tree_util.tree_unflatten(treedef, list(row["noise"])) \
                if self.noise else None
            batch = row["data"] if "data" in row else jax.vmap(
                lambda d, dk: problem.data.batch(d, dk, t))(data_s, data_k)
            if self.member_map:  # one member after another (Study.member_layout)
                members = member_by_member(
                    lambda m, a, h: self._member_step(m, a[0], a[1], h, t, a[2]),
                    c.members, (batch, noise, data_s), hp)
            else:
                members = jax.vmap(per_seed, in_axes=(0, 0, 0, 0, None))(
                    c.members, batch, noise, data_s, t)
            records = tuple(r.update(self, rs, members, hp, data, valid, t)
                            for r, rs in zip(self.recorders, c.records, strict=True))
            return Carry(members, records, data)

        S = self.segment_steps
        # the segment's first step; with zero_step the first segment (t0 = 0) starts at
        # t = 0, a step that changes no member (alive needs t >= 1) and then records step 0
        # with every other step's code
        first = t0 + 1 - (t0 == 0).astype(t0.dtype) if self.zero_step else t0 + 1
        if not streams:
            return jax.lax.fori_loop(first, t0 + S + 1, lambda t, c: step(c, t, {}), carry)

        # Tiles of Bm steps (the longest block; every block size is a power of two, so
        # each tile holds whole blocks of every stream): a tile draws its blocks once,
        # then its steps read their rows, or (a stream with ``keys``) it derives its
        # blocks' keys once and each step computes its own row; nothing is carried from
        # tile to tile. A segment that starts or ends inside a tile draws all of it:
        # default segments hold whole tiles (``_layout.default_segment``;
        # benchmarks/RESULTS.md, version 4 and "A step's random numbers computed alone").
        Bm = max(st.B for st in streams.values())

        def tile_rows(k):
            out, keys = {}, {}
            for name, st in streams.items():
                n = Bm // st.B
                bs = k * n + jnp.arange(n, dtype=jnp.int32)
                if st.keys is not None:  # [S, n, ...]: each block's keys; rows come later
                    keys[name] = jax.vmap(lambda a, st=st, bs=bs: jax.vmap(
                        lambda b: st.keys(a, b))(bs))(st.per_seed)
                    continue

                def seeds(a, st=st, bs=bs):  # [g, Bm, ...]
                    g = jax.tree_util.tree_leaves(a)[0].shape[0]
                    d = None if st.shared is None else self._per_seed_data(st.shared, g)
                    blocks = jax.vmap(lambda a1, d1: jax.vmap(
                        lambda b: st.one_seed(a1, d1, b))(bs))(a, d)
                    return jax.tree_util.tree_map(  # [g, n, B, ...] -> [g, Bm, ...]
                        lambda x: x.reshape(x.shape[:1] + (Bm,) + x.shape[3:]), blocks)
                out[name] = by_seed_groups(seeds, st.per_seed)
            return out, keys

        def tile(k, c):
            rows, keys = tile_rows(k)
            # the segment's first tile from its first step (t = 0 reads a row it does not
            # use: index -1, in bounds), every later tile from its own first step
            lo = jnp.where(k == t0 // Bm, first, k * Bm + 1)
            hi = jnp.minimum(t0 + S, (k + 1) * Bm)

            def one(t, c):
                i = t - 1 - k * Bm
                row = jax.tree_util.tree_map(
                    lambda x: jax.lax.dynamic_index_in_dim(x, i, 1, False), rows)
                for name, kb in keys.items():  # row i % B of block i // B, alone
                    st = streams[name]
                    kb = jax.tree_util.tree_map(
                        lambda x, B=st.B: jax.lax.dynamic_index_in_dim(x, i // B, 1, False), kb)
                    row[name] = jax.vmap(lambda a, d, st=st: st.row(a, d, i % st.B))(kb, data_s)
                return step(c, t, row)
            return jax.lax.fori_loop(lo, hi + 1, one, c)

        return jax.lax.fori_loop(t0 // Bm, (t0 + S - 1) // Bm + 1, tile, carry)


GROUP_NUMBERS = 2**18
"""On CPU a tile's random numbers are drawn for groups of seeds of at most this many numbers
each (one after another), not for the whole chunk at once: XLA:CPU draws 2^16-2^20 normals in
one go at 10-12 ns each and 2^21 or more at 20-33 ns (benchmarks/RESULTS.md). Every seed's
numbers are the same either way."""


def seed_group(seeds: int, per_seed: int) -> int:
    """Seeds per group of :func:`by_seed_groups`: the largest divisor of ``seeds`` whose
    numbers fit :data:`GROUP_NUMBERS`; ``seeds`` (one group) when they all fit, or when the
    groups would hold under an eighth of it (too small to pay for the loop)."""
    per_seed = max(1, int(per_seed))
    small = [d for d in range(1, math.isqrt(seeds) + 1) if seeds % d == 0]
    g = max(d for d in small + [seeds // d for d in small]
            if d * per_seed <= GROUP_NUMBERS or d == 1)
    return seeds if g * per_seed < GROUP_NUMBERS // 8 else g


def by_seed_groups(fn, args):
    """``fn(args)`` for ``args`` with a leading seed axis (leaves ``[S, ...]``), computed
    for groups of seeds one after another on CPU (:data:`GROUP_NUMBERS`); ``fn`` treats
    each seed alone, so the result is bitwise that of one call."""
    S = jax.tree_util.tree_leaves(args)[0].shape[0]
    if jax.default_backend() != "cpu":
        return fn(args)
    one = jax.eval_shape(fn, jax.tree_util.tree_map(lambda x: x[:1], args))
    g = seed_group(S, sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(one)))
    if g == S:
        return fn(args)
    grouped = jax.tree_util.tree_map(lambda x: x.reshape((S // g, g) + x.shape[1:]), args)
    out = jax.lax.map(fn, grouped)
    return jax.tree_util.tree_map(lambda x: x.reshape((S,) + x.shape[2:]), out)


def member_by_member(fn, members, per_seed, per_point):
    """``fn(member, seed_args, point_args)`` for every member, one after another, each
    member's result written in place into ``members`` (leaves ``[S, G, ...]``: seeds, grid
    points); ``per_seed`` leaves are ``[S, ...]``, ``per_point`` leaves ``[G, ...]``, and
    ``fn`` returns a member of the same structure, shapes and dtypes.

    The layout of ``Study.member_layout="map"``: each member is computed alone, so its bits
    are those of any other layout of members computed alone (a ``lax.map`` over seeds and
    grid points, a plain loop). A loop that writes into the carried state reuses its
    buffers, where a ``lax.map`` fills a new stacked output every step (XLA:CPU spends a
    quarter of W5's step zeroing it; benchmarks/RESULTS.md)."""
    S, G = jax.tree_util.tree_leaves(members)[0].shape[:2]

    zero = jnp.int32(0)

    def take(x, idx):
        n = len(idx)
        return jax.lax.dynamic_slice(x, idx + (zero,) * (x.ndim - n),
                                     (1,) * n + x.shape[n:]).reshape(x.shape[n:])

    def body(j, ms):
        i, k = j // G, j % G
        new = fn(jax.tree_util.tree_map(lambda x: take(x, (i, k)), ms),
                 jax.tree_util.tree_map(lambda x: take(x, (i,)), per_seed),
                 jax.tree_util.tree_map(lambda x: take(x, (k,)), per_point))
        return jax.tree_util.tree_map(
            lambda x, y: jax.lax.dynamic_update_slice(
                x, y.reshape((1, 1) + y.shape), (i, k) + (zero,) * y.ndim),
            ms, new)

    return jax.lax.fori_loop(jnp.int32(0), jnp.int32(S * G), body, members)


def remember(cache: dict, key, make, limit: int = 64):
    """``cache[key]``, made by ``make()`` when missing; past ``limit`` entries the oldest
    go. The engine's per-configuration caches of what a plan traces (a small study's run
    would otherwise spend more time tracing than stepping)."""
    if key not in cache:
        cache[key] = make()
        while len(cache) > limit:
            cache.pop(next(iter(cache)))
    return cache[key]


_TILES: dict = {}
""":func:`tile_steps` of recent configurations (it traces the problem's init and batch)."""


def tile_steps(study: Study) -> int:
    """Steps per tile of a study's blocked random streams (gradient noise, a data source
    with blocks): the longest block, 1 without any. A segment draws whole tiles, so
    segments of a multiple of it waste no random numbers (the default layout's)."""
    key = (study.problem.static_key(), "noise_std" in study.hparams, float_dtype())
    return remember(_TILES, key, lambda: _tile_steps(study))


def _tile_steps(study: Study) -> int:
    problem = study.problem
    sizes = []
    if "noise_std" in study.hparams:
        shapes = jax.eval_shape(problem.init, abstract_key())
        sizes.append(noise_block(sum(math.prod(x.shape)
                                     for x in jax.tree_util.tree_leaves(shapes))))
    if problem.data.block is not None:
        data = jax.eval_shape(problem.data.init, abstract_key())
        sizes.append(data_lib.block_steps(problem.data, data))
    return max(sizes, default=1)


_PROGRAMS: collections.OrderedDict[tuple, _Program] = collections.OrderedDict()
MAX_PROGRAMS = 32
"""Compiled programs kept for reuse, least recently used dropped first.

Each compiled XLA program holds memory mappings (about six on CPU) until it is
dropped; a long session that ran thousands of distinct studies would otherwise run
into the kernel's per-process map limit (``vm.max_map_count``, 65530 by default)
and crash inside the compiler.
"""


def _arrays(study: Study):
    """``(problem arrays, optimizer arrays)`` as program arguments, on the device once:
    the problem's (None for a closure problem) and the optimizer's preconditioner (None
    without one; ``Optimizer.arrays``). ``jax.device_put`` gives each the dtype and weak
    type ``jnp.asarray`` would, without the small conversion program ``jnp.asarray``
    compiles (a few ms per shape and dtype in every new process)."""
    problem = study.problem
    problem_arrays = jax.tree_util.tree_map(jax.device_put, problem.arrays) \
        if problem.is_pytree else None
    optimizer_arrays = study.optimizer.arrays()
    return problem_arrays, None if optimizer_arrays is None else \
        jax.device_put(optimizer_arrays)


def program_inputs(study: Study) -> tuple:
    """The arguments every chunk's programs share: ``(hp, arrays, shared)``.

    The grid's hyperparameters and ``shared``, the key data of what is drawn once per study
    (:func:`shared_key_data`), are NumPy values (no eager device op per run); the
    problem's and the optimizer's arrays are device arrays, passed on every call. A
    chunk's programs also take its seeds' keys (:func:`chunk_seeds`).
    """
    hp = {k: np.asarray(v) for k, v in study.flat_hparams().items()}
    return hp, _arrays(study), shared_key_data(study.seed)


def chunk_seeds(study: Study, c: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(seed_keys, valid)`` of chunk ``c`` of ``size`` seeds: the key data of its seeds'
    member keys (:func:`chunk_key_data`, ``[size, 3, ...]``) and :func:`chunk_valid`."""
    return chunk_key_data(study.seed, c * size, size), chunk_valid(study, c, size)


def chunk_valid(study: Study, c: int, size: int) -> np.ndarray:
    """Which seeds of chunk ``c`` of ``size`` seeds are real seeds, not padding (NumPy)."""
    return np.arange(c * size, (c + 1) * size) < study.seeds


def _keys(seed_keys, i: int):
    """Key ``i`` (0 init, 1 data, 2 noise) of every seed of a chunk, from the program's
    ``seed_keys`` argument."""
    return jax.random.wrap_key_data(seed_keys[:, i])


def _static_key(study: Study, chunk_seeds: int, segment_steps: int, devices: int) -> tuple:
    return (study.problem.static_key(), study.optimizer.static_key(), study.observe,
            study.stationary, tuple(_hashable(r) for r in study.recorders),
            study.first_passage, study.steps, study.divergence_bound, study.keep_init,
            study.block, tuple((k, v.shape) for k, v in study.hparams.items()), chunk_seeds,
            segment_steps, devices, float_dtype(), study.resolved_member_layout(),
            data_lib.rows_alone())  # JAX's key settings decide how rows are drawn


def program_key(study: Study, chunk_seeds: int, segment_steps: int, devices: int = 1) -> tuple:
    """The key under which the engine caches the compiled program of a study's layout.

    Two studies (or two layouts) with equal keys run one compiled program: their
    hyperparameter values are arguments, everything in the key is static. A dry run
    counts the distinct keys of its plans to report how many programs it compiles.
    """
    return _static_key(study, chunk_seeds, segment_steps, devices)


def _hashable(x):
    try:
        hash(x)
        return x
    except TypeError:
        return ("id", id(x))


def _program(study: Study, chunk_seeds: int, segment_steps: int, devices: int = 1) -> _Program:
    key = _static_key(study, chunk_seeds, segment_steps, devices)
    prog = _PROGRAMS.get(key)
    if prog is None:
        prog = _PROGRAMS[key] = _Program(study, chunk_seeds, segment_steps)
        if devices > 1:
            from sgdlab.engine._layout import _shard  # the layout module imports this one
            _shard(prog, devices)
        while len(_PROGRAMS) > MAX_PROGRAMS:
            _PROGRAMS.popitem(last=False)
    else:
        _PROGRAMS.move_to_end(key)
        prog.study = study  # same static structure; hyperparameter values are arguments
    return prog
