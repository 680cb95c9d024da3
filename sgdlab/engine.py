"""The ensemble engine: seeds × hyperparameter grid as one compiled program.

A :class:`Study` is a grid over traced hyperparameters × seeds. :func:`run`
compiles one program per static configuration (problem, optimizer, recorders,
step count, chunk shape) and runs every member through it:

``jit(scan over steps(vmap over seeds(draw the seed's batch; vmap over grid points(update))))``

* Member keys are ``fold_in(fold_in(key(seed), 0), seed_index)``; from a seed's
  key come its init key (``fold_in(k, 0)``), data key (``fold_in(k, 1)``) and
  noise key (``fold_in(k, 2)``), and the randomness of step ``t`` is
  ``fold_in(data_key, t)``. A member's trajectory therefore does not depend on the
  ensemble size, chunking or device count, and every grid point of a seed sees
  the same initialization and data stream (common random numbers), which is
  drawn once per seed, not once per member.
* Hyperparameters are traced arrays: a new grid of the same shape reuses the
  compiled program (``TRACE_COUNT`` counts traces).
* Steps run in segments (one call of the compiled segment each, a progress tick
  per segment; checkpoints go at segment boundaries).
* Recording never stores trajectories unless asked: :class:`Observe` records
  observables at chosen steps (per member and/or streamed ensemble statistics),
  :class:`Stationary` accumulates post-burn-in time averages in batches (batch
  means), :class:`FirstPassage` records the first step a predicate holds.
* A member whose loss or parameters become non-finite, or whose largest
  parameter exceeds ``divergence_bound``, is frozen at that step and flagged with
  it (``diverged_step``); statistics count only live members.
* Members are processed in chunks of seeds sized from a memory budget; the
  last chunk is padded (padded seeds are computed and discarded) so there is one
  compile per study.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sgdlab._validate import choice, fail, finite_float, positive_int
from sgdlab.optim import RANGES, Optimizer
from sgdlab.problems import Observation, Problem

TRACE_COUNT = 0
"""Number of times a segment program has been traced (a compile-count probe)."""

ObservableSpec = str | tuple[str, Callable[[Observation], jnp.ndarray]]


# --------------------------------------------------------------------------- recorders


@dataclass(frozen=True)
class Observe:
    """Record observables at chosen steps.

    Args:
      observables: names (``"loss"``, ``"risk"``, ``"grad_norm"``, ``"distance"``
        from init, ``"param_norm"``, or a problem observable such as ``"w"``) or
        ``(name, fn)`` pairs with ``fn(Observation) -> array``.
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


@dataclass(frozen=True)
class FirstPassage:
    """The first step at which ``predicate(Observation)`` holds, per member.

    ``predicate`` is a problem event name or a callable. Members that never meet
    it are right-censored at the last step. With ``freeze=True`` a member stops
    moving once the event happened (it no longer matters, and cannot overflow).
    """

    predicate: str | Callable[[Observation], jnp.ndarray]
    freeze: bool = True


# --------------------------------------------------------------------------- the study


def _builtin_observables(problem: Problem) -> dict[str, Callable[[Observation], jnp.ndarray]]:
    def tree_norm(t):
        return _norm(t)

    obs = {
        "loss": lambda o: o.loss,
        "grad_norm": lambda o: o.grad_norm,
        "param_norm": lambda o: tree_norm(o.params),
        "distance": lambda o: tree_norm(jax.tree_util.tree_map(jnp.subtract, o.params, o.params0)),
    }
    if problem.risk is not None:
        obs["risk"] = lambda o: problem.risk(o.params, o.data, o.hp)
    obs.update(problem.observables)
    return obs


def _resolve(spec: ObservableSpec, available: Mapping[str, Callable], where: str):
    if isinstance(spec, tuple) and len(spec) == 2 and callable(spec[1]):
        return spec[0], spec[1]
    if isinstance(spec, str):
        if spec not in available:
            fail(where, spec, "expected one of " + ", ".join(sorted(available))
                 + " or a (name, function) pair")
        return spec, available[spec]
    fail(where, spec, "expected an observable name or a (name, function) pair")
    raise AssertionError


@dataclass(frozen=True, eq=False)
class Study:
    """A Monte Carlo study: a problem, an optimizer, a hyperparameter grid × seeds.

    Args:
      problem: a :class:`~sgdlab.problems.Problem`.
      optimizer: a :class:`~sgdlab.optim.Optimizer`.
      hparams: name -> scalar (fixed) or 1-D sequence (a swept grid dimension).
        Every value is a traced array at run time. Swept dimensions form a
        Cartesian product in the order given.
      steps: number of SGD updates per member.
      seeds: number of seeds (members per grid point).
      observe, stationary, first_passage: the recorders (any may be None).
      seed: the base seed of every key.
      divergence_bound: a member whose largest |parameter| exceeds it is frozen
        and flagged (non-finite values always are).
      segment_steps: steps per compiled segment (default: about 20 segments).
      chunk_size: seeds per chunk (default: from ``memory_budget``).
      memory_budget: bytes a chunk may use (default: a quarter of the RAM, at
        most 4 GiB, on CPU; half of the free memory on an accelerator).
      keep_init: keep each member's initial parameters (needed by ``distance``).
      block_seeds: seeds per statistics block (default ``min(32, seeds)``). Streamed
        statistics are reduced on the device over blocks of this many seeds and the
        blocks are merged on the host in seed order, so that statistics, like every
        member's values, are bitwise independent of chunking and device count.
        Chunks (and device shards) hold whole blocks.

    Raises:
      ValueError: at construction, naming the field, the value and what is allowed.
    """

    problem: Problem
    optimizer: Optimizer
    hparams: Mapping[str, Any]
    steps: int
    seeds: int
    observe: Observe | None = field(default_factory=Observe)
    stationary: Stationary | None = None
    first_passage: FirstPassage | None = None
    seed: int = 0
    divergence_bound: float = math.inf
    segment_steps: int | None = None
    chunk_size: int | None = None
    memory_budget: int | None = None
    keep_init: bool = False
    block_seeds: int | None = None

    def __post_init__(self):
        if not isinstance(self.problem, Problem):
            fail("problem", type(self.problem).__name__, "expected a sgdlab Problem")
        if not isinstance(self.optimizer, Optimizer):
            fail("optimizer", type(self.optimizer).__name__, "expected a sgdlab Optimizer")
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        set_("steps", positive_int("steps", self.steps))
        set_("seeds", positive_int("seeds", self.seeds))
        set_("seed", positive_int("seed", self.seed, minimum=0))
        if isinstance(self.divergence_bound, bool) or not (
                isinstance(self.divergence_bound, int | float) and self.divergence_bound > 0):
            fail("divergence_bound", self.divergence_bound, "expected a positive number (or inf)")
        for name in ("segment_steps", "chunk_size", "memory_budget", "block_seeds"):
            if getattr(self, name) is not None:
                set_(name, positive_int(name, getattr(self, name)))
        set_("hparams", self._check_hparams(self.hparams))
        available = _builtin_observables(self.problem)
        if self.observe is not None:
            if not isinstance(self.observe, Observe):
                fail("observe", self.observe, "expected an Observe recorder or None")
            self.observe.steps_for(self.steps)
            names = [_resolve(spec, available, "observe.observables")[0]
                     for spec in self.observe.observables]
            for n in names:
                clash = [n + sfx for sfx in ("_mean", "_var", "_n") if n + sfx in names]
                if clash or names.count(n) > 1:
                    fail("observe.observables", n, "names must be distinct and not end like "
                         "another's statistics (" + ", ".join(clash or [n]) + ")")
        if self.stationary is not None:
            st = self.stationary
            if not isinstance(st, Stationary):
                fail("stationary", st, "expected a Stationary recorder or None")
            positive_int("stationary.burn_in", st.burn_in, minimum=0)
            if st.burn_in >= self.steps:
                fail("stationary.burn_in", st.burn_in, f"must be smaller than steps={self.steps}")
            positive_int("stationary.n_batches", st.n_batches)
            positive_int("stationary.thin", st.thin)
            if (self.steps - st.burn_in) // st.thin < st.n_batches:
                fail("stationary.n_batches", st.n_batches,
                     "need at least one recorded step per batch: lower n_batches or thin, "
                     "or run longer")
            if not st.observables:
                fail("stationary.observables", st.observables, "give at least one observable")
            for spec in st.observables:
                _resolve(spec, available, "stationary.observables")
        if self.first_passage is not None:
            fp = self.first_passage
            if not isinstance(fp, FirstPassage):
                fail("first_passage", fp, "expected a FirstPassage recorder or None")
            if isinstance(fp.predicate, str):
                if fp.predicate not in self.problem.events:
                    fail("first_passage.predicate", fp.predicate, "expected one of the problem's "
                         "events (" + ", ".join(sorted(self.problem.events)) + ") or a function")
            elif not callable(fp.predicate):
                fail("first_passage.predicate", fp.predicate,
                     "expected an event name or a function")

    def _check_hparams(self, hparams) -> dict[str, np.ndarray]:
        if not isinstance(hparams, Mapping):
            fail("hparams", hparams, "expected a mapping name -> value or list of values")
        opt = self.optimizer
        accepted = set(opt.accepted)
        out: dict[str, np.ndarray] = {}
        for name, value in hparams.items():
            if name not in accepted:
                fail("hparams", name, f"unknown hyperparameter for optimizer {opt.name!r} with "
                     f"schedule {opt.schedule!r}; accepted: " + ", ".join(sorted(accepted)))
            try:
                arr = np.asarray(value, dtype=float)
            except (TypeError, ValueError):
                fail(f"hparams.{name}", value, "expected a number or a list of numbers")
            if arr.ndim > 1 or arr.size == 0:
                fail(f"hparams.{name}", value, "expected a number or a non-empty 1-D list")
            if not np.all(np.isfinite(arr)):
                fail(f"hparams.{name}", value, "all values must be finite")
            lo, hi, open_lo = RANGES.get(name, (-math.inf, math.inf, False))
            for x in arr.reshape(-1):
                finite_float(f"hparams.{name}", x, low=lo, high=hi, low_open=open_lo)
            if arr.ndim == 1 and len(np.unique(arr)) != arr.size:
                fail(f"hparams.{name}", value, "grid values must be distinct")
            out[name] = arr
        for name in opt.required:
            if name not in out:
                fail("hparams", name, f"optimizer {opt.name!r} (schedule {opt.schedule!r}) needs "
                     f"{', '.join(opt.required)}; missing {name}")
        for name, default in opt.defaults.items():
            out.setdefault(name, np.asarray(default, dtype=float))
        return out

    # -- derived static facts
    @property
    def grid(self) -> dict[str, np.ndarray]:
        """The swept hyperparameters (grid dimensions, in order)."""
        return {k: v for k, v in self.hparams.items() if v.ndim == 1}

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(v.size for v in self.grid.values())

    @property
    def n_grid(self) -> int:
        return int(np.prod(self.grid_shape, dtype=np.int64))

    @property
    def block(self) -> int:
        return self.block_seeds or min(32, self.seeds)

    @property
    def n_members(self) -> int:
        return self.n_grid * self.seeds

    def flat_hparams(self) -> dict[str, np.ndarray]:
        """Every hyperparameter as a ``[G]`` array over the flattened grid."""
        grid = self.grid
        mesh = np.meshgrid(*grid.values(), indexing="ij") if grid else []
        flat = {k: m.reshape(-1) for k, m in zip(grid, mesh, strict=True)}
        g = self.n_grid
        for k, v in self.hparams.items():
            if v.ndim == 0:
                flat[k] = np.full(g, float(v))
        return flat

    def with_hparams(self, **hparams) -> Study:
        """A copy with some hyperparameter values replaced (same problem object)."""
        new = dict(self.hparams)
        new.update(hparams)
        return dataclasses.replace(self, hparams=new)

    def describe(self) -> dict[str, Any]:
        """A JSON-able description of the whole configuration."""
        def spec_name(s):
            return s if isinstance(s, str) else f"{s[0]} (function)"

        def rec(r):
            if r is None:
                return None
            d = dataclasses.asdict(r)
            if "observables" in d:
                d["observables"] = [spec_name(s) for s in r.observables]
            if isinstance(r, FirstPassage) and not isinstance(r.predicate, str):
                d["predicate"] = getattr(r.predicate, "__name__", "function")
            if isinstance(r, Observe) and not isinstance(r.at, str):
                d["at"] = [int(x) for x in r.at]
            return d

        return {
            "problem": {"name": self.problem.name, **_jsonable(dict(self.problem.config))},
            "optimizer": dataclasses.asdict(self.optimizer),
            "hparams": {k: v.tolist() for k, v in self.hparams.items()},
            "steps": self.steps, "seeds": self.seeds, "seed": self.seed,
            "observe": rec(self.observe), "stationary": rec(self.stationary),
            "first_passage": rec(self.first_passage),
            "divergence_bound": self.divergence_bound if math.isfinite(self.divergence_bound)
            else "inf",
            "keep_init": self.keep_init,
            "dtype": str(jnp.zeros(()).dtype),
        }


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


# --------------------------------------------------------------------------- member state


class MemberState(NamedTuple):
    """One member's state (leading axes ``[seed, grid]`` inside the engine)."""

    params: Any
    opt_state: Any
    loss: jnp.ndarray           # float, the last step's minibatch loss
    grad_norm: jnp.ndarray      # float, the last step's gradient norm
    params0: Any                # initial params, or None
    diverged_step: jnp.ndarray  # int32, -1 while alive
    event_step: jnp.ndarray     # int32, -1 until the first-passage event


class ObserveState(NamedTuple):
    ptr: jnp.ndarray            # int32 scalar: next record index
    values: dict                # name -> [S, G, R, ...] (members) or {}
    count: jnp.ndarray          # [S/B, G, R] live members counted, per block of B seeds
    mean: dict                  # name -> [S/B, G, R, ...]
    m2: dict                    # name -> [S/B, G, R, ...]


class StationaryState(NamedTuple):
    sums: dict                  # name -> [S, G, B, ...]
    counts: jnp.ndarray         # [B] steps summed into each batch


class Carry(NamedTuple):
    members: MemberState
    observe: ObserveState | None
    stationary: StationaryState | None
    data: Any


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


# --------------------------------------------------------------------------- the program


@dataclass(frozen=True)
class Plan:
    """How a study is laid out: chunks of seeds, segments of steps, memory."""

    members: int
    grid_points: int
    seeds: int
    chunk_seeds: int
    chunks: int
    padded_seeds: int
    segment_steps: int
    segments: int
    bytes_per_seed: int
    memory_budget: int
    devices: int = 1
    block_seeds: int = 1

    @property
    def estimated_bytes(self) -> int:
        return self.bytes_per_seed * self.chunk_seeds

    def describe(self) -> str:
        return (f"{self.members} members = {self.grid_points} grid points x {self.seeds} seeds; "
                f"{self.chunks} chunk(s) of {self.chunk_seeds} seeds "
                f"({self.padded_seeds} padding); {self.segments} segment(s) of "
                f"{self.segment_steps} steps; ~{self.estimated_bytes / 2**20:.1f} MiB per chunk "
                f"(budget {self.memory_budget / 2**20:.0f} MiB); {self.devices} device(s), "
                f"statistics in blocks of {self.block_seeds} seeds; 1 compile")


class _Program:
    """The compiled functions of one static configuration."""

    def __init__(self, study: Study, chunk_seeds: int, segment_steps: int):
        self.study = study
        self.chunk_seeds = chunk_seeds
        self.segment_steps = segment_steps
        problem = study.problem
        available = _builtin_observables(problem)
        self.obs_fns = ({n: f for n, f in (_resolve(s, available, "observe")
                                           for s in study.observe.observables)}
                        if study.observe else {})
        self.stat_fns = ({n: f for n, f in (_resolve(s, available, "stationary")
                                            for s in study.stationary.observables)}
                         if study.stationary else {})
        self.keep_init = study.keep_init or "distance" in self.obs_fns or \
            "distance" in self.stat_fns
        fp = study.first_passage
        self.event_fn = None
        if fp is not None:
            self.event_fn = problem.events[fp.predicate] if isinstance(fp.predicate, str) \
                else fp.predicate
        self.freeze_on_event = fp is not None and fp.freeze
        # the gradient norm costs a reduction per member-step: only when something reads it
        # (a user function might, so it is tracked whenever one is recorded)
        specs = list(study.observe.observables if study.observe else ()) + \
            list(study.stationary.observables if study.stationary else ())
        self.track_grad_norm = any(not isinstance(sp, str) or sp == "grad_norm"
                                   for sp in specs) or (fp is not None
                                                        and not isinstance(fp.predicate, str))
        self.noise = "noise_std" in study.hparams
        self.data_axis = None if problem.data.shared else 0
        self.record_steps = study.observe.steps_for(study.steps) if study.observe else None
        if study.stationary:
            st = study.stationary
            n_rec = (study.steps - st.burn_in) // st.thin
            self.batch_len = -(-n_rec // st.n_batches)
            self.n_batches = -(-n_rec // self.batch_len)
        self.bound = float(study.divergence_bound)
        self.init = jax.jit(self._init)
        self.segment = jax.jit(self._segment)

    # ---- one member
    def _observation(self, ms: MemberState, t, hp, data) -> Observation:
        return Observation(ms.params, ms.opt_state, ms.loss, ms.grad_norm, ms.params0, t, hp, data)

    def _member_step(self, ms: MemberState, batch, noise, hp, t, data):
        study = self.study
        alive = (ms.diverged_step < 0) & (t <= study.steps)
        if self.freeze_on_event:
            alive = alive & (ms.event_step < 0)
        loss, grads = jax.value_and_grad(study.problem.loss)(ms.params, batch, hp)
        if self.noise:
            grads = jax.tree_util.tree_map(lambda g, z: g + hp["noise_std"] * z, grads, noise)
        tx = study.optimizer.build(hp)
        updates, opt_state = tx.update(grads, ms.opt_state, ms.params)
        params = optax.apply_updates(ms.params, updates)
        ok = jnp.isfinite(loss) & _all_finite(params)
        if math.isfinite(self.bound):
            ok = ok & (_max_abs(params) <= self.bound)
        keep = alive & ok
        new = ms._replace(
            params=_select(keep, params, ms.params),
            opt_state=_select(keep, opt_state, ms.opt_state),
            loss=jnp.where(keep, loss, ms.loss),
            grad_norm=jnp.where(keep, _norm(grads), ms.grad_norm) if self.track_grad_norm
            else ms.grad_norm,
            diverged_step=jnp.where(alive & ~ok, t, ms.diverged_step),
        )
        if self.event_fn is not None:
            hit = keep & (ms.event_step < 0) & self.event_fn(self._observation(new, t, hp, data))
            new = new._replace(event_step=jnp.where(hit, t, ms.event_step))
        return new

    def _noise(self, key, params_like, t):
        leaves, treedef = jax.tree_util.tree_flatten(params_like)
        keys = jax.random.split(jax.random.fold_in(key, t), len(leaves))
        return jax.tree_util.tree_unflatten(
            treedef, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves,
                                                                             strict=True)])

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

    def _record(self, state: ObserveState, members, hp, data, valid, t):
        study = self.study
        b = study.block
        mask = self._live(members, valid)
        mask_b = mask.reshape((-1, b) + mask.shape[1:])                   # [S/B, B, G]
        count = jnp.sum(mask_b, axis=1, dtype=jnp.int32)                   # [S/B, G]
        values, means, m2s = dict(state.values), dict(state.mean), dict(state.m2)
        for name, fn in self.obs_fns.items():
            v = self._evaluate(fn, members, hp, data, t)
            if study.observe.members:
                values[name] = values[name].at[:, :, state.ptr].set(v)
            if study.observe.stats:
                vb = v.reshape((-1, b) + v.shape[1:])
                extra = (1,) * (v.ndim - 2)
                m = mask_b.reshape(mask_b.shape + extra)
                c = jnp.maximum(count, 1).reshape(count.shape + extra)
                mean = jnp.sum(jnp.where(m, vb, 0), axis=1) / c
                m2 = jnp.sum(jnp.where(m, (vb - mean[:, None]) ** 2, 0), axis=1)
                means[name] = means[name].at[:, :, state.ptr].set(mean)
                m2s[name] = m2s[name].at[:, :, state.ptr].set(m2)
        new_count = state.count.at[:, :, state.ptr].set(count) if study.observe.stats \
            else state.count
        return ObserveState(state.ptr + 1, values, new_count, means, m2s)

    def _init(self, hp, seed_index, valid, base_seed):
        study, problem = self.study, self.study.problem
        init_k, data_k, _ = jax.vmap(_seed_keys, in_axes=(None, 0))(base_seed, seed_index)
        if problem.data.shared:
            data = problem.data.init(shared_key(base_seed))
        else:
            data = jax.vmap(problem.data.init)(data_k)
        g = study.n_grid
        params_s = jax.vmap(problem.init)(init_k)

        def per_seed(p, dk, d):
            batch = problem.data.batch(d, dk, jnp.int32(0))

            def per_member(h):
                loss, grads = jax.value_and_grad(problem.loss)(p, batch, h)
                return (p, study.optimizer.build(h).init(p), loss, _norm(grads))
            return jax.vmap(per_member)(hp)

        params, opt_state, loss, gnorm = jax.vmap(per_seed)(
            params_s, data_k, self._per_seed_data(data, seed_index.shape[0]))
        s = seed_index.shape[0]
        members = MemberState(
            params=params, opt_state=opt_state, loss=loss, grad_norm=gnorm,
            params0=params if self.keep_init else None,
            diverged_step=jnp.full((s, g), -1, jnp.int32),
            event_step=jnp.full((s, g), -1, jnp.int32))
        t0 = jnp.int32(0)
        if self.event_fn is not None:
            hit = self._evaluate(self.event_fn, members, hp, data, t0)
            members = members._replace(event_step=jnp.where(hit, 0, -1).astype(jnp.int32))
        obs_state = None
        if study.observe is not None:
            r = len(self.record_steps)
            nb = s // study.block
            values, means, m2s = {}, {}, {}
            for name, fn in self.obs_fns.items():
                v = self._evaluate(fn, members, hp, data, t0)  # shape only; DCE'd
                if study.observe.members:
                    values[name] = jnp.full((s, g, r) + v.shape[2:], jnp.nan, v.dtype)
                if study.observe.stats:
                    means[name] = jnp.full((nb, g, r) + v.shape[2:], jnp.nan, v.dtype)
                    m2s[name] = jnp.full((nb, g, r) + v.shape[2:], jnp.nan, v.dtype)
            obs_state = ObserveState(jnp.int32(0), values, jnp.zeros((nb, g, r), jnp.int32),
                                     means, m2s)
            if self.record_steps[0] == 0:
                obs_state = self._record(obs_state, members, hp, data, valid, t0)
        st_state = None
        if study.stationary is not None:
            sums = {}
            for name, fn in self.stat_fns.items():
                v = self._evaluate(fn, members, hp, data, t0)  # shape only; DCE'd
                sums[name] = jnp.zeros((s, g, self.n_batches) + v.shape[2:], v.dtype)
            st_state = StationaryState(sums, jnp.zeros((self.n_batches,), jnp.int32))
        return Carry(members, obs_state, st_state, data)

    def _segment(self, carry: Carry, t0, hp, seed_index, valid, base_seed):
        global TRACE_COUNT
        TRACE_COUNT += 1
        study, problem = self.study, self.study.problem
        _, data_k, noise_k = jax.vmap(_seed_keys, in_axes=(None, 0))(base_seed, seed_index)
        data = carry.data
        rec_steps = jnp.asarray(self.record_steps, jnp.int32) if study.observe else None

        def per_seed(ms_g, dk, nk, d, t):
            batch = problem.data.batch(d, dk, t)
            noise = None
            if self.noise:
                first = jax.tree_util.tree_map(lambda x: x[0], ms_g.params)
                noise = self._noise(nk, first, t)
            return jax.vmap(self._member_step, in_axes=(0, None, None, 0, None, None))(
                ms_g, batch, noise, hp, t, d)

        data_s = self._per_seed_data(data, seed_index.shape[0])

        def body(c: Carry, t):
            members = jax.vmap(per_seed, in_axes=(0, 0, 0, 0, None))(
                c.members, data_k, noise_k, data_s, t)
            obs_state = c.observe
            if obs_state is not None:
                r = rec_steps.shape[0]
                due = (obs_state.ptr < r) & (t == rec_steps[jnp.minimum(obs_state.ptr, r - 1)])
                obs_state = jax.lax.cond(
                    due, lambda s: self._record(s, members, hp, data, valid, t), lambda s: s,
                    obs_state)
            st_state = c.stationary
            if st_state is not None:
                st = study.stationary
                k = t - st.burn_in
                due = (k > 0) & (t <= study.steps) & ((k % st.thin) == 0)

                def accumulate(s: StationaryState):
                    b = (k // st.thin - 1) // self.batch_len
                    sums = {name: s.sums[name].at[:, :, b].add(
                        self._evaluate(fn, members, hp, data, t))
                        for name, fn in self.stat_fns.items()}
                    return StationaryState(sums, s.counts.at[b].add(1))
                st_state = jax.lax.cond(due, accumulate, lambda s: s, st_state)
            return Carry(members, obs_state, st_state, data), None

        ts = t0 + 1 + jnp.arange(self.segment_steps, dtype=jnp.int32)
        carry, _ = jax.lax.scan(body, carry, ts)
        return carry


_PROGRAMS: dict[tuple, _Program] = {}


def _static_key(study: Study, chunk_seeds: int, segment_steps: int, devices: int) -> tuple:
    return (study.problem, study.optimizer, study.observe, study.stationary,
            study.first_passage, study.steps, study.divergence_bound, study.keep_init,
            study.block, tuple((k, v.shape) for k, v in study.hparams.items()), chunk_seeds,
            segment_steps, devices, str(jnp.zeros(()).dtype))


def _program(study: Study, chunk_seeds: int, segment_steps: int, devices: int = 1) -> _Program:
    key = _static_key(study, chunk_seeds, segment_steps, devices)
    prog = _PROGRAMS.get(key)
    if prog is None:
        prog = _PROGRAMS[key] = _Program(study, chunk_seeds, segment_steps)
        if devices > 1:
            _shard(prog, devices)
    else:
        prog.study = study  # same static structure; hyperparameter values are arguments
    return prog


def _shard(prog: _Program, devices: int):
    """Shard the seed axis of a program over ``devices`` local devices (no collectives).

    Each device runs the same vmapped program on its own whole blocks of seeds;
    the statistics stay per block, so the results are bitwise those of one device.
    """
    from jax.sharding import PartitionSpec as P

    mesh = jax.make_mesh((devices,), ("seeds",), devices=jax.local_devices()[:devices])
    seeds, rep = P("seeds"), P()
    study = prog.study
    obs_spec = (ObserveState(rep, seeds, seeds, seeds, seeds) if study.observe else None)
    st_spec = StationaryState(seeds, rep) if study.stationary else None
    data_spec = rep if prog.data_axis is None else seeds
    carry_spec = Carry(seeds, obs_spec, st_spec, data_spec)
    init = jax.jit(jax.shard_map(prog._init, mesh=mesh, in_specs=(rep, seeds, seeds, rep),
                                 out_specs=carry_spec, check_vma=False))
    segment = jax.jit(jax.shard_map(
        prog._segment, mesh=mesh, in_specs=(carry_spec, rep, rep, seeds, seeds, rep),
        out_specs=carry_spec, check_vma=False))

    def put(tree, spec):
        sharding = jax.tree_util.tree_map(lambda p: jax.sharding.NamedSharding(mesh, p), spec,
                                          is_leaf=lambda x: isinstance(x, P))
        return jax.device_put(tree, sharding)

    def sharded_init(hp, seed_index, valid, base_seed):
        return init(put(hp, rep), put(seed_index, seeds), put(valid, seeds), put(base_seed, rep))

    def sharded_segment(carry, t0, hp, seed_index, valid, base_seed):
        return segment(put(carry, carry_spec), put(t0, rep), put(hp, rep), put(seed_index, seeds),
                       put(valid, seeds), put(base_seed, rep))

    sharded_init.lower = lambda *a: init.lower(*a)  # for memory analysis / dry runs
    sharded_segment.lower = lambda *a: segment.lower(*a)
    prog.init, prog.segment = sharded_init, sharded_segment


def default_memory_budget() -> int:
    """Bytes a chunk may use: half the free accelerator memory, or 1/4 of RAM (≤ 4 GiB)."""
    dev = jax.devices()[0]
    if dev.platform != "cpu":
        stats = dev.memory_stats() or {}
        limit = stats.get("bytes_limit")
        if limit:
            return int(0.5 * (limit - stats.get("bytes_in_use", 0)))
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 * 2**30
    return int(min(ram // 4, 4 * 2**30))


def _tree_bytes(tree) -> int:
    return int(sum(np.prod(x.shape, dtype=np.int64) * x.dtype.itemsize
                   for x in jax.tree_util.tree_leaves(tree)))


def _check_devices(devices: int | None) -> int:
    n = len(jax.local_devices())
    if devices is None:
        return n
    devices = positive_int("devices", devices)
    if devices > n:
        fail("devices", devices, f"this process sees {n} device(s)")
    return devices


def _probe_bytes(study: Study, segment: int) -> int:
    """Bytes per seed of the compiled segment program, from XLA's buffer assignment
    (arguments + outputs + temporaries) of a probe chunk of two blocks."""
    b = study.block
    probe = _Program(study, 2 * b, segment)
    hp = {k: jnp.asarray(v) for k, v in study.flat_hparams().items()}
    idx, valid = jnp.zeros(2 * b, jnp.int32), jnp.ones(2 * b, bool)
    carry = jax.eval_shape(probe._init, hp, idx, valid, jnp.uint32(study.seed))
    m = probe.segment.lower(carry, jnp.int32(0), hp, idx, valid, jnp.uint32(study.seed)) \
        .compile().memory_analysis()
    total = m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes \
        - m.alias_size_in_bytes
    return int(total / (2 * b))


def plan(study: Study, chunk_size: int | None = None, memory_budget: int | None = None,
         devices: int | None = None, measure: bool | None = None) -> Plan:
    """Lay a study out in chunks, device shards and segments; estimate the memory.

    The quick estimate per seed is the carried state of one seed (all its grid
    points: parameters, optimizer state, recorder buffers, data) times 3 (old and
    new carry, gradients) plus 4 copies of the step's batch per grid point. It
    misses the temporaries of observables (a risk on an evaluation sample can
    dominate), so unless it is 8x below the budget (or ``measure=True``, as in
    ``--dry-run``) the estimate is the compiled program's own buffer sizes, from a
    probe of two blocks scaled per seed. A chunk holds whole blocks of
    ``study.block`` seeds on each device; the last chunk is padded.
    """
    devices = _check_devices(devices)
    segment = study.segment_steps or max(1, -(-study.steps // 20))
    segment = min(segment, study.steps)
    b = study.block
    probe = _Program(study, b, segment)
    hp = {k: jnp.asarray(v) for k, v in study.flat_hparams().items()}
    carry = jax.eval_shape(probe._init, hp, jnp.zeros(b, jnp.int32), jnp.ones(b, bool),
                           jnp.uint32(study.seed))
    per_seed = (3 * _tree_bytes(carry.members) + _tree_bytes(carry.observe)
                + _tree_bytes(carry.stationary)) / b
    shared = study.problem.data.shared
    per_seed += _tree_bytes(carry.data) / (1 if shared else b)  # shared data broadcast per seed
    data_one = carry.data if shared else jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), carry.data)
    batch = jax.eval_shape(lambda d: study.problem.data.batch(d, jax.random.key(0), jnp.int32(1)),
                           data_one)
    per_seed += 4 * _tree_bytes(batch) * study.n_grid
    per_seed = int(per_seed)
    budget = memory_budget or study.memory_budget or default_memory_budget()
    # the quick estimate can miss several-fold; measure unless it is far below the budget
    roomy = 8 * per_seed * study.seeds <= budget * devices
    if measure or (measure is None and not roomy and chunk_size is None
                   and study.chunk_size is None):
        per_seed = max(per_seed, _probe_bytes(study, segment))
    unit = b * devices  # a chunk is whole blocks on every device
    chunk = chunk_size or study.chunk_size
    if chunk is None:
        chunk = max(1, min(study.seeds, devices * budget // max(per_seed, 1)))
    chunk = positive_int("chunk_size", chunk)
    n_units = -(-study.seeds // unit)
    per_chunk = n_units if chunk >= study.seeds else min(max(1, chunk // unit), n_units)
    n_chunks = -(-n_units // per_chunk)
    per_chunk = -(-n_units // n_chunks)  # balance the chunks
    chunk = per_chunk * unit
    return Plan(members=study.n_members, grid_points=study.n_grid, seeds=study.seeds,
                chunk_seeds=chunk, chunks=n_chunks, padded_seeds=chunk * n_chunks - study.seeds,
                segment_steps=segment, segments=-(-study.steps // segment),
                bytes_per_seed=per_seed, memory_budget=int(budget), devices=devices,
                block_seeds=b)


# --------------------------------------------------------------------------- running


class Interrupted(Exception):
    """A run stopped at a segment boundary on request (SIGINT/SIGTERM); resumable."""


_STOP = {"requested": False}


def request_stop(*_):
    """Ask running studies to stop at the next segment boundary (a signal handler)."""
    _STOP["requested"] = True


def clear_stop() -> None:
    """Forget a stop request (at the start and end of a run)."""
    _STOP["requested"] = False


class Progress:
    """A one-line progress bar on stderr, shown once a run has taken > 2 s."""

    def __init__(self, total: int, enabled: bool = True, label: str = "sgdlab", done: int = 0):
        self.total, self.enabled, self.label = total, enabled, label
        self.start, self.done, self.shown = time.perf_counter(), done, False

    def tick(self, n: int = 1, note: str = ""):
        self.done += n
        elapsed = time.perf_counter() - self.start
        if not self.enabled or (elapsed < 2.0 and not self.shown):
            return
        self.shown = True
        frac = self.done / max(self.total, 1)
        bar = "#" * int(30 * frac)
        sys.stderr.write(f"\r[{self.label}] [{bar:<30}] {100 * frac:5.1f}% {elapsed:6.1f}s "
                         f"{note}  ")
        sys.stderr.flush()

    def close(self):
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _merge_stats(acc, new):
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


def _flatten(tree, prefix="") -> dict[str, np.ndarray]:
    """Nested dicts of arrays -> {"a/b/c": array} (for npz checkpoints, no pickle)."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = np.asarray(v)
    return out


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict:
    out: dict = {}
    for path, v in flat.items():
        node = out
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """The differing keys of two nested configurations, as ``key: old -> new`` lines."""
    keys = sorted(set(a) | set(b))
    diff = []
    for k in keys:
        va, vb = a.get(k, "<missing>"), b.get(k, "<missing>")
        if isinstance(va, dict) and isinstance(vb, dict):
            diff += config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            diff.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return diff


class Checkpoint:
    """Atomic checkpoints of a run in one ``.npz`` file (no pickle).

    Holds the configuration (JSON) and its hash, the layout (chunk and segment
    sizes), the host results of finished chunks and the carried state of the
    current chunk (members, optimizer and recorder states) at a segment boundary.
    """

    def __init__(self, path, every_seconds: float = 60.0, every_steps: int | None = None):
        self.path = os.fspath(path)
        self.every_seconds, self.every_steps = every_seconds, every_steps
        self.last_time, self.last_step = time.perf_counter(), 0
        self.writes = 0

    def due(self, global_step: int) -> bool:
        if self.every_steps is not None and global_step - self.last_step >= self.every_steps:
            return True
        return time.perf_counter() - self.last_time >= self.every_seconds

    def write(self, meta: dict, done: dict, carry, global_step: int):
        arrays = {f"done/{k}": v for k, v in _flatten(done).items()}
        if carry is not None:
            for i, leaf in enumerate(jax.tree_util.tree_leaves(jax.device_get(carry))):
                arrays[f"carry/{i}"] = np.asarray(leaf)
        arrays["meta"] = np.asarray(json.dumps(meta, sort_keys=True))
        tmp = f"{self.path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.last_time, self.last_step = time.perf_counter(), global_step
        self.writes += 1

    def read(self) -> tuple[dict, dict, list[np.ndarray]] | None:
        if not os.path.exists(self.path):
            return None
        with np.load(self.path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            done = _unflatten({k[5:]: z[k] for k in z.files if k.startswith("done/")})
            n = sum(k.startswith("carry/") for k in z.files)
            leaves = [z[f"carry/{i}"] for i in range(n)]
        return meta, done, leaves


def run(study: Study, *, progress: bool = True, chunk_size: int | None = None,
        memory_budget: int | None = None, devices: int | None = None,
        checkpoint: str | os.PathLike | Checkpoint | None = None):
    """Run every member of a study and return the labeled results (``xarray.Dataset``).

    Args:
      study: the study.
      progress: show a progress bar (advanced per segment) for runs longer than 2 s.
      chunk_size, memory_budget: override the layout (see :func:`plan`).
      devices: number of local devices to shard the seeds over (default: all).
        Under ``jax.distributed`` (several processes) each process runs its share
        of the chunks on its local devices and the results are gathered to every
        process, bitwise equal to a one-process run.
      checkpoint: a path (or :class:`Checkpoint`) to write checkpoints to at segment
        boundaries; if it holds a checkpoint of the same configuration the run
        resumes from it (bitwise identically), of another configuration it is
        refused naming the differing keys.

    Raises:
      Interrupted: :func:`request_stop` was called (e.g. by a signal handler); a
        checkpoint was written first when one was given.

    See :mod:`sgdlab.results` for the layout of the returned Dataset.
    """
    from sgdlab import results

    ckpt = checkpoint if isinstance(checkpoint, Checkpoint | None) else Checkpoint(checkpoint)
    config = study.describe()
    state = ckpt.read() if ckpt is not None else None
    if state is not None:
        meta = state[0]
        diff = config_diff(meta["config"], config)
        if diff:
            fail("checkpoint", ckpt.path, "it belongs to a different configuration ("
                 + "; ".join(diff) + "); use another output or --force")
        chunk_size, devices = meta["chunk_seeds"], min(meta["devices"], len(jax.local_devices()))
        if meta["chunk_seeds"] % (study.block * devices):
            devices = 1
    p = plan(study, chunk_size, memory_budget, devices)
    prog = _program(study, p.chunk_seeds, p.segment_steps, p.devices)
    hp = {k: jnp.asarray(v) for k, v in study.flat_hparams().items()}
    base_seed = jnp.uint32(study.seed)
    chunks: list[dict] = []
    start_chunk, start_seg, carry0 = 0, 0, None
    if state is not None:
        meta, done, leaves = state
        chunks = [done[str(i)] for i in range(meta["chunk"])]
        start_chunk, start_seg = meta["chunk"], meta["segment"]
        if leaves:
            template = jax.eval_shape(
                prog.init, hp, jnp.zeros(p.chunk_seeds, jnp.int32), jnp.ones(p.chunk_seeds, bool),
                base_seed)
            carry0 = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template),
                                                  [jnp.asarray(x) for x in leaves])
    total = p.chunks * p.segments
    bar = Progress(total, enabled=progress, done=start_chunk * p.segments + start_seg)
    t_start = time.perf_counter()

    def save(c, seg, carry):
        meta = {"config": config, "chunk_seeds": p.chunk_seeds, "devices": p.devices,
                "segment_steps": p.segment_steps, "chunk": c, "segment": seg,
                "format": results.FORMAT}
        ckpt.write(meta, {str(i): ch for i, ch in enumerate(chunks)}, carry,
                   c * study.steps + seg * p.segment_steps)

    nproc = jax.process_count()
    if nproc > 1:
        if ckpt is not None:
            fail("checkpoint", ckpt.path, "checkpointing a multi-process run is not supported; "
                 "run without a checkpoint (or one process per study)")
        chunks = _run_multiprocess(prog, p, hp, base_seed, bar, study.seeds)
    for c in range(start_chunk, p.chunks if nproc == 1 else 0):
        idx = np.arange(c * p.chunk_seeds, (c + 1) * p.chunk_seeds)
        valid = idx < study.seeds
        seed_index, valid_j = jnp.asarray(idx, jnp.int32), jnp.asarray(valid)
        if carry0 is not None and c == start_chunk:
            carry, first = carry0, start_seg
        else:
            carry, first = prog.init(hp, seed_index, valid_j, base_seed), 0
        for seg in range(first, p.segments):
            carry = prog.segment(carry, jnp.int32(seg * p.segment_steps), hp, seed_index,
                                 valid_j, base_seed)
            jax.block_until_ready(carry.members.diverged_step)
            bar.tick(1, f"chunk {c + 1}/{p.chunks}")
            last = seg + 1 == p.segments
            if _STOP["requested"]:
                bar.close()
                if ckpt is not None:
                    if last:
                        chunks.append(_collect(prog, carry, valid))
                        save(c + 1, 0, None)
                    else:
                        save(c, seg + 1, carry)
                raise Interrupted(f"stopped after segment {seg + 1}/{p.segments} of chunk "
                                  f"{c + 1}/{p.chunks}")
            if ckpt is not None and not last and ckpt.due(c * study.steps + (seg + 1)
                                                          * p.segment_steps):
                save(c, seg + 1, carry)
        chunks.append(_collect(prog, carry, valid))
        if ckpt is not None and c + 1 < p.chunks and ckpt.due((c + 1) * study.steps):
            save(c + 1, 0, None)
    bar.close()
    out = _merge_chunks(prog, chunks)
    return results.to_dataset(study, prog, out, p, runtime_s=time.perf_counter() - t_start)


def _run_multiprocess(prog: _Program, p: Plan, hp, base_seed, bar: Progress, seeds: int):
    """Chunks round-robin over ``jax.process_count()`` processes (``jax.distributed``).

    Process ``q`` runs chunks ``q, q + P, q + 2P, ...`` on its local devices; after
    each round the final carries are gathered to every process
    (``process_allgather``, the only collective, outside the hot loop) and collected
    in chunk order, so the result is bitwise that of a single process.
    """
    from jax.experimental import multihost_utils

    nproc, pid = jax.process_count(), jax.process_index()
    chunks = []
    bar.total = -(-p.chunks // nproc) * p.segments
    for r in range(-(-p.chunks // nproc)):
        c = r * nproc + pid  # may be past the last chunk: then all its seeds are padding
        idx = np.arange(c * p.chunk_seeds, (c + 1) * p.chunk_seeds)
        seed_index, valid = jnp.asarray(idx, jnp.int32), jnp.asarray(idx < seeds)
        carry = prog.init(hp, seed_index, valid, base_seed)
        for seg in range(p.segments):
            carry = prog.segment(carry, jnp.int32(seg * p.segment_steps), hp, seed_index, valid,
                                 base_seed)
            jax.block_until_ready(carry.members.diverged_step)
            bar.tick(1, f"round {r + 1}, process {pid + 1}/{nproc}")
        leaves, treedef = jax.tree_util.tree_flatten(jax.device_get(carry))
        gathered = [np.asarray(multihost_utils.process_allgather(np.asarray(x), tiled=False))
                    for x in leaves]
        for q in range(nproc):
            cq = r * nproc + q
            if cq < p.chunks:
                idx_q = np.arange(cq * p.chunk_seeds, (cq + 1) * p.chunk_seeds)
                carry_q = jax.tree_util.tree_unflatten(treedef, [g[q] for g in gathered])
                chunks.append(_collect(prog, carry_q, idx_q < seeds))
    return chunks


def _collect(prog: _Program, carry: Carry, valid: np.ndarray) -> dict:
    """One chunk's results on the host (nested dicts of arrays), padded seeds dropped."""
    study = prog.study
    m = carry.members
    n_valid = int(valid.sum())
    out: dict[str, Any] = {
        "diverged_step": np.asarray(m.diverged_step)[valid],
        "event_step": np.asarray(m.event_step)[valid],
    }
    if carry.observe is not None:
        o = carry.observe
        out["values"] = {k: np.asarray(v)[valid] for k, v in o.values.items()}
        blocks = -(-n_valid // study.block)  # blocks holding at least one valid seed
        out["stats"] = {k: {"count": np.asarray(o.count)[:blocks].astype(np.int64),
                            "mean": np.asarray(o.mean[k], np.float64)[:blocks],
                            "m2": np.asarray(o.m2[k], np.float64)[:blocks]} for k in o.mean}
    if carry.stationary is not None:
        st = carry.stationary
        counts = np.asarray(st.counts).astype(np.float64)
        out["stationary"] = {}
        for k, sums in st.sums.items():
            sums = np.asarray(sums, np.float64)[valid]                     # [S, G, B, ...]
            d = {"time_average": np.sum(sums, axis=2) / counts.sum()}
            if study.stationary.members:
                d["batch_means"] = sums / counts.reshape((1, 1, -1) + (1,) * (sums.ndim - 3))
            out["stationary"][k] = d
    return out


def _merge_chunks(prog: _Program, chunks: list[dict]) -> dict:
    """Concatenate members over chunks; merge block statistics in seed order."""
    def cat(get):
        return np.concatenate([get(c) for c in chunks])

    out: dict[str, Any] = {"diverged_step": cat(lambda c: c["diverged_step"]),
                           "event_step": cat(lambda c: c["event_step"])}
    alive = out["diverged_step"] < 0
    if "values" in chunks[0]:
        out["values"] = {k: cat(lambda c, k=k: c["values"][k]) for k in chunks[0]["values"]}
        out["stats"] = {}
        for k in chunks[0]["stats"]:
            count = cat(lambda c, k=k: c["stats"][k]["count"])
            mean = cat(lambda c, k=k: c["stats"][k]["mean"])
            m2 = cat(lambda c, k=k: c["stats"][k]["m2"])
            acc = None
            for i in range(count.shape[0]):
                acc = _merge_stats(acc, (count[i], mean[i], m2[i]))
            out["stats"][k] = acc
    if "stationary" in chunks[0]:
        out["stationary"] = {}
        for k in chunks[0]["stationary"]:
            tavg = cat(lambda c, k=k: c["stationary"][k]["time_average"])   # [S, G, ...]
            live = alive.reshape(alive.shape + (1,) * (tavg.ndim - 2))
            n = np.sum(alive, axis=0).astype(np.int64)
            nb = n.reshape(n.shape + (1,) * (tavg.ndim - 2))
            mean = np.sum(np.where(live, tavg, 0.0), axis=0) / np.maximum(nb, 1)
            m2 = np.sum(np.where(live, (tavg - mean) ** 2, 0.0), axis=0)
            mean = np.where(nb > 0, mean, np.nan)
            d = {"stats": (n, mean, m2)}
            if "batch_means" in chunks[0]["stationary"][k]:
                bm = cat(lambda c, k=k: c["stationary"][k]["batch_means"])
                d["batch_means"] = np.where(live[:, :, None], bm, np.nan)
            else:
                d["batch_means"] = None
            out["stationary"][k] = d
    return out


def versions() -> dict[str, str]:
    """Versions of the packages a result depends on."""
    import platform

    import jaxlib
    import xarray

    from sgdlab import __version__

    return {"sgdlab": __version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "optax": optax.__version__, "numpy": np.__version__, "xarray": xarray.__version__,
            "python": platform.python_version()}


def device_description() -> str:
    devs = jax.devices()
    d = devs[0]
    return f"{d.platform}:{getattr(d, 'device_kind', d.platform)} x{len(devs)}"


def config_json(study: Study) -> str:
    return json.dumps(study.describe(), sort_keys=True)


__all__ = ["Study", "Observe", "Stationary", "FirstPassage", "Plan", "MemberState", "run",
           "plan", "TRACE_COUNT", "shared_key", "Checkpoint", "Interrupted", "request_stop"]
