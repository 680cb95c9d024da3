"""Time averages of autocorrelated series: batch means, autocorrelation, τ_int, stationary means.

Time series (record steps, batch means) are autocorrelated; their error bars come
from batch means or the integrated autocorrelation time ``τ = 1 + 2 Σ_{t≥1} ρ(t)``
(the variance inflation of a time average), so an AR(1) series with coefficient ρ
has ``τ = (1 + ρ)/(1 − ρ)``.

References: Sokal, "Monte Carlo methods in statistical mechanics" (1997) for the
automatic window; Flegal & Jones, Ann. Stat. 38 (2010) for batch means.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import numpy as np
import xarray as xr
from scipy import fft as sp_fft

from sgdlab.analysis._common import (
    apply_xr,
    check_level,
    finite_mean_se,
    loaded,
    no_dim_for_numpy,
    numpy_last,
    resolve_dim,
    scalars,
    t_quantile,
)

__all__ = [
    "BatchMeans",
    "StationaryMean",
    "autocorrelation",
    "batch_means",
    "effective_sample_size",
    "integrated_autocorr_time",
    "stationary_mean",
]


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
        axis: NumPy time axis; required unless ``x`` is 1-D. For a DataArray it
            picks ``dim``.
        dim: time dimension for a DataArray (default ``"step"``).
        n_batches: B ≥ 2.

    Returns:
        ``BatchMeans(mean, se, n_batches, batch_size)``; for a DataArray a Dataset
        with ``mean`` and ``se`` and attributes ``n_batches``, ``batch_size``.

    Raises:
        ValueError: B < 2, the series is shorter than B, or a NumPy array with
            more than one dimension and no ``axis``.
    """
    n_batches = int(n_batches)
    if n_batches < 2:
        raise ValueError(f"n_batches={n_batches!r} is invalid: expected an integer >= 2")
    if isinstance(x, xr.DataArray):
        d = resolve_dim(x, axis, dim, "step")
        length = x.sizes[d]
    else:
        no_dim_for_numpy(dim)
        a = numpy_last(x, axis, "batch_means", "time")
        length = a.shape[-1]
    if length < n_batches:
        raise ValueError(
            f"the series has {length} samples, fewer than n_batches={n_batches}; "
            "use fewer batches or a longer run"
        )
    size = length // n_batches
    if isinstance(x, xr.DataArray):
        return apply_xr(
            _batch_means_core,
            [x],
            [d],
            ("mean", "se"),
            {"n_batches": n_batches},
            {"n_batches": n_batches, "batch_size": size},
        )
    mean, se = _batch_means_core(a, n_batches)
    return scalars(BatchMeans(mean, se, n_batches, size))


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
        axis: NumPy time axis; required unless ``x`` is 1-D. For a DataArray it
            picks ``dim``.
        dim: time dimension for a DataArray (default ``"step"``); replaced by ``"lag"``.

    Returns:
        ρ with the time axis moved last (NumPy) or a DataArray with dim ``"lag"``.
    """
    if isinstance(x, xr.DataArray):
        d = resolve_dim(x, axis, dim, "step")
        return xr.apply_ufunc(
            _acf_core,
            loaded(x),
            input_core_dims=[[d]],
            output_core_dims=[["lag"]],
            exclude_dims={d},
        )
    no_dim_for_numpy(dim)
    return _acf_core(numpy_last(x, axis, "autocorrelation", "time"))


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
            stacklevel=4,
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
        axis: NumPy time axis; required unless ``x`` is 1-D. For a DataArray it
            picks ``dim``.
        dim: time dimension for a DataArray (default ``"step"``).
        c: window constant.

    Returns:
        τ per series: a NumPy float for a 1-D series, an ndarray over the other
        axes, or a DataArray over the remaining dims.
    """
    if isinstance(x, xr.DataArray):
        d = resolve_dim(x, axis, dim, "step")
        return xr.apply_ufunc(
            _iat_core, loaded(x), input_core_dims=[[d]], kwargs={"c": float(c)}
        )
    no_dim_for_numpy(dim)
    tau = _iat_core(numpy_last(x, axis, "integrated_autocorr_time", "time"), float(c))
    return tau[()] if tau.ndim == 0 else tau


def effective_sample_size(
    x: Any, axis: int | None = None, *, dim: str | None = None, c: float = 5.0
) -> Any:
    """Effective number of independent samples, ``N / τ``.

    Args:
        x, axis, dim, c: as for :func:`integrated_autocorr_time`.

    Returns:
        N/τ per series (NumPy float, ndarray or DataArray).
    """
    tau = integrated_autocorr_time(x, axis, dim=dim, c=c)
    if isinstance(x, xr.DataArray):
        d = resolve_dim(x, axis, dim, "step")
        return x.sizes[d] / tau
    return numpy_last(x, axis, "effective_sample_size", "time").shape[-1] / tau


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
    mean, se, n = finite_mean_se(avg)
    half = t_quantile(level, n - 1) * se
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
        seed_axis, batch_axis: NumPy axes of members and batches (explicit
            defaults: the last two axes).
        seed_dim, batch_dim: DataArray dims of members and batches.
        level: confidence level.

    Returns:
        ``StationaryMean(mean, se, lo, hi, n, se_within, ratio)``; for a DataArray
        a Dataset with those variables over the remaining dims.

    Raises:
        ValueError: bad ``level`` or missing dims.
    """
    level = check_level(level)
    if isinstance(x, xr.DataArray):
        return apply_xr(
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
    return scalars(_stationary_core(a, level))
