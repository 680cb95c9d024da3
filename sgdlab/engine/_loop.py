"""The run loop: chunks and segments, progress, stop requests, multi-process, collection."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab._gc import frozen_during
from sgdlab._progress import Progress
from sgdlab._validate import fail
from sgdlab.engine._checkpoint import Checkpoint, ChunkStore
from sgdlab.engine._compiled import (
    _Program,
    _program,
    chunk_seeds,
    chunk_valid,
    program_inputs,
)
from sgdlab.engine._distributed import Coordination
from sgdlab.engine._layout import Plan, plan
from sgdlab.engine._state import STREAM_VERSION, Carry
from sgdlab.engine._study import Study
from sgdlab.provenance import config_diff, config_json


class Interrupted(Exception):
    """A run stopped at a segment boundary on request (SIGINT/SIGTERM); resumable."""


_STOP = {"requested": False}


def request_stop(*_):
    """Ask running studies to stop at the next segment boundary (a signal handler)."""
    _STOP["requested"] = True


def clear_stop() -> None:
    """Forget a stop request (at the start and end of a run)."""
    _STOP["requested"] = False


CHECKPOINT_LAYOUT = 4
"""How finished chunks and the carried state are stored in a checkpoint (2: one part per
recorder, by name; 3: ``Stationary`` also carries the running sum of its open batch; 4:
``Observe`` carries its observables packed into one buffer per dtype)."""

PACE_S = 1.0
"""Wall time one call of the segment program aims at (see :class:`_Pacer`)."""


class _Pacer:
    """How many segments the next call of the segment program runs.

    A call is the only host synchronization of a run (progress, stop requests and
    checkpoints happen between calls), so a call should carry about ``PACE_S`` of
    work, or less when a checkpoint falls due sooner. The count is a traced argument
    of the one compiled program: any count costs no compile, and the results are
    the same bits whatever the counts were (random streams follow step numbers).
    The first call of a run runs one segment; later ones are sized from the last
    call's time per segment (at most 16 times the last count, so that a first call
    that compiled, or a noisy measurement, cannot overshoot far).
    """

    def __init__(self, ckpt: Checkpoint | None = None, segment_steps: int = 1,
                 target_s: float | None = None):
        self.ckpt, self.segment_steps = ckpt, segment_steps
        target_s = PACE_S if target_s is None else target_s
        self.target_s = target_s if ckpt is None else min(target_s, ckpt.every_seconds)
        self.per_segment: float | None = None
        self.last = 1

    def count(self, remaining: int, global_step: int) -> int:
        """Segments for the next call, ``remaining`` left in the chunk, at ``global_step``
        (the checkpoint's step count: ``chunk * steps + segment * segment_steps``)."""
        if self.per_segment is None:
            return 1
        k = min(int(self.target_s / max(self.per_segment, 1e-9)), 16 * self.last, remaining)
        ckpt = self.ckpt
        if ckpt is not None:
            if ckpt.every_steps is not None:  # stop where the step-based checkpoint is due
                k = min(k, -(-(ckpt.last_step + ckpt.every_steps - global_step)
                             // self.segment_steps))
            left = ckpt.every_seconds - (time.perf_counter() - ckpt.last_time)
            k = min(k, int(left / max(self.per_segment, 1e-9)))
        return max(1, k)

    def calls(self, prog: _Program, carry, first: int, segments: int, base_step: int, args):
        """Run a chunk's segments ``first..segments-1`` in calls; after each call yield
        ``(carry, the last segment it ran, how many it ran)``. ``base_step`` is the
        chunk's first global step (``chunk * steps``), ``args`` the program's other
        arguments (``hp, seed_keys, valid, shared, arrays``)."""
        seg = first
        while seg < segments:
            k = self.count(segments - seg, base_step + seg * self.segment_steps)
            carry = self.call(prog, carry, seg * self.segment_steps, k, *args)
            seg += k
            yield carry, seg - 1, k

    def call(self, prog: _Program, carry, t0: int, k: int, *args):
        """Run ``k`` segments from step ``t0`` and wait for them; times the call."""
        t = time.perf_counter()
        carry = prog.segment(carry, np.int32(t0), *args, n_segments=np.int32(k))
        jax.block_until_ready(carry.members.diverged_step)
        self.per_segment, self.last = (time.perf_counter() - t) / k, k
        return carry


@frozen_during
def run(study: Study, *, progress: bool = True, chunk_size: int | None = None,
        memory_budget: int | None = None, devices: int | None = None,
        checkpoint: str | os.PathLike | Checkpoint | None = None, label: str = "sgdlab"):
    """Run every member of a study and return the labeled results (``xarray.Dataset``).

    Args:
      study: the study.
      progress: show progress on stderr (a bar with ETA and member-steps/s on a terminal,
        a sparse plain line otherwise; see :mod:`sgdlab._progress`).
      label: the study's name in the progress display.
      chunk_size, memory_budget: override the layout (see :func:`plan`).
      devices: number of local devices to shard the seeds over (default: all).
        Under ``jax.distributed`` (several processes) each process runs its share
        of the chunks on its local devices and the results are gathered to every
        process, bitwise equal to a one-process run.
      checkpoint: a path (or :class:`Checkpoint`) to write checkpoints to at segment
        boundaries; if it holds a checkpoint of the same configuration the run
        resumes from it (bitwise identically), of another configuration it is
        refused naming the differing keys. Under ``jax.distributed`` the checkpoints
        are chunk-level (one file per chunk next to it): the path must be on a filesystem
        every process sees, and a rerun with any number of processes (one included)
        resumes bitwise.

    Raises:
      Interrupted: :func:`request_stop` was called (e.g. by a signal handler); a
        checkpoint was written first when one was given. Under ``jax.distributed``
        with a checkpoint, a request on any process stops every process.

    See :mod:`sgdlab.results` for the layout of the returned Dataset.
    """
    from sgdlab import results  # the result store imports the engine lazily, and vice versa

    if study.static is not None:
        return _run_static(study, progress=progress, chunk_size=chunk_size,
                           memory_budget=memory_budget, devices=devices, checkpoint=checkpoint,
                           label=label)
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint | None) else Checkpoint(checkpoint)
    config = study.describe()
    if ckpt is not None and (jax.process_count() > 1 or _chunked_checkpoint(ckpt)):
        return _run_chunked(study, ckpt, config, progress=progress, chunk_size=chunk_size,
                            memory_budget=memory_budget, devices=devices, label=label)
    state = ckpt.read() if ckpt is not None else None
    if state is not None:
        meta = state[0]
        stream = meta.get("stream", 1)  # checkpoints before the version was recorded: 1
        if stream != STREAM_VERSION:
            fail("checkpoint", ckpt.path, f"it was written with random-stream version {stream}; "
                 f"this sgdlab draws version {STREAM_VERSION}, so a resumed run would mix two "
                 "streams; use another output or --force")
        if meta.get("layout", 1) != CHECKPOINT_LAYOUT:
            fail("checkpoint", ckpt.path, "it was written by another sgdlab (finished chunks or "
                 "the carried state stored in another layout); use another output or --force")
        diff = config_diff(meta["config"], config)
        if diff:
            fail("checkpoint", ckpt.path, "it belongs to a different configuration ("
                 + "; ".join(diff) + "); use another output or --force")
        chunk_size, devices = meta["chunk_seeds"], min(meta["devices"], len(jax.local_devices()))
        if meta["chunk_seeds"] % (study.block * devices):
            devices = 1
    p = plan(study, chunk_size, memory_budget, devices)
    prog = _program(study, p.chunk_seeds, p.segment_steps, p.devices)
    hp, arrays, shared = program_inputs(study)
    chunks: list[dict] = []
    start_chunk, start_seg, carry0 = 0, 0, None
    if state is not None:
        meta, done, leaves = state
        chunks = [done[str(i)] for i in range(meta["chunk"])]
        start_chunk, start_seg = meta["chunk"], meta["segment"]
        if leaves:
            template = jax.eval_shape(  # the raw init: its jitted form is top-level only
                prog._init, hp, *chunk_seeds(study, 0, p.chunk_seeds), shared, arrays)
            carry0 = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template),
                                                  [jnp.asarray(x) for x in leaves])
    total = p.chunks * p.segments
    bar = Progress(total, enabled=progress, label=label,
                   done=start_chunk * p.segments + start_seg,
                   work_per_tick=p.chunk_seeds * study.n_grid * p.segment_steps)
    t_start = time.perf_counter()

    def save(c, seg, carry):
        meta = {"config": config, "chunk_seeds": p.chunk_seeds, "devices": p.devices,
                "segment_steps": p.segment_steps, "chunk": c, "segment": seg,
                "format": results.FORMAT, "stream": STREAM_VERSION, "layout": CHECKPOINT_LAYOUT}
        ckpt.write(meta, {str(i): ch for i, ch in enumerate(chunks)}, carry,
                   c * study.steps + seg * p.segment_steps)

    pacer = _Pacer(ckpt, p.segment_steps)
    nproc = jax.process_count()
    if nproc > 1:
        chunks = _run_multiprocess(prog, p, hp, shared, bar, arrays)
    for c in range(start_chunk, p.chunks if nproc == 1 else 0):
        seed_keys, valid = chunk_seeds(study, c, p.chunk_seeds)
        if carry0 is not None and c == start_chunk:
            carry, first = carry0, start_seg
        else:
            carry, first = prog.init(hp, seed_keys, valid, shared, arrays), 0
        start = carry
        for carry, seg, k in pacer.calls(prog, start, first, p.segments, c * study.steps,
                                         (hp, seed_keys, valid, shared, arrays)):
            bar.tick(k, f"chunk {c + 1}/{p.chunks}")
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
    ds = results.to_dataset(study, prog, out, p, runtime_s=time.perf_counter() - t_start)
    ds.attrs["processes"] = nproc
    return ds


CHUNKED_LAYOUT = 2
"""Version of the chunk-level checkpoints of multi-process runs (:class:`ChunkStore`; 2: the
carried state of ``Stationary`` holds the running sum of its open batch)."""


def _chunked_checkpoint(ckpt: Checkpoint) -> bool:
    """Whether ``ckpt`` holds the manifest of a multi-process (chunk-level) checkpoint."""
    try:
        meta = ChunkStore(ckpt.path).read_manifest()
    except Exception:  # unreadable: the single-process path reports it
        return False
    return meta is not None and "chunked" in meta


def _start(study: Study, ckpt: Checkpoint, store: ChunkStore, co: Coordination, config: dict,
           chunk_size, memory_budget, devices) -> tuple[Plan, dict]:
    """Process 0 checks the checkpoint, lays the run out and writes the manifest; every
    process then checks that it sees the state directory. Returns the plan and what
    process 0 found (finished chunks, checkpointed carries)."""
    if co.pid == 0:
        info: dict = {"error": None}
        try:
            meta = store.read_manifest() if os.path.exists(ckpt.path) else None
            if meta is not None and "chunked" not in meta:
                fail("checkpoint", ckpt.path, "it is the checkpoint of a single-process run; "
                     "resume it with one process (without --distributed), or use --force")
            if meta is not None:
                stream = meta.get("stream", 1)
                if stream != STREAM_VERSION:
                    fail("checkpoint", ckpt.path, f"it was written with random-stream version "
                         f"{stream}; this sgdlab draws version {STREAM_VERSION}; use another "
                         "output or --force")
                if meta["chunked"] != CHUNKED_LAYOUT:
                    fail("checkpoint", ckpt.path, "it was written by another sgdlab (chunk "
                         f"layout {meta['chunked']}); use another output or --force")
                diff = config_diff(meta["config"], config)
                if diff:
                    fail("checkpoint", ckpt.path, "it belongs to a different configuration ("
                         + "; ".join(diff) + "); use another output or --force")
                chunk_size, devices = meta["chunk_seeds"], meta["devices"]
            store.prepare(fresh=meta is None)
            info["token"] = store.write_token()
            p = plan(study, chunk_size, memory_budget, _devices(study, chunk_size, devices))
            if meta is not None and (p.chunk_seeds, p.segment_steps) != (
                    meta["chunk_seeds"], meta["segment_steps"]):
                fail("checkpoint", ckpt.path, "its layout differs from this run's; use --force")
            done, carries = store.scan()
            info.update(chunk_seeds=p.chunk_seeds, devices=p.devices, done=done,
                        carries={str(c): s for c, s in carries.items()})
            store.write_manifest(_manifest(config, p, done, co.nproc))
        except ValueError as e:
            info["error"] = str(e)
        co.set("start", json.dumps(info))
        if info["error"]:
            raise ValueError(info["error"])
    else:
        info = json.loads(co.get("start"))
        if info["error"]:
            raise ValueError(info["error"])
        seen = store.read_token() == info["token"]
        co.set(f"fs/{co.pid}", "ok" if seen else "missing")
        if not seen:
            fail("checkpoint", store.dir, f"process {co.pid} does not see the token process 0 "
                 "wrote there: the output directory must be on a filesystem every process "
                 "sees (a shared --out)")
        p = plan(study, info["chunk_seeds"], memory_budget,
                 _devices(study, info["chunk_seeds"], info["devices"]))
        if p.chunk_seeds != info["chunk_seeds"]:
            fail("devices", p.devices, f"process {co.pid} cannot lay out chunks of "
                 f"{info['chunk_seeds']} seeds as process 0 does")
    if co.pid == 0:
        co.wait_count("fs", co.nproc - 1)
        blind = [q for q in range(1, co.nproc) if co.try_get(f"fs/{q}") != "ok"]
        if blind:
            fail("checkpoint", store.dir, f"process(es) {blind} do not see the token process 0 "
                 "wrote there: the output directory must be on a filesystem every process sees "
                 "(a shared --out)")
    return p, info


def _devices(study: Study, chunk_seeds: int | None, devices: int | None) -> int | None:
    """Local devices to use for chunks of ``chunk_seeds`` (whole blocks on each device)."""
    if chunk_seeds is None or devices is None:
        return devices
    devices = min(devices, len(jax.local_devices()))
    return devices if chunk_seeds % (study.block * devices) == 0 else 1


def _manifest(config: dict, p: Plan, done: list[int], nproc: int) -> dict:
    from sgdlab import results
    return {"config": config, "chunk_seeds": p.chunk_seeds, "devices": p.devices,
            "segment_steps": p.segment_steps, "chunks": p.chunks, "done": list(done),
            "processes": nproc, "format": results.FORMAT, "stream": STREAM_VERSION,
            "chunked": CHUNKED_LAYOUT}


def _run_chunked(study: Study, ckpt: Checkpoint, config: dict, *, progress: bool, chunk_size,
                 memory_budget, devices, label: str):
    """A checkpointed run over ``jax.process_count()`` processes (one works too).

    Unfinished chunks go round-robin to the processes; each process writes its
    finished chunks and, when due, the carry of its current chunk to the
    :class:`ChunkStore`. A stop request (a signal on any process) travels through
    the key-value store; every process then checkpoints at its next segment
    boundary, and process 0 returns last, after the manifest. At the end every
    process reads every chunk from the shared directory: bitwise the results of
    one process, whatever the number of processes before or after a resume.
    """
    from sgdlab import results

    co = Coordination()
    store = ChunkStore(ckpt.path)
    p, info = _start(study, ckpt, store, co, config, chunk_size, memory_budget, devices)
    prog = _program(study, p.chunk_seeds, p.segment_steps, p.devices)
    hp, arrays, shared = program_inputs(study)
    chash = hashlib.sha256(config_json(study).encode()).hexdigest()[:16]
    part_meta = {"config": chash, "stream": STREAM_VERSION}
    done = set(info.get("done", ()))
    carries = {int(c): s for c, s in info.get("carries", {}).items()}
    todo = [c for c in range(p.chunks) if c not in done]
    mine = todo[co.pid::co.nproc]
    bar = Progress(sum(p.segments - carries.get(c, 0) for c in mine), enabled=progress,
                   label=label, work_per_tick=p.chunk_seeds * study.n_grid * p.segment_steps)
    t_start = time.perf_counter()
    pacer = _Pacer(ckpt, p.segment_steps)

    def stop_seen() -> bool:
        if _STOP["requested"]:
            co.set("stop")
            return True
        return co.try_get("stop") is not None

    def stop(where: str):
        """Agree on stopping (the run may have completed meanwhile: then False)."""
        co.set("outcome", "stop")
        if co.get("outcome") != "stop":
            return False
        co.set(f"stopped/{co.pid}")
        bar.close()
        if co.pid == 0:  # process 0 returns last, after every checkpoint is on disk
            co.wait_count("stopped", co.nproc)
            store.write_manifest(_manifest(config, p, store.scan()[0], co.nproc))
        raise Interrupted(f"stopped {where} (process {co.pid + 1}/{co.nproc})")

    try:
        _work_chunks(_ChunkRun(study, prog, p, store, ckpt, co, pacer, bar, config, part_meta,
                               (hp, arrays, shared), stop_seen, stop), mine, carries)
    except Interrupted:
        raise
    except BaseException as e:  # the others must not wait for this process's chunks
        line = (str(e).strip().splitlines() or [""])[0][:300]
        co.set(f"error/{co.pid}", f"{type(e).__name__}: {line}")
        raise
    co.set(f"finished/{co.pid}")
    while True:  # wait for the others' chunks, a stop request or another's failure
        failed = co.entries("error")
        if failed:
            k, msg = sorted(failed.items())[0]
            bar.close()
            raise RuntimeError(
                f"process {int(k) + 1}/{co.nproc} failed ({msg}); this process's finished "
                f"chunks are checkpointed in {store.dir}: rerun the same command to resume")
        outcome = co.try_get("outcome")
        if outcome == "stop" or (outcome is None and stop_seen()):
            stop("with its chunks finished")
        if outcome == "complete" or co.count("finished") == co.nproc:
            co.set("outcome", "complete")
            if co.get("outcome") == "complete":
                break
        time.sleep(0.05)
    bar.close()
    if co.pid == 0:
        store.write_manifest(_manifest(config, p, list(range(p.chunks)), co.nproc))
    chunks = []
    for c in range(p.chunks):
        meta, part = store.read_chunk(c)
        if meta.get("config") != chash:
            fail("checkpoint", store.dir, f"chunk{c}.npz belongs to another run; use --force")
        chunks.append(part)
    co.barrier("read")  # nobody removes the state before every process has read it
    out = _merge_chunks(prog, chunks)
    ds = results.to_dataset(study, prog, out, p, runtime_s=time.perf_counter() - t_start)
    ds.attrs["processes"] = co.nproc
    return ds


@dataclasses.dataclass(frozen=True)
class _ChunkRun:
    """What every chunk of one :func:`_run_chunked` call shares."""

    study: Study
    prog: _Program
    p: Plan
    store: ChunkStore
    ckpt: Checkpoint
    co: Coordination
    pacer: _Pacer
    bar: Progress
    config: dict
    part_meta: dict  # written with every carry and chunk (config hash, stream version)
    inputs: tuple  # (hp, arrays, shared): the traced inputs of every chunk
    stop_seen: Callable[[], bool]
    stop: Callable[[str], bool]


def _work_chunks(r: _ChunkRun, mine: list[int], carries: dict[int, int]):
    """Run this process's chunks (``mine``), from their checkpointed segment in ``carries``."""
    study, prog, p, co = r.study, r.prog, r.p, r.co
    hp, arrays, shared = r.inputs
    template = None
    for c in mine:
        seed_keys, valid = chunk_seeds(study, c, p.chunk_seeds)
        first = carries.get(c, 0)
        if first:
            if template is None:
                template = jax.eval_shape(prog._init, hp, seed_keys, valid, shared, arrays)
            meta, leaves = r.store.read_carry(c)
            if meta.get("config") != r.part_meta["config"] or meta["segment"] != first:
                fail("checkpoint", r.store.dir,
                     f"carry{c}.npz belongs to another run; use --force")
            carry = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template),
                                                 [jnp.asarray(x) for x in leaves])
        else:
            carry = prog.init(hp, seed_keys, valid, shared, arrays)
        start = carry
        for carry, seg, k in r.pacer.calls(prog, start, first, p.segments, c * study.steps,
                                           (hp, seed_keys, valid, shared, arrays)):
            r.bar.tick(k, f"chunk {c + 1}/{p.chunks}, process {co.pid + 1}/{co.nproc}")
            if seg + 1 == p.segments:
                r.store.write_chunk(c, _collect(prog, carry, valid), r.part_meta)
                if r.stop_seen():
                    r.stop(f"after chunk {c + 1}/{p.chunks}")
            elif r.stop_seen():
                r.store.write_carry(c, seg + 1, carry, r.part_meta)
                r.stop(f"after segment {seg + 1}/{p.segments} of chunk {c + 1}/{p.chunks}")
            elif r.ckpt.due(step := c * study.steps + (seg + 1) * p.segment_steps):
                r.store.write_carry(c, seg + 1, carry, r.part_meta)
                r.ckpt.last_time, r.ckpt.last_step = time.perf_counter(), step
                r.ckpt.writes += 1
                if co.pid == 0:
                    r.store.write_manifest(_manifest(r.config, p, r.store.scan()[0], co.nproc))


def _run_static(study: Study, checkpoint=None, label: str = "sgdlab", **kw):
    """Run every combination of a static sweep; one Dataset with the static dims in front.

    A checkpoint path ``c.npz`` becomes one checkpoint per combination (``c.static0.npz``...).
    """
    import xarray as xr

    subs = study.static_studies()
    names = tuple(study.static)
    parts, plans, runtime = [], [], 0.0
    for i, (combo, sub) in enumerate(subs.items()):
        ckpt = None
        if checkpoint is not None:
            path = checkpoint.path if isinstance(checkpoint, Checkpoint) else os.fspath(checkpoint)
            base, ext = os.path.splitext(path)
            every = (checkpoint.every_seconds, checkpoint.every_steps) \
                if isinstance(checkpoint, Checkpoint) else (60.0, None)
            ckpt = Checkpoint(f"{base}.static{i}{ext or '.npz'}", *every)
        where = ", ".join(f"{k}={v!r}" for k, v in zip(names, combo, strict=True))
        ds = run(sub, checkpoint=ckpt, label=f"{label} {where} ({i + 1}/{len(subs)})", **kw)
        plans.append(", ".join(f"{k}={v!r}" for k, v in zip(names, combo, strict=True))
                     + ": " + ds.attrs["plan"])
        runtime += float(ds.attrs["runtime_s"])
        parts.append(ds.expand_dims({k: [v] for k, v in zip(names, combo, strict=True)}))
    nested: Any = parts
    for n in reversed([len(v) for v in study.static.values()][1:]):  # row-major nesting
        nested = [nested[i:i + n] for i in range(0, len(nested), n)]
    out = xr.combine_nested(nested, concat_dim=list(names), combine_attrs="override")
    out.attrs.update(sgdlab_config=config_json(study), runtime_s=runtime,
                     plan=f"static sweep over {', '.join(names)}: {len(parts)} compiles ["
                     + "; ".join(plans) + "]")
    return out


def _run_multiprocess(prog: _Program, p: Plan, hp, shared, bar: Progress, arrays=None):
    """Chunks round-robin over ``jax.process_count()`` processes (``jax.distributed``).

    Process ``q`` runs chunks ``q, q + P, q + 2P, ...`` on its local devices; after
    each round the final carries are gathered to every process
    (``process_allgather``, the only collective, outside the hot loop) and collected
    in chunk order, so the result is bitwise that of a single process.
    """
    from jax.experimental import multihost_utils

    nproc, pid = jax.process_count(), jax.process_index()
    chunks = []
    pacer = _Pacer(None, p.segment_steps)
    bar.total = -(-p.chunks // nproc) * p.segments
    for r in range(-(-p.chunks // nproc)):
        c = r * nproc + pid  # may be past the last chunk: then all its seeds are padding
        seed_keys, valid = chunk_seeds(prog.study, c, p.chunk_seeds)
        carry = prog.init(hp, seed_keys, valid, shared, arrays)
        for done, _, k in pacer.calls(prog, carry, 0, p.segments, 0,
                                      (hp, seed_keys, valid, shared, arrays)):
            carry = done
            bar.tick(k, f"round {r + 1}, process {pid + 1}/{nproc}")
        leaves, treedef = jax.tree_util.tree_flatten(jax.device_get(carry))
        gathered = [np.asarray(multihost_utils.process_allgather(np.asarray(x), tiled=False))
                    for x in leaves]
        for q in range(nproc):
            cq = r * nproc + q
            if cq < p.chunks:
                carry_q = jax.tree_util.tree_unflatten(treedef, [g[q] for g in gathered])
                chunks.append(_collect(prog, carry_q, chunk_valid(prog.study, cq, p.chunk_seeds)))
    return chunks


def _collect(prog: _Program, carry: Carry, valid: np.ndarray) -> dict:
    """One chunk's results on the host (nested dicts of arrays), padded seeds dropped."""
    members = jax.device_get(carry.members)
    out: dict[str, Any] = {"diverged_step": np.asarray(members.diverged_step)[valid],
                           "records": {}}
    for r, state in zip(prog.recorders, carry.records, strict=True):
        out["records"][r.name] = r.collect(prog, jax.device_get(state), members, valid)
    fp = prog.study.first_passage
    if fp is not None:
        out["first_passage"] = fp.collect(prog, None, members, valid)
    return out


def _merge_chunks(prog: _Program, chunks: list[dict]) -> dict:
    """Concatenate members over chunks; each recorder merges its parts in seed order."""
    out: dict[str, Any] = {
        "diverged_step": np.concatenate([c["diverged_step"] for c in chunks]),
        # (a checkpoint drops empty dicts: a part may come back as {})
        "records": {r.name: r.merge(prog, [c.get("records", {}).get(r.name, {}) for c in chunks])
                    for r in prog.recorders}}
    fp = prog.study.first_passage
    if fp is not None:
        out["first_passage"] = fp.merge(prog, [c["first_passage"] for c in chunks])
    return out
