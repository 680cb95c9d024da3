"""Rates and exponents from ensemble means: weighted least squares on the log scale.

``ln mean(t) = a − r·t`` (exponential rate) or ``ln mean(t) = a + p·ln t`` (power
law), with the ensemble standard errors taken as known. With a DataArray of means
the fit is done per grid point along the time dimension and a Dataset comes back.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import xarray as xr
from scipy import stats

from sgdlab._validate import choice
from sgdlab.analysis._common import check_level, like, loaded, point_name, z_quantile

__all__ = ["RateFit", "fit_exponential_rate", "fit_power_law"]


class RateFit(NamedTuple):
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


_PER_POINT = ("estimate", "se", "lo", "hi", "intercept", "intercept_se", "t_min", "t_max",
              "n_points", "chi2", "dof", "chi2_dof", "p_value")


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
            f"{t.shape}, {mean.shape}, {se.shape} (for several grid points pass DataArrays "
            "and dim=)"
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


def _fit_one(name, t, mean, se, t_min, t_max, level, interval, power) -> RateFit:
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
        q = z_quantile(level)
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


def _fit_grid(name, t, mean: xr.DataArray, se, dim, t_min, t_max, level, interval, power):
    """One fit per grid point along ``dim``; a Dataset over the other dims."""
    dim = "step" if dim is None else dim
    if dim not in mean.dims:
        raise ValueError(f"dimension {dim!r} not found: the array has dims {tuple(mean.dims)}")
    mean = loaded(mean)
    se = loaded(like(mean, se)).transpose(*mean.dims)
    if t is None:
        if dim not in mean.coords:
            raise ValueError(f"{name}: pass t= or give the dimension {dim!r} a coordinate")
        t = mean[dim].values
    t = np.asarray(t, dtype=float)
    other = [d for d in mean.dims if d != dim]
    m = mean.transpose(*other, dim).values.reshape(-1, mean.sizes[dim])
    s = se.transpose(*other, dim).values.reshape(-1, mean.sizes[dim])
    shape = tuple(mean.sizes[d] for d in other)
    out = {k: np.empty(m.shape[0]) for k in _PER_POINT}
    for g in range(m.shape[0]):
        try:
            fit = _fit_one(name, t, m[g], s[g], t_min, t_max, level, interval, power)
        except ValueError as e:
            idx = np.unravel_index(g, shape) if shape else ()
            where = point_name({d: mean[d].values[i] if d in mean.coords else i
                                for d, i in zip(other, idx, strict=True)})
            raise ValueError(f"at {where}: {e}") from None
        for k in _PER_POINT:
            out[k][g] = getattr(fit, k)
    coords = {d: mean.coords[d] for d in other if d in mean.coords}
    ds = xr.Dataset({k: (other, v.reshape(shape)) for k, v in out.items()}, coords=coords)
    for k in ("n_points", "dof"):
        ds[k] = ds[k].astype(int)
    ds.attrs.update(level=level, interval=interval)
    return ds


def _rate_fit(name, t, mean, se, t_min, t_max, level, interval, power, dim):
    level = check_level(level)
    choice("interval", interval, ("normal", "t"))
    if isinstance(mean, xr.DataArray):
        return _fit_grid(name, t, mean, se, dim, t_min, t_max, level, interval, power)
    if dim is not None:
        raise TypeError("dim= names an xarray dimension: pass the means as a DataArray")
    return _fit_one(name, t, mean, se, t_min, t_max, level, interval, power)


def fit_exponential_rate(
    t: Any, mean: Any, se: Any, t_min: float | None = None, t_max: float | None = None,
    level: float = 0.95, *, interval: str = "normal", dim: str | None = None,
) -> RateFit | xr.Dataset:
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
        t: times (1-D); with DataArray means, None takes the coordinate of ``dim``.
        mean: ensemble means at ``t`` (must be > 0 to be used); 1-D, or a
            DataArray with a time dimension ``dim`` and any grid dimensions.
        se: their standard errors (must be > 0), same shape as ``mean``.
        t_min, t_max: inclusive fit range (None: unbounded).
        level: confidence level.
        interval: ``"normal"`` or ``"t"``.
        dim: time dimension of DataArray means (default ``"step"``).

    Returns:
        :class:`RateFit` with ``estimate`` = r; for DataArray means a Dataset of
        its scalar fields (all but ``covariance``) over the other dims.

    Raises:
        ValueError: fewer than three usable points (non-finite or non-positive
            means or SEs are unusable, and the message counts them and names the
            grid point).
    """
    return _rate_fit(
        "fit_exponential_rate", t, mean, se, t_min, t_max, level, interval, False, dim
    )


def fit_power_law(
    t: Any, mean: Any, se: Any, t_min: float | None = None, t_max: float | None = None,
    level: float = 0.95, *, interval: str = "normal", dim: str | None = None,
) -> RateFit | xr.Dataset:
    """Fit ``ln mean(t) = a + p·ln t`` by weighted least squares and return p.

    Weights and intervals as in :func:`fit_exponential_rate` (log-scale SEs
    ``se/mean``; known SEs → unscaled covariance and a normal interval).
    Points with t ≤ 0 are unusable.

    Args:
        t: times (1-D, > 0); with DataArray means, None takes the coordinate of ``dim``.
        mean: ensemble means at ``t`` (> 0); 1-D or a DataArray (see
            :func:`fit_exponential_rate`).
        se: their standard errors (> 0).
        t_min, t_max: inclusive fit range (None: unbounded).
        level: confidence level.
        interval: ``"normal"`` or ``"t"``.
        dim: time dimension of DataArray means (default ``"step"``).

    Returns:
        :class:`RateFit` with ``estimate`` = p and ``intercept`` = ln C; a
        Dataset per grid point for DataArray means.

    Raises:
        ValueError: fewer than three usable points.
    """
    return _rate_fit("fit_power_law", t, mean, se, t_min, t_max, level, interval, True, dim)
