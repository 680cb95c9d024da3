"""Running an experiment: checkpointed studies, outputs written atomically, reports."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgdlab._files import atomic_text
from sgdlab._progress import human_names
from sgdlab._validate import fail
from sgdlab.experiments._registry import get
from sgdlab.experiments._verdict import SUMMARY_FORMAT, finalize, plain


@dataclass
class Context:
    """Run-time options of an experiment run.

    Studies run through :meth:`run_study`, which checkpoints them under
    ``checkpoint_dir`` (when the run has an output directory) and reuses the
    results of studies an interrupted run already finished.
    """

    seed: int = 0
    progress: bool = True
    preset: str = "quick"
    checkpoint_dir: Path | None = None
    checkpoint_seconds: float = 60.0
    checkpoint_steps: int | None = None
    devices: int | None = None
    memory_budget: int | None = None
    log: Callable[[str], None] = print

    def run_study(self, study, name: str = "main", label: str | None = None):
        """Run (or resume, or reload) one study of this experiment."""
        from sgdlab import engine, results

        label = label or name
        if self.checkpoint_dir is None:
            return engine.run(study, progress=self.progress, devices=self.devices,
                              memory_budget=self.memory_budget, label=label)
        done = self.checkpoint_dir / f"{name}.done.zarr"
        if done.exists():
            ds = results.load(done)
            diff = engine.config_diff(json.loads(ds.attrs["sgdlab_config"]), study.describe())
            if not diff:
                self.log(f"[sgdlab] {name}: reusing the finished study from the interrupted run")
                return ds
            if engine.is_writer():
                shutil.rmtree(done)
        ckpt = engine.Checkpoint(self.checkpoint_dir / f"{name}.ckpt.npz",
                                 every_seconds=self.checkpoint_seconds,
                                 every_steps=self.checkpoint_steps)
        if os.path.exists(ckpt.path):
            self.log(f"[sgdlab] {name}: resuming from its checkpoint")
        ds = engine.run(study, progress=self.progress, devices=self.devices,
                        memory_budget=self.memory_budget, checkpoint=ckpt, label=label)
        if engine.is_writer():  # under jax.distributed, process 0 keeps the finished study
            results.save(ds, done, overwrite=True)
            if os.path.exists(ckpt.path):
                os.unlink(ckpt.path)
        engine.barrier(f"study-{name}")
        return ds


STATE = ".sgdlab-state"
"""Subdirectory of an output directory holding an unfinished run's checkpoints."""


def run(name: str, preset: str = "quick", overrides: Mapping[str, Any] | None = None, *,
        config_file=None, set_strings: Sequence[str] = (), out: str | os.PathLike | None = None,
        force: bool = False, seed: int = 0, progress: bool = True, devices: int | None = None,
        memory_budget: int | None = None, checkpoint_seconds: float = 60.0,
        checkpoint_steps: int | None = None, log: Callable[[str], None] = print):
    """Run an experiment; return ``(summary, results, figures)``.

    With ``out`` the results are written there: ``results.zarr`` (one group per
    dataset), ``summary.json`` and ``figures/*.png|pdf``, each appearing complete
    or not at all. While running, checkpoints go to ``out/.sgdlab-state/``; an
    unfinished run in ``out`` with the same configuration is resumed (bitwise
    identically), one with another configuration is refused naming the differing
    keys; a finished run is returned as stored unless ``force``. SIGINT/SIGTERM
    stop the run at the next segment boundary after writing a checkpoint
    (:class:`sgdlab.engine.Interrupted` is raised).
    """
    import signal

    import jax

    from sgdlab import engine

    exp = get(name)
    cfg = exp.resolve(preset, overrides, config_file, set_strings)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        fail("seed", seed, "expected a non-negative integer")
    identity = {"experiment": name, "preset": preset, "config": cfg, "seed": seed,
                "x64": bool(jax.config.jax_enable_x64)}
    out_path = Path(out) if out is not None else None
    ctx = Context(seed=seed, progress=progress, preset=preset, devices=devices,
                  memory_budget=memory_budget, checkpoint_seconds=checkpoint_seconds,
                  checkpoint_steps=checkpoint_steps, log=log)
    if out_path is not None:
        # under jax.distributed every process runs this; only process 0 writes
        if engine.is_writer():
            finished = _prepare_out(out_path, identity, force, log)
        engine.barrier("prepare")
        if not engine.is_writer():
            finished = None if force else _prepare_out(out_path, identity, False,
                                                       lambda *_: None)
        if finished is not None:
            return finished
        ctx.checkpoint_dir = out_path / STATE
    t0 = time.perf_counter()
    handlers = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, engine.request_stop)
    except ValueError:  # not the main thread: no signal handling
        pass
    engine.clear_stop()
    try:
        studies = exp.studies(cfg, seed)
        labels = human_names({k: s.hparams for k, s in studies.items()})
        datasets = {}
        for sname, study in studies.items():
            if len(studies) > 1:
                log(f"[sgdlab] study {labels[sname]}")
            datasets[sname] = ctx.run_study(study, sname, labels[sname])
        outcome = _analyze(exp, cfg, datasets, seed, ctx.checkpoint_dir)
    finally:
        for sig, h in handlers.items():
            signal.signal(sig, h)
        engine.clear_stop()
    summary = {
        "experiment": name, "preset": preset, "config": cfg, "seed": seed,
        "device": engine.device_description(), "versions": engine.versions(),
        "x64": identity["x64"], "stream_version": engine.STREAM_VERSION,
        "processes": jax.process_count(), "runtime_s": time.perf_counter() - t0,
        "summary_format": SUMMARY_FORMAT, "checks": finalize(outcome.quantities),
        "quantities": outcome.quantities, "notes": outcome.notes, **outcome.extra,
    }
    figures = exp.figures(datasets, summary)
    if out_path is not None:
        if engine.is_writer():
            write_outputs(out_path, datasets, summary, figures, force=force)
            shutil.rmtree(out_path / STATE, ignore_errors=True)
        engine.barrier("outputs")
    return summary, datasets, figures


def _analyze(exp, cfg: dict, datasets: dict, seed: int, checkpoint_dir=None):
    """``exp.analyze(cfg, datasets)``, with ``seed=`` and ``checkpoint_dir=`` when the
    analysis takes them (an estimator that draws its own random numbers in ``analyze``,
    e.g. escape's splitting, uses the run's seed and checkpoints under the run's state
    directory, so that a killed run resumes to the same bits)."""
    import inspect

    params = inspect.signature(exp.analyze).parameters
    kw = {}
    if "seed" in params:
        kw["seed"] = seed
    if "checkpoint_dir" in params:
        kw["checkpoint_dir"] = checkpoint_dir
    if kw:
        return exp.analyze(cfg, datasets, **kw)
    return exp.analyze(cfg, datasets)


def dry_run(name: str, preset: str = "quick", overrides: Mapping[str, Any] | None = None, *,
            config_file=None, set_strings: Sequence[str] = (), seed: int = 0,
            devices: int | None = None, memory_budget: int | None = None) -> list[str]:
    """The plan of every study of a run (members, chunks, devices, memory), computing nothing.

    The last line counts the distinct compiled programs the run needs: studies (and
    static combinations) of the same static structure share one program, so this is
    the number of traces a run adds (:func:`sgdlab.engine.trace_count`) in a process
    that has not compiled them yet.
    """
    from sgdlab import engine

    exp = get(name)
    cfg = exp.resolve(preset, overrides, config_file, set_strings)
    lines = []
    total = 0
    programs: dict[tuple, str] = {}  # program key -> the study that compiles it
    studies = exp.studies(cfg, seed)
    for sname, study in studies.items():
        p = engine.plan(study, memory_budget=memory_budget, devices=devices, measure=True)
        total += study.n_members * study.steps
        keys = _program_keys(study, p)
        shared = sorted({programs[k] for k in keys if k in programs})
        for k in keys:
            programs.setdefault(k, sname)
        line = f"{sname}: {p.describe()}"
        if shared:
            line += f", shared with {', '.join(shared)}"
        lines.append(line)
    n, m = len(programs), len(studies)
    lines.append(f"total: {total:.3g} member-steps; {n} compile{'s' if n != 1 else ''} "
                 f"(distinct programs over {m} stud{'ies' if m != 1 else 'y'})")
    return lines


def _program_keys(study, p) -> list[tuple]:
    """The keys of the compiled programs a study's plan runs (one per static combination).

    Two studies with equal keys run one program: the engine caches programs by this key.
    """
    from sgdlab.engine import StaticPlan, program_key

    if isinstance(p, StaticPlan):
        subs = study.static_studies()
        return [program_key(subs[c], q.chunk_seeds, q.segment_steps, q.devices)
                for c, q in p.plans.items()]
    return [program_key(study, p.chunk_seeds, p.segment_steps, p.devices)]


def _prepare_out(path: Path, identity: dict, force: bool, log):
    """Check an output directory; return a finished run's outputs if it is to be reused."""
    if path.exists() and not path.is_dir():
        fail("--out", str(path), "exists and is not a directory")
    state = path / STATE
    if force:
        shutil.rmtree(state, ignore_errors=True)
    if (path / "summary.json").exists() and not force:
        summary, results = load_run(path)
        stored = {k: summary.get(k) for k in identity}
        diff = _diff(stored, identity)
        if diff:
            fail("--out", str(path), "holds a finished run of another configuration ("
                 + "; ".join(diff) + "); pass --force to replace it, or choose another --out")
        log(f"[sgdlab] {path} holds this finished run: not recomputed (pass --force to rerun)")
        return summary, results, get(identity["experiment"]).figures(results, summary)
    if (state / "run.json").exists():
        stored = json.loads((state / "run.json").read_text())
        diff = _diff(stored, identity)
        if diff:
            fail("--out", str(path), "holds an unfinished run of another configuration ("
                 + "; ".join(diff) + "); pass --force to discard it, or choose another --out")
        log(f"[sgdlab] resuming the unfinished run in {path}")
        return None
    if path.exists() and any(p.name in ("results.zarr", "figures") for p in path.iterdir()) \
            and not force:
        fail("--out", str(path), "holds outputs of another run; pass --force to replace them")
    state.mkdir(parents=True, exist_ok=True)
    atomic_text(state / "run.json", json.dumps(identity, indent=2, default=plain))
    return None


def _diff(a: dict, b: dict) -> list[str]:
    from sgdlab.engine import config_diff
    return config_diff(json.loads(json.dumps(a, default=plain)),
                       json.loads(json.dumps(b, default=plain)))


def _replace_dir(src: Path, dst: Path):
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def write_outputs(out: Path, results: dict, summary: dict, figures: dict, force: bool = False):
    """Write results.zarr, figures/ and, last, summary.json (the completion marker)."""
    from sgdlab.results import fsync_tree

    out.mkdir(parents=True, exist_ok=True)
    if force and (out / "summary.json").exists():
        (out / "summary.json").unlink()
    tmp = Path(tempfile.mkdtemp(prefix=".sgdlab-write-", dir=out))
    try:
        store = tmp / "results.zarr"
        for i, (group, ds) in enumerate(results.items()):
            ds.to_zarr(store, group=group, mode="w" if i == 0 else "a", consolidated=False)
        fsync_tree(store)
        figdir = tmp / "figures"
        save_figures(figures, figdir)
        _replace_dir(store, out / "results.zarr")
        _replace_dir(figdir, out / "figures")
        atomic_text(out / "summary.json", json.dumps(summary, indent=2, default=plain)
                           + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_figures(figures: dict, figdir: Path):
    figdir.mkdir(parents=True, exist_ok=True)
    for fname, fig in figures.items():
        fig.savefig(figdir / f"{fname}.png", dpi=120, bbox_inches="tight")
        fig.savefig(figdir / f"{fname}.pdf", bbox_inches="tight")


def load_run(path: str | os.PathLike) -> tuple[dict, dict]:
    """Read ``summary.json`` and every dataset of ``results.zarr`` from a finished run."""
    import xarray as xr
    import zarr

    path = Path(path)
    if not (path / "summary.json").exists():
        fail("DIR", str(path), "holds no finished sgdlab run (no summary.json)")
    summary = json.loads((path / "summary.json").read_text())
    store = path / "results.zarr"
    groups = sorted(zarr.open_group(str(store), mode="r").group_keys()) if store.exists() else []
    results = {}
    for g in groups:
        ds = xr.open_zarr(store, group=g, consolidated=False).load()
        fmt = ds.attrs.get("sgdlab_format")
        from sgdlab.results import FORMAT
        if fmt is not None and int(fmt) != FORMAT:
            fail("DIR", str(path), f"results in format {fmt}; this sgdlab reads format {FORMAT}")
        results[g] = ds
    return summary, results


def report(path: str | os.PathLike) -> tuple[dict, dict]:
    """Redraw the figures of a stored run (into DIR/figures) and return (summary, figures)."""
    path = Path(path)
    summary, results = load_run(path)
    exp = get(summary["experiment"])
    figures = exp.figures(results, summary)
    tmp = Path(tempfile.mkdtemp(prefix=".sgdlab-report-", dir=path))
    try:
        save_figures(figures, tmp / "figures")
        _replace_dir(tmp / "figures", path / "figures")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary, figures
