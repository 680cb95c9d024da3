# ruff: noqa: F401  (this module re-exports the private modules' names)
"""The ensemble engine: seeds × hyperparameter grid as one compiled program.

A :class:`Study` is a grid over traced hyperparameters × seeds (× an optional
static sweep). :func:`run` compiles one program per static configuration
(problem structure and array shapes, optimizer, recorders, step count, chunk
shape) and runs every member through it:

``jit(scan over steps(vmap over seeds(draw the seed's batch; vmap over grid points(update))))``

* Member keys are ``fold_in(fold_in(key(seed), 0), seed_index)`` (derived on the host,
  :func:`seed_key_data`, and passed to the programs); from a seed's
  key come its init key (``fold_in(k, 0)``), data key (``fold_in(k, 1)``) and
  noise key (``fold_in(k, 2)``), and the randomness of step ``t`` is
  ``fold_in(data_key, t)``. A member's trajectory therefore does not depend on the
  ensemble size, chunking or device count, and every grid point of a seed sees
  the same initialization and data stream (common random numbers), which is
  drawn once per seed, not once per member.
* Hyperparameters -- the optimizer's and the problem's declared ones -- are traced
  arrays, and so are a pytree problem's arrays: a new grid, or a problem rebuilt
  with arrays of the same shapes, reuses the compiled program
  (:func:`trace_count` counts traces). Compiled programs are also kept on disk
  (:func:`compile_cache`), so a rerun in a new process does not compile.
* Steps run in segments; checkpoints and stop requests go at segment boundaries.
  One call of the compiled program runs as many segments as fit in about a second
  (fewer when a checkpoint falls due sooner): the count is a traced argument, so
  it costs no compile, and results do not depend on it. Calls are the run's only
  host synchronization (a progress tick each).
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

The package's private modules, one job each: ``_study`` (the study and its
validation), ``_recorders`` (recorder configurations), ``_state`` (member state,
keys), ``_compiled`` (the compiled program), ``_layout`` (plan, memory probe,
sharding), ``_loop`` (the run loop, progress, stop requests, processes),
``_checkpoint``, ``_checks`` (friendly errors for user functions, before
compiling), ``_cache`` (the persistent compilation cache), ``_threefry`` (a CPU
lowering of JAX's random-number hash that compiles faster, same bits, and the same hash
in NumPy for the member keys the host derives). Provenance helpers
live in :mod:`sgdlab.provenance`.
"""

import jax

from sgdlab.engine import _compiled
from sgdlab.engine._cache import compile_cache
from sgdlab.engine._cache import requested as _cache_requested
from sgdlab.engine._checkpoint import Checkpoint
from sgdlab.engine._checks import UserFunctionError
from sgdlab.engine._compiled import (
    by_seed_groups,
    member_by_member,
    program_key,
    tile_steps,
    trace_count,
)
from sgdlab.engine._distributed import barrier, is_writer
from sgdlab.engine._distributed import initialize as initialize_distributed
from sgdlab.engine._distributed import requested as distributed_requested
from sgdlab.engine._layout import Plan, StaticPlan, default_memory_budget, plan
from sgdlab.engine._loop import Interrupted, Progress, clear_stop, request_stop, run
from sgdlab.engine._recorders import (
    FirstPassage,
    ObservableSpec,
    Observe,
    ObserveState,
    Recorder,
    Stationary,
    StationaryState,
)
from sgdlab.engine._state import (
    STREAM_VERSION,
    Carry,
    MemberState,
    member_keys,
    noise_block,
    seed_key_data,
    shared_key,
)
from sgdlab.engine._study import Study
from sgdlab.engine._threefry import install_threefry_lowering, threefry2x32
from sgdlab.engine._threefry import requested as _threefry_requested
from sgdlab.provenance import config_diff, config_json, device_description, versions

if _cache_requested() and jax.config.jax_enable_compilation_cache:
    compile_cache()  # on by default; JAX_ENABLE_COMPILATION_CACHE=false is respected
if _threefry_requested():
    install_threefry_lowering()  # same bits, half the compile (SGDLAB_THREEFRY=jax: JAX's own)


def __getattr__(name: str):
    # the old module global, read through the live counter (a copied int would freeze at 0)
    if name == "TRACE_COUNT":
        return _compiled.TRACE_COUNT
    raise AttributeError(f"module 'sgdlab.engine' has no attribute {name!r}")


__all__ = ["Study", "Observe", "Stationary", "FirstPassage", "Plan", "StaticPlan", "MemberState",
           "Carry", "run", "plan", "trace_count", "compile_cache", "shared_key", "Checkpoint",
           "install_threefry_lowering", "threefry2x32",
           "Interrupted", "request_stop", "clear_stop", "Progress", "config_diff", "config_json",
           "device_description", "versions", "default_memory_budget", "ObservableSpec",
           "UserFunctionError", "Recorder", "STREAM_VERSION", "noise_block", "tile_steps",
           "program_key", "barrier", "is_writer", "member_keys", "seed_key_data",
           "distributed_requested",
           "initialize_distributed", "ObserveState", "StationaryState", "by_seed_groups",
           "member_by_member"]
