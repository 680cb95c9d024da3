"""Rare escapes of SGD by splitting: forward flux out of the basin × adaptive multilevel splitting.

The quantity is the mean first-passage time τ = E[T] of an SGD chain from its start
x0 into an escape set B (a problem event, e.g. ``"escaped"`` of
:func:`sgdlab.problems.potential_1d`), at barriers where τ is 10⁶–10¹⁰ steps and a
brute-force ensemble sees only censored members.

Method (one replica)
--------------------
A *score* ξ (reaction coordinate: ``w`` for the double well, ``|w|`` for the sharp
well, any function of :class:`~sgdlab.problems.Observation`) defines the basin
A = {ξ < z_A} (``basin``, judged at whole steps) and the target level z_B
(``target``); the escape set B itself is the problem's event.

1. **Flux** (brute force with recycling). ``walkers`` chains start at x0 and run
   ``flux_steps`` whole SGD steps; a chain that escapes is restarted at x0 (the
   renewal point of τ). After ``burn_in`` steps every *crossing* (a whole step with
   ξ ≥ z_A after one with ξ < z_A) is counted. Renewal: every escape is
   preceded by exactly one crossing whose excursion reaches B before A, so with
   q(y) = P_y(B before A) and W the walker-steps after burn-in,
   ``E[Σ_crossings q(Y_i)] = W/τ`` (exact up to a term that decays like the chain's
   relaxation over ``burn_in``). Each walker keeps a uniformly random one of its
   crossings that did not land in B (reservoir sampling). The escapes seen here are
   brute force (``brute_rate``).
   A crossing straight into B (one jump from the basin) has q = 1. With K = 1 these
   are counted (``D``). With K > 1 the basin states are split in two strata by their
   noiseless next step: from states it takes out of the basin (an overshoot), the
   one-jump escapes are counted; the others (the typical basin state, whose jump
   into B needs one large kick) are sampled, one uniformly random state per walker,
   and P(one step from such a state lands in B) is estimated by AMS over that single
   step's sub-kicks (step 2 with ``one step`` trials). Without this, a chain whose
   escapes are mostly one kick (the sharp well at λa ≈ 1, where SGD forgets its
   position in one step) is estimated from a count that is almost always 0.
2. **Adaptive multilevel splitting** (AMS; Cérou & Guyader 2007, generalized form of
   Bréhier, Gazeau, Goudenège, Lelièvre & Rousset 2016, whose estimator is
   unbiased for any importance function, discrete ones included). ``particles`` crossing states
   are drawn from the pool (walker w with probability n_w/Σn, its reservoir
   state), and each runs until it escapes (success) or re-enters A. Each iteration
   takes the k-th smallest maximum level reached (k = ⌈kill_fraction·N⌉); every
   particle at or below it (ties included) is killed and replaced by a clone of a
   uniformly chosen survivor, branched at the survivor's state when it first
   crossed the next level; the estimate gains the factor (1 − killed/N). It stops
   when the k-th smallest maximum is the escape level; p̂ = Π factors × (escaped/N).
   ``rate = (D + Σn·p̂) / W`` is an unbiased estimate of 1/τ (n_w: the walkers'
   other crossings; D: the one-jump escapes, counted or split as above).

Trials from the basin (``trials_from="basin"``). The same renewal argument holds one
step earlier: every escape is preceded by exactly one basin step whose excursion
(the step out of A, then to B before A) escapes, so with h(x) = P_x(the next step
leaves A and the excursion reaches B before A), ``E[Σ_basin states h(X_i)] = W/τ``.
Each walker keeps a uniformly random one of its counted basin states, AMS estimates
h over them (the first step's kick split over the sub-kicks, like any other), and
``rate = n_A·p̂ / W`` (n_A: the counted basin states). Where the escape is one large
kick out of the basin followed by a short excursion (the double well at λU'' > 1,
whose escape is a kick far left that the drift throws past the barrier), crossing
states overshoot the basin level by an amount that carries the whole committor:
half of it sits in 0.2% of the crossings at λ = 0.6, ΔL/T = 20, so a replica's few
hundred crossings mostly miss it (per-replica spread 1.3–1.7×). From the basin the
overshoot itself is split (spread 0.42×; RESULTS.md).

Why AMS rather than forward-flux sampling for step 2: interfaces adapt to the
chain (no level placement to tune per λ and barrier, no interface the population
fails to cross because it was placed too far), ties from a discretized score or a
jump over several levels are handled exactly by the generalized estimator, and the
work is a fixed number of vmapped trials per iteration (half the population at
``kill_fraction`` ½) rather than a separate population per interface.

Importance function and levels. AMS levels are G values (``levels``) evenly spaced
from the lowest importance of the starting particles to z_B. At a whole step the
importance is the score of the noiseless next step (ξ(w − λ∇L(w)) for SGD), which
looks one drift ahead. Near λa = 1 in a sharp well one SGD step is one large
Gaussian kick and levels in position are jumped over; with ``substeps`` K > 1 the
Gaussian gradient noise σξ (``hp["noise_std"]``) of one step is drawn as K
sub-kicks of variance σ²/K, and after j sub-kicks the importance is
``z_B − (z_B − ξ(proposal))/√((K − j)/K)``: the proposal's distance to the target
in units of the kick still to come (the one-step committor's argument), so a kick
crosses levels gradually. At whole steps this is the same chain (same law), so τ
is unchanged; escape and re-entry into A are judged at whole steps. The
importance only sets the variance: the estimator is unbiased for any choice.

One compiled program per population
-----------------------------------
A replica (its walkers and particles) is one vmapped population; killing and
cloning copy member states inside the program (``jax.lax.while_loop``), with no
collectives. Replicas are vmapped in chunks and are the unit of chunking: replica r
uses only keys derived from ``fold_in(key(seed), r)``, so results are bitwise
independent of the chunk size. A clone's key is ``fold_in(fold_in(parent_key,
level), slot)``; its step noise and minibatches come from its own key (step t:
``fold_in(key, t)``), never from its parent's stream. Finished chunks can be
checkpointed to a file (``checkpoint=``) and a killed run resumes bitwise.

Errors are honest: 1/τ, τ and the per-attempt escape probability come with
standard errors from the ``replicas`` independent replicas and 95% intervals
(Student t with replicas − 1 degrees of freedom). Settings that cannot work (no
crossing of the basin, a population that dies out, a score that never reaches the
target, trials that do not end) raise ``ValueError`` naming the setting to change.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from sgdlab._files import atomic_npz
from sgdlab._splitting_replica import Replica, Spec
from sgdlab._validate import fail, finite_float, positive_int
from sgdlab.optim import Optimizer
from sgdlab.problems import Observation, Problem

TRACE_COUNT = 0
"""Number of times a replica program was traced (a compile-count probe)."""


TRIALS_FROM = ("crossing", "basin")
"""Values of :attr:`Budget.trials_from`."""


@dataclass(frozen=True)
class Budget:
    """The work of one splitting estimate (all but ``replicas`` set compiled shapes).

    Args:
      replicas: independent replicas; the standard errors come from their spread.
      walkers: brute-force flux walkers per replica.
      flux_steps: whole SGD steps per flux walker (recycled at x0 on escape).
      burn_in: leading steps of each walker not counted (relaxation from x0).
      particles: AMS population N per replica.
      kill_fraction: AMS kills the ⌈kill_fraction·N⌉ lowest particles (and ties) per
        iteration.
      levels: G, the levels z_1..z_G evenly spaced in score on (basin, target].
      substeps: K, sub-kicks per step for Gaussian ``noise_std`` noise (1: none).
      max_trial_steps: whole steps a trial may take before the run is refused.
      target_rel_se: when set, a second stage: after the first ``replicas``, the
        relative standard error of 1/τ they show sets how many more are run (the
        count that reaches this target at that spread, at most ``max_replicas`` in
        all). One extra stage, not a sequential rule, so that stopping does not
        chase a lucky spread; the estimate and its error use every replica.
      max_replicas: the most replicas the second stage may bring the total to.
      trials_from: where the AMS trials start. ``"crossing"``: the states just past
        the basin level (forward flux's first interface; one-kick escapes from the
        basin split or counted apart). ``"basin"``: the basin states themselves, one
        step before a possible exit, so the exit step's kick is split over the
        sub-kicks too (see the module docstring: for chains whose crossing states
        overshoot the basin level by a large, committor-steep amount).
    """

    replicas: int = 8
    walkers: int = 256
    flux_steps: int = 400
    burn_in: int = 100
    particles: int = 512
    kill_fraction: float = 0.5
    levels: int = 100
    substeps: int = 1
    max_trial_steps: int = 20000
    target_rel_se: float | None = None
    max_replicas: int = 256
    trials_from: str = "crossing"

    def __post_init__(self):
        positive_int("replicas", self.replicas, minimum=2)
        positive_int("walkers", self.walkers)
        positive_int("flux_steps", self.flux_steps)
        positive_int("burn_in", self.burn_in, minimum=0)
        if not self.burn_in < self.flux_steps:
            fail("burn_in", self.burn_in, f"expected fewer than flux_steps={self.flux_steps}")
        positive_int("particles", self.particles, minimum=2)
        finite_float("kill_fraction", self.kill_fraction, low=0.0, high=1.0, low_open=True)
        if self.kill_fraction >= 1:
            fail("kill_fraction", self.kill_fraction, "expected a number in (0, 1)")
        positive_int("levels", self.levels)
        positive_int("substeps", self.substeps)
        positive_int("max_trial_steps", self.max_trial_steps)
        positive_int("max_replicas", self.max_replicas, minimum=2)
        if self.trials_from not in TRIALS_FROM:
            fail("trials_from", self.trials_from, "expected one of " + ", ".join(TRIALS_FROM))
        if self.target_rel_se is not None:
            finite_float("target_rel_se", self.target_rel_se, low=0.0, low_open=True)
            positive_int("max_replicas", self.max_replicas, minimum=self.replicas)

    @property
    def kill(self) -> int:
        return max(1, min(self.particles - 1, math.ceil(self.kill_fraction * self.particles)))


class Estimate(NamedTuple):
    """A value with its standard error and 95% interval."""

    value: float
    se: float
    lo: float
    hi: float


class SplittingResult(NamedTuple):
    """What :func:`estimate` returns (per-replica arrays have length ``replicas``).

    Attributes:
      inverse_mfpt: 1/τ per step (the mean of the replicas' unbiased rates).
      mfpt: τ = 1/inverse_mfpt, SE by the delta method, interval = the inverse of
        inverse_mfpt's interval.
      probability: escape probability per attempt (per crossing of the basin level).
      flux: crossings of the basin level per walker-step.
      direct: the part of inverse_mfpt from escapes in one step from the basin
        (counted, or split over sub-kicks; see the module docstring); with
        ``trials_from="basin"`` all of it (every trial starts in the basin).
      brute_rate: escapes per walker-step seen by the flux walkers (brute force).
      rate, prob, crossings, escapes, iterations, extinct: per replica.
      walker_steps: flux walker-steps after burn-in, per replica.
      member_steps: all SGD steps simulated (flux and trials, whole steps).
      seconds: wall time (compile included).
    """

    inverse_mfpt: Estimate
    mfpt: Estimate
    probability: Estimate
    flux: Estimate
    brute_rate: Estimate
    rate: np.ndarray
    prob: np.ndarray
    crossings: np.ndarray
    escapes: np.ndarray
    iterations: np.ndarray
    extinct: np.ndarray
    walker_steps: int
    member_steps: float
    seconds: float
    direct: Estimate

    def as_dict(self) -> dict:
        out = {}
        for k, v in self._asdict().items():
            if isinstance(v, Estimate):
                out[k] = v._asdict()
            elif isinstance(v, np.ndarray):
                out[k] = v.tolist()
            else:
                out[k] = v
        return out


def _t_quantile(df: int) -> float:
    return float(stats.t.ppf(0.975, df))


def interval(x) -> Estimate:
    """Mean of independent replicas, its standard error and 95% Student-t interval."""
    x = np.asarray(x, float)
    m = float(x.mean())
    se = float(x.std(ddof=1) / math.sqrt(x.size))
    q = _t_quantile(x.size - 1)
    return Estimate(m, se, m - q * se, m + q * se)


def _program(spec: Spec):
    """The replica program ``(replica_ids, hp, zA, zB, base_key, data) -> dict`` (one
    :class:`sgdlab._splitting_replica.Replica` per id)."""
    replica = Replica(spec)

    def chunk(rids, hp, zA, zB, base_key, data):
        global TRACE_COUNT
        TRACE_COUNT += 1
        return jax.vmap(lambda r: replica(r, hp, zA, zB, base_key, data))(rids)

    return chunk


@functools.lru_cache(maxsize=32)
def _cached_program(spec: Spec, devices: int = 1):
    """The compiled chunk program; with ``devices > 1`` the replicas of a chunk are split
    over that many local devices, each running its own whole populations (shard_map, no
    collectives), so the bits are those of one device."""
    chunk = _program(spec)
    if devices == 1:
        return jax.jit(chunk)
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = jax.make_mesh((devices,), ("replicas",), devices=jax.local_devices()[:devices])
    reps, rep = P("replicas"), P()
    sharded = jax.jit(jax.shard_map(chunk, mesh=mesh, in_specs=(reps, rep, rep, rep, rep, rep),
                                    out_specs=reps, check_vma=False))

    def run(rids, *rest):
        return sharded(jax.device_put(rids, NamedSharding(mesh, reps)), *rest)

    return run


def _identity(problem, optimizer, hp, zA, zB, score, event_fn, b, seed, R, chunk) -> str:
    """What a checkpoint's chunks depend on: reused only when all of it is equal."""
    import hashlib

    def name(f):
        return getattr(f, "__qualname__", repr(f))

    text = repr((problem.name, getattr(problem, "config", None), optimizer,
                 sorted((k, float(v)) for k, v in hp.items()), zA, zB, name(score),
                 name(event_fn), b, seed, R, chunk, str(jnp.zeros(()).dtype)))
    return hashlib.sha256(text.encode()).hexdigest()


def _hp_arrays(optimizer: Optimizer, hp: Mapping[str, Any]) -> dict:
    out = dict(optimizer.defaults)
    out.update(hp)
    missing = [k for k in optimizer.required if k not in out]
    if missing:
        fail("hp", sorted(hp), f"the optimizer needs {', '.join(missing)}")
    bad = [k for k in out if k not in optimizer.accepted]
    if bad:
        fail("hp", bad[0], "not read by the optimizer; accepted: " + ", ".join(optimizer.accepted))
    arrs = {}
    for k, v in out.items():
        a = np.asarray(v, dtype=float)
        if a.ndim != 0 or not np.isfinite(a):
            fail(k, v, "expected one finite number (splitting runs one grid point at a time)")
        arrs[k] = jnp.asarray(a, dtype=jnp.result_type(float))
    return arrs


def estimate(problem: Problem, optimizer: Optimizer, hp: Mapping[str, Any], *,
             score: Callable[[Observation], Any], basin: float, target: float,
             event: str | Callable[[Observation], Any] = "escaped", budget: Budget | None = None,
             seed: int = 0, chunk: int | None = None,
             checkpoint: str | os.PathLike | None = None,
             devices: int | None = None) -> SplittingResult:
    """Mean escape time τ of one SGD chain by flux × adaptive multilevel splitting.

    See the module docstring for the method. ``escape`` (the event) must imply
    ``score ≥ target``'s side of the basin: an escaped state counts as the top level.

    Args:
      problem: the training problem (its data source must be shared).
      optimizer, hp: the optimizer and one point of hyperparameters (numbers);
        ``hp["noise_std"]`` adds Gaussian gradient noise (split into sub-kicks).
      score: ``Observation -> scalar`` reaction coordinate, larger toward escape.
      basin: z_A; the start must score below it.
      target: z_B > z_A, the top level (the escape set's score).
      event: the escape set: a problem event name or a predicate.
      budget: :class:`Budget`.
      seed: base seed; replica r uses ``fold_in(key(seed), r)`` only.
      chunk: replicas per compiled call (default: all); results do not depend on it.
      checkpoint: an ``.npz`` path; finished chunks are saved there (atomically) and
        reused by a rerun with the same problem, settings, seed and chunk; a run killed
        at any point resumes to the same bits.
      devices: local devices to split each chunk's replicas over (default: all); the
        results do not depend on it.

    Returns:
      :class:`SplittingResult`.

    Raises:
      ValueError: bad settings, or a run that cannot give an estimate (the message
        names the setting to change).
    """
    b = budget or Budget()
    if not isinstance(problem, Problem):
        fail("problem", type(problem).__name__, "expected an sgdlab Problem")
    if not problem.data.shared:
        fail("problem", problem.name, "splitting needs a problem whose data source is shared")
    zA = finite_float("basin", basin)
    zB = finite_float("target", target)
    if not zB > zA:
        fail("target", target, f"expected a level above basin={zA:g}")
    if isinstance(event, str):
        if event not in problem.events:
            fail("event", event, "expected one of the problem's events: "
                 + ", ".join(problem.events) or "(none)")
        event_fn = problem.events[event]
    else:
        event_fn = event
    hpa = _hp_arrays(optimizer, hp)
    if b.substeps > 1 and "noise_std" not in hpa:
        fail("substeps", b.substeps, "sub-kicks split the Gaussian noise hp['noise_std']; "
             "without it use substeps=1")
    R = b.replicas
    chunk = R if chunk is None else positive_int("chunk", chunk)
    chunk = min(chunk, R)
    n_dev = len(jax.local_devices())
    devices = n_dev if devices is None else positive_int("devices", devices)
    if devices > n_dev:
        fail("devices", devices, f"this process sees {n_dev} device(s)")
    devices = min(devices, chunk)
    chunk = -(-chunk // devices) * devices  # whole replicas per device (padding dropped)
    # the replica counts do not shape the program: one compile for any of them
    shape_b = dataclasses.replace(b, replicas=2, target_rel_se=None, max_replicas=2)
    spec = Spec(problem, optimizer, score, event_fn, shape_b, tuple(sorted(hpa)))
    prog = _cached_program(spec, devices)
    zBj = jnp.asarray(zB, dtype=jnp.result_type(float))
    zAj = jnp.asarray(zA, dtype=jnp.result_type(float))
    base_key = jax.random.PRNGKey(seed)
    data = problem.data.init(jax.random.fold_in(base_key, 10**6))
    t0 = time.perf_counter()
    n_chunks = math.ceil(R / chunk)
    done: dict[int, dict] = {}
    ident = np.asarray(_identity(problem, optimizer, hp, zA, zB, score, event_fn, b, seed, R,
                                 chunk))
    if checkpoint is not None and os.path.exists(checkpoint):
        with np.load(checkpoint) as z:
            if "ident" in z.files and str(z["ident"]) == str(ident):
                # the first stage's chunks and any of a second stage
                for c in range(max(n_chunks, math.ceil(b.max_replicas / chunk))):
                    if f"c{c}_prob" in z:
                        done[c] = {k[len(f"c{c}_"):]: z[k] for k in z.files
                                   if k.startswith(f"c{c}_")}

    def run_chunks(n_chunks):
        for c in range(n_chunks):
            if c in done:
                continue
            rids = jnp.arange(c * chunk, (c + 1) * chunk, dtype=jnp.int32)
            out = prog(rids, hpa, zAj, zBj, base_key, data)
            done[c] = {k: np.asarray(v) for k, v in out.items()}
            if checkpoint is not None:
                flat = {f"c{i}_{k}": v for i, d in done.items() for k, v in d.items()}
                atomic_npz(checkpoint, {"ident": ident, **flat})

    def gather(n):
        return {k: np.concatenate([done[c][k] for c in range(math.ceil(n / chunk))])[:n]
                for k in done[0]}

    run_chunks(n_chunks)
    if b.target_rel_se is not None:
        first = _summarize(gather(R), b, zA, zB, 0.0)
        rel = first.inverse_mfpt.se / first.inverse_mfpt.value
        R = min(b.max_replicas, max(R, math.ceil(R * (rel / b.target_rel_se) ** 2)))
        run_chunks(math.ceil(R / chunk))
    seconds = time.perf_counter() - t0
    return _summarize(gather(R), b, zA, zB, seconds)


def _summarize(res: dict, b: Budget, zA: float, zB: float, seconds: float) -> SplittingResult:
    if np.any(res["x0_score"] >= zA):
        fail("basin", zA, f"the start scores {float(res['x0_score'][0]):.4g}; the basin level "
             "must lie above the start's score")
    if np.any(res["crossings"] + res["direct"] == 0):
        fail("basin", zA, f"no walker left the basin (score ≥ {zA:.4g}) after burn_in in "
             f"{int(np.sum(res['crossings'] + res['direct'] == 0))} replica(s): lower basin or "
             "raise walkers/flux_steps")
    if np.any(res["stuck"]):
        fail("max_trial_steps", b.max_trial_steps, "a trial neither escaped nor returned to "
             "the basin within it: raise max_trial_steps or basin")
    n_ext = int(np.sum(res["extinct"]))
    if n_ext > res["extinct"].size // 2:
        top = int(np.max(res["top"]))
        if top == b.levels:
            fail("target", zB, f"the score reached the target level {zB:.4g} in the trials, "
                 "but no particle entered the escape set: the score may never reach the "
                 "target inside the escape set (check score, target and event)")
        where = "the escape set" if top > b.levels else f"level {top} of {b.levels}"
        fail("particles", b.particles, f"the population died out in {n_ext} of "
             f"{res['extinct'].size} replicas (all particles tied at one level, highest "
             f"reached {where}): raise particles, levels or substeps")
    W = b.walkers * (b.flux_steps - b.burn_in)
    attempts = res["crossings"] + res["direct"]
    flux = attempts / W
    if b.trials_from == "basin":  # every escape: a trial from a basin state
        direct = res["in_basin"] * res["direct_prob"]
        res = {**res, "prob": np.zeros_like(res["prob"])}
    elif b.substeps > 1:  # one-kick escapes from the basin, split over sub-kicks
        direct = res["direct_drift"] + res["in_basin"] * res["direct_prob"]
    else:  # counted by the flux walkers
        direct = res["direct"].astype(float)
    rate = (direct + res["crossings"] * res["prob"]) / W
    prob = rate / flux
    inv = interval(rate)
    if not inv.value > 0:
        fail("particles", b.particles, "every replica estimated probability 0")
    q = _t_quantile(rate.size - 1)
    tau = 1.0 / inv.value
    tau_se = inv.se / inv.value**2
    tau_hi = 1.0 / inv.lo if inv.lo > 0 else math.inf
    mfpt = Estimate(tau, tau_se, 1.0 / inv.hi, tau_hi)
    del q
    trial_steps = float(np.sum(res["trial_substeps"])) / b.substeps
    return SplittingResult(
        inverse_mfpt=inv, mfpt=mfpt, probability=interval(prob), flux=interval(flux),
        brute_rate=interval(res["escapes"] / W), rate=rate, prob=prob,
        crossings=attempts, escapes=res["escapes"], iterations=res["iterations"],
        extinct=res["extinct"], walker_steps=W,
        member_steps=float(rate.size * b.walkers * b.flux_steps) + trial_steps,
        seconds=seconds, direct=interval(direct / W))
