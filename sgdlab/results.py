"""Labeled results: an ``xarray.Dataset`` per study, stored as Zarr (never pickle).

Layout (``G...`` = one dimension per swept hyperparameter, in the study's order,
with the values as coordinates):

* ``<obs>`` -- ``(G..., seed, step, <obs>_dim0, ...)``: per-member values of an
  :class:`~sgdlab.engine.Observe` observable at the record steps;
* ``<obs>_mean``, ``<obs>_var`` (ddof = 1), ``<obs>_n`` -- ``(G..., step, ...)``:
  streamed statistics over live (non-diverged) members;
* ``stationary_<obs>`` -- ``(G..., seed, batch, ...)``: per-member batch means
  after the burn-in (NaN for diverged members); ``stationary_<obs>_mean``,
  ``stationary_<obs>_se`` (across-member standard error of the member time
  averages), ``stationary_<obs>_n``;
* ``diverged_step`` -- ``(G..., seed)``: the step a member diverged at, -1 if
  never; ``n_diverged`` -- ``(G...)``;
* ``event_step``, ``event_censored`` -- ``(G..., seed)``, plus the event dimension
  for a vector predicate: first-passage step (-1 and censored at ``steps`` if the
  event never happened);
* the variables of user recorders (their ``to_dataset``);
* a static sweep (``Study(static=...)``) puts one dimension per static name in front.

Attributes: ``sgdlab_config`` (JSON of the full study), ``sgdlab_versions``
(JSON), ``device``, ``runtime_s``, ``plan``, ``sgdlab_format``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

FORMAT = 1
"""Result-store format; stores with a different one are refused on load."""


def to_dataset(study, prog, out: dict, plan, runtime_s: float) -> xr.Dataset:
    """Assemble the engine's host-side output into the labeled Dataset.

    Each recorder contributes its coordinates and variables (``to_dataset`` of the
    recorder protocol); the divergence flags come from the member state.
    """
    from sgdlab.engine import STREAM_VERSION
    from sgdlab.provenance import config_json, device_description, versions

    gdims = prog.gdims
    coords: dict = {k: v for k, v in study.grid.items()}
    coords["seed"] = np.arange(study.seeds)
    data_vars: dict = {}
    for r in prog.recorders:
        c, v = r.to_dataset(prog, out["records"][r.name])
        coords.update(c)
        data_vars.update(v)
    div = prog.grid_first(out["diverged_step"])
    data_vars["diverged_step"] = (gdims + ("seed",), div)
    data_vars["n_diverged"] = (gdims, np.sum(div >= 0, axis=-1))
    if study.first_passage is not None:
        c, v = study.first_passage.to_dataset(prog, out["first_passage"])
        coords.update(c)
        data_vars.update(v)
    attrs = {
        "sgdlab_format": FORMAT,
        "sgdlab_config": config_json(study),
        "sgdlab_versions": json.dumps(versions(), sort_keys=True),
        "device": device_description(),
        "runtime_s": float(runtime_s),
        "plan": plan.describe(),
        "steps": study.steps,
        "sgdlab_stream": STREAM_VERSION,
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def save(ds: xr.Dataset, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``ds`` to a Zarr store atomically (temporary name, then rename).

    Raises:
      FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --force) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        store = tmp / "store.zarr"
        ds.to_zarr(store, mode="w", consolidated=False)
        fsync_tree(store)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(store, path)
            shutil.rmtree(old)
        else:
            os.replace(store, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for f in files:
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def load(path: str | os.PathLike) -> xr.Dataset:
    """Read a result store written by :func:`save` (no pickle), fully into memory.

    Raises:
      ValueError: the store is not an sgdlab result, or has another format version.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no result store at {path}")
    ds = xr.open_zarr(path, consolidated=False).load()
    fmt = ds.attrs.get("sgdlab_format")
    if fmt is None:
        raise ValueError(f"{path} is not an sgdlab result store (no sgdlab_format attribute)")
    if int(fmt) != FORMAT:
        raise ValueError(f"{path} was written in result format {fmt}; this sgdlab reads "
                         f"format {FORMAT} -- rerun the study or use the matching version")
    return ds


def config(ds: xr.Dataset) -> dict:
    """The study configuration stored with a result."""
    return json.loads(ds.attrs["sgdlab_config"])
