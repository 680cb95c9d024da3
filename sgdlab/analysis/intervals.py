"""Means and proportions over independent members, with confidence intervals.

Members (seeds) are independent; diverged members carry NaN and are left out of
means, with ``n`` counting the members actually used. Wilson (1927) for the
binomial interval.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import xarray as xr

from sgdlab._validate import choice
from sgdlab.analysis._common import (
    apply_xr,
    check_level,
    finite_mean_se,
    no_dim_for_numpy,
    numpy_last,
    resolve_dim,
    rng_of,
    scalars,
    t_quantile,
    z_quantile,
)

__all__ = [
    "Interval",
    "MeanCI",
    "Proportion",
    "divergence_probability",
    "mean_ci",
    "summarize",
    "wilson_interval",
]


class MeanCI(NamedTuple):
    """Mean over independent members with a confidence interval."""

    mean: np.ndarray  # sample mean of the finite members
    se: np.ndarray  # s / √n, s the sample std with ddof=1
    lo: np.ndarray  # lower end of the interval
    hi: np.ndarray  # upper end of the interval
    n: np.ndarray  # members used (finite), dtype int


class Interval(NamedTuple):
    """The two ends of a confidence interval (unpacks as ``lo, hi``)."""

    lo: np.ndarray
    hi: np.ndarray


class Proportion(NamedTuple):
    """A binomial proportion with a Wilson score interval."""

    p: np.ndarray  # k / n
    lo: np.ndarray
    hi: np.ndarray
    k: np.ndarray  # successes (here: diverged members)
    n: np.ndarray  # trials (members)


# --------------------------------------------------------------------------- #
# Means over independent members
# --------------------------------------------------------------------------- #
def _bootstrap_bounds(
    a: np.ndarray, n: np.ndarray, level: float, n_boot: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean of the finite entries (last axis)."""
    lead = a.shape[:-1]
    size = a.shape[-1]
    rows = a.reshape(-1, size)
    counts = n.reshape(-1)
    ok = np.isfinite(rows)
    # Finite values first in each row; resample indices < n of that row.
    order = np.argsort(~ok, axis=-1, kind="stable")
    vals = np.where(np.take_along_axis(ok, order, -1), np.take_along_axis(rows, order, -1), 0.0)
    lo = np.full(rows.shape[0], np.nan)
    hi = np.full(rows.shape[0], np.nan)
    q = [0.5 - level / 2.0, 0.5 + level / 2.0]
    budget = 1 << 22  # floats per resampling block
    boot_block = max(1, min(n_boot, budget // max(size, 1)))
    row_block = max(1, budget // (boot_block * max(size, 1)))
    cols = np.arange(size)
    for r0 in range(0, rows.shape[0], row_block):
        v = vals[r0 : r0 + row_block]
        m = counts[r0 : r0 + row_block]
        keep = (cols < m[:, None])[:, None, :]
        means = np.empty((v.shape[0], n_boot))
        for b0 in range(0, n_boot, boot_block):
            nb = min(boot_block, n_boot - b0)
            u = rng.random((v.shape[0], nb, size))
            idx = np.minimum((u * m[:, None, None]).astype(np.int64), size - 1)
            draws = np.take_along_axis(v[:, None, :], idx, axis=-1)
            with np.errstate(invalid="ignore", divide="ignore"):
                means[:, b0 : b0 + nb] = np.where(keep, draws, 0.0).sum(-1) / m[:, None]
        good = m >= 2
        if good.any():
            qs = np.quantile(means[good], q, axis=-1)
            lo[r0 : r0 + row_block][good] = qs[0]
            hi[r0 : r0 + row_block][good] = qs[1]
    return lo.reshape(lead), hi.reshape(lead)


def _mean_ci_core(
    a: np.ndarray, level: float, method: str, n_boot: int, rng: np.random.Generator
) -> MeanCI:
    a = np.asarray(a, dtype=float)
    mean, se, n = finite_mean_se(a)
    if method == "t":
        half = t_quantile(level, n - 1) * se
        lo, hi = mean - half, mean + half
    else:
        lo, hi = _bootstrap_bounds(a, n, level, n_boot, rng)
    return MeanCI(mean, se, lo, hi, n)


def mean_ci(
    x: Any,
    axis: int | None = None,
    *,
    dim: str | None = None,
    level: float = 0.95,
    method: str = "t",
    n_boot: int = 2000,
    seed: int | np.random.Generator | None = 0,
) -> MeanCI | xr.Dataset:
    """Mean over independent members with its standard error and confidence interval.

    Non-finite entries (diverged members) are left out; ``n`` counts the rest.
    With x̄ and s the mean and standard deviation (ddof=1) of the n finite members,
    ``se = s/√n`` and

    * ``method="t"``: ``x̄ ± t_{n−1, (1+level)/2} · se`` (exact for normal members);
    * ``method="bootstrap"``: the percentile interval of ``n_boot`` resampled means
      (members drawn with replacement, vectorised, from a seeded Generator); ``se``
      stays the analytic one.

    Grid points with n < 2 get NaN for ``se``, ``lo`` and ``hi``.

    Args:
        x: members along ``axis``/``dim``; a NumPy array or an ``xarray.DataArray``.
        axis: NumPy member axis; required unless ``x`` is 1-D. For a DataArray it
            picks ``dim``.
        dim: DataArray dimension to reduce (default ``"seed"``).
        level: confidence level in (0, 1).
        method: ``"t"`` or ``"bootstrap"``.
        n_boot: bootstrap resamples.
        seed: int or ``np.random.Generator`` for the bootstrap.

    Returns:
        ``MeanCI(mean, se, lo, hi, n)`` for NumPy input; for a DataArray, a Dataset
        with those variables over the remaining dims.

    Raises:
        ValueError: bad ``level``/``method``/``n_boot``, an unknown ``dim``, or a
            NumPy array with more than one dimension and no ``axis``.
    """
    level = check_level(level)
    choice("method", method, ("t", "bootstrap"))
    if int(n_boot) < 1:
        raise ValueError(f"n_boot={n_boot!r} is invalid: expected an integer >= 1")
    kw = dict(level=level, method=method, n_boot=int(n_boot), rng=rng_of(seed))
    if isinstance(x, xr.DataArray):
        d = resolve_dim(x, axis, dim, "seed")
        return apply_xr(
            _mean_ci_core, [x], [d], MeanCI._fields, kw, {"level": level, "method": method}
        )
    no_dim_for_numpy(dim)
    return scalars(_mean_ci_core(numpy_last(x, axis, "mean_ci"), **kw))


# --------------------------------------------------------------------------- #
# Proportions
# --------------------------------------------------------------------------- #
def wilson_interval(k: Any, n: Any, level: float = 0.95) -> Interval:
    """Wilson score interval for a binomial proportion k/n.

    With p̂ = k/n and z the normal quantile:
    ``(p̂ + z²/2n ± z √(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)``.
    For k = 0 the upper end is z²/(n + z²); for k = n/2 the half-width is
    z / (2√(n + z²)). n = 0 gives NaN. Elementwise over broadcast ``k`` and ``n``.

    Args:
        k: successes.
        n: trials.
        level: confidence level.

    Returns:
        ``Interval(lo, hi)`` (unpacks as a pair).
    """
    level = check_level(level)
    z = z_quantile(level)
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1.0 + z * z / n
        centre = (p + z * z / (2.0 * n)) / denom
        half = z * np.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denom
    return scalars(Interval(np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)))


def _divergence_core(a: np.ndarray, level: float) -> Proportion:
    a = np.asarray(a)
    k = (a >= 0).sum(axis=-1)
    n = np.full(k.shape, a.shape[-1])
    lo, hi = wilson_interval(k, n, level)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
    return Proportion(p, np.asarray(lo), np.asarray(hi), k, n)


def divergence_probability(
    diverged_step: Any,
    axis: int | None = None,
    *,
    dim: str | None = None,
    level: float = 0.95,
) -> Proportion | xr.Dataset:
    """Fraction of members that diverged, with a Wilson score interval.

    A member diverged if its ``diverged_step`` is ≥ 0 (−1 means alive).

    Args:
        diverged_step: per-member divergence step.
        axis: NumPy member axis; required unless the input is 1-D.
        dim: member dimension for DataArrays (default ``"seed"``).
        level: confidence level.

    Returns:
        ``Proportion(p, lo, hi, k, n)``; a Dataset for DataArray input.
    """
    level = check_level(level)
    if isinstance(diverged_step, xr.DataArray):
        d = resolve_dim(diverged_step, axis, dim, "seed")
        return apply_xr(
            _divergence_core, [diverged_step], [d], Proportion._fields, {"level": level},
            {"level": level},
        )
    no_dim_for_numpy(dim)
    a = numpy_last(diverged_step, axis, "divergence_probability")
    return scalars(_divergence_core(a, level))


# --------------------------------------------------------------------------- #
# Dataset convenience
# --------------------------------------------------------------------------- #
def summarize(
    ds: xr.Dataset,
    var: str,
    dim: str = "seed",
    *,
    level: float = 0.95,
    method: str = "t",
    n_boot: int = 2000,
    seed: int | np.random.Generator | None = 0,
    batch_dim: str = "batch",
) -> xr.Dataset:
    """Mean, SE and interval of one variable of an engine Dataset over the members.

    A variable without ``batch_dim`` goes through :func:`mean_ci` (``mean``,
    ``se``, ``lo``, ``hi``, ``n``); a stationary variable with a ``batch_dim``
    goes through :func:`~sgdlab.analysis.stationary_mean` (adds ``se_within`` and
    ``ratio``). Every other dimension and coordinate is kept: one row per grid
    point, never pooled. For first-passage variables see
    :func:`~sgdlab.analysis.survival_summary`.

    Args:
        ds: the engine's Dataset.
        var: variable name.
        dim: member dimension.
        level, method, n_boot, seed: as for :func:`mean_ci`.
        batch_dim: the batch dimension of stationary variables.

    Returns:
        A Dataset per remaining coordinates, with attribute ``variable``.

    Raises:
        ValueError: ``var`` is not in ``ds`` or lacks ``dim``.
    """
    from sgdlab.analysis.autocorrelation import stationary_mean

    if var not in ds.data_vars:
        raise ValueError(f"variable {var!r} not in the Dataset; it has {sorted(ds.data_vars)}")
    x = ds[var]
    if batch_dim in x.dims:
        out = stationary_mean(x, seed_dim=dim, batch_dim=batch_dim, level=level)
    else:
        out = mean_ci(x, dim=dim, level=level, method=method, n_boot=n_boot, seed=seed)
    out.attrs["variable"] = var
    return out
