"""Layout: chunks of seeds, segments of steps, memory probe, device sharding."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

import jax
import numpy as np

from sgdlab._validate import fail, positive_int
from sgdlab.engine._compiled import (
    _Program,
    _static_key,
    chunk_seeds,
    jit_flat,
    program_inputs,
    remember,
    tile_steps,
)
from sgdlab.engine._state import Carry, abstract_key
from sgdlab.engine._study import Study


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
    lower_s: float | None = None
    """Seconds to trace and lower the segment program (measured plans only)."""
    compile_s: float | None = None
    """Seconds of XLA compilation of the segment program (measured plans only)."""
    member_layout: str = "vmap"
    """How a step runs the members of a chunk (:attr:`Study.member_layout`, decided)."""

    @property
    def estimated_bytes(self) -> int:
        return self.bytes_per_seed * self.chunk_seeds

    @property
    def compiles(self) -> int:
        """Compiled programs this plan runs (one per study)."""
        return 1

    def describe(self) -> str:
        return (f"{self.members} members = {self.grid_points} grid points x {self.seeds} seeds; "
                f"{self.chunks} chunk(s) of {self.chunk_seeds} seeds "
                f"({self.padded_seeds} padding); {self.segments} segment(s) of "
                f"{self.segment_steps} steps; ~{self.estimated_bytes / 2**20:.1f} MiB per chunk "
                f"(budget {self.memory_budget / 2**20:.0f} MiB); {self.devices} device(s), "
                f"statistics in blocks of {self.block_seeds} seeds; "
                + ("members one after another in each step; " if self.member_layout == "map"
                   else "") + "1 compile"
                + (f" (measured on a probe: {self.lower_s:.2f} s lowering + "
                   f"{self.compile_s:.2f} s XLA)" if self.compile_s is not None else ""))


@dataclass(frozen=True)
class StaticPlan:
    """The plans of a static sweep: one compiled program per combination of values."""

    names: tuple[str, ...]
    plans: Mapping[tuple, Plan]
    compiles: int  # distinct programs (combinations differing only in arrays share one)

    @property
    def members(self) -> int:
        return sum(p.members for p in self.plans.values())

    @property
    def estimated_bytes(self) -> int:
        return max(p.estimated_bytes for p in self.plans.values())

    def describe(self) -> str:
        parts = [", ".join(f"{k}={v!r}" for k, v in zip(self.names, combo, strict=True))
                 + ": " + p.describe() for combo, p in self.plans.items()]
        return (f"static sweep over {', '.join(self.names)}: {len(self.plans)} combinations, "
                f"{self.compiles} compile(s) [" + "; ".join(parts) + "]")


def _shard(prog: _Program, devices: int):
    """Shard the seed axis of a program over ``devices`` local devices (no collectives).

    Each device runs the same vmapped program on its own whole blocks of seeds;
    the statistics stay per block, so the results are bitwise those of one device.
    """
    from jax.sharding import PartitionSpec as P

    mesh = jax.make_mesh((devices,), ("seeds",), devices=jax.local_devices()[:devices])
    seeds, rep = P("seeds"), P()
    rec_specs = tuple(r.spec(prog, seeds, rep) if callable(getattr(r, "spec", None)) else seeds
                      for r in prog.recorders)
    data_spec = rep if prog.data_axis is None else seeds
    carry_spec = Carry(seeds, rec_specs, data_spec)
    # flat outputs, as on one device: equal computations share one cache entry
    init = jit_flat(jax.shard_map(prog._init, mesh=mesh, in_specs=(rep, seeds, seeds, rep, rep),
                                  out_specs=carry_spec, check_vma=False))
    segment = jit_flat(jax.shard_map(
        prog._segment, mesh=mesh, in_specs=(carry_spec, rep, rep, seeds, seeds, rep, rep, rep),
        out_specs=carry_spec, check_vma=False), donate=(0,))  # as on one device

    def put(tree, spec):
        sharding = jax.tree_util.tree_map(lambda p: jax.sharding.NamedSharding(mesh, p), spec,
                                          is_leaf=lambda x: isinstance(x, P))
        return jax.device_put(tree, sharding)

    def sharded_init(hp, seed_keys, valid, shared, arrays=None):
        return init(put(hp, rep), put(seed_keys, seeds), put(valid, seeds), put(shared, rep),
                    put(arrays, rep))

    def sharded_segment(carry, t0, hp, seed_keys, valid, shared, arrays=None,
                        n_segments=None):
        return segment(put(carry, carry_spec), put(t0, rep), put(hp, rep), put(seed_keys, seeds),
                       put(valid, seeds), put(shared, rep), put(arrays, rep),
                       put(n_segments, rep))

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
    return _probe(study, segment)[0]


def _probe(study: Study, segment: int) -> tuple[int, float, float]:
    """``(bytes per seed, lowering seconds, XLA seconds)`` of the segment program, from a
    probe chunk of two blocks (compile time hardly depends on the chunk size)."""
    b = study.block
    probe = _Program(study, 2 * b, segment)
    hp, arrays, shared = program_inputs(study)
    keys, valid = chunk_seeds(study, 0, 2 * b)
    carry = jax.eval_shape(probe._init, hp, keys, valid, shared, arrays)
    t0 = time.perf_counter()
    lowered = probe.segment.lower(carry, np.int32(0), hp, keys, valid, shared, arrays)
    t1 = time.perf_counter()
    m = lowered.compile().memory_analysis()
    t2 = time.perf_counter()
    total = m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes \
        - m.alias_size_in_bytes
    return int(total / (2 * b)), t1 - t0, t2 - t1


_PER_SEED: dict[tuple, int] = {}
"""Quick per-seed byte estimates of recent plans, by static configuration (a plan traces the
initial state for it, which costs a small study more than running it)."""


def _quick_bytes_per_seed(study: Study, segment: int) -> int:
    """The quick estimate of a seed's bytes (see :func:`plan`), cached per configuration
    (the static key holds a pytree problem's array shapes and dtypes)."""
    return remember(_PER_SEED, _static_key(study, study.block, segment, 1),
                    lambda: _bytes_per_seed(study, segment))


def _bytes_per_seed(study: Study, segment: int) -> int:
    b = study.block
    probe = _Program(study, b, segment)
    hp, arrays, shared_key = program_inputs(study)
    carry = jax.eval_shape(probe._init, hp, *chunk_seeds(study, 0, b), shared_key, arrays)
    per_seed = (3 * _tree_bytes(carry.members) + _tree_bytes(carry.records)) / b
    shared = study.problem.data.shared
    per_seed += _tree_bytes(carry.data) / (1 if shared else b)  # shared data broadcast per seed
    data_one = carry.data if shared else jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), carry.data)
    batch = jax.eval_shape(study.problem.data.batch, data_one, abstract_key(),
                           jax.ShapeDtypeStruct((), np.int32))
    per_seed += 4 * _tree_bytes(batch) * study.n_grid
    tile = tile_steps(study)  # a tile's blocks of batches and of gradient noise, per seed
    if tile > 1:
        noise = 0
        if "noise_std" in study.hparams:
            noise = _tree_bytes(carry.members.params) // max(b * study.n_grid, 1)
        per_seed += tile * (_tree_bytes(batch) + noise)
    return int(per_seed)


def default_segment(study: Study) -> int:
    """Steps per segment when the study does not set them: about a twentieth of the run,
    rounded up to whole tiles of its blocked random streams (:func:`tile_steps`), or
    the whole run where whole tiles would overrun it by more than a sixteenth."""
    seg = max(1, -(-study.steps // 20))
    tile = tile_steps(study)
    if tile > 1:
        seg = -(-seg // tile) * tile
        if -(-study.steps // seg) * seg - study.steps > study.steps / 16:
            seg = study.steps
    return seg


def plan(study: Study, chunk_size: int | None = None, memory_budget: int | None = None,
         devices: int | None = None, measure: bool | None = None) -> Plan:
    """Lay a study out in chunks, device shards and segments; estimate the memory.

    The quick estimate per seed is the carried state of one seed (all its grid
    points: parameters, optimizer state, recorder buffers, data) times 3 (old and
    new carry, gradients) plus 4 copies of the step's batch per grid point, plus a tile
    of the blocked random streams (:func:`tile_steps` steps of batches and noise). It
    misses the temporaries of observables (a risk on an evaluation sample can
    dominate), so unless it is 8x below the budget (or ``measure=True``, as in
    ``--dry-run``) the estimate is the compiled program's own buffer sizes, from a
    probe of two blocks scaled per seed. A chunk holds whole blocks of
    ``study.block`` seeds on each device; the last chunk is padded.
    """
    if study.static is not None:
        subs = study.static_studies()
        plans = {combo: plan(sub, chunk_size, memory_budget, devices, measure)
                 for combo, sub in subs.items()}
        keys = {_static_key(subs[c], p.chunk_seeds, p.segment_steps, p.devices)
                for c, p in plans.items()}
        return StaticPlan(tuple(study.static), plans, len(keys))
    devices = _check_devices(devices)
    segment = min(study.segment_steps or default_segment(study), study.steps)
    b = study.block
    per_seed = _quick_bytes_per_seed(study, segment)
    budget = memory_budget or study.memory_budget or default_memory_budget()
    # the quick estimate can miss several-fold; measure unless it is far below the budget
    roomy = 8 * per_seed * study.seeds <= budget * devices
    lower_s = compile_s = None
    if measure or (measure is None and not roomy and chunk_size is None
                   and study.chunk_size is None):
        measured, lower_s, compile_s = _probe(study, segment)
        per_seed = max(per_seed, measured)
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
                block_seeds=b, lower_s=lower_s, compile_s=compile_s,
                member_layout=study.resolved_member_layout())
