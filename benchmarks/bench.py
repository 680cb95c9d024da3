"""Engine throughput against baselines and against the machine's own limits.

Every workload is timed in one process together with its baselines and the two
physical limits (float32 matmul FLOP/s, ``jax.random.normal`` normals/s), so the
ratios are comparable even on a loaded machine. Times are wall-clock around
``jax.block_until_ready``; the first (compiling) run is excluded and reported as
``compile_s = first − median``; the figure is the median of ``--repeats`` runs.
Each engine repeat uses a different hyperparameter grid of the same shape, and the
change of ``sgdlab.engine.trace_count()`` over the repeats is reported (0 = no
recompilation).

Throughput is member-steps per second: members (grid points × seeds) × steps /
seconds. ``fraction`` is the achieved matmul FLOP/s over the measured matmul peak
(FLOPs counted exactly for the dense layers: forward ``2·B·in·out``, weight
gradient ``2·B·in·out``, input gradient ``2·B·in·out`` for every layer but the
first -- about ``6·B·params`` for deep nets), or for the random-number-bound W2
the normals used per second (one per member-step) over the measured normals/s.

Command line: ``python -m benchmarks --workload W1|...|W5|scaling|all [--quick]
[--repeats N] [--json FILE]`` (also ``sgdlab bench ...``). ``--json`` writes one
record for a single workload and a list of records for ``all``. Unless
``--no-save``, the run also writes ``benchmarks/results/<machine>-<time>.json``,
the scaling plot and the generated tables of ``benchmarks/RESULTS.md``.

Every record splits the engine's compile per program (``_init``, ``_segment``) into
lowering (trace + MLIR) and XLA seconds (``compile``), read from JAX's own compile
events (:class:`CompileLog`).

Where a workload measures its components (``components``: the random numbers alone, the
update alone, the engine), the random-number-bound workload also reports its random
numbers per number against the bulk-normal ceiling of the same rounds
(``components.rng_s_per_number``, ``rng_vs_bulk``; the issue's target is ≤ 1.5).

``--suite gpu [--budget-s 240] [--allow-tf32] [--append-results]`` runs W1–W5 at
GPU sizes (size ``gpu``: 10⁵–10⁶ members where they fit; ``--size tiny`` for a CPU
smoke run) within a wall-clock budget, float32 matmuls at precision ``highest``
(no TF32) unless ``--allow-tf32``, with the matmul and normals ceilings measured at
that precision and a bitwise chunk/device check (:func:`bitwise_check`). Workloads
that do not fit their share of the remaining budget are shrunk or skipped, and the
document says which and why (:func:`gpu_suite`). ``--append-results`` appends a
dated section to RESULTS.md; ``--append-from JSON`` does so for a saved suite.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import glob
import gzip
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import sgdlab as sl
from benchmarks import baselines
from sgdlab import engine

HERE = Path(__file__).resolve().parent
WORKLOADS = ("W1", "W2", "W3", "W4", "W5")
SIZES = ("full", "quick", "tiny", "gpu")
BEGIN, END = "<!-- bench:tables:begin -->", "<!-- bench:tables:end -->"


# --------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device() -> str:
    d = jax.devices()[0]
    kind = getattr(d, "device_kind", d.platform)
    if d.platform == "cpu":
        kind = f"{cpu_model()}, {os.cpu_count()} cores"
    return f"{d.platform}: {kind} x{len(jax.devices())}"


def machine() -> str:
    """A short name for grouping results: ``$SGDLAB_BENCH_MACHINE`` or platform-cores."""
    name = os.environ.get("SGDLAB_BENCH_MACHINE")
    if name:
        return name
    d = jax.devices()[0]
    if d.platform == "cpu":
        return f"cpu-{os.cpu_count()}core"
    return f"{d.platform}-{getattr(d, 'device_kind', '').replace(' ', '_')}"


def versions() -> dict[str, str]:
    import jaxlib

    out = {"sgdlab": sl.__version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
           "optax": optax.__version__, "numpy": np.__version__,
           "python": platform.python_version()}
    try:
        import torch
        out["torch"] = torch.__version__
    except ImportError:
        pass
    return out


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --------------------------------------------------------------------------- timing


def wait(x):
    """Block until every JAX array in ``x`` is computed (other leaves are ready)."""
    for leaf in jax.tree_util.tree_leaves(x):
        if isinstance(leaf, jax.Array):
            leaf.block_until_ready()
    return x


def time_runs(fn: Callable[[int], Any], repeats: int, min_s: float = 0.0) -> dict:
    """Run ``fn(0)`` once (warm-up, compiles) then ``fn(1..repeats)``; wall times.

    With ``min_s``, runs go on past ``repeats`` until they add up to ``min_s`` seconds
    (at most 1000 runs), so that the median of a run of a few milliseconds is not the
    median of three. Returns first, median and all repeat times (seconds); every run is
    waited for with :func:`wait`.
    """
    t0 = time.perf_counter()
    wait(fn(0))
    first = time.perf_counter() - t0
    times, total, r = [], 0.0, 1
    while r <= repeats or (total < min_s and r <= 1000):
        t0 = time.perf_counter()
        wait(fn(r))
        times.append(time.perf_counter() - t0)
        total += times[-1]
        r += 1
    med = statistics.median(times)
    return {"first_s": first, "median_s": med, "times_s": times,
            "compile_s": max(first - med, 0.0)}


def measure_limits(size: str, repeats: int) -> dict:
    """The device's float32 matmul FLOP/s and ``jax.random.normal`` normals/s.

    Matmul: ``n×n @ n×n`` (n = 2048; 512 at size tiny, 8192 at size gpu), ``2n³``
    FLOPs, at the matmul precision in force (see :func:`precision`). Normals: the
    largest median rate over vectors of 2^18, 2^20 and 2^22 normals (2^16 tiny; 2^22,
    2^24, 2^26 at size gpu).
    """
    n = {"tiny": 512, "gpu": 8192}.get(size, 2048)
    a = jax.random.normal(jax.random.key(0), (n, n))
    b = jax.random.normal(jax.random.key(1), (n, n))
    mm = jax.jit(jnp.matmul)
    t = time_runs(lambda r: mm(a, b), max(repeats, 5))
    flops = 2.0 * n**3 / t["median_s"]
    rates = {}
    for e in {"tiny": (16,), "gpu": (22, 24, 26)}.get(size, (18, 20, 22)):
        m = 2**e
        draw = jax.jit(lambda k, m=m: jax.random.normal(k, (m,)))
        keys = jax.random.split(jax.random.key(2), max(repeats, 5) + 1)
        tr = time_runs(lambda r, draw=draw, keys=keys: draw(keys[r]), max(repeats, 5))
        rates[f"2^{e}"] = m / tr["median_s"]
    return {"matmul_flops_per_s": flops, "matmul_n": n, "normals_per_s": max(rates.values()),
            "normals_per_s_by_size": rates}


class CompileLog:
    """Lowering and XLA compile seconds per program while the context is open.

    Reads JAX's own compile events (``jax.monitoring``): tracing to a jaxpr plus
    lowering to an MLIR module is ``lowering_s``; the backend (XLA) compile, a
    persistent-cache read included, is ``xla_s``. Programs are named by their
    function (the engine's are ``_init`` and ``_segment``).
    """

    EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "lowering_s",
              "/jax/core/compile/jaxpr_to_mlir_module_duration": "lowering_s",
              "/jax/core/compile/backend_compile_duration": "xla_s"}

    def __init__(self):
        self.programs: dict[str, dict[str, float]] = {}
        self.cache_hits = 0
        self.active = False

    def _duration(self, event: str, secs: float, fun_name: str = "?", **_):
        what = self.EVENTS.get(event)
        if what is None or not self.active:
            return
        name = fun_name[4:-1] if fun_name.startswith("jit(") else fun_name
        prog = self.programs.setdefault(name, {"lowering_s": 0.0, "xla_s": 0.0})
        prog[what] += secs

    def _event(self, event: str, **_):
        if event == "/jax/compilation_cache/cache_hits" and self.active:
            self.cache_hits += 1

    def __enter__(self):
        self.active = True
        jax.monitoring.register_event_duration_secs_listener(self._duration)
        jax.monitoring.register_event_listener(self._event)
        return self

    def __exit__(self, *exc):
        self.active = False  # a JAX without the unregister functions keeps silent listeners
        for name, fn in (("unregister_event_duration_listener", self._duration),
                         ("unregister_event_listener", self._event)):
            try:
                getattr(jax.monitoring, name)(fn)
            except (AttributeError, AssertionError, ValueError):
                pass

    def summary(self, names=("_init", "_segment")) -> dict:
        """The named programs' times, their totals, and the rest as ``other``."""
        progs = {k: {kk: round(vv, 4) for kk, vv in v.items()}
                 for k, v in self.programs.items() if k in names}
        rest = [v for k, v in self.programs.items() if k not in names]
        return {"programs": progs,
                "lowering_s": sum(v["lowering_s"] for v in progs.values()),
                "xla_s": sum(v["xla_s"] for v in progs.values()),
                "other": {"programs": len(rest),
                          "lowering_s": sum(v["lowering_s"] for v in rest),
                          "xla_s": sum(v["xla_s"] for v in rest)},
                "cache_hits": self.cache_hits}


# --------------------------------------------------------------------------- workloads


def dense_flops(sizes, batch: int) -> float:
    """Matmul FLOPs of one SGD step of a dense net: forward, weight and input gradients."""
    mac = [i * o for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
    return 2.0 * batch * (2 * sum(mac) + sum(mac[1:]))


@dataclass
class Case:
    """A workload at one size: the engine study and how to time its baselines."""

    name: str
    title: str
    study: sl.Study
    grid: Callable[[int], dict]       # repeat index -> hparams of the same shape
    bound: str                        # "matmul" or "rng": the roofline of `fraction`
    per_member_step: float            # FLOPs (matmul) or normals (rng) per member-step
    baseline_steps: int
    loop_members: int
    torch_model: Callable[[], Any] | None
    stat: Callable | None = None      # baselines' post-burn-in running sum (W2)
    burn_in: int = 0
    components: bool = False
    torch_steps: int = 10**9          # cap on the PyTorch baselines' steps
    targets: list[tuple[str, str, float]] = field(default_factory=list)
    notes: str = ""


def _pick(size: str, full, quick, tiny, gpu=None):
    return {"full": full, "quick": quick, "tiny": tiny,
            "gpu": full if gpu is None else gpu}[size]


def w1(size: str) -> Case:
    seeds, steps, bsteps = _pick(size, (256, 2000, 500), (64, 300, 150), (4, 20, 20),
                                 gpu=(12500, 1000, 200))  # gpu: 10⁵ members
    sizes, batch = (10, 64, 1), 32
    problem = sl.problems.mlp_regression(sizes, activation="relu", target="teacher",
                                         inputs="gaussian", batch_size=batch,
                                         reduction="half_mean", n_eval=256)
    lrs = np.geomspace(0.005, 0.05, 8)
    study = sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": lrs}, steps=steps,
                     seeds=seeds, observe=sl.Observe(("loss",), num=5, members=False))

    def torch_model():
        from benchmarks import torch_baselines as tb
        return tb.MLP(sizes, batch, "gaussian", "teacher", reduction="half_mean")

    return Case("W1", "two-layer ReLU d=10 width 64, batch 32, online Gaussian inputs, "
                "8 learning rates", study, lambda r: {"learning_rate": lrs * (1 + 0.01 * r)},
                "matmul", dense_flops(sizes, batch), bsteps, 8, torch_model, components=True,
                torch_steps=_pick(size, 200, 50, 20, gpu=50),
                targets=[("engine / naive_vmap", "ratio:naive_vmap", 3.0),
                         ("engine / per_seed_loop", "ratio:per_seed_loop", 10.0)])


def w2(size: str) -> Case:
    seeds, steps, bsteps = _pick(size, (10**6, 10**4, 10**3), (10**5, 500, 500),
                                 (1000, 50, 50), gpu=(10**6, 2000, 500))
    problem = sl.problems.noisy_quadratic(1.0, 1.0)
    burn = steps // 5
    study = sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": 0.1}, steps=steps,
                     seeds=seeds, observe=None,
                     stationary=sl.Stationary(("w2",), burn_in=burn, members=False))

    def torch_model():
        from benchmarks import torch_baselines as tb
        return tb.Quadratic(1.0, 1.0)

    return Case("W2", "1-D noisy quadratic, stationary statistics of w² only", study,
                lambda r: {"learning_rate": 0.1 * (1 + 0.01 * r)}, "rng", 1.0, bsteps, 4,
                torch_model, stat=lambda w: jnp.sum(w**2), burn_in=bsteps // 5,
                components=True, torch_steps=_pick(size, 200, 100, 50, gpu=50),
                targets=[("normals used / normals peak", "fraction", 0.5)])


def w3(size: str) -> Case:
    # gpu: 4096 members (640 KB of parameters each, plus n×m activations): 10⁵ would not fit
    seeds, steps = _pick(size, (64, 200), (64, 10), (4, 3), gpu=(4096, 50))
    n, d, m = 100, 100, 1600
    problem = sl.problems.du_two_layer(m, n_data=n, dim=d)
    study = sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": 0.02}, steps=steps,
                     seeds=seeds, observe=sl.Observe(("loss",), num=5, members=False))

    def torch_model():
        from benchmarks import torch_baselines as tb
        return tb.DuTwoLayer(m, n, d)

    # forward X Wᵀ and the weight gradient; the output layer (a fixed) is 2·n·m each way
    flops = 4.0 * n * d * m + 4.0 * n * m
    return Case("W3", "Du et al. two-layer ReLU n=d=100, width 1600, full-batch GD", study,
                lambda r: {"learning_rate": 0.02 * (1 + 0.01 * r)}, "matmul", flops, steps,
                _pick(size, 8, 4, 2), torch_model,
                notes="gpu size: 4096 members, the most that fit comfortably (640 KB of "
                "parameters and n×m activations per member)" if size == "gpu" else "")


def w4(size: str) -> Case:
    seeds, steps, bsteps = _pick(size, (1024, 2000, 500), (1024, 300, 100), (4, 20, 20),
                                 gpu=(62500, 1000, 200))  # gpu: 2.5·10⁵ members
    sizes = (1, 32, 32, 32, 1)
    problem = sl.problems.constant_target(sizes, target_value=1.0, inputs="uniform",
                                          batch_size=1, reduction="mean", n_eval=256)
    alphas = [0.0, 0.5, 1.0, 2.0]
    study = sl.Study(problem, sl.Optimizer("sgd", schedule="power"),
                     {"gamma0": 0.01, "alpha": alphas}, steps=steps, seeds=seeds,
                     observe=sl.Observe(("loss",), num=5, members=False))

    def torch_model():
        from benchmarks import torch_baselines as tb
        return tb.MLP(sizes, 1, "uniform", "constant", target_value=1.0, reduction="mean")

    return Case("W4", "deep ReLU 3×32 on a constant target, batch 1, power schedules "
                "α ∈ {0, ½, 1, 2}", study,
                lambda r: {"gamma0": 0.01 * (1 + 0.01 * r), "alpha": alphas}, "matmul",
                dense_flops(sizes, 1), bsteps, 8, torch_model,
                torch_steps=_pick(size, 200, 50, 20, gpu=50))


def w5(size: str) -> Case:
    # gpu: 256 members (4.4 MB of parameters each; 10⁵ members would need 440 GB)
    seeds, steps = _pick(size, (4, 50), (2, 3), (1, 2), gpu=(64, 100))
    sizes, batch = (64, 1024, 1024, 1), 128
    problem = sl.problems.mlp_regression(sizes, activation="relu", target="teacher",
                                         teacher_sizes=(64, 16, 1), inputs="gaussian",
                                         batch_size=batch, reduction="half_mean", n_eval=256)
    lrs = np.array([0.001, 0.002, 0.005, 0.01])
    study = sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": lrs}, steps=steps,
                     seeds=seeds, observe=sl.Observe(("loss",), num=5, members=False))

    def torch_model():
        from benchmarks import torch_baselines as tb
        return tb.MLP(sizes, batch, "gaussian", "teacher", teacher_sizes=(64, 16, 1),
                      reduction="half_mean")

    return Case("W5", "wide ReLU net 64-1024-1024-1, batch 128, 4 learning rates", study,
                lambda r: {"learning_rate": lrs * (1 + 0.01 * r)}, "matmul",
                dense_flops(sizes, batch), steps, _pick(size, 8, 2, 1), torch_model,
                components=True, targets=[("matmul FLOP/s / matmul peak", "fraction", 0.4)],
                notes="gpu size: 256 members (4.4 MB of parameters each; 10⁵ would need "
                "440 GB)" if size == "gpu" else "")


BUILDERS = {"W1": w1, "W2": w2, "W3": w3, "W4": w4, "W5": w5}


# --------------------------------------------------------------------------- components


def _short(study: sl.Study, steps: int, **kw) -> sl.Study:
    st = study.stationary
    if st is not None and "stationary" not in kw:
        kw["stationary"] = dataclasses.replace(st, burn_in=steps // 5)
    return dataclasses.replace(study, steps=steps, **kw)


def _rng_only(study: sl.Study, steps: int):
    """Every seed's batches for ``steps`` steps, drawn as the engine draws them: once per
    seed (shared by its grid points); where the source has blocks, each block's key once
    and then every step's row alone (a source with ``row``), or whole blocks for groups of
    seeds one after another on CPU (``sl.engine.by_seed_groups``)."""
    source = study.problem.data
    data = baselines.shared_data(study.problem, study.seed)
    keys = jax.random.split(jax.random.key(2), study.seeds)
    B = sl.data.block_steps(source, data)

    def total(tree):
        return sum(jnp.sum(x) for x in jax.tree_util.tree_leaves(tree))

    @jax.jit
    def run(keys):
        if source.block is None:
            def body(acc, t):
                return acc + total(jax.vmap(lambda k: source.batch(data, k, t))(keys)), None
            return jax.lax.scan(body, jnp.zeros(()), jnp.arange(1, steps + 1))[0]

        if source.row is not None:
            def body(acc, b):
                kb = jax.vmap(lambda k: sl.data.block_key(k, b))(keys)
                return jax.lax.fori_loop(0, B, lambda j, a: a + total(jax.vmap(
                    lambda k: source.row(data, k, j, B))(kb)), acc), None
        else:
            def body(acc, b):
                rows = sl.engine.by_seed_groups(
                    lambda ks: jax.vmap(lambda k: source.block(data, k, b, B))(ks), keys)
                return acc + total(rows), None
        return jax.lax.scan(body, jnp.zeros(()), jnp.arange(-(-steps // B)))[0]

    return lambda r: run(keys)


def _numbers_per_step(study: sl.Study) -> int:
    """Random numbers the engine draws per step: one batch per seed."""
    source = study.problem.data
    data = jax.eval_shape(lambda: baselines.shared_data(study.problem, study.seed))
    one = jax.eval_shape(lambda d: source.batch(d, jax.random.key(0), jnp.int32(1)), data)
    return study.seeds * sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(one))


def _update_only(study: sl.Study, steps: int):
    """Forward, backward and optimizer update of every member on a fixed batch, members laid
    out as the engine lays them (``Study.member_layout``)."""
    problem, opt = study.problem, study.optimizer
    data = baselines.shared_data(problem, study.seed)
    s, g = study.seeds, study.n_grid
    hp = {k: jnp.asarray(v) for k, v in study.flat_hparams().items()}
    keys = jax.random.split(jax.random.key(3), s)
    params = jax.vmap(problem.init)(keys)
    params = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x[:, None], (s, g) + x.shape[1:]),
                                    params)
    batch = jax.vmap(lambda k: problem.data.batch(data, k, jnp.int32(1)))(keys)
    state = jax.vmap(jax.vmap(lambda p, h: opt.build(h).init(p)))(
        params, jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (s, g)), hp))

    @jax.jit
    def run(params, state, batch):
        def member(p, st, h, b):
            loss, grads = jax.value_and_grad(problem.loss)(p, b, h)
            updates, st = opt.build(h).update(grads, st, p)
            return optax.apply_updates(p, updates), st

        def body(c, _):
            if study.resolved_member_layout() == "map":  # as the engine lays members out
                return sl.engine.member_by_member(
                    lambda m, b, h: member(m[0], m[1], h, b), c, batch, hp), None
            f = jax.vmap(jax.vmap(member, in_axes=(0, 0, 0, None)), in_axes=(0, 0, None, 0))
            return f(c[0], c[1], hp, batch), None
        return jax.lax.scan(body, (params, state), None, length=steps)[0]

    return lambda r: run(params, state, batch)


def components(case: Case, repeats: int, steps: int, engine_s_per_step: float,
               bare: bool) -> dict:
    """Seconds per step of the engine's parts at the workload's ensemble size.

    ``rng`` draws every seed's batch (what the engine draws: once per seed);
    ``update`` is forward, backward and optimizer update of every member on a fixed
    batch; ``engine`` is the engine as benchmarked (its median run over its steps);
    with ``bare``, ``engine_bare`` is the engine without recorders (one more compile).
    ``share`` is over ``engine``; what ``rng + update`` leaves is the engine's own
    bookkeeping (divergence checks, selects, gradient norm, recorders, loop).
    """
    study = case.study
    parts = {"rng": _rng_only(study, steps), "update": _update_only(study, steps)}
    if bare:
        short = _short(study, steps, observe=None, stationary=None, first_passage=None)
        parts["engine_bare"] = lambda r: sl.run(short, progress=False)
    out: dict[str, Any] = {}
    for name, fn in parts.items():
        t = time_runs(fn, repeats)
        out[name] = {"s_per_step": t["median_s"] / steps}
    out["engine"] = {"s_per_step": engine_s_per_step}
    for v in out.values():
        v["share"] = v["s_per_step"] / engine_s_per_step
    out["steps"] = steps
    return out


def profile_ops(study: sl.Study, top: int = 12) -> list[dict]:
    """The engine's most expensive XLA ops in one (warm) run, from ``jax.profiler``."""
    sl.run(study, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp)
        wait(sl.run(study, progress=False))
        jax.profiler.stop_trace()
        files = glob.glob(os.path.join(tmp, "plugins", "profile", "*", "*.trace.json.gz"))
        if not files:
            return []
        events = json.load(gzip.open(files[0]))["traceEvents"]
    agg: dict[str, list[float]] = {}
    skip = ("ThunkExecutor", "$", "Pjit", "SlinkyThreadPool", "end: ", "while")
    for e in events:
        if e.get("ph") != "X" or e["name"].startswith(skip):
            continue
        a = agg.setdefault(e["name"], [0, 0.0])
        a[0] += 1
        a[1] += e.get("dur", 0.0) / 1e3
    total = sum(v[1] for v in agg.values()) or 1.0
    rows = sorted(agg.items(), key=lambda kv: -kv[1][1])[:top]
    return [{"op": k, "count": int(v[0]), "ms": round(v[1], 2), "share": round(v[1] / total, 3)}
            for k, v in rows]


# --------------------------------------------------------------------------- one workload


def _torch():
    try:
        from benchmarks import torch_baselines
    except ImportError as e:
        return None, f"PyTorch baselines skipped: torch is not importable ({e}); " \
            "install the optional `bench` extra (torch) to run them"
    torch_baselines.set_threads()
    return torch_baselines, None


def _quick_limits(limits: dict) -> tuple[float, float]:
    """One re-measurement of both limits (matmul and the best normals size), for a round."""
    n = limits["matmul_n"]
    a = jax.random.normal(jax.random.key(0), (n, n))
    mm = jax.jit(jnp.matmul)
    t = time_runs(lambda r: mm(a, a), 2)["median_s"]
    best = max(limits["normals_per_s_by_size"], key=limits["normals_per_s_by_size"].get)
    m = 2 ** int(best.split("^")[1])
    draw = jax.jit(lambda k: jax.random.normal(k, (m,)))
    keys = jax.random.split(jax.random.key(4), 3)
    tn = time_runs(lambda r: draw(keys[r]), 2)["median_s"]
    return 2.0 * n**3 / t, m / tn


def run_case(case: Case, size: str, repeats: int, use_torch: bool, profile: bool,
             log=print, limits: dict | None = None, deadline: float | None = None,
             torch_vmap: bool = True) -> dict:
    """Time one workload: the engine, its baselines and the limits, in interleaved rounds.

    Every implementation is run once to warm up (compile), then ``repeats`` rounds
    each time the engine (on a new grid of the same shape), every baseline, and the
    two limits once more. Throughputs are medians over rounds; ratios and fractions
    are medians of the per-round ratios, so a load that changes during the run
    affects numerator and denominator alike.

    ``limits`` reuses already measured limits; with a ``deadline`` (a
    ``time.perf_counter()`` value) the baselines not yet warmed up when it has passed
    are dropped, and rounds stop (after the first) when the next would end past it.
    The engine's compile is split per program into lowering and XLA seconds
    (``compile`` in the record, from :class:`CompileLog`).
    """
    study = case.study
    if limits is None:
        limits = measure_limits(size, repeats)
    members, steps = study.n_members, study.steps
    load_before = load()
    with CompileLog() as plan_log:
        plan = sl.plan(study)
    log(f"{case.name} [{size}] {case.title}: {study.n_grid} grid points × {study.seeds} seeds "
        f"= {members} members, {steps} steps; limits: matmul "
        f"{limits['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s, normals "
        f"{limits['normals_per_s'] / 1e6:.1f} M/s")

    def eng(r):
        return sl.run(study.with_hparams(**case.grid(r)), progress=False)

    bsteps = case.baseline_steps
    loop_members = min(case.loop_members, members)
    jobs: list[tuple[str, Callable, int, int]] = [
        ("engine", eng, members, steps),
        ("per_seed_loop", baselines.per_seed_loop(study, bsteps, loop_members, case.stat,
                                                  case.burn_in), loop_members, bsteps),
        ("naive_vmap", baselines.naive_vmap(study, bsteps, case.stat, case.burn_in),
         members, bsteps),
    ]
    skipped = None
    if use_torch and case.torch_model is not None:
        tb, skipped = _torch()
        if tb is not None:
            model = case.torch_model()
            flat = study.flat_hparams()
            burn = case.burn_in if case.stat is not None else None
            hp_m = {k: np.repeat(v, study.seeds) for k, v in flat.items()}
            stride = max(members // loop_members, 1)
            hps = [{k: float(v[i * stride]) for k, v in hp_m.items()}
                   for i in range(min(loop_members, 4))]
            tsteps = min(bsteps, case.torch_steps)
            eager = tb.eager_loop(model, hps, tsteps, burn)
            jobs.append(("torch_eager_loop", tb.best_of_threads(eager), len(hps), tsteps))
            if torch_vmap:
                vm = tb.vmapped(model, hp_m, members, tsteps, burn)
                probe = tb.vmapped(model, hp_m, members, min(tsteps, 3), burn)
                jobs.append(("torch_vmap", tb.best_of_threads(vm, probe), members, tsteps))
    elif not use_torch:
        skipped = "PyTorch baselines skipped (--no-torch)"
    if skipped:
        log("  " + skipped)

    def timed(fn, r):
        t0 = time.perf_counter()
        wait(fn(r))
        return time.perf_counter() - t0

    traces0 = engine.trace_count()
    first = {}
    dropped = []
    for name, fn, _, _ in jobs:
        if name != "engine" and deadline is not None and time.perf_counter() > deadline:
            dropped.append(name)
            continue
        if name == "engine":
            with CompileLog() as clog:
                first[name] = timed(fn, 0)
        else:
            first[name] = timed(lambda r, fn=fn: fn(), 0)
    if dropped:
        jobs = [j for j in jobs if j[0] not in dropped]
        log(f"  budget: dropped {', '.join(dropped)} (the workload's time was spent)")
    compile_info = clog.summary()
    compile_info["plan_probe"] = plan_log.summary(tuple(plan_log.programs))
    log("  compile         engine programs: " + ", ".join(
        f"{k} lowering {v['lowering_s']:.3g} s + XLA {v['xla_s']:.3g} s"
        for k, v in compile_info["programs"].items()) + (
        f" (persistent-cache hits: {clog.cache_hits})" if clog.cache_hits else ""))
    traces1 = engine.trace_count()
    rounds: dict[str, list[float]] = {name: [] for name, *_ in jobs}
    lim_rounds = []
    # a round's cost before one was timed: the warm-ups less the engine's compile
    round_est = sum(first.values()) - compile_info["lowering_s"] - compile_info["xla_s"]
    for r in range(1, repeats + 1):
        if r > 1 and deadline is not None and time.perf_counter() + round_est > deadline:
            log(f"  budget: {r - 1} of {repeats} rounds")
            break
        t_round = time.perf_counter()
        for name, fn, m, s in jobs:
            t = timed(fn if name == "engine" else (lambda r, fn=fn: fn()), r)
            rounds[name].append(m * s / t)
        lim_rounds.append(_quick_limits(limits))
        round_est = time.perf_counter() - t_round
    traces2 = engine.trace_count()

    msps = {name: statistics.median(v) for name, v in rounds.items()}
    engine_msps = msps.pop("engine")
    med = members * steps / engine_msps
    compile_s = max(first["engine"] - med, 0.0)
    log(f"  engine          {engine_msps:10.4g} member-steps/s  (median {med:.3g} s, "
        f"compile {compile_s:.3g} s, traces: warm-up {traces1 - traces0}, "
        f"repeats {traces2 - traces1})")
    base, base_cfg, ratios = {}, {}, {}
    for name, fn, m, s in jobs[1:]:
        base[name] = msps[name]
        ratios[name] = statistics.median(e / b for e, b in zip(rounds["engine"], rounds[name],
                                                               strict=True))
        base_cfg[name] = {"members": m, "steps": s, "member_steps_per_s_rounds": rounds[name],
                          "first_run_s": first[name],
                          "compile_s": max(first[name] - m * s / msps[name], 0.0)}
        if hasattr(fn, "threads"):
            base_cfg[name]["torch_threads"] = fn.threads
        log(f"  {name:15s} {base[name]:10.4g} member-steps/s  (engine {ratios[name]:.3g}×; "
            f"{m} members × {s} steps)")
    if case.bound == "matmul":
        fr = [e * case.per_member_step / lim[0] for e, lim in zip(rounds["engine"], lim_rounds,
                                                                   strict=True)]
    else:
        fr = [e * case.per_member_step / lim[1] for e, lim in zip(rounds["engine"], lim_rounds,
                                                                   strict=True)]
    fraction = statistics.median(fr)
    peak_mm = statistics.median(x[0] for x in lim_rounds)
    peak_rng = statistics.median(x[1] for x in lim_rounds)
    log(f"  roofline        {fraction:.3g} of the measured "
        f"{'matmul FLOP/s' if case.bound == 'matmul' else 'normals/s'} (rounds: matmul "
        f"{peak_mm / 1e9:.1f} GFLOP/s, normals {peak_rng / 1e6:.1f} M/s)")

    rec: dict[str, Any] = {
        "workload": case.name, "title": case.title, "device": device(),
        "versions": versions(), "size": size, "quick": size != "full",
        "members": members, "grid_points": study.n_grid, "seeds": study.seeds, "steps": steps,
        "member_steps_per_s": engine_msps, "compile_s": compile_s, "compile": compile_info,
        "rounds": len(rounds["engine"]), "dropped_for_budget": dropped,
        "member_steps_per_s_rounds": rounds["engine"], "first_run_s": first["engine"],
        "trace_count_delta": {"warmup": traces1 - traces0, "repeats": traces2 - traces1},
        "plan": plan.describe(),
        "baselines": base, "baseline_config": base_cfg, "ratios": ratios,
        "roofline": {"matmul_flops_per_s": peak_mm, "normals_per_s": peak_rng,
                     "fraction": fraction, "bound": case.bound,
                     "per_member_step": case.per_member_step, "fraction_rounds": fr,
                     "limits_at_start": limits},
        "notes": case.notes, "skipped": skipped,
    }
    if case.components and size not in ("tiny", "gpu"):
        rec["components"] = components(case, repeats, min(steps, 200), med / steps, profile)
        log("  components (s/step, share of engine): " + ", ".join(
            f"{k} {v['s_per_step']:.3g} ({v['share']:.2f})"
            for k, v in rec["components"].items() if isinstance(v, dict)))
        if case.bound == "rng":  # the random numbers of a step against bulk normals
            comp = rec["components"]
            comp["rng_numbers_per_step"] = n = _numbers_per_step(study)
            comp["rng_s_per_number"] = comp["rng"]["s_per_step"] / n
            comp["rng_vs_bulk"] = comp["rng_s_per_number"] * peak_rng
            log(f"  random numbers  {comp['rng_s_per_number'] * 1e9:.3g} ns each, "
                f"{comp['rng_vs_bulk']:.3g}× a bulk normal ({n} per step)")
    if profile and (deadline is None or time.perf_counter() < deadline):
        rec["profile"] = profile_ops(_short(study, min(steps, 200)))
        for row in rec["profile"][:8]:
            log(f"    {row['share']:6.1%} {row['ms']:9.1f} ms  {row['op']}")
    targets = []
    for what, key, want in case.targets:
        got = fraction if key == "fraction" else ratios.get(key.split(":", 1)[1])
        targets.append({"what": what, "target": want, "measured": got,
                        "met": got is not None and got >= want})
    targets.append({"what": "recompilations across grids of the same shape", "target": 0,
                    "measured": traces2 - traces1, "met": traces2 == traces1})
    rec["targets"] = targets
    rec["load"] = {"before": load_before, "after": load()}
    return rec


# --------------------------------------------------------------------------- scaling


SCALING_MIN_S = 0.5  # each ensemble size is timed over at least this long (runs of ms)


def scaling(size: str, repeats: int, log=print) -> dict:
    """Member-steps/s of the W1 problem against the ensemble size (8 learning rates);
    each size's engine and naive runs are repeated until they add up to
    ``SCALING_MIN_S`` (8 members: a run takes about 8 ms on 2 CPU cores)."""
    seeds_list, steps = _pick(size, ([1, 8, 64, 256], 200), ([1, 8, 64], 100),
                              ([1, 2], 10))
    base = w1("tiny" if size == "tiny" else "quick").study
    min_s = 0.0 if size == "tiny" else SCALING_MIN_S  # tiny: a smoke run, not a measurement
    out: dict[str, Any] = {"steps": steps, "members": [], "engine": [], "naive_vmap": []}
    for s in seeds_list:
        study = dataclasses.replace(base, seeds=s, steps=steps)
        m = study.n_members
        te = time_runs(lambda r, st=study: sl.run(st, progress=False), repeats, min_s)
        naive = baselines.naive_vmap(study, steps)
        tn = time_runs(lambda r, f=naive: f(), repeats, min_s)
        out["members"].append(m)
        out["engine"].append(m * steps / te["median_s"])
        out["naive_vmap"].append(m * steps / tn["median_s"])
        log(f"  scaling {m:6d} members: engine {out['engine'][-1]:.4g}, naive "
            f"{out['naive_vmap'][-1]:.4g} member-steps/s")
    study = dataclasses.replace(base, seeds=seeds_list[-1], steps=steps)
    loop = baselines.per_seed_loop(study, steps, 8)
    tl = time_runs(lambda r: loop(), repeats)
    out["per_seed_loop"] = 8 * steps / tl["median_s"]
    return out


def plot_scaling(sc: dict, path: Path, title: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    m = sc["members"]
    ax.loglog(m, sc["engine"], "o-", label="sgdlab engine")
    ax.loglog(m, sc["naive_vmap"], "s--", label="naive jit(vmap(scan))")
    if "torch_vmap" in sc:
        ax.loglog(m, sc["torch_vmap"], "^:", label="torch.func.vmap")
    ax.axhline(sc["per_seed_loop"], color="gray", ls="-.", label="per-seed loop of jit(scan)")
    ax.set_xlabel("ensemble size (members = 8 learning rates × seeds)")
    ax.set_ylabel("member-steps / s")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- gpu suite


def precision(allow_tf32: bool) -> dict:
    """Set the float32 matmul precision of the suite; returns what is in force.

    Without ``allow_tf32`` float32 matmuls run at full precision
    (``jax_default_matmul_precision="highest"``: no TF32 on a GPU), and the matmul
    ceiling is measured at the same precision.
    """
    jax.config.update("jax_default_matmul_precision", None if allow_tf32 else "highest")
    return {"jax_default_matmul_precision": jax.config.jax_default_matmul_precision or "default",
            "tf32_allowed": bool(allow_tf32)}


def _bitwise_study(size: str) -> sl.Study:
    seeds, block = (64, 8) if size == "gpu" else (8, 2)
    problem = sl.problems.mlp_regression((4, 8, 1), activation="relu", target="teacher",
                                         inputs="gaussian", batch_size=8,
                                         reduction="half_mean", n_eval=16)
    return sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": [0.01, 0.05]}, steps=10,
                    seeds=seeds, observe=sl.Observe(("loss",), num=3, members=True),
                    block_seeds=block)


def _differing(a, b) -> list[str]:
    """The variables of two result Datasets whose bytes differ (or that only one has)."""
    out = sorted(set(a.data_vars) ^ set(b.data_vars))
    for k in sorted(set(a.data_vars) & set(b.data_vars)):
        x, y = np.asarray(a[k].values), np.asarray(b[k].values)
        if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
            out.append(k)
    return out


def bitwise_check(size: str, log=print) -> dict:
    """The engine's chunking (and, with several devices, device-count) guarantee, here.

    A small MLP study (2 learning rates × 8 seeds in statistics blocks of 2; 64 seeds
    in blocks of 8 at size gpu) is run in one chunk and in chunks of a quarter of the
    seeds; every variable (members' losses and the streamed statistics) must be
    bitwise equal. With more than one local device the one-device run is compared as well.
    """
    study = _bitwise_study(size)
    whole = study.seeds
    part = max(whole // 4, 1)
    t0 = time.perf_counter()
    with CompileLog() as clog:
        a = sl.run(study, progress=False, chunk_size=whole)
        b = sl.run(study, progress=False, chunk_size=part)
    out: dict[str, Any] = {
        "study": f"mlp_regression((4, 8, 1)), 2 learning rates × {whole} seeds, 10 steps",
        "chunk_seeds": [whole, part], "chunks": [sl.plan(study, chunk_size=whole).chunks,
                                                 sl.plan(study, chunk_size=part).chunks],
        "differing_chunking": _differing(a, b), "devices": len(jax.local_devices())}
    out["chunking_equal"] = not out["differing_chunking"]
    if out["devices"] > 1:
        c = sl.run(study, progress=False, devices=1)
        out["differing_devices"] = _differing(a, c)
        out["devices_equal"] = not out["differing_devices"]
    out["equal"] = out["chunking_equal"] and out.get("devices_equal", True)
    out["seconds"] = time.perf_counter() - t0
    out["compile"] = clog.summary()
    log(f"bitwise check: {whole} seeds in {out['chunks'][0]} chunk vs {out['chunks'][1]} chunks"
        f" of {part}: " + ('equal' if out['chunking_equal'] else
                           'DIFFERENT: ' + ', '.join(out['differing_chunking']))
        + (f"; 1 vs {out['devices']} devices: "
           f"{'equal' if out['devices_equal'] else 'DIFFERENT'}" if out["devices"] > 1 else "")
        + f" ({out['seconds']:.1f} s)")
    return out


def estimate_s(case: Case, limits: dict, repeats: int, compile_s: float,
               latency_s: float, accel: bool = False) -> float:
    """A deliberately pessimistic guess of a workload's seconds in the suite.

    The engine's programs to compile at ``compile_s`` and the two JAX baselines'
    at half that each, then a warm-up and ``repeats`` rounds of the engine and the
    JAX baselines at 5% of the matmul ceiling (20% of the normals ceiling for the
    random-number-bound W2; on an accelerator 15% and 30%), plus ``latency_s`` per
    scanned step (the per-seed loop runs its members one by one).
    """
    study = case.study
    frac = (0.15 if accel else 0.05) if case.bound == "matmul" else (0.3 if accel else 0.2)
    ceiling = limits["matmul_flops_per_s"] if case.bound == "matmul" else limits["normals_per_s"]
    rate = frac * ceiling / case.per_member_step
    m, loop = study.n_members, min(case.loop_members, study.n_members)
    run = (m * study.steps / rate + study.steps * latency_s
           + m * case.baseline_steps / rate + case.baseline_steps * latency_s
           + loop * case.baseline_steps * (latency_s + 1 / rate))
    return 2 * compile_s + (repeats + 1) * run


def shrink(case: Case, steps: int, seeds: int) -> Case:
    """The workload with fewer steps and/or seeds (baselines' steps capped to match)."""
    study = _short(case.study, steps, seeds=seeds)
    bsteps = min(case.baseline_steps, steps)
    return dataclasses.replace(case, study=study, baseline_steps=bsteps,
                               burn_in=bsteps // 5 if case.stat is not None else 0)


def fit(case: Case, share_s: float, remaining_s: float, est) -> tuple[Case | None, dict | None]:
    """The workload at a size whose estimate fits ``share_s`` (or at least ``remaining_s``).

    Steps shrink first (to a tenth at most), then seeds (to a tenth at most). Returns
    ``(case, change)`` with the change recorded, or ``(None, reason)`` when even the
    smallest size does not fit the remaining budget.
    """
    full = est(case)
    if full <= share_s:
        return case, None
    st = case.study
    min_steps = max(st.steps // 10, min(st.steps, 20))
    min_seeds = max(1, st.seeds // 10)

    def cost(steps, seeds):
        try:
            return est(shrink(case, steps, seeds))
        except ValueError:  # e.g. too few steps for the stationary batches
            return float("inf")

    target = share_s if cost(min_steps, min_seeds) <= share_s else remaining_s
    steps, seeds = st.steps, st.seeds
    while cost(steps, seeds) > target and steps > min_steps:
        steps = max(min_steps, int(steps * 0.7))
    while cost(steps, seeds) > target and seeds > min_seeds:
        seeds = max(min_seeds, int(seeds * 0.7))
    if cost(steps, seeds) == float("inf"):
        steps, seeds = st.steps, st.seeds
    small = shrink(case, steps, seeds)
    if est(small) > remaining_s:
        return None, {"estimate_s": round(est(small), 2), "remaining_s": round(remaining_s, 2),
                      "reason": f"budget: even at {seeds * st.n_grid} members × {steps} steps "
                      f"the estimate {est(small):.3g} s exceeds the remaining "
                      f"{max(remaining_s, 0):.3g} s"}
    if (steps, seeds) == (st.steps, st.seeds):
        return case, None  # nothing smaller helps; the deadlines inside the workload guard it
    return small, {"members": [st.n_members, small.study.n_members], "steps": [st.steps, steps],
                   "estimate_s": [round(full, 2), round(est(small), 2)],
                   "share_s": round(share_s, 2),
                   "reason": f"budget: estimate {full:.3g} s > this workload's share "
                   f"{share_s:.3g} s"}


def _error(e: BaseException) -> str:
    """One line naming an exception (the first line of its message, cut at 300 chars)."""
    msg = (str(e).strip().splitlines() or [""])[0][:300]
    return f"error: {type(e).__name__}: {msg}"


def gpu_suite(args, size: str, argv: list[str], log=print, save=None) -> dict:
    """Run W1–W5 at GPU sizes within ``args.budget_s`` seconds; the suite's JSON document.

    Order: precision, the two ceilings, the bitwise chunk/device check, then each
    selected workload at the size that its (pessimistic) estimate lets fit in its
    share of the remaining budget -- shrunk (fewer steps, then seeds) or skipped,
    either recorded with the reason. Inside a workload the baselines' warm-ups and
    the rounds stop at the workload's deadline. The estimate's compile time is the
    median of the engine compiles seen so far (the bitwise check's first). A
    workload (or the check) that raises is recorded as skipped with the error and
    the suite goes on; ``save(doc)`` is called with the document so far after each
    step, so a run cut short still leaves its numbers.
    """
    started = time.perf_counter()
    end = started + args.budget_s - 1.0  # one second for writing the outputs
    created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    old_precision = jax.config.jax_default_matmul_precision
    records, skipped, shrunk = [], [], []
    doc: dict[str, Any] = {
        "suite": "gpu", "machine": machine(), "device": device(), "cpu": cpu_model(),
        "cores": os.cpu_count(), "versions": versions(), "created": created, "argv": argv,
        "size": size, "repeats": args.repeats, "budget_s": args.budget_s, "elapsed_s": 0.0,
        "precision": None, "limits": None, "ceilings": None, "fractions": {},
        "bitwise": {"skipped": "not reached", "equal": None}, "records": records,
        "skipped": skipped, "shrunk": shrunk}

    def update():
        doc["elapsed_s"] = time.perf_counter() - started
        doc["fractions"] = {
            r["workload"]: {"fraction": r["roofline"]["fraction"],
                            "bound": r["roofline"]["bound"],
                            "ceiling_in_rounds": r["roofline"]["matmul_flops_per_s"
                                                              if r["roofline"]["bound"] == "matmul"
                                                              else "normals_per_s"]}
            for r in records}
        if save is not None:
            save(doc)

    try:
        prec = doc["precision"] = precision(args.allow_tf32)
        log(f"sgdlab gpu suite on {device()} ({machine()}), size {size}, budget "
            f"{args.budget_s:g} s, matmul precision {prec['jax_default_matmul_precision']}, "
            f"load {load()}")
        limits = doc["limits"] = measure_limits(size, args.repeats)
        limits["precision"] = prec["jax_default_matmul_precision"]
        doc["ceilings"] = {"matmul_flops_per_s": limits["matmul_flops_per_s"],
                           "matmul_n": limits["matmul_n"], "matmul_dtype": "float32",
                           "precision": limits["precision"],
                           "normals_per_s": limits["normals_per_s"],
                           "normals_per_s_by_size": limits["normals_per_s_by_size"]}
        log(f"ceilings: matmul {limits['matmul_flops_per_s'] / 1e9:.4g} GFLOP/s (float32 "
            f"{limits['matmul_n']}², {limits['precision']}), normals "
            f"{limits['normals_per_s'] / 1e6:.4g} M/s")
        update()
        accel = jax.devices()[0].platform != "cpu"
        compiles = [5.0 if accel else 10.0]  # engine compiles seen (a study's init + segment)
        latency_s = 1e-4 if accel else 2e-5
        if end - time.perf_counter() > 0.25 * args.budget_s:
            try:
                doc["bitwise"] = bitwise_check(size, log)
                c = doc["bitwise"]["compile"]
                compiles = [(c["lowering_s"] + c["xla_s"]) / 2]  # two layouts compiled
            except Exception as e:  # noqa: BLE001 (recorded; the suite goes on)
                doc["bitwise"] = {"skipped": _error(e), "equal": None}
                log(f"bitwise check failed: {_error(e)}")
        else:
            doc["bitwise"] = {"skipped": "budget: less than a quarter of it left after the "
                              "ceilings", "equal": None}
            log("bitwise check skipped (budget)")
        update()
        names = WORKLOADS if args.workload == "all" else (args.workload,)
        for w in WORKLOADS:
            if w not in names:
                skipped.append({"workload": w,
                                "reason": f"not selected (--workload {args.workload})"})
        for i, name in enumerate(names):
            remaining = end - time.perf_counter()
            share = remaining / (len(names) - i)
            compile_s = statistics.median(compiles)

            def est(c, compile_s=compile_s):
                return estimate_s(c, limits, args.repeats, compile_s, latency_s, accel)

            try:
                case, change = fit(BUILDERS[name](size), share, remaining, est)
                if case is None:
                    skipped.append({"workload": name, **change})
                    log(f"{name} skipped: {change['reason']}")
                    continue
                if change is not None:
                    shrunk.append({"workload": name, **change})
                    log(f"{name} shrunk: {change['members'][0]} → {change['members'][1]} "
                        f"members, {change['steps'][0]} → {change['steps'][1]} steps "
                        f"({change['reason']})")
                t_case = time.perf_counter()
                deadline = min(end, t_case + max(share, est(case)))
                rec = run_case(case, size, args.repeats, not args.no_torch, False,
                               log=log, limits=limits, deadline=deadline, torch_vmap=False)
            except Exception as e:  # noqa: BLE001 (an OOM on one workload: record, go on)
                skipped.append({"workload": name, "reason": _error(e)})
                log(f"{name} failed: {_error(e)}")
                update()
                continue
            rec["suite"] = "gpu"
            rec["estimate_s"] = round(est(case), 2)
            rec["seconds"] = round(time.perf_counter() - t_case, 2)
            if name == "W1" and size == "gpu":
                rec["targets"].insert(0, {"what": "members (W1 at 10⁵ on a GPU)", "target": 1e5,
                                          "measured": rec["members"],
                                          "met": rec["members"] >= 1e5})
            records.append(rec)
            c = rec["compile"]
            if c["programs"]:
                compiles.append(c["lowering_s"] + c["xla_s"])
            update()
    finally:
        jax.config.update("jax_default_matmul_precision", old_precision)
    update()
    log(f"suite: {len(records)} workload(s) run, {len(skipped)} skipped, {len(shrunk)} shrunk; "
        f"{doc['elapsed_s']:.1f} s of a {args.budget_s:g} s budget")
    return doc


# --------------------------------------------------------------------------- output


def _g(x) -> str:
    return "—" if x is None else f"{x:.3g}"


def _lowering(r: dict) -> str:
    """``lowering | XLA`` seconds of the engine's programs (— for records before them)."""
    c = r.get("compile")
    if not c:
        return "— | —"
    return f"{c['lowering_s']:.2g} | {c['xla_s']:.2g}"


def table(records: list[dict]) -> str:
    """The summary table (Markdown, also printed on stdout)."""
    names = ["per_seed_loop", "naive_vmap", "torch_eager_loop", "torch_vmap"]
    head = ("| workload | size | members × steps | engine member-steps/s | compile s | "
            "lowering s | XLA s | "
            + " | ".join(f"{n} (engine ×)" for n in names)
            + " | roofline fraction | retraces | load |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in records:
        cells = []
        for n in names:
            v = r["baselines"].get(n)
            cells.append("—" if v is None else f"{v:.3g} ({r['ratios'][n]:.3g}×)")
        rf = r["roofline"]
        lines.append(
            f"| {r['workload']} | {r['size']} | {r['members']} × {r['steps']} | "
            f"{r['member_steps_per_s']:.3g} | {r['compile_s']:.2g} | {_lowering(r)} | "
            + " | ".join(cells)
            + f" | {rf['fraction']:.3g} ({rf['bound']}) | {r['trace_count_delta']['repeats']}"
            f" | {r['load']['before'][0]:.1f} |")
    return "\n".join(lines)


def targets_table(records: list[dict]) -> str:
    lines = ["| workload | target | wanted | measured | met |", "|---|---|---|---|---|"]
    for r in records:
        for t in r["targets"]:
            lines.append(f"| {r['workload']} ({r['size']}) | {t['what']} | ≥ {t['target']}"
                         if t["target"] else f"| {r['workload']} ({r['size']}) | {t['what']} | 0")
            lines[-1] += f" | {_g(t['measured'])} | {'yes' if t['met'] else '**no**'} |"
    return "\n".join(lines)


def update_results_md(results_dir: Path, md: Path):
    """Regenerate the tables of RESULTS.md: the latest record per workload and size, per machine."""
    latest: dict[str, dict[tuple[str, str], tuple[str, dict]]] = {}
    extra: dict[str, dict] = {}
    for f in sorted(results_dir.glob("*.json")):
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        mach = doc.get("machine", "unknown")
        for r in doc.get("records", []):
            latest.setdefault(mach, {})[(r["workload"], r["size"])] = (doc["created"], r)
        extra.setdefault(mach, {})
        extra[mach]["limits"] = doc.get("limits", extra[mach].get("limits"))
        extra[mach]["device"] = doc.get("device")
        extra[mach]["versions"] = doc.get("versions")
        if "scaling" in doc:
            extra[mach]["scaling"] = doc["scaling"]
    parts = [BEGIN, "", "_Generated by `python -m benchmarks` from `benchmarks/results/*.json`;"
             " do not edit between the markers._", ""]
    for mach in sorted(latest):
        recs = [r for _, r in sorted(latest[mach].values(), key=lambda x: (x[1]["workload"],
                                                                             x[1]["size"]))]
        e = extra[mach]
        lim = e.get("limits") or {}
        when = max(c for c, _ in latest[mach].values())
        parts += [f"### {mach}", "",
                  f"{e.get('device')}; latest run {when}; versions "
                  + ", ".join(f"{k} {v}" for k, v in (e.get("versions") or {}).items()), "",
                  f"Measured limits: matmul {lim.get('matmul_flops_per_s', 0) / 1e9:.1f} GFLOP/s"
                  f" (float32 {lim.get('matmul_n')}²), normals "
                  f"{lim.get('normals_per_s', 0) / 1e6:.1f} M/s (jax.random.normal).", "",
                  table(recs), "", targets_table(recs), ""]
        if "scaling" in e:
            parts += [f"![member-steps/s vs ensemble size](results/scaling-{mach}.png)", ""]
    parts.append(END)
    text = md.read_text() if md.exists() else "# Benchmark results\n\n" + BEGIN + "\n" + END + "\n"
    if BEGIN in text and END in text:
        pre, rest = text.split(BEGIN, 1)
        post = rest.split(END, 1)[1]
        text = pre + "\n".join(parts) + post
    else:
        text = text.rstrip() + "\n\n" + "\n".join(parts) + "\n"
    md.write_text(text)


GPU_BEGIN = "<!-- bench:gpu-suite -->"


def _x(v, unit: float = 1.0, fmt: str = ".3g") -> str:
    return "—" if v is None else format(v / unit, fmt)


def gpu_section(doc: dict) -> str:
    """A dated Markdown section of one gpu-suite document (appended to RESULTS.md)."""
    prec = doc["precision"] or {"jax_default_matmul_precision": "?", "tf32_allowed": False}
    c = doc["ceilings"] or {"matmul_flops_per_s": None, "normals_per_s": None, "matmul_n": "?"}
    bw = doc["bitwise"]
    if bw.get("skipped"):
        bits = f"not run ({bw['skipped']})"
    else:
        def verdict(equal, names):
            return "**equal**" if equal else "**DIFFERENT** (" + ", ".join(names or ()) + ")"

        bits = (f"{verdict(bw['chunking_equal'], bw.get('differing_chunking'))}, "
                f"{bw['chunk_seeds'][0]} seeds in {bw['chunks'][0]} chunk vs {bw['chunks'][1]} "
                f"chunks of {bw['chunk_seeds'][1]}")
        if "devices_equal" in bw:
            bits += (f"; 1 vs {bw['devices']} devices: "
                     f"{verdict(bw['devices_equal'], bw.get('differing_devices'))}")
    lines = [f"### GPU suite, {doc['created'][:10]}: {doc['device']}", "",
             f"`sgdlab bench {' '.join(doc['argv'])}` at {doc['created']}, size {doc['size']}; "
             f"{doc['elapsed_s']:.0f} s of a {doc['budget_s']:g} s budget; float32 matmul "
             f"precision {prec['jax_default_matmul_precision']}"
             + (" (TF32 allowed)" if prec["tf32_allowed"] else " (no TF32)") + "; versions "
             + ", ".join(f"{k} {v}" for k, v in doc["versions"].items()) + ".", "",
             f"Ceilings (same run, same precision): matmul {_x(c['matmul_flops_per_s'], 1e12)} "
             f"TFLOP/s (float32 {c['matmul_n']}²), normals {_x(c['normals_per_s'], 1e9)} G/s "
             "(`jax.random.normal`). Bitwise chunk/device check: " + bits + ".", "",
             "| workload | members × steps | engine member-steps/s | lowering s | XLA s | "
             "naive_vmap (engine ×) | per_seed_loop (engine ×) | torch_eager_loop (engine ×) | "
             "fraction of ceiling | rounds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["records"]:
        cells = []
        for n in ("naive_vmap", "per_seed_loop", "torch_eager_loop"):
            v = r["baselines"].get(n)
            cells.append("—" if v is None else f"{v:.3g} ({r['ratios'][n]:.3g}×)")
        rf = r["roofline"]
        lines.append(f"| {r['workload']} | {r['members']} × {r['steps']} | "
                     f"{r['member_steps_per_s']:.3g} | {_lowering(r)} | " + " | ".join(cells)
                     + f" | {rf['fraction']:.3g} ({rf['bound']}) | {r['rounds']} |")
    targets = [f"{r['workload']} {t['what']} ≥ {t['target']:g}: {_x(t['measured'])} "
               f"({'met' if t['met'] else '**not met**'})"
               for r in doc["records"] for t in r["targets"] if t["target"]]
    if targets:
        lines.append("\nTargets: " + "; ".join(targets) + ".")
    for s in doc["shrunk"]:
        lines.append(f"\nShrunk {s['workload']}: {s['members'][0]} → {s['members'][1]} members, "
                     f"{s['steps'][0]} → {s['steps'][1]} steps ({s['reason']}).")
    for s in doc["skipped"]:
        lines.append(f"\nSkipped {s['workload']}: {s['reason']}.")
    for r in doc["records"]:
        if r.get("dropped_for_budget"):
            lines.append(f"\n{r['workload']}: baselines dropped for the budget: "
                         + ", ".join(r["dropped_for_budget"]) + ".")
    return "\n".join(lines) + "\n"


def append_section(doc: dict, md: Path) -> None:
    """Append :func:`gpu_section` of ``doc`` to ``md`` (after the gpu-suite marker)."""
    text = md.read_text() if md.exists() else "# Benchmark results\n"
    if GPU_BEGIN not in text:
        text = text.rstrip() + "\n\n" + GPU_BEGIN + "\n"
    md.write_text(text.rstrip() + "\n\n" + gpu_section(doc))


# --------------------------------------------------------------------------- CLI


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (exit status 2)."""

    def error(self, message):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _budget(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}")
    return v


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m benchmarks",
        description="Time the sgdlab engine against its baselines and the machine's limits.")
    p.add_argument("--suite", choices=("cpu", "gpu"), default="cpu",
                   help="cpu: the workloads at --size (default); gpu: W1–W5 at GPU sizes "
                   "within --budget-s, with the ceilings and the bitwise check")
    p.add_argument("--workload", default="all",
                   choices=(*WORKLOADS, "scaling", "all"),
                   help="W1..W5, scaling (member-steps/s vs ensemble size), or all")
    p.add_argument("--quick", action="store_true",
                   help="the reduced sizes for a 2-core CPU (same as --size quick)")
    p.add_argument("--size", choices=SIZES, default=None,
                   help="full (the issue's sizes), quick, tiny (smoke test) or gpu "
                   "(10⁵–10⁶ members where they fit; the gpu suite's default)")
    p.add_argument("--budget-s", type=_budget, default=None, metavar="SECONDS",
                   help="gpu suite: wall-clock budget; workloads that do not fit are shrunk "
                   "or skipped, and recorded (default 240)")
    p.add_argument("--allow-tf32", action="store_true",
                   help="gpu suite: let float32 matmuls use TF32 (default: precision highest)")
    p.add_argument("--append-results", action="store_true",
                   help="gpu suite: append its numbers as a dated section to "
                   "benchmarks/RESULTS.md")
    p.add_argument("--append-from", metavar="JSON",
                   help="append the section of a saved gpu-suite JSON to benchmarks/RESULTS.md "
                   "and exit (runs nothing)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs after the warm-up (≥ 1)")
    p.add_argument("--json", metavar="FILE",
                   help="write the record (a list of records for 'all'; the suite's document "
                   "for --suite gpu) to FILE")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch baselines")
    p.add_argument("--profile", action="store_true",
                   help="add the engine's top XLA ops from a jax.profiler trace")
    p.add_argument("--no-save", action="store_true",
                   help="do not write benchmarks/results/, the plot or RESULTS.md tables")
    p.add_argument("--results-dir", default=str(HERE / "results"), metavar="DIR")
    return p


def _usage(message: str) -> int:
    print(f"python -m benchmarks: error: {message}", file=sys.stderr)
    return 2


def _main_gpu(args, size: str, argv: list[str]) -> int:
    out = None
    if not args.no_save:
        rdir = Path(args.results_dir)
        rdir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        out = rdir / f"{machine()}-{stamp}-gpu-suite-{size}.json"

    def save(doc):  # after every step, so that a run cut short leaves its numbers
        text = json.dumps(doc, indent=1, default=float)
        for path in (args.json, out):
            if path:
                Path(path).write_text(text)

    doc = gpu_suite(args, size, argv, log=lambda s: print(s, flush=True), save=save)
    if doc["records"]:
        print()
        print(table(doc["records"]))
        print()
        print(targets_table(doc["records"]))
    for s in doc["skipped"]:
        print(f"skipped {s['workload']}: {s['reason']}")
    bw = doc["bitwise"]
    print(f"bitwise chunk/device check: {bw.get('equal')}; precision "
          f"{doc['precision']['jax_default_matmul_precision']}; total {doc['elapsed_s']:.1f} s "
          f"(budget {doc['budget_s']:g} s), load {load()}")
    if out is not None:
        if out.parent.resolve() == (HERE / "results").resolve():
            update_results_md(rdir, HERE / "RESULTS.md")
        print(f"wrote {out}")
    if args.append_results:
        append_section(doc, HERE / "RESULTS.md")
        print(f"appended the suite's section to {HERE / 'RESULTS.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; returns the exit status (0 ok, 2 usage error)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    argv = list(argv if argv is not None else sys.argv[1:])
    if args.repeats < 1:
        return _usage("--repeats must be ≥ 1")
    if args.append_from:
        try:
            doc = json.loads(Path(args.append_from).read_text())
        except (OSError, ValueError) as e:
            return _usage(f"--append-from: cannot read {args.append_from}: {e}")
        if not isinstance(doc, dict) or doc.get("suite") != "gpu":
            return _usage(f"--append-from: {args.append_from} is not a gpu-suite JSON")
        append_section(doc, HERE / "RESULTS.md")
        print(f"appended the section of {args.append_from} to {HERE / 'RESULTS.md'}")
        return 0
    if args.suite == "cpu":
        for flag, given in (("--budget-s", args.budget_s is not None),
                            ("--allow-tf32", args.allow_tf32),
                            ("--append-results", args.append_results)):
            if given:
                return _usage(f"{flag} applies to --suite gpu")
    else:
        if args.workload == "scaling":
            return _usage("--workload scaling is not part of --suite gpu (use W1..W5 or all)")
        if args.budget_s is None:
            args.budget_s = 240.0
        return _main_gpu(args, args.size or ("quick" if args.quick else "gpu"), argv)
    size = args.size or ("quick" if args.quick else "full")
    use_torch = not args.no_torch
    started = time.perf_counter()
    created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"sgdlab benchmarks on {device()} ({machine()}), size {size}, repeats {args.repeats}, "
          f"load {load()}", flush=True)
    if size != "full":
        print(f"  size {size}: reduced members/steps (see each line); ratios and fractions are "
              "at these sizes", flush=True)
    limits = measure_limits(size, args.repeats)

    names = WORKLOADS if args.workload == "all" else (
        () if args.workload == "scaling" else (args.workload,))
    records = []
    for name in names:
        case = BUILDERS[name](size)
        records.append(run_case(case, size, args.repeats, use_torch, args.profile,
                                log=lambda s: print(s, flush=True)))
    sc = None
    if args.workload in ("all", "scaling"):
        print("scaling (W1 problem):", flush=True)
        sc = scaling(size, args.repeats, log=lambda s: print(s, flush=True))
    if records:
        print()
        print(table(records))
        print()
        print(targets_table(records))
    print(f"\ntotal {time.perf_counter() - started:.0f} s, load {load()}")

    if args.json:
        payload = records if args.workload == "all" else (records[0] if records else sc)
        Path(args.json).write_text(json.dumps(payload, indent=1, default=float))
    if not args.no_save:
        rdir = Path(args.results_dir)
        rdir.mkdir(parents=True, exist_ok=True)
        stamp = created.replace(":", "").replace("-", "")
        doc = {"machine": machine(), "device": device(), "cpu": cpu_model(),
               "cores": os.cpu_count(), "versions": versions(), "created": created,
               "argv": argv, "size": size,
               "repeats": args.repeats, "limits": limits, "records": records}
        if sc is not None:
            doc["scaling"] = sc
            plot_scaling(sc, rdir / f"scaling-{machine()}.png",
                         f"W1 problem, {sc['steps']} steps, {device()}")
        out = rdir / f"{machine()}-{stamp}-{args.workload}-{size}.json"
        out.write_text(json.dumps(doc, indent=1, default=float))
        if Path(args.results_dir).resolve() == (HERE / "results").resolve():
            update_results_md(rdir, HERE / "RESULTS.md")
        print(f"wrote {out}")
    return 0
