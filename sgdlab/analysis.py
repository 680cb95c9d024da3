"""Turn an ensemble of SGD runs into estimates with error bars.

Every reduction has a NumPy core that works along ``axis`` and an xarray face:
pass an ``xarray.DataArray`` and name the reduced dimension with ``dim``; every
other dimension and its coordinates are kept ("one answer per grid point and
record step"), and the result is an ``xarray.Dataset`` whose variables are the
fields of the NumPy result (``mean``, ``se``, ``lo``, ``hi``, ``n``, ...).
With NumPy input the result is a NamedTuple of arrays.

Conventions:

* Members (seeds) are independent; diverged members carry NaN and are left out
  of means, with ``n`` counting the members actually used.
* Time series (record steps, batch means) are autocorrelated; their error bars
  come from batch means or the integrated autocorrelation time
  ``τ = 1 + 2 Σ_{t≥1} ρ(t)`` (the variance inflation of a time average), so an
  AR(1) series with coefficient ρ has ``τ = (1 + ρ)/(1 − ρ)``.
* First-passage times are numbers of steps at risk. Members that had not
  escaped by the end are right-censored at that step, never dropped.

References: Sokal, "Monte Carlo methods in statistical mechanics" (1997) for
the automatic window; Flegal & Jones, Ann. Stat. 38 (2010) for batch means;
Kaplan & Meier, JASA 53 (1958); Greenwood (1926); Kalbfleisch & Prentice,
"The Statistical Analysis of Failure Time Data" (2002) for the log-log band;
Cox & Oakes, "Analysis of Survival Data" (1984) for censored exponential
likelihoods; Wilson, JASA 22 (1927).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import xarray as xr
from scipy import fft as sp_fft
from scipy import stats

from sgdlab._validate import choice

__all__ = [
    "BatchMeans",
    "FirstPassage",
    "KaplanMeier",
    "MeanCI",
    "Proportion",
    "RateFit",
    "RateMLE",
    "StationaryMean",
    "autocorrelation",
    "batch_means",
    "divergence_probability",
    "effective_sample_size",
    "escape_times",
    "exponential_rate_mle",
    "fit_exponential_rate",
    "fit_power_law",
    "integrated_autocorr_time",
    "kaplan_meier",
    "mean_ci",
    "mean_first_passage",
    "stationary_mean",
    "summarize",
    "wilson_interval",
]


# --------------------------------------------------------------------------- #
# Result types
# --------------------------------------------------------------------------- #
class MeanCI(NamedTuple):
    """Mean over independent members with a confidence interval."""

    mean: np.ndarray  # sample mean of the finite members
    se: np.ndarray  # s / √n, s the sample std with ddof=1
    lo: np.ndarray  # lower end of the interval
    hi: np.ndarray  # upper end of the interval
    n: np.ndarray  # members used (finite), dtype int


class BatchMeans(NamedTuple):
    """Time average of one long series with a batch-means standard error."""

    mean: np.ndarray  # average of the batch means (= average of the samples used)
    se: np.ndarray  # std of the batch means (ddof=1) / √n_batches
    n_batches: int
    batch_size: int


class StationaryMean(NamedTuple):
    """Ensemble-and-time average of a stationary observable."""

    mean: np.ndarray  # mean over members of each member's time average
    se: np.ndarray  # across-member std (ddof=1) / √M
    lo: np.ndarray  # Student-t interval with M − 1 degrees of freedom
    hi: np.ndarray
    n: np.ndarray  # members used (all batches finite), dtype int
    se_within: np.ndarray  # pooled within-member batch-means SE of the same mean
    ratio: np.ndarray  # se / se_within; ≈ 1 when batches are long and burn-in is done


class RateMLE(NamedTuple):
    """Maximum-likelihood escape rate per step from right-censored times."""

    rate: np.ndarray  # events / total time at risk
    se: np.ndarray  # rate / √events (observed information)
    lo: np.ndarray  # chi-square (gamma-form) interval
    hi: np.ndarray
    n_events: np.ndarray  # uncensored members
    exposure: np.ndarray  # total time at risk, Σ times
    n: np.ndarray  # members


class FirstPassage(NamedTuple):
    """Mean first-passage time from right-censored times."""

    mean: np.ndarray  # exposure / events = 1 / rate
    se: np.ndarray  # mean / √events (delta method)
    lo: np.ndarray  # 1 / (upper rate bound)
    hi: np.ndarray  # 1 / (lower rate bound)
    n_events: np.ndarray
    n: np.ndarray
    plain_mean: np.ndarray  # plain average of the times; NaN if any member is censored
    plain_se: np.ndarray  # its model-free SE, std (ddof=1) / √n; NaN if any censored


class Proportion(NamedTuple):
    """A binomial proportion with a Wilson score interval."""

    p: np.ndarray  # k / n
    lo: np.ndarray
    hi: np.ndarray
    k: np.ndarray  # successes (here: diverged members)
    n: np.ndarray  # trials (members)


class KaplanMeier(NamedTuple):
    """Kaplan–Meier survival curve at the distinct event times."""

    time: np.ndarray  # distinct event times t_j, increasing
    survival: np.ndarray  # S(t_j) = Π_{i≤j} (1 − d_i / n_i)
    variance: np.ndarray  # Greenwood: S(t_j)² Σ_{i≤j} d_i / (n_i (n_i − d_i))
    lo: np.ndarray  # pointwise band (see ``band``)
    hi: np.ndarray
    n_at_risk: np.ndarray  # n_j: members with time ≥ t_j
    n_events: np.ndarray  # d_j: events at t_j
    t_max: float  # largest observed time (event or censoring); the curve is flat after
    level: float
    band: str  # "loglog" or "plain"


@dataclass(frozen=True)
class RateFit:
    """Weighted least-squares fit of a rate or exponent on the log scale.

    Attributes:
        estimate: the rate r (exponential) or exponent p (power law).
        se: its standard error.
        lo, hi: the confidence interval at ``level``.
        intercept, intercept_se: a in the fitted line and its standard error.
        covariance: 2×2 covariance of (a, slope) used for ``se``.
        level: confidence level.
        interval: "normal" (known SEs, unscaled covariance) or "t" (scaled, n−2 dof).
        t_min, t_max: smallest and largest t actually used.
        n_points: number of points used.
        chi2, dof, chi2_dof: weighted residual sum of squares, n − 2, and their ratio.
        p_value: P(χ²_dof ≥ chi2), a goodness-of-fit check (small: model or SEs wrong).
    """

    estimate: float
    se: float
    lo: float
    hi: float
    intercept: float
    intercept_se: float
    covariance: np.ndarray
    level: float
    interval: str
    t_min: float
    t_max: float
    n_points: int
    chi2: float
    dof: int
    chi2_dof: float
    p_value: float


# --------------------------------------------------------------------------- #
# Plumbing: NumPy cores along the last axis, xarray faces via apply_ufunc
# --------------------------------------------------------------------------- #
def _check_level(level: float) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level!r} is invalid: expected a number in (0, 1), e.g. 0.95")
    return level


def _z(level: float) -> float:
    return float(stats.norm.ppf(0.5 + level / 2.0))


def _numpy_last(a: Any, axis: int | None) -> np.ndarray:
    """``a`` as an ndarray with the reduced axis last (flattened when axis is None)."""
    a = np.asarray(a)
    if axis is None:
        return a.reshape(-1)
    if a.ndim == 0:
        raise ValueError("expected an array with at least one dimension, got a scalar")
    return np.moveaxis(a, axis, -1)


def _resolve_dims(x: xr.DataArray, axis: int | None, dim: str | None, default: str) -> str:
    if dim is None:
        dim = x.dims[axis] if axis is not None else default
    if dim not in x.dims:
        raise ValueError(f"dimension {dim!r} not found: the array has dims {tuple(x.dims)}")
    return dim


def _no_dim_for_numpy(dim: Any) -> None:
    if dim is not None:
        raise TypeError("dim= names an xarray dimension; for a NumPy array pass axis= instead")


def _loaded(x: xr.DataArray) -> xr.DataArray:
    return x.compute() if x.chunks is not None else x


def _apply_xr(
    core: Callable[..., tuple],
    arrays: Sequence[xr.DataArray],
    core_dims: Sequence[str],
    names: Sequence[str],
    kwargs: dict[str, Any],
    attrs: dict[str, Any],
) -> xr.Dataset:
    """Run ``core`` (core dims last) on DataArrays, keep the other dims, return a Dataset."""
    arrays = [_loaded(a) for a in arrays]
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


def _scalars(result: Any) -> Any:
    """Turn 0-d array fields of a NumPy result into NumPy scalars."""
    return type(result)(
        *(v[()] if isinstance(v, np.ndarray) and v.ndim == 0 else v for v in result)
    )


def _t_quantile(level: float, dof: np.ndarray) -> np.ndarray:
    dof = np.asarray(dof, dtype=float)
    dof = np.where(dof >= 1, dof, np.nan)
    return stats.t.ppf(0.5 + level / 2.0, dof)


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


# --------------------------------------------------------------------------- #
# Means over independent members
# --------------------------------------------------------------------------- #
def _finite_mean_se(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    mean, se, n = _finite_mean_se(a)
    if method == "t":
        half = _t_quantile(level, n - 1) * se
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
        axis: NumPy axis to reduce (None flattens). For a DataArray it picks ``dim``.
        dim: DataArray dimension to reduce (default ``"seed"``).
        level: confidence level in (0, 1).
        method: ``"t"`` or ``"bootstrap"``.
        n_boot: bootstrap resamples.
        seed: int or ``np.random.Generator`` for the bootstrap.

    Returns:
        ``MeanCI(mean, se, lo, hi, n)`` for NumPy input; for a DataArray, a Dataset
        with those variables over the remaining dims.

    Raises:
        ValueError: bad ``level``/``method``/``n_boot`` or an unknown ``dim``.
    """
    level = _check_level(level)
    choice("method", method, ("t", "bootstrap"))
    if int(n_boot) < 1:
        raise ValueError(f"n_boot={n_boot!r} is invalid: expected an integer >= 1")
    kw = dict(level=level, method=method, n_boot=int(n_boot), rng=_rng(seed))
    if isinstance(x, xr.DataArray):
        d = _resolve_dims(x, axis, dim, "seed")
        return _apply_xr(
            _mean_ci_core, [x], [d], MeanCI._fields, kw, {"level": level, "method": method}
        )
    _no_dim_for_numpy(dim)
    return _scalars(_mean_ci_core(_numpy_last(x, axis), **kw))


# --------------------------------------------------------------------------- #
# Time averages
# --------------------------------------------------------------------------- #
def _batch_means_core(a: np.ndarray, n_batches: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=float)
    size = a.shape[-1] // n_batches
    used = a[..., a.shape[-1] - n_batches * size :]
    means = used.reshape(*a.shape[:-1], n_batches, size).mean(axis=-1)
    return means.mean(axis=-1), means.std(axis=-1, ddof=1) / math.sqrt(n_batches)


def batch_means(
    x: Any, axis: int | None = None, *, dim: str | None = None, n_batches: int = 20
) -> BatchMeans | xr.Dataset:
    """Time average of a long autocorrelated series with a batch-means standard error.

    The series (length N) is cut into B = ``n_batches`` contiguous batches of
    b = ⌊N/B⌋ samples; the first N − B·b samples (the oldest) are dropped. With
    Y_j the batch means, ``mean = Ȳ`` and ``se = std(Y, ddof=1)/√B``. This is
    consistent when b is much longer than the integrated autocorrelation time
    (then the Y_j are nearly independent); ``(mean − μ)/se`` is then ≈ t_{B−1}.

    Args:
        x: the series along ``axis``/``dim`` (NumPy array or DataArray).
        axis: time axis for NumPy input (default last). For a DataArray it picks ``dim``.
        dim: time dimension for a DataArray (default ``"step"``).
        n_batches: B ≥ 2.

    Returns:
        ``BatchMeans(mean, se, n_batches, batch_size)``; for a DataArray a Dataset
        with ``mean`` and ``se`` and attributes ``n_batches``, ``batch_size``.

    Raises:
        ValueError: B < 2 or the series is shorter than B.
    """
    n_batches = int(n_batches)
    if n_batches < 2:
        raise ValueError(f"n_batches={n_batches!r} is invalid: expected an integer >= 2")
    if isinstance(x, xr.DataArray):
        d = _resolve_dims(x, axis, dim, "step")
        length = x.sizes[d]
    else:
        _no_dim_for_numpy(dim)
        a = _numpy_last(x, -1 if axis is None else axis)
        length = a.shape[-1]
    if length < n_batches:
        raise ValueError(
            f"the series has {length} samples, fewer than n_batches={n_batches}; "
            "use fewer batches or a longer run"
        )
    size = length // n_batches
    if isinstance(x, xr.DataArray):
        return _apply_xr(
            _batch_means_core,
            [x],
            [d],
            ("mean", "se"),
            {"n_batches": n_batches},
            {"n_batches": n_batches, "batch_size": size},
        )
    mean, se = _batch_means_core(a, n_batches)
    return _scalars(BatchMeans(mean, se, n_batches, size))


def _acf_core(a: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation ρ(t), t = 0..N−1, along the last axis (FFT)."""
    a = np.asarray(a, dtype=float)
    n = a.shape[-1]
    centred = a - a.mean(axis=-1, keepdims=True)
    nfft = sp_fft.next_fast_len(2 * n - 1, real=True)
    spec = sp_fft.rfft(centred, n=nfft, axis=-1)
    acov = sp_fft.irfft(spec.real**2 + spec.imag**2, n=nfft, axis=-1)[..., :n] / n
    with np.errstate(invalid="ignore", divide="ignore"):
        return acov / acov[..., :1]


def autocorrelation(x: Any, axis: int | None = None, *, dim: str | None = None) -> Any:
    """Normalised autocorrelation function of a series, computed by FFT.

    ``ρ(t) = γ(t)/γ(0)`` with ``γ(t) = (1/N) Σ_{s<N−t} (x_s − x̄)(x_{s+t} − x̄)``
    (the usual biased, positive-definite estimator), for t = 0..N−1.

    Args:
        x: series along ``axis``/``dim``.
        axis: time axis for NumPy input (default last). For a DataArray it picks ``dim``.
        dim: time dimension for a DataArray (default ``"step"``); replaced by ``"lag"``.

    Returns:
        ρ with the time axis moved last (NumPy) or a DataArray with dim ``"lag"``.
    """
    if isinstance(x, xr.DataArray):
        d = _resolve_dims(x, axis, dim, "step")
        return xr.apply_ufunc(
            _acf_core,
            _loaded(x),
            input_core_dims=[[d]],
            output_core_dims=[["lag"]],
            exclude_dims={d},
        )
    _no_dim_for_numpy(dim)
    return _acf_core(_numpy_last(x, -1 if axis is None else axis))


def _iat_core(a: np.ndarray, c: float) -> np.ndarray:
    rho = _acf_core(a)
    n = rho.shape[-1]
    tau_m = 2.0 * np.cumsum(rho, axis=-1) - 1.0  # τ(M) = 1 + 2 Σ_{t=1..M} ρ(t)
    with np.errstate(invalid="ignore"):
        ok = np.arange(n) >= c * tau_m
    found = ok.any(axis=-1)
    idx = np.where(found, ok.argmax(axis=-1), n - 1)
    tau = np.take_along_axis(tau_m, idx[..., None], axis=-1)[..., 0]
    with np.errstate(invalid="ignore"):
        short = np.isfinite(tau) & (~found | (n < 50.0 * tau))
    if np.any(short):
        warnings.warn(
            f"{int(np.sum(short))} series are shorter than 50 autocorrelation times "
            f"(N = {n}, largest τ estimate {np.nanmax(np.where(short, tau, np.nan)):.3g}); "
            "τ is then unreliable and usually underestimated: run longer",
            RuntimeWarning,
            stacklevel=3,
        )
    return tau


def integrated_autocorr_time(
    x: Any, axis: int | None = None, *, dim: str | None = None, c: float = 5.0
) -> Any:
    """Integrated autocorrelation time with Sokal's automatic window.

    ``τ = 1 + 2 Σ_{t=1..M} ρ(t)``, with ρ from :func:`autocorrelation` and M the
    smallest window with ``M ≥ c·τ(M)`` (Sokal 1997; c ≈ 5 keeps the truncation
    bias and the variance, ≈ 2(2M+1)/N · τ², both small). With this convention
    ``Var(x̄) ≈ τ·Var(x)/N``; AR(1) with coefficient ρ gives (1+ρ)/(1−ρ).
    A constant series gives NaN. If no window satisfies the rule the full
    series is used; a RuntimeWarning says so whenever N < 50·τ (the estimate
    is then unreliable and usually too small).

    Args:
        x: series along ``axis``/``dim`` (NumPy array or DataArray).
        axis: time axis for NumPy input (default last). For a DataArray it picks ``dim``.
        dim: time dimension for a DataArray (default ``"step"``).
        c: window constant.

    Returns:
        τ per series: an ndarray, or a DataArray over the remaining dims.
    """
    if isinstance(x, xr.DataArray):
        d = _resolve_dims(x, axis, dim, "step")
        return xr.apply_ufunc(
            _iat_core, _loaded(x), input_core_dims=[[d]], kwargs={"c": float(c)}
        )
    _no_dim_for_numpy(dim)
    return _iat_core(_numpy_last(x, -1 if axis is None else axis), float(c))


def effective_sample_size(
    x: Any, axis: int | None = None, *, dim: str | None = None, c: float = 5.0
) -> Any:
    """Effective number of independent samples, ``N / τ``.

    Args:
        x, axis, dim, c: as for :func:`integrated_autocorr_time`.

    Returns:
        N/τ per series (ndarray or DataArray).
    """
    tau = integrated_autocorr_time(x, axis, dim=dim, c=c)
    if isinstance(x, xr.DataArray):
        d = _resolve_dims(x, axis, dim, "step")
        return x.sizes[d] / tau
    return np.asarray(x).shape[-1 if axis is None else axis] / tau


def _stationary_core(a: np.ndarray, level: float) -> StationaryMean:
    a = np.asarray(a, dtype=float)  # (..., member, batch)
    n_batch = a.shape[-1]
    ok = np.isfinite(a).all(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        member_mean = a.mean(axis=-1)
        member_var = (
            a.var(axis=-1, ddof=1) / n_batch if n_batch >= 2 else np.full_like(member_mean, np.nan)
        )
    avg = np.where(ok, member_mean, np.nan)
    mean, se, n = _finite_mean_se(avg)
    half = _t_quantile(level, n - 1) * se
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = np.where(ok, member_var, 0.0).sum(axis=-1) / n  # mean of v_m over members
        se_within = np.sqrt(np.where(n >= 1, pooled, np.nan) / n)
        ratio = se / se_within
    return StationaryMean(mean, se, mean - half, mean + half, n, se_within, ratio)


def stationary_mean(
    x: Any,
    seed_axis: int = -2,
    batch_axis: int = -1,
    *,
    seed_dim: str = "seed",
    batch_dim: str = "batch",
    level: float = 0.95,
) -> StationaryMean | xr.Dataset:
    """Stationary average of an observable from per-member batch means.

    Input: for each member m (independent seed) the means Y_{m,1..B} of the
    observable over B equal time batches after burn-in. Each member's time
    average is ``A_m = mean_b Y_{m,b}``; the estimate is ``Ā = mean_m A_m``.
    Because members are independent, ``se = std_m(A_m, ddof=1)/√M`` is valid
    whatever the autocorrelation inside a member; the interval is Student-t with
    M − 1 degrees of freedom.

    Cross-check: each member also gives a batch-means variance of its own time
    average, ``v_m = var_b(Y_{m,b}, ddof=1)/B``; pooled, ``se_within =
    √(mean_m v_m / M)``. ``ratio = se/se_within`` should be ≈ 1; clearly above 1
    means the batches are correlated (too short) or burn-in was not finished.

    Members with any non-finite batch (diverged) are left out; ``n`` = M used.

    Args:
        x: batch means with a member axis and a batch axis (NumPy or DataArray).
        seed_axis, batch_axis: NumPy axes of members and batches.
        seed_dim, batch_dim: DataArray dims of members and batches.
        level: confidence level.

    Returns:
        ``StationaryMean(mean, se, lo, hi, n, se_within, ratio)``; for a DataArray
        a Dataset with those variables over the remaining dims.

    Raises:
        ValueError: bad ``level`` or missing dims.
    """
    level = _check_level(level)
    if isinstance(x, xr.DataArray):
        return _apply_xr(
            _stationary_core,
            [x],
            [seed_dim, batch_dim],
            StationaryMean._fields,
            {"level": level},
            {"level": level},
        )
    a = np.asarray(x)
    if a.ndim < 2:
        raise ValueError(f"expected at least 2 dims (member, batch), got shape {a.shape}")
    a = np.moveaxis(a, (seed_axis, batch_axis), (-2, -1))
    return _scalars(_stationary_core(a, level))


# --------------------------------------------------------------------------- #
# Rate fits from ensemble means
# --------------------------------------------------------------------------- #
def _usable_points(
    name: str,
    t: Any,
    mean: Any,
    se: Any,
    t_min: float | None,
    t_max: float | None,
    positive_t: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.asarray(t, dtype=float)
    mean = np.asarray(mean, dtype=float)
    se = np.asarray(se, dtype=float)
    if t.ndim != 1 or mean.shape != t.shape or se.shape != t.shape:
        raise ValueError(
            f"{name}: t, mean and se must be 1-D of the same length; got shapes "
            f"{t.shape}, {mean.shape}, {se.shape}"
        )
    lo = -np.inf if t_min is None else float(t_min)
    hi = np.inf if t_max is None else float(t_max)
    in_range = (t >= lo) & (t <= hi)
    bad_t = ~np.isfinite(t) | ((t <= 0) if positive_t else False)
    bad_mean = ~np.isfinite(mean) | (mean <= 0)
    bad_se = ~np.isfinite(se) | (se <= 0)
    use = in_range & ~bad_t & ~bad_mean & ~bad_se
    if use.sum() < 3:
        reasons = []
        if (in_range & bad_mean).any():
            reasons.append(
                f"{int((in_range & bad_mean).sum())} had a non-positive or non-finite mean "
                "(its logarithm is undefined)"
            )
        if (in_range & ~bad_mean & bad_se).any():
            reasons.append(
                f"{int((in_range & ~bad_mean & bad_se).sum())} had a non-positive or "
                "non-finite se"
            )
        if (in_range & bad_t).any():
            need = "positive and finite" if positive_t else "finite"
            reasons.append(f"{int((in_range & bad_t).sum())} had a t that is not {need}")
        why = ("; " + ", ".join(reasons)) if reasons else ""
        raise ValueError(
            f"{name} needs at least 3 usable points, got {int(use.sum())} of {t.size} "
            f"({int(in_range.sum())} in the fit range [{lo:g}, {hi:g}]){why}"
        )
    return t[use], mean[use], se[use]


def _wls_line(
    x: np.ndarray,
    y: np.ndarray,
    sigma: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Fit y = b0 + b1·x with known σ: (beta, unscaled covariance, chi²)."""
    design = np.column_stack([np.ones_like(x), x]) / sigma[:, None]
    q, r = np.linalg.qr(design)
    beta = np.linalg.solve(r, q.T @ (y / sigma))
    r_inv = np.linalg.inv(r)
    cov = r_inv @ r_inv.T
    resid = (y - beta[0] - beta[1] * x) / sigma
    return beta, cov, float(resid @ resid)


def _rate_fit(
    name: str,
    t: Any,
    mean: Any,
    se: Any,
    t_min: float | None,
    t_max: float | None,
    level: float,
    interval: str,
    power: bool,
) -> RateFit:
    level = _check_level(level)
    choice("interval", interval, ("normal", "t"))
    tu, mu, su = _usable_points(name, t, mean, se, t_min, t_max, positive_t=power)
    x = np.log(tu) if power else tu
    y = np.log(mu)
    sigma = su / mu  # delta method: se(ln m) = se(m)/m
    beta, cov, chi2 = _wls_line(x, y, sigma)
    dof = tu.size - 2
    if interval == "t":
        cov = cov * (chi2 / dof)
        q = float(stats.t.ppf(0.5 + level / 2.0, dof))
    else:
        q = _z(level)
    sign = 1.0 if power else -1.0  # ln m = a − r t: the rate is minus the slope
    est = sign * float(beta[1])
    se_est = math.sqrt(cov[1, 1])
    return RateFit(
        estimate=est,
        se=se_est,
        lo=est - q * se_est,
        hi=est + q * se_est,
        intercept=float(beta[0]),
        intercept_se=math.sqrt(cov[0, 0]),
        covariance=cov,
        level=level,
        interval=interval,
        t_min=float(tu.min()),
        t_max=float(tu.max()),
        n_points=int(tu.size),
        chi2=chi2,
        dof=dof,
        chi2_dof=chi2 / dof,
        p_value=float(stats.chi2.sf(chi2, dof)),
    )


def fit_exponential_rate(
    t: Any,
    mean: Any,
    se: Any,
    t_min: float | None = None,
    t_max: float | None = None,
    level: float = 0.95,
    *,
    interval: str = "normal",
) -> RateFit:
    """Fit ``ln mean(t) = a − r·t`` by weighted least squares and return r.

    The ensemble means have known standard errors; on the log scale these are
    ``σ_i = se_i / mean_i`` (delta method) and the weights are 1/σ_i². With the
    SEs taken as known, the estimator's covariance is the unscaled
    ``(Xᵀ W X)⁻¹`` and the interval is normal, ``r ± z·se`` (``interval="normal"``,
    the default; it is the calibrated one when the SEs are right). ``interval="t"``
    instead rescales the covariance by χ²/(n−2) and uses t_{n−2}, for SEs known
    only up to a factor. ``chi2_dof`` ≈ 1 checks the model and the SEs.

    The log transform is only first-order: ``E[ln m̂] ≈ ln m − (se/m)²/2``, so
    relative SEs that vary a lot along t tilt the line slightly; keep
    ``se/mean`` at a few percent (more members) for calibrated intervals.

    Args:
        t: times (1-D).
        mean: ensemble means at ``t`` (must be > 0 to be used).
        se: their standard errors (must be > 0).
        t_min, t_max: inclusive fit range (None: unbounded).
        level: confidence level.
        interval: ``"normal"`` or ``"t"``.

    Returns:
        :class:`RateFit` with ``estimate`` = r.

    Raises:
        ValueError: fewer than three usable points (non-finite or non-positive
            means or SEs are unusable, and the message counts them).
    """
    return _rate_fit(
        "fit_exponential_rate", t, mean, se, t_min, t_max, level, interval, power=False
    )


def fit_power_law(
    t: Any,
    mean: Any,
    se: Any,
    t_min: float | None = None,
    t_max: float | None = None,
    level: float = 0.95,
    *,
    interval: str = "normal",
) -> RateFit:
    """Fit ``ln mean(t) = a + p·ln t`` by weighted least squares and return p.

    Weights and intervals as in :func:`fit_exponential_rate` (log-scale SEs
    ``se/mean``; known SEs → unscaled covariance and a normal interval).
    Points with t ≤ 0 are unusable.

    Args:
        t: times (1-D, > 0).
        mean: ensemble means at ``t`` (> 0).
        se: their standard errors (> 0).
        t_min, t_max: inclusive fit range (None: unbounded).
        level: confidence level.
        interval: ``"normal"`` or ``"t"``.

    Returns:
        :class:`RateFit` with ``estimate`` = p and ``intercept`` = ln C.

    Raises:
        ValueError: fewer than three usable points.
    """
    return _rate_fit("fit_power_law", t, mean, se, t_min, t_max, level, interval, power=True)


# --------------------------------------------------------------------------- #
# Escape times with right-censoring
# --------------------------------------------------------------------------- #
def escape_times(event_step: Any, censored: Any, steps: Any) -> Any:
    """Times at risk from the engine's first-passage output.

    ``time = event_step`` for members that escaped and ``steps`` (the censoring
    time, the last simulated step) for censored ones.

    Args:
        event_step: first step at which the event held, −1 if never.
        censored: True for members that never escaped.
        steps: censoring time (scalar or broadcastable).

    Returns:
        Float times, same type and shape as ``event_step``.

    Raises:
        ValueError: an uncensored member has a negative event step.
    """
    bad = np.asarray(~np.asarray(censored, dtype=bool) & (np.asarray(event_step) < 0))
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} members are marked uncensored but have event_step < 0; "
            "event_step and censored disagree"
        )
    if isinstance(event_step, xr.DataArray):
        return xr.where(censored, steps, event_step).astype(float)
    return np.where(censored, steps, event_step).astype(float)


def _fmt(v: float) -> str:
    return f"{int(v)}" if float(v).is_integer() else f"{v:g}"


def _censored_inputs(times: Any, censored: Any) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(times, dtype=float)
    c = np.asarray(censored)
    if c.shape != t.shape:
        raise ValueError(f"times and censored must have the same shape; got {t.shape}, {c.shape}")
    if c.dtype != bool:
        if not np.isin(c, (0, 1)).all():
            raise ValueError("censored must be boolean (True = not escaped by the end)")
        c = c.astype(bool)
    if t.shape[-1] == 0:
        raise ValueError("no members: times is empty")
    if not np.isfinite(t).all():
        raise ValueError(
            f"{int((~np.isfinite(t)).sum())} times are NaN or infinite; pass finite times "
            "(censored members at the censoring step)"
        )
    if (t < 0).any():
        raise ValueError(f"{int((t < 0).sum())} times are negative; times must be >= 0")
    return t, c


def _rate_core(times: np.ndarray, censored: np.ndarray, level: float) -> RateMLE:
    t, c = _censored_inputs(times, censored)
    d = (~c).sum(axis=-1)
    n = np.full(d.shape, t.shape[-1])
    exposure = t.sum(axis=-1)
    none = d == 0
    if none.any():
        t_cens = float(np.max(np.where(c, t, -np.inf)[none]))
        where = "" if none.size == 1 else f" at {int(none.sum())} of {none.size} grid points"
        raise ValueError(
            f"no escape events{where}: all {t.shape[-1]} members were censored at step "
            f"{_fmt(t_cens)}; run longer"
        )
    if (exposure <= 0).any():
        raise ValueError("total time at risk is zero; times must not all be 0")
    rate = d / exposure
    alpha = 1.0 - level
    lo = stats.chi2.ppf(alpha / 2.0, 2 * d) / (2.0 * exposure)
    hi = stats.chi2.ppf(1.0 - alpha / 2.0, 2 * d) / (2.0 * exposure)
    return RateMLE(rate, rate / np.sqrt(d), lo, hi, d, exposure, n)


def exponential_rate_mle(
    times: Any,
    censored: Any,
    axis: int | None = None,
    *,
    dim: str | None = None,
    level: float = 0.95,
) -> RateMLE | xr.Dataset:
    """Escape rate per step from right-censored first-passage times.

    With d events (uncensored members) and total time at risk ``E = Σ_i t_i``
    (event time or censoring time), the exponential likelihood ``λ^d e^{−λE}``
    gives ``rate = d/E`` and ``se = rate/√d``. In discrete time this is also
    the exact MLE of a geometric per-step hazard when t counts the steps at risk.

    Interval (gamma form): ``[χ²_{α/2}(2d), χ²_{1−α/2}(2d)] / (2E)``. Without
    censoring 2λE ~ χ²(2d) exactly, so it is exact; under a fixed censoring time
    it is the standard approximation (Cox & Oakes 1984) and stays calibrated
    for tens of events or more.

    Args:
        times: time at risk per member (see :func:`escape_times`), finite, ≥ 0.
        censored: True for members that had not escaped by their time.
        axis: member axis for NumPy input (None flattens).
        dim: member dimension for DataArrays (default ``"seed"``).
        level: confidence level.

    Returns:
        ``RateMLE(rate, se, lo, hi, n_events, exposure, n)``; a Dataset for
        DataArray input.

    Raises:
        ValueError: all members censored (no events), non-finite or negative
            times, or mismatched shapes.
    """
    level = _check_level(level)
    if isinstance(times, xr.DataArray):
        d = _resolve_dims(times, axis, dim, "seed")
        cens = censored if isinstance(censored, xr.DataArray) else times.copy(data=censored)
        return _apply_xr(
            _rate_core, [times, cens], [d], RateMLE._fields, {"level": level}, {"level": level}
        )
    _no_dim_for_numpy(dim)
    return _scalars(_rate_core(_numpy_last(times, axis), _numpy_last(censored, axis), level))


def _mfpt_core(times: np.ndarray, censored: np.ndarray, level: float) -> FirstPassage:
    r = _rate_core(times, censored, level)
    t, c = _censored_inputs(times, censored)
    mean = r.exposure / r.n_events
    any_cens = c.any(axis=-1)
    plain_mean, plain_se, _ = _finite_mean_se(t)
    with np.errstate(divide="ignore"):
        lo, hi = 1.0 / r.hi, 1.0 / r.lo
    return FirstPassage(
        mean,
        mean / np.sqrt(r.n_events),
        lo,
        hi,
        r.n_events,
        r.n,
        np.where(any_cens, np.nan, plain_mean),
        np.where(any_cens, np.nan, plain_se),
    )


def mean_first_passage(
    times: Any,
    censored: Any,
    axis: int | None = None,
    *,
    dim: str | None = None,
    level: float = 0.95,
) -> FirstPassage | xr.Dataset:
    """Mean first-passage time from right-censored times, assuming a constant hazard.

    ``τ = 1/rate = E/d`` (see :func:`exponential_rate_mle`), ``se = τ/√d`` (delta
    method), and the interval is the rate interval inverted. When no member is
    censored, ``plain_mean`` and ``plain_se`` are the model-free mean of the
    times and ``std(ddof=1)/√n`` (the point estimate then equals τ; comparing
    the SEs tests the exponential assumption); otherwise they are NaN.

    Args:
        times, censored, axis, dim, level: as for :func:`exponential_rate_mle`.

    Returns:
        ``FirstPassage(mean, se, lo, hi, n_events, n, plain_mean, plain_se)``;
        a Dataset for DataArray input.

    Raises:
        ValueError: as for :func:`exponential_rate_mle`.
    """
    level = _check_level(level)
    if isinstance(times, xr.DataArray):
        d = _resolve_dims(times, axis, dim, "seed")
        cens = censored if isinstance(censored, xr.DataArray) else times.copy(data=censored)
        return _apply_xr(
            _mfpt_core, [times, cens], [d], FirstPassage._fields, {"level": level},
            {"level": level},
        )
    _no_dim_for_numpy(dim)
    return _scalars(_mfpt_core(_numpy_last(times, axis), _numpy_last(censored, axis), level))


def kaplan_meier(
    times: Any, censored: Any, level: float = 0.95, *, band: str = "loglog"
) -> KaplanMeier:
    """Kaplan–Meier estimate of the survival function with Greenwood variance.

    At each distinct event time t_j, with n_j members still at risk (time ≥ t_j;
    a member censored at t_j counts as at risk there) and d_j events:
    ``S(t_j) = Π_{i≤j} (1 − d_i/n_i)`` and Greenwood's
    ``Var S(t_j) = S(t_j)² Σ_{i≤j} d_i / (n_i (n_i − d_i))``.

    Pointwise bands at ``level``:

    * ``"loglog"`` (default; Kalbfleisch & Prentice): a normal interval for
      ``ln(−ln S)`` with variance ``Σ d/(n(n−d)) / (ln S)²``, mapped back:
      ``[S^{exp(+z·s)}, S^{exp(−z·s)}]``; it always lies inside [0, 1].
    * ``"plain"``: ``S ± z·√Var``, clipped to [0, 1].

    Where S reaches 0 (everyone left at risk escaped at once) the variance and
    both band ends are 0. With no events (all censored) the arrays are empty
    and S = 1 up to ``t_max``.

    Args:
        times: 1-D times (event or censoring), finite and ≥ 0.
        censored: True where the member had not escaped by its time.
        level: confidence level.
        band: ``"loglog"`` or ``"plain"``.

    Returns:
        :class:`KaplanMeier`.

    Raises:
        ValueError: non-finite or negative times, mismatched or empty inputs.
    """
    level = _check_level(level)
    choice("band", band, ("loglog", "plain"))
    t, c = _censored_inputs(np.ravel(np.asarray(times)), np.ravel(np.asarray(censored)))
    sorted_t = np.sort(t)
    ev_t, d = np.unique(t[~c], return_counts=True)
    n_risk = t.size - np.searchsorted(sorted_t, ev_t, side="left")
    survival = np.cumprod(1.0 - d / n_risk)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.cumsum(d / (n_risk * (n_risk - d)))
        variance = np.where(survival > 0, survival**2 * g, 0.0)
        z = _z(level)
        if band == "loglog":
            s_theta = np.sqrt(g) / np.abs(np.log(survival))
            lo = survival ** np.exp(z * s_theta)
            hi = survival ** np.exp(-z * s_theta)
        else:
            half = z * np.sqrt(variance)
            lo, hi = survival - half, survival + half
    dead = survival <= 0
    lo = np.clip(np.where(dead, 0.0, lo), 0.0, 1.0)
    hi = np.clip(np.where(dead, 0.0, hi), 0.0, 1.0)
    return KaplanMeier(
        time=ev_t,
        survival=survival,
        variance=variance,
        lo=lo,
        hi=hi,
        n_at_risk=n_risk,
        n_events=d,
        t_max=float(sorted_t[-1]),
        level=level,
        band=band,
    )


# --------------------------------------------------------------------------- #
# Divergence
# --------------------------------------------------------------------------- #
def wilson_interval(k: Any, n: Any, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion k/n.

    With p̂ = k/n and z the normal quantile:
    ``(p̂ + z²/2n ± z √(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)``.
    For k = 0 the upper end is z²/(n + z²); for k = n/2 the half-width is
    z / (2√(n + z²)). n = 0 gives NaN.

    Args:
        k: successes.
        n: trials.
        level: confidence level.

    Returns:
        (lo, hi) arrays.
    """
    level = _check_level(level)
    z = _z(level)
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1.0 + z * z / n
        centre = (p + z * z / (2.0 * n)) / denom
        half = z * np.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denom
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def _divergence_core(a: np.ndarray, level: float) -> Proportion:
    a = np.asarray(a)
    k = (a >= 0).sum(axis=-1)
    n = np.full(k.shape, a.shape[-1])
    lo, hi = wilson_interval(k, n, level)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
    return Proportion(p, lo, hi, k, n)


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
        axis: member axis for NumPy input (None flattens).
        dim: member dimension for DataArrays (default ``"seed"``).
        level: confidence level.

    Returns:
        ``Proportion(p, lo, hi, k, n)``; a Dataset for DataArray input.
    """
    level = _check_level(level)
    if isinstance(diverged_step, xr.DataArray):
        d = _resolve_dims(diverged_step, axis, dim, "seed")
        return _apply_xr(
            _divergence_core, [diverged_step], [d], Proportion._fields, {"level": level},
            {"level": level},
        )
    _no_dim_for_numpy(dim)
    return _scalars(_divergence_core(_numpy_last(diverged_step, axis), level))


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
    goes through :func:`stationary_mean` (adds ``se_within`` and ``ratio``).
    Every other dimension and coordinate is kept.

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
    if var not in ds.data_vars:
        raise ValueError(f"variable {var!r} not in the Dataset; it has {sorted(ds.data_vars)}")
    x = ds[var]
    if batch_dim in x.dims:
        out = stationary_mean(x, seed_dim=dim, batch_dim=batch_dim, level=level)
    else:
        out = mean_ci(x, dim=dim, level=level, method=method, n_boot=n_boot, seed=seed)
    out.attrs["variable"] = var
    return out
