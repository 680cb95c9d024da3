"""Named experiments: each study of the science notes as measurement + prediction + verdict.

An :class:`Experiment` declares its parameters (:class:`Param`: type, range,
choices, whether a list is allowed), its presets (``quick``: about two minutes
on two CPU cores; ``paper``: the papers' sizes, for a GPU), a ``studies``
function that builds the engine studies from a resolved configuration (so they
can be planned before anything runs: ``--dry-run``), and an ``analyze`` function
that turns the studies' labeled datasets into an :class:`Outcome`: a flat list of
quantities ``{name, coords, value, se, predicted, z, pass}``. A ``figures``
function redraws every figure from the stored results and summary alone, so
``sgdlab report DIR`` needs no recomputation.

Configuration is resolved as defaults ← preset ← TOML file ← ``--set`` values,
and every value is validated when the configuration is built (one-line
ValueError naming the key, the value and what is allowed).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sgdlab._validate import fail

PRESETS = ("quick", "paper")
Z_PASS = 4.0
"""A check passes when |value - predicted| <= Z_PASS * se."""


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Param:
    """One experiment parameter (a key of ``--set``)."""

    name: str
    kind: type  # float, int, str or bool
    default: Any
    help: str
    list: bool = False
    choices: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def parse(self, text: str) -> Any:
        """Parse a ``--set`` string (lists are comma separated)."""
        parts = [p.strip() for p in text.split(",")] if self.list else [text.strip()]
        if self.list and any(p == "" for p in parts):
            fail(self.name, text, "expected a comma-separated list without empty items")
        values = [self._parse_one(p) for p in parts]
        return self.check(values if self.list else values[0])

    def _parse_one(self, s: str) -> Any:
        if self.kind is bool:
            if s.lower() in ("true", "1", "yes"):
                return True
            if s.lower() in ("false", "0", "no"):
                return False
            fail(self.name, s, "expected true or false")
        if self.kind is str:
            return s
        try:
            x = float(s) if self.kind is float else int(s)
        except ValueError:
            fail(self.name, s, f"expected {'a number' if self.kind is float else 'an integer'}")
        return x

    def check(self, value: Any) -> Any:
        """Validate a value (from a preset, a TOML file or the API)."""
        if self.list:
            if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
                value = [value]
            value = list(value)
            if not value:
                fail(self.name, value, "expected at least one value")
            return [self._check_one(v) for v in value]
        if isinstance(value, list | tuple | np.ndarray):
            fail(self.name, value, "expected a single value, not a list")
        return self._check_one(value)

    def _check_one(self, v: Any) -> Any:
        k = self.kind
        if k is bool:
            if not isinstance(v, bool | np.bool_):
                fail(self.name, v, "expected true or false")
            return bool(v)
        if k is str:
            if not isinstance(v, str):
                fail(self.name, v, "expected a string")
            if self.choices is not None and v not in self.choices:
                fail(self.name, v, "expected one of " + ", ".join(self.choices))
            return v
        numeric = isinstance(v, int | float | np.integer | np.floating)
        if isinstance(v, bool | np.bool_) or not numeric:
            fail(self.name, v, f"expected {'a number' if k is float else 'an integer'}")
        if k is int:
            if isinstance(v, float | np.floating) and not float(v).is_integer():
                fail(self.name, v, "expected an integer")
            v = int(v)
        else:
            v = float(v)
            if not math.isfinite(v):
                fail(self.name, v, "expected a finite number")
        lo = self.low if self.low is not None else -math.inf
        hi = self.high if self.high is not None else math.inf
        if v < lo or v > hi or (self.low_open and v == lo):
            bracket = "(" if self.low_open else "["
            fail(self.name, v, f"expected a value in {bracket}{lo:g}, {hi:g}]")
        return v

    def describe(self) -> str:
        kind = self.kind.__name__ + ("[,...]" if self.list else "")
        extra = f" one of {'/'.join(self.choices)}" if self.choices else ""
        return f"{self.name} ({kind}{extra}): {self.help} [default {self.default!r}]"


# --------------------------------------------------------------------------- outcomes


def quantity(name: str, coords: Mapping[str, Any], value: float, se: float,
             predicted: float | None = None, *, ci: tuple[float, float] | None = None,
             note: str | None = None) -> dict:
    """One summary entry. The verdict is |value − predicted| ≤ 4·se, or for a fitted
    slope (``ci`` given) whether the 95% interval covers the prediction."""
    value, se = float(value), float(se)
    q: dict[str, Any] = {"name": name, "coords": {k: _plain(v) for k, v in coords.items()},
                         "value": _finite_or_none(value), "se": _finite_or_none(se),
                         "predicted": None, "z": None, "pass": None}
    if predicted is not None and math.isfinite(float(predicted)):
        p = float(predicted)
        q["predicted"] = p
        if math.isfinite(value) and math.isfinite(se) and se > 0:
            q["z"] = (value - p) / se
            q["pass"] = bool(abs(q["z"]) <= Z_PASS) if ci is None else bool(ci[0] <= p <= ci[1])
        else:
            q["pass"] = False
            note = note or "no finite measurement (all members diverged?)"
    if ci is not None:
        q["ci"] = [float(ci[0]), float(ci[1])]
    if note:
        q["note"] = note
    return q


def _finite_or_none(x: float):
    return x if math.isfinite(x) else None


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


@dataclass
class Outcome:
    """What an experiment's ``analyze`` returns."""

    quantities: list[dict]
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-able, stored in the summary


@dataclass(frozen=True)
class Experiment:
    """A named, reproducible experiment (see the module docstring)."""

    name: str
    study: str
    title: str
    params: tuple[Param, ...]
    presets: Mapping[str, Mapping[str, Any]]
    studies: Callable[[dict, int], dict[str, Any]]      # (config, seed) -> {name: Study}
    analyze: Callable[[dict, dict[str, Any]], Outcome]  # (config, {name: Dataset}) -> Outcome
    figures: Callable[[dict, dict], dict]
    validate: Callable[[dict], None] | None = None

    @property
    def param_map(self) -> dict[str, Param]:
        return {p.name: p for p in self.params}

    def resolve(self, preset: str = "quick", overrides: Mapping[str, Any] | None = None,
                config_file: str | os.PathLike | None = None,
                set_strings: Sequence[str] = ()) -> dict:
        """Defaults ← preset ← TOML file ← overrides (Python values) ← ``--set`` strings."""
        if preset not in PRESETS:
            fail("preset", preset, "expected one of " + ", ".join(PRESETS))
        params = self.param_map
        cfg = {p.name: p.check(p.default) for p in self.params}

        def apply(items: Mapping[str, Any], source: str, parse: bool = False):
            for key, value in items.items():
                if key not in params:
                    fail(key, value, f"unknown parameter of {self.name} ({source}); valid keys: "
                         + ", ".join(params))
                cfg[key] = params[key].parse(value) if parse else params[key].check(value)

        apply(self.presets.get(preset, {}), f"preset {preset}")
        if config_file is not None:
            path = Path(config_file)
            try:
                with open(path, "rb") as f:
                    table = tomllib.load(f)
            except FileNotFoundError:
                fail("--config", str(path), "file not found")
            except tomllib.TOMLDecodeError as e:
                fail("--config", str(path), f"not valid TOML ({e})")
            table = table.get(self.name, table)
            apply(table, f"config file {path.name}")
        apply(overrides or {}, "overrides")
        parsed = {}
        for item in set_strings:
            if "=" not in item:
                fail("--set", item, "expected KEY=VALUE")
            key, _, value = item.partition("=")
            parsed[key.strip()] = value
        apply(parsed, "--set", parse=True)
        if self.validate is not None:
            self.validate(cfg)
        return cfg


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

    def run_study(self, study, name: str = "main"):
        """Run (or resume, or reload) one study of this experiment."""
        from sgdlab import engine, results

        if self.checkpoint_dir is None:
            return engine.run(study, progress=self.progress, devices=self.devices,
                              memory_budget=self.memory_budget)
        done = self.checkpoint_dir / f"{name}.done.zarr"
        if done.exists():
            ds = results.load(done)
            diff = engine._config_diff(json.loads(ds.attrs["sgdlab_config"]), study.describe())
            if not diff:
                self.log(f"[sgdlab] {name}: reusing the finished study from the interrupted run")
                return ds
            shutil.rmtree(done)
        ckpt = engine.Checkpoint(self.checkpoint_dir / f"{name}.ckpt.npz",
                                 every_seconds=self.checkpoint_seconds,
                                 every_steps=self.checkpoint_steps)
        if os.path.exists(ckpt.path):
            self.log(f"[sgdlab] {name}: resuming from its checkpoint")
        ds = engine.run(study, progress=self.progress, devices=self.devices,
                        memory_budget=self.memory_budget, checkpoint=ckpt)
        results.save(ds, done, overwrite=True)
        if os.path.exists(ckpt.path):
            os.unlink(ckpt.path)
        return ds


REGISTRY: dict[str, Experiment] = {}


def register(exp: Experiment) -> Experiment:
    REGISTRY[exp.name] = exp
    return exp


def get(name: str) -> Experiment:
    _load_all()
    if name not in REGISTRY:
        fail("experiment", name, "expected one of " + ", ".join(sorted(REGISTRY)))
    return REGISTRY[name]


def names() -> list[str]:
    _load_all()
    return list(REGISTRY)


def _load_all():
    from sgdlab.experiments import lzu  # noqa: F401
    for mod in ("constant_target", "villani", "indicator", "du", "escape"):
        try:
            __import__(f"sgdlab.experiments.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"sgdlab.experiments.{mod}":
                raise


# --------------------------------------------------------------------------- running


def summary_table(summary: dict) -> str:
    """The measured-vs-predicted table printed by ``sgdlab run`` and ``sgdlab report``."""
    rows = [("quantity", "coords", "measured", "± se", "predicted", "z", "verdict")]
    for q in summary["quantities"]:
        coords = " ".join(f"{k}={_fmt(v)}" for k, v in q["coords"].items())
        verdict = {True: "pass", False: "FAIL", None: "-"}[q["pass"]]
        rows.append((q["name"], coords, _fmt(q["value"]), _fmt(q["se"]), _fmt(q["predicted"]),
                     "-" if q["z"] is None else f"{q['z']:+.2f}", verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    n_fail = sum(q["pass"] is False for q in summary["quantities"])
    n_pass = sum(q["pass"] is True for q in summary["quantities"])
    lines.append(f"{n_pass} passed, {n_fail} failed"
                 + (f" ({len(summary['quantities']) - n_pass - n_fail} without prediction)"
                    if len(summary["quantities"]) > n_pass + n_fail else ""))
    for note in summary.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.5g}"
    if isinstance(v, list):
        return "[" + ",".join(_fmt(x) for x in v) + "]"
    return str(v)


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
        finished = _prepare_out(out_path, identity, force, log)
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
    engine._STOP["requested"] = False
    try:
        studies = exp.studies(cfg, seed)
        datasets = {}
        for i, (sname, study) in enumerate(studies.items()):
            if len(studies) > 1:
                log(f"[sgdlab] study {i + 1}/{len(studies)}: {sname}")
            datasets[sname] = ctx.run_study(study, sname)
        outcome = exp.analyze(cfg, datasets)
    finally:
        for sig, h in handlers.items():
            signal.signal(sig, h)
        engine._STOP["requested"] = False
    summary = {
        "experiment": name, "preset": preset, "config": cfg, "seed": seed,
        "device": engine.device_description(), "versions": engine.versions(),
        "x64": identity["x64"], "runtime_s": time.perf_counter() - t0,
        "quantities": outcome.quantities, "notes": outcome.notes, **outcome.extra,
    }
    figures = exp.figures(datasets, summary)
    if out_path is not None:
        write_outputs(out_path, datasets, summary, figures, force=force)
        shutil.rmtree(out_path / STATE, ignore_errors=True)
    return summary, datasets, figures


def dry_run(name: str, preset: str = "quick", overrides: Mapping[str, Any] | None = None, *,
            config_file=None, set_strings: Sequence[str] = (), seed: int = 0,
            devices: int | None = None, memory_budget: int | None = None) -> list[str]:
    """The plan of every study of a run (members, chunks, devices, memory), computing nothing."""
    from sgdlab import engine

    exp = get(name)
    cfg = exp.resolve(preset, overrides, config_file, set_strings)
    lines = []
    total = 0
    for sname, study in exp.studies(cfg, seed).items():
        p = engine.plan(study, memory_budget=memory_budget, devices=devices, measure=True)
        total += study.n_members * study.steps
        lines.append(f"{sname}: {p.describe()}")
    lines.append(f"total: {total:.3g} member-steps; one compile per study")
    return lines


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
    _atomic_write_text(state / "run.json", json.dumps(identity, indent=2, default=_plain))
    return None


def _diff(a: dict, b: dict) -> list[str]:
    from sgdlab.engine import _config_diff
    return _config_diff(json.loads(json.dumps(a, default=_plain)),
                        json.loads(json.dumps(b, default=_plain)))


def exit_status(summary: dict) -> int:
    """0 when every check passes, 1 when one fails."""
    return 1 if any(q["pass"] is False for q in summary["quantities"]) else 0


def _atomic_write_text(path: Path, text: str):
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    from sgdlab.results import _fsync_tree

    out.mkdir(parents=True, exist_ok=True)
    if force and (out / "summary.json").exists():
        (out / "summary.json").unlink()
    tmp = Path(tempfile.mkdtemp(prefix=".sgdlab-write-", dir=out))
    try:
        store = tmp / "results.zarr"
        for i, (group, ds) in enumerate(results.items()):
            ds.to_zarr(store, group=group, mode="w" if i == 0 else "a", consolidated=False)
        _fsync_tree(store)
        figdir = tmp / "figures"
        save_figures(figures, figdir)
        _replace_dir(store, out / "results.zarr")
        _replace_dir(figdir, out / "figures")
        _atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=_plain)
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
