"""The recorders: what a run keeps of each member, as implementations of one protocol.

A recorder is an object with a ``name`` and six methods; ``ctx`` is the compiled
program's :class:`RecordingContext` (``ctx.study``, ``ctx.block``,
``ctx.evaluate(fn, members, hp, data, t)`` -> ``[S, G, ...]`` values of
``fn(Observation)`` for every member of the chunk, ``ctx.live(members, valid)`` ->
``[S, G]`` mask of live members, ``ctx.resolve(spec)`` -> ``(name, fn)`` of an
observable, and on the host ``ctx.gdims``, ``ctx.grid_first(arr)``,
``ctx.grid_unflat(arr)``):

* ``init(ctx, members, hp, data, valid) -> state`` (traced, once per chunk, at step 0):
  every leaf of ``state`` has a leading axis over the chunk's ``S`` seeds (or its
  ``S / ctx.block`` blocks of seeds), unless ``spec`` says otherwise;
* ``update(ctx, state, members, hp, data, valid, t) -> state`` (traced, after each
  step ``t = 1..steps``; steps past ``steps`` in the last segment come with
  ``t > steps``: ignore them);
* ``collect(ctx, state, members, valid) -> part`` (host, numpy: one chunk, with the
  padded seeds, ``~valid``, dropped);
* ``merge(ctx, parts) -> merged`` (host: the chunks' parts in seed order);
* ``to_dataset(ctx, merged) -> (coords, data_vars)`` (host: xarray-style dicts);
* ``spec(ctx, seeds, replicated)`` (optional): the sharding of ``state`` as a pytree
  prefix of ``seeds`` / ``replicated`` (default: ``seeds`` for the whole state);
* ``update_at_step_zero`` (optional attribute, default False): the recorder's
  ``update`` also accepts ``t = 0``. When every recorder of a study says so, the run's
  first segment calls ``update`` once at ``t = 0`` (the initial members, before any
  step; ``ctx.update_at_step_zero`` is then True), so a record at step 0 comes from the
  same code as at any other step and ``init`` only allocates: one copy of the recording
  code in the compiled programs instead of a second one in the init's.

``members`` is the :class:`~sgdlab.engine.MemberState` with leading axes
``[S, G]``. To keep results bitwise independent of chunking and device count, a
recorder reduces over seeds only within blocks of ``ctx.block`` seeds (or not at
all) on the device, and merges blocks in seed order on the host. Pass user
recorders as ``Study(..., recorders=(MyRecorder(),))``. :class:`Observe`,
:class:`Stationary` and :class:`FirstPassage` implement the same protocol
(``FirstPassage`` keeps its steps in the member state, since freezing changes
the dynamics).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab._validate import choice, fail, positive_int
from sgdlab.problems import Observation

ObservableSpec = str | tuple[str, Callable[[Observation], jnp.ndarray]]


@runtime_checkable
class Recorder(Protocol):
    """The recorder protocol (see the module docstring for each method's contract)."""

    name: str

    def init(self, ctx, members, hp, data, valid) -> Any: ...

    def update(self, ctx, state, members, hp, data, valid, t) -> Any: ...

    def collect(self, ctx, state, members, valid: np.ndarray) -> Any: ...

    def merge(self, ctx, parts: list) -> Any: ...

    def to_dataset(self, ctx, merged) -> tuple[dict, dict]: ...


class ObserveState(NamedTuple):
    """:class:`Observe`'s carried state. The observables of one dtype share buffers,
    so that a record is one in-place write per buffer, not one per observable: each
    dict maps a pack's key (JSON ``[[name, per-member shape], ...]``) to
    ``[..., R, F]``, ``F`` the pack's flattened per-member values."""

    ptr: jnp.ndarray            # int32 scalar: next record index
    values: dict                # pack -> [S, G, R, F] (members) or {}
    count: jnp.ndarray          # [S/B, G, R] live members counted, per block of B seeds
    mean: dict                  # pack -> [S/B, G, R, F]
    m2: dict                    # pack -> [S/B, G, R, F]


def _packs(values: dict) -> dict[str, list[str]]:
    """The names of ``values`` (name -> ``[S, G, *e]``) packed by dtype, in order of
    first appearance: ``{JSON [[name, e], ...]: names}``."""
    packs: dict = {}
    for name, v in values.items():
        packs.setdefault(jnp.dtype(v.dtype), []).append(name)
    return {json.dumps([[n, list(values[n].shape[2:])] for n in names]): names
            for names in packs.values()}


def _pack(values: dict, names: list[str]):
    """``[S, G, F]``: the named ``[S, G, *e]`` values, flattened and concatenated."""
    return jnp.concatenate([values[n].reshape(values[n].shape[:2] + (-1,)) for n in names],
                           axis=2)


def _unpack(packs: dict) -> dict:
    """``{pack key: [..., F]}`` -> ``{name: [..., *e]}`` (numpy)."""
    out = {}
    for key, arr in packs.items():
        arr = np.asarray(arr)
        lead, off = arr.shape[:-1], 0
        for name, e in json.loads(key):
            size = int(np.prod(e, dtype=np.int64))
            out[name] = arr[..., off:off + size].reshape(lead + tuple(e))
            off += size
    return out


class StationaryState(NamedTuple):
    sums: dict                  # name -> [S, G, B, ...]: the closed batches' sums
    counts: jnp.ndarray         # [B] steps summed into each batch
    open: dict                  # name -> [S, G, ...]: the running sum of the batch being filled


def merge_stats(acc, new):
    """Chan et al.'s parallel update of (count, mean, M2) along the member axis."""
    if acc is None:
        return new
    na, ma, sa = acc
    nb, mb, sb = new
    n = na + nb
    shape = n.shape + (1,) * (ma.ndim - n.ndim)
    fb = np.where(n > 0, nb / np.maximum(n, 1), 0).reshape(shape)
    ma0, mb0 = np.nan_to_num(ma), np.nan_to_num(mb)
    delta = mb0 - ma0
    mean = ma0 + delta * fb
    m2 = np.nan_to_num(sa) + np.nan_to_num(sb) + delta**2 * (na.reshape(shape) * fb)
    mean = np.where(n.reshape(shape) > 0, mean, np.nan)
    m2 = np.where(n.reshape(shape) > 0, m2, np.nan)
    return n, mean, m2


def obs_dims(name: str, extra: tuple[int, ...]) -> tuple[str, ...]:
    """Dataset dimension names of an observable's own axes."""
    return tuple(f"{name}_dim{i}" for i in range(len(extra)))


def _cat(parts, get):
    return np.concatenate([get(p) for p in parts])


def _put(x, v, i, axis=2):
    """``x`` with index ``i`` along ``axis`` set to ``v`` (``i`` in range): an in-place
    dynamic update, where ``x.at[..., i].set(v)`` is a scatter that XLA:CPU compiles
    into several kernels per recorded quantity."""
    return jax.lax.dynamic_update_index_in_dim(x, jnp.asarray(v, x.dtype), i, axis)


def _add(x, v, i, axis=2):
    """``x`` with ``v`` added at index ``i`` along ``axis`` (``i`` in range; see :func:`_put`)."""
    return _put(x, jax.lax.dynamic_index_in_dim(x, i, axis, keepdims=False) + v, i, axis)


@dataclass(frozen=True)
class Observe:
    """Record observables at chosen steps.

    Args:
      observables: names (``"loss"``, ``"risk"``, ``"grad_norm"``, ``"distance"``
        from init, ``"param_norm"``, or a problem observable such as ``"w"``) or
        ``(name, fn)`` pairs with ``fn(Observation) -> array``. ``"loss"`` is the
        minibatch loss of the step that led to the record step, evaluated at the
        pre-update parameters (at step 0: the step-0 batch at the initial
        parameters); for the loss at the recorded parameters use ``"risk"`` or a
        function of ``o.params``.
      at: ``"linear"`` or ``"log"`` spacing of ``num`` record steps in
        ``[0, steps]`` (log: 0 and a geometric grid from 1), or explicit steps.
      num: number of record steps for the spacings.
      members: keep every member's value (dims ``..., seed, step``).
      stats: stream count/mean/variance over live members per grid point.
    """

    observables: tuple[ObservableSpec, ...] = ("loss",)
    at: str | tuple[int, ...] = "linear"
    num: int = 21
    members: bool = True
    stats: bool = True

    def steps_for(self, steps: int) -> np.ndarray:
        """The record steps (sorted, unique, within ``[0, steps]``)."""
        if isinstance(self.at, str):
            choice("observe.at", self.at, ("linear", "log"))
            num = positive_int("observe.num", self.num, minimum=2)
            if self.at == "linear":
                s = np.linspace(0, steps, num)
            else:
                s = np.concatenate([[0], np.geomspace(1, steps, num - 1)])
            return np.unique(np.round(s).astype(np.int64))
        s = np.asarray(self.at)
        if s.ndim != 1 or s.size == 0 or not np.issubdtype(s.dtype, np.integer):
            fail("observe.at", self.at, "expected 'linear', 'log' or a list of integer steps")
        if s.min() < 0 or s.max() > steps:
            fail("observe.at", self.at, f"record steps must lie in [0, steps={steps}]")
        return np.unique(s.astype(np.int64))

    # ---- the recorder protocol
    name = "observe"

    def _fns(self, ctx):
        return dict(ctx.resolve(s, "observe") for s in self.observables)

    def _evaluate(self, ctx, members, hp, data, t) -> dict:
        """``{name: [S, G, *e]}`` of every observable at step ``t``."""
        return {name: ctx.evaluate(fn, members, hp, data, t)
                for name, fn in self._fns(ctx).items()}

    def _record(self, ctx, state: ObserveState, members, hp, data, valid, t):
        b = ctx.block
        mask = ctx.live(members, valid)
        mask_b = mask.reshape((-1, b) + mask.shape[1:])                   # [S/B, B, G]
        count = jnp.sum(mask_b, axis=1, dtype=jnp.int32)                   # [S/B, G]
        m, c = mask_b[..., None], jnp.maximum(count, 1)[..., None]         # for every pack
        values, means, m2s = dict(state.values), dict(state.mean), dict(state.m2)
        evaluated = self._evaluate(ctx, members, hp, data, t)
        for key, names in _packs(evaluated).items():
            v = _pack(evaluated, names)                                   # [S, G, F]
            if self.members:
                values[key] = _put(values[key], v, state.ptr)
            if self.stats:
                vb = v.reshape((-1, b) + v.shape[1:])                     # [S/B, B, G, F]
                mean = jnp.sum(jnp.where(m, vb, 0), axis=1) / c
                m2 = jnp.sum(jnp.where(m, (vb - mean[:, None]) ** 2, 0), axis=1)
                means[key] = _put(means[key], mean, state.ptr)
                m2s[key] = _put(m2s[key], m2, state.ptr)
        new_count = _put(state.count, count, state.ptr) if self.stats else state.count
        return ObserveState(state.ptr + 1, values, new_count, means, m2s)

    update_at_step_zero = True  # step 0 is recorded by update when the engine asks

    def init(self, ctx, members, hp, data, valid):
        steps = self.steps_for(ctx.study.steps)
        s, g = members.diverged_step.shape[:2]
        r, nb, t0 = len(steps), s // ctx.block, jnp.int32(0)
        values, means, m2s = {}, {}, {}
        evaluated = self._evaluate(ctx, members, hp, data, t0)  # shapes only; DCE'd
        for key, names in _packs(evaluated).items():
            f = sum(math.prod(evaluated[n].shape[2:]) for n in names)
            dtype = evaluated[names[0]].dtype
            if self.members:
                values[key] = jnp.full((s, g, r, f), jnp.nan, dtype)
            if self.stats:
                means[key] = jnp.full((nb, g, r, f), jnp.nan, dtype)
                m2s[key] = jnp.full((nb, g, r, f), jnp.nan, dtype)
        state = ObserveState(jnp.int32(0), values, jnp.zeros((nb, g, r), jnp.int32), means, m2s)
        if steps[0] == 0 and not ctx.update_at_step_zero:
            state = self._record(ctx, state, members, hp, data, valid, t0)
        return state

    def update(self, ctx, state, members, hp, data, valid, t):
        rec_steps = jnp.asarray(self.steps_for(ctx.study.steps), jnp.int32)
        r = rec_steps.shape[0]
        due = (state.ptr < r) & (t == rec_steps[jnp.minimum(state.ptr, r - 1)])
        return jax.lax.cond(due, lambda s: self._record(ctx, s, members, hp, data, valid, t),
                            lambda s: s, state)

    def spec(self, ctx, seeds, replicated):
        return ObserveState(replicated, seeds, seeds, seeds, seeds)

    def collect(self, ctx, state, members, valid):
        n_valid = int(valid.sum())
        blocks = -(-n_valid // ctx.block)  # blocks holding at least one valid seed
        means, m2s = _unpack(state.mean), _unpack(state.m2)
        return {"values": {k: v[valid] for k, v in _unpack(state.values).items()},
                "stats": {k: {"count": np.asarray(state.count)[:blocks].astype(np.int64),
                              "mean": np.asarray(means[k], np.float64)[:blocks],
                              "m2": np.asarray(m2s[k], np.float64)[:blocks]}
                          for k in means}}

    def merge(self, ctx, parts):
        out = {"values": {k: _cat(parts, lambda c, k=k: c["values"][k])
                          for k in parts[0].get("values", {})}, "stats": {}}
        for k in parts[0].get("stats", {}):
            count = _cat(parts, lambda c, k=k: c["stats"][k]["count"])
            mean = _cat(parts, lambda c, k=k: c["stats"][k]["mean"])
            m2 = _cat(parts, lambda c, k=k: c["stats"][k]["m2"])
            acc = None
            for i in range(count.shape[0]):
                acc = merge_stats(acc, (count[i], mean[i], m2[i]))
            out["stats"][k] = acc
        return out

    def to_dataset(self, ctx, merged):
        gdims = ctx.gdims
        coords = {"step": self.steps_for(ctx.study.steps)}
        data_vars: dict = {}
        for name, v in merged["values"].items():
            v = ctx.grid_first(v)
            data_vars[name] = (gdims + ("seed", "step") + obs_dims(name, v.shape[len(gdims) + 2:]),
                               v)
        for name, (n, mean, m2) in merged["stats"].items():
            extra = mean.shape[2:]
            dims = gdims + ("step",) + obs_dims(name, extra)
            nb = n.reshape(n.shape + (1,) * len(extra))
            var = np.where(nb > 1, m2 / np.maximum(nb - 1, 1), np.nan)
            data_vars[f"{name}_mean"] = (dims, ctx.grid_unflat(mean))
            data_vars[f"{name}_var"] = (dims, ctx.grid_unflat(var))
            data_vars[f"{name}_n"] = (gdims + ("step",), ctx.grid_unflat(n))
        return coords, data_vars


@dataclass(frozen=True)
class Stationary:
    """Time averages after a burn-in, in ``n_batches`` consecutive batches per member.

    Every ``thin``-th step after ``burn_in`` adds the observables to the current
    batch's sum. Per member, the batch means give a batch-means error bar; over
    members (independent), the member time averages give the ensemble estimate
    and its standard error.
    """

    observables: tuple[ObservableSpec, ...]
    burn_in: int
    n_batches: int = 10
    thin: int = 1
    members: bool = True

    # ---- the recorder protocol
    name = "stationary"

    def batches(self, steps: int) -> tuple[int, int]:
        """``(recorded steps per batch, number of batches)`` for a run of ``steps``."""
        n_rec = (steps - self.burn_in) // self.thin
        batch_len = -(-n_rec // self.n_batches)
        return batch_len, -(-n_rec // batch_len)

    def _fns(self, ctx):
        return dict(ctx.resolve(s, "stationary") for s in self.observables)

    update_at_step_zero = True  # t = 0 is before the burn-in: update leaves the state

    def init(self, ctx, members, hp, data, valid):
        s, g = members.diverged_step.shape[:2]
        n_batches = self.batches(ctx.study.steps)[1]
        sums = {}
        for name, fn in self._fns(ctx).items():
            v = ctx.evaluate(fn, members, hp, data, jnp.int32(0))  # shape only; DCE'd
            sums[name] = jnp.zeros((s, g, n_batches) + v.shape[2:], v.dtype)
        opened = {name: x[:, :, 0] for name, x in sums.items()}
        return StationaryState(sums, jnp.zeros((n_batches,), jnp.int32), opened)

    def update(self, ctx, state, members, hp, data, valid, t):
        """Add the step's values to the open batch's running sum (contiguous in memory);
        its last step writes the sum into the batch's slot. The additions are those of
        summing into the slot itself, in the same order, so the sums are the same bits;
        the slot is strided (batches last) and was read and written every step before."""
        steps = ctx.study.steps
        batch_len = self.batches(steps)[0]
        n_rec = (steps - self.burn_in) // self.thin
        k = t - self.burn_in
        due = (k > 0) & (t <= steps) & ((k % self.thin) == 0)

        def accumulate(s: StationaryState):
            j = k // self.thin  # this step's place among the recorded ones, from 1
            b = (j - 1) // batch_len
            opened = {name: s.open[name] + ctx.evaluate(fn, members, hp, data, t)
                      for name, fn in self._fns(ctx).items()}

            def close(x):
                sums, opened = x
                return ({n: _put(sums[n], opened[n], b) for n in sums},
                        {n: jnp.zeros_like(v) for n, v in opened.items()})
            sums, opened = jax.lax.cond((j % batch_len == 0) | (j == n_rec), close,
                                        lambda x: x, (s.sums, opened))
            return StationaryState(sums, _add(s.counts, jnp.int32(1), b, axis=0), opened)
        return jax.lax.cond(due, accumulate, lambda s: s, state)

    def spec(self, ctx, seeds, replicated):
        return StationaryState(seeds, replicated, seeds)

    def collect(self, ctx, state, members, valid):
        counts = np.asarray(state.counts).astype(np.float64)
        out = {}
        for k, sums in state.sums.items():
            sums = np.asarray(sums, np.float64)[valid]                     # [S, G, B, ...]
            d = {"time_average": np.sum(sums, axis=2) / counts.sum()}
            if self.members:
                d["batch_means"] = sums / counts.reshape((1, 1, -1) + (1,) * (sums.ndim - 3))
            out[k] = d
        return {"sums": out, "diverged_step": np.asarray(members.diverged_step)[valid]}

    def merge(self, ctx, parts):
        alive = _cat(parts, lambda c: c["diverged_step"]) < 0
        parts = [p["sums"] for p in parts]
        out = {}
        for k in parts[0]:
            tavg = _cat(parts, lambda c, k=k: c[k]["time_average"])   # [S, G, ...]
            live = alive.reshape(alive.shape + (1,) * (tavg.ndim - 2))
            n = np.sum(alive, axis=0).astype(np.int64)
            nb = n.reshape(n.shape + (1,) * (tavg.ndim - 2))
            mean = np.sum(np.where(live, tavg, 0.0), axis=0) / np.maximum(nb, 1)
            m2 = np.sum(np.where(live, (tavg - mean) ** 2, 0.0), axis=0)
            mean = np.where(nb > 0, mean, np.nan)
            d = {"stats": (n, mean, m2), "batch_means": None}
            if "batch_means" in parts[0][k]:
                bm = _cat(parts, lambda c, k=k: c[k]["batch_means"])
                d["batch_means"] = np.where(live[:, :, None], bm, np.nan)
            out[k] = d
        return out

    def to_dataset(self, ctx, merged):
        gdims = ctx.gdims
        coords = {"batch": np.arange(self.batches(ctx.study.steps)[1])}
        data_vars: dict = {}
        for name, d in merged.items():
            n, mean, m2 = d["stats"]
            extra = mean.shape[1:]
            dims = gdims + obs_dims(name, extra)
            nb = n.reshape(n.shape + (1,) * len(extra))
            se = np.where(nb > 1, np.sqrt(m2 / np.maximum(nb - 1, 1) / np.maximum(nb, 1)), np.nan)
            data_vars[f"stationary_{name}_mean"] = (dims, ctx.grid_unflat(mean))
            data_vars[f"stationary_{name}_se"] = (dims, ctx.grid_unflat(se))
            data_vars[f"stationary_{name}_n"] = (gdims, ctx.grid_unflat(n))
            if d["batch_means"] is not None:
                bm = ctx.grid_first(d["batch_means"])
                data_vars[f"stationary_{name}"] = (gdims + ("seed", "batch") + dims[len(gdims):],
                                                   bm)
        return coords, data_vars


@dataclass(frozen=True)
class FirstPassage:
    """The first step at which ``predicate(Observation)`` holds, per member.

    Args:
      predicate: a problem event name or a function ``Observation -> bool``. It
        may return a boolean scalar (one event) or a boolean vector of shape
        ``(E,)``: E events, one first-passage step each (an extra Dataset
        dimension ``dim`` with coordinate ``names``, default ``0..E-1``).
      freeze: a member stops moving once its event happened (it no longer
        matters, and cannot overflow); for a vector predicate, once *all* its
        events happened. With ``freeze=False`` members keep moving.
      every: check the predicate only at steps ``0, k, 2k, ...`` (an expensive
        predicate then costs 1/k); the first-passage step is the first *checked*
        step at which it holds.
      names: coordinate values of the event dimension (vector predicates only).
      dim: the name of the event dimension (vector predicates only).

    Members that never meet an event are right-censored at the last step
    (``event_step = -1``, ``event_censored = True``).
    """

    predicate: str | Callable[[Observation], jnp.ndarray]
    freeze: bool = True
    every: int = 1
    names: tuple | None = None
    dim: str = "event"

    # ---- the recorder protocol (the steps live in the member state: freezing is dynamics)
    name = "first_passage"
    update_at_step_zero = True

    def init(self, ctx, members, hp, data, valid):
        return None

    def update(self, ctx, state, members, hp, data, valid, t):
        return state

    def collect(self, ctx, state, members, valid):
        return np.asarray(members.event_step)[valid]

    def merge(self, ctx, parts):
        return np.concatenate(parts)

    def to_dataset(self, ctx, merged):
        ev = ctx.grid_first(merged)
        dims = ctx.gdims + ("seed",)
        coords = {}
        if ev.ndim > len(dims):
            dims += (self.dim,)
            coords[self.dim] = (np.asarray(self.names) if self.names is not None
                                else np.arange(ev.shape[-1]))
        return coords, {"event_step": (dims, ev), "event_censored": (dims, ev < 0)}
