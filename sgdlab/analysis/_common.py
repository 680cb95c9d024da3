"""Plumbing shared by the analysis modules: NumPy cores along the last axis, xarray faces.

One meaning of ``axis`` everywhere: with NumPy input it names the axis that is
reduced (members or time). A 1-D array has only one, so ``axis`` may be left
out; an array with more dimensions needs it, and leaving it out is an error,
never a silent flatten. With an ``xarray.DataArray`` the reduced dimension is
named by ``dim`` (each function documents its default) and every other
dimension is kept: one answer per grid point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import xarray as xr
from scipy import stats


def check_level(level: float) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level!r} is invalid: expected a number in (0, 1), e.g. 0.95")
    return level


def z_quantile(level: float) -> float:
    return float(stats.norm.ppf(0.5 + level / 2.0))


def t_quantile(level: float, dof: np.ndarray) -> np.ndarray:
    dof = np.asarray(dof, dtype=float)
    dof = np.where(dof >= 1, dof, np.nan)
    return stats.t.ppf(0.5 + level / 2.0, dof)


def numpy_last(a: Any, axis: int | None, func: str, what: str = "member") -> np.ndarray:
    """``a`` as an ndarray with the reduced axis last.

    ``axis=None`` is accepted only for 1-D input (the one axis there is); for
    more dimensions it raises instead of guessing.
    """
    a = np.asarray(a)
    if a.ndim == 0:
        raise ValueError(f"{func}: expected an array with at least one dimension, got a scalar")
    if axis is None:
        if a.ndim > 1:
            raise ValueError(
                f"{func}: a NumPy array of shape {a.shape} needs an explicit axis= (the {what} "
                "axis); or pass an xarray DataArray and name the dimension with dim="
            )
        return a
    return np.moveaxis(a, axis, -1)


def resolve_dim(x: xr.DataArray, axis: int | None, dim: str | None, default: str) -> str:
    if dim is None:
        dim = x.dims[axis] if axis is not None else default
    if dim not in x.dims:
        raise ValueError(f"dimension {dim!r} not found: the array has dims {tuple(x.dims)}")
    return dim


def no_dim_for_numpy(dim: Any) -> None:
    if dim is not None:
        raise TypeError("dim= names an xarray dimension; for a NumPy array pass axis= instead")


def loaded(x: xr.DataArray) -> xr.DataArray:
    return x.compute() if x.chunks is not None else x


def like(x: xr.DataArray, other: Any) -> xr.DataArray:
    """``other`` as a DataArray aligned with ``x`` (a NumPy array of the same shape)."""
    return other if isinstance(other, xr.DataArray) else x.copy(data=np.asarray(other))


def apply_xr(
    core: Callable[..., tuple],
    arrays: Sequence[xr.DataArray],
    core_dims: Sequence[str],
    names: Sequence[str],
    kwargs: dict[str, Any],
    attrs: dict[str, Any],
) -> xr.Dataset:
    """Run ``core`` (core dims last) on DataArrays, keep the other dims, return a Dataset."""
    arrays = [loaded(a) for a in arrays]
    for a in arrays:
        for d in core_dims:
            if d not in a.dims:
                raise ValueError(f"dimension {d!r} not found: the array has dims {tuple(a.dims)}")

    def run(*args: np.ndarray) -> tuple:
        return tuple(core(*args, **kwargs))[: len(names)]

    outs = xr.apply_ufunc(
        run,
        *arrays,
        input_core_dims=[list(core_dims)] * len(arrays),
        output_core_dims=[[] for _ in names],
    )
    if len(names) == 1:
        outs = (outs,)
    ds = xr.Dataset(dict(zip(names, outs, strict=True)))
    ds.attrs.update(attrs)
    return ds


def scalars(result: Any) -> Any:
    """Turn 0-d array fields of a NumPy result into NumPy scalars."""
    return type(result)(
        *(v[()] if isinstance(v, np.ndarray) and v.ndim == 0 else v for v in result)
    )


def rng_of(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def finite_mean_se(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, SE (ddof=1) and count of the finite entries along the last axis."""
    ok = np.isfinite(a)
    n = ok.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ok, a, 0.0).sum(axis=-1) / n
        dev = np.where(ok, a - mean[..., None], 0.0)
        var = (dev**2).sum(axis=-1) / (n - 1)
        se = np.sqrt(np.where(n >= 2, var, np.nan) / n)
    mean = np.where(n >= 1, mean, np.nan)
    return mean, se, n


def point_name(coords: dict[str, Any]) -> str:
    """``learning_rate=0.1, batch_size=4`` for error messages about one grid point."""
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in coords.items()) or "the only grid point"
