"""First-passage (escape) times with right-censoring and delayed entry.

First-passage times are numbers of steps at risk. Members that had not escaped
by the end are right-censored at that step, never dropped. Every function here
takes one grid point as 1-D NumPy arrays, or many as ``xarray.DataArray`` s with
the member dimension named by ``dim`` (default ``"seed"``): the answer is then a
Dataset over the other dimensions, one estimate per grid point, never pooled.

References: Kaplan & Meier, JASA 53 (1958); Greenwood (1926); Kalbfleisch &
Prentice, "The Statistical Analysis of Failure Time Data" (2002) for the log-log
band; Brookmeyer & Crowley, Biometrics 38 (1982) for the median interval; Klein &
Moeschberger, "Survival Analysis" (2003), §4.5 for the restricted mean and its
variance; Cox & Oakes, "Analysis of Survival Data" (1984) for censored and
left-truncated exponential likelihoods.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import xarray as xr
from scipy import stats

from sgdlab._validate import choice
from sgdlab.analysis._common import (
    apply_xr,
    check_level,
    finite_mean_se,
    like,
    loaded,
    no_dim_for_numpy,
    numpy_last,
    point_name,
    resolve_dim,
    scalars,
    z_quantile,
)

__all__ = [
    "FirstPassage",
    "KaplanMeier",
    "RateMLE",
    "RestrictedMean",
    "SurvivalTime",
    "escape_times",
    "exponential_rate_mle",
    "kaplan_meier",
    "km_median",
    "mean_first_passage",
    "restricted_mean",
    "survival_summary",
]


class RateMLE(NamedTuple):
    """Maximum-likelihood escape rate per step from right-censored times."""

    rate: np.ndarray  # events / total time at risk
    se: np.ndarray  # rate / √events (observed information)
    lo: np.ndarray  # chi-square (gamma-form) interval
    hi: np.ndarray
    n_events: np.ndarray  # uncensored members (after entry, with delayed entry)
    exposure: np.ndarray  # total time at risk, Σ (times − entry)
    n: np.ndarray  # members at risk (all members without delayed entry)


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


class SurvivalTime(NamedTuple):
    """A quantile of the survival time (e.g. the median) with its interval."""

    time: float  # first t with S(t) ≤ 1 − q; inf when S stays above it
    lo: float  # the same read off the lower band
    hi: float  # the same read off the upper band (inf when it stays above)
    level: float


class RestrictedMean(NamedTuple):
    """Restricted mean survival time ``∫_0^τ S(t) dt`` with a normal interval."""

    mean: float
    se: float  # Greenwood-type (Klein & Moeschberger §4.5)
    lo: float
    hi: float
    tau: float
    level: float


# --------------------------------------------------------------------------- #
# Inputs
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


def _member_arrays(func: str, times: Any, censored: Any, axis: int | None,
                   extra: Any = None) -> list[np.ndarray]:
    """NumPy inputs with the member axis last (``extra`` broadcast to ``times``)."""
    t = np.asarray(times)
    arrays = [t, np.asarray(censored)]
    if extra is not None:
        arrays.append(np.broadcast_to(np.asarray(extra, dtype=float), t.shape))
    return [numpy_last(a, axis, func) for a in arrays]


# --------------------------------------------------------------------------- #
# Exponential (constant-hazard) estimates
# --------------------------------------------------------------------------- #
def _rate_core(times: np.ndarray, censored: np.ndarray, entry: np.ndarray | None,
               level: float) -> RateMLE:
    t, c = _censored_inputs(times, censored)
    if entry is None:
        d = (~c).sum(axis=-1)
        n = np.full(d.shape, t.shape[-1])
        exposure = t.sum(axis=-1)
    else:
        e = np.asarray(entry, dtype=float)
        if not np.isfinite(e).all() or (e < 0).any():
            raise ValueError("entry must be finite and >= 0 (the step observation starts at)")
        risk = t > e
        d = (risk & ~c).sum(axis=-1)
        n = risk.sum(axis=-1)
        exposure = np.where(risk, t - e, 0.0).sum(axis=-1)
    none = d == 0
    if none.any():
        where = "" if none.size == 1 else f" at {int(none.sum())} of {none.size} grid points"
        if entry is None:
            t_cens = float(np.max(np.where(c, t, -np.inf)[none]))
            raise ValueError(
                f"no escape events{where}: all {t.shape[-1]} members were censored at step "
                f"{_fmt(t_cens)}; run longer"
            )
        raise ValueError(
            f"no escape events after entry{where} ({int(np.min(n[none]))} members still at "
            "risk at entry); run longer or enter earlier"
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
    entry: Any = None,
) -> RateMLE | xr.Dataset:
    """Escape rate per step from right-censored (and optionally left-truncated) times.

    With d events (uncensored members) and total time at risk ``E = Σ_i t_i``
    (event time or censoring time), the exponential likelihood ``λ^d e^{−λE}``
    gives ``rate = d/E`` and ``se = rate/√d``. In discrete time this is also
    the exact MLE of a geometric per-step hazard when t counts the steps at risk.

    Delayed entry (left truncation): with ``entry`` = e (a transient to skip,
    scalar or per member), only members still inside after e steps (t > e) are
    at risk, each for ``t − e`` steps: ``rate = d_e / Σ_{t>e} (t − e)``. Use it
    when the hazard is constant only after a transient; the naive rate from
    t = 0 is then biased (low when escape needs a build-up).

    Interval (gamma form): ``[χ²_{α/2}(2d), χ²_{1−α/2}(2d)] / (2E)``. Without
    censoring 2λE ~ χ²(2d) exactly, so it is exact; under a fixed censoring time
    it is the standard approximation (Cox & Oakes 1984) and stays calibrated
    for tens of events or more.

    Args:
        times: time at risk per member (see :func:`escape_times`), finite, ≥ 0.
        censored: True for members that had not escaped by their time.
        axis: NumPy member axis; required unless the input is 1-D.
        dim: member dimension for DataArrays (default ``"seed"``).
        level: confidence level.
        entry: delayed-entry time (scalar, or broadcastable to ``times``); None
            means every member is at risk from t = 0.

    Returns:
        ``RateMLE(rate, se, lo, hi, n_events, exposure, n)``; a Dataset over the
        other dims for DataArray input.

    Raises:
        ValueError: no events (at some grid point), non-finite or negative
            times, mismatched shapes, or a many-dimensional NumPy input without ``axis``.
    """
    level = check_level(level)
    if isinstance(times, xr.DataArray):
        d = resolve_dim(times, axis, dim, "seed")
        arrays = [times, like(times, censored)]
        if entry is not None:
            ent = entry if isinstance(entry, xr.DataArray) else times.copy(
                data=np.broadcast_to(np.asarray(entry, dtype=float), times.shape).copy())
            arrays.append(ent.broadcast_like(times))
        core = _rate_core if entry is not None else (
            lambda t, c, level: _rate_core(t, c, None, level))
        return apply_xr(core, arrays, [d], RateMLE._fields, {"level": level},
                        {"level": level, "delayed_entry": entry is not None})
    no_dim_for_numpy(dim)
    arrays = _member_arrays("exponential_rate_mle", times, censored, axis, entry)
    if entry is None:
        arrays.append(None)
    return scalars(_rate_core(*arrays, level))


def _mfpt_core(times: np.ndarray, censored: np.ndarray, level: float) -> FirstPassage:
    r = _rate_core(times, censored, None, level)
    t, c = _censored_inputs(times, censored)
    mean = r.exposure / r.n_events
    any_cens = c.any(axis=-1)
    plain_mean, plain_se, _ = finite_mean_se(t)
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
    the SEs tests the exponential assumption); otherwise they are NaN. For a
    model-free summary under censoring use :func:`restricted_mean` or
    :func:`km_median`.

    Args:
        times, censored, axis, dim, level: as for :func:`exponential_rate_mle`.

    Returns:
        ``FirstPassage(mean, se, lo, hi, n_events, n, plain_mean, plain_se)``;
        a Dataset for DataArray input.

    Raises:
        ValueError: as for :func:`exponential_rate_mle`.
    """
    level = check_level(level)
    if isinstance(times, xr.DataArray):
        d = resolve_dim(times, axis, dim, "seed")
        return apply_xr(
            _mfpt_core, [times, like(times, censored)], [d], FirstPassage._fields,
            {"level": level}, {"level": level},
        )
    no_dim_for_numpy(dim)
    return scalars(_mfpt_core(*_member_arrays("mean_first_passage", times, censored, axis),
                              level))


# --------------------------------------------------------------------------- #
# Kaplan–Meier and what is read off it
# --------------------------------------------------------------------------- #
def _km_core(t: np.ndarray, c: np.ndarray, level: float, band: str) -> KaplanMeier:
    t, c = _censored_inputs(t, c)
    sorted_t = np.sort(t)
    ev_t, d = np.unique(t[~c], return_counts=True)
    n_risk = t.size - np.searchsorted(sorted_t, ev_t, side="left")
    survival = np.cumprod(1.0 - d / n_risk)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.cumsum(d / (n_risk * (n_risk - d)))
        variance = np.where(survival > 0, survival**2 * g, 0.0)
        z = z_quantile(level)
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
        time=ev_t, survival=survival, variance=variance, lo=lo, hi=hi, n_at_risk=n_risk,
        n_events=d, t_max=float(sorted_t[-1]), level=level, band=band,
    )


_Q_TOL = 1e-12  # S = 1/2 reached exactly by a product of fractions may round to 0.5 + ε


def _first_at_or_below(time: np.ndarray, s: np.ndarray, q: float) -> float:
    idx = np.flatnonzero(s <= q + _Q_TOL)
    return float(time[idx[0]]) if idx.size else float("inf")


def km_median(km: KaplanMeier, q: float = 0.5) -> SurvivalTime:
    """The median (or another quantile) survival time read off a Kaplan–Meier curve.

    ``time`` is the first event time with ``S(t) ≤ q`` (q = 0.5: the median; the
    convention of lifelines and of R's ``survival``). Its interval at the
    curve's level (Brookmeyer–Crowley) is read off the pointwise band in the
    same way: ``lo`` is the first time the lower band is ≤ q and ``hi`` the first
    time the upper band is. A time that is never reached is ``inf`` (the
    follow-up was too short to see it).

    Args:
        km: a result of :func:`kaplan_meier` for one grid point.
        q: survival level in (0, 1) (0.5: the median).

    Returns:
        ``SurvivalTime(time, lo, hi, level)``.
    """
    if not 0.0 < float(q) < 1.0:
        raise ValueError(f"q={q!r} is invalid: expected a survival level in (0, 1)")
    return SurvivalTime(
        _first_at_or_below(km.time, km.survival, q),
        _first_at_or_below(km.time, km.lo, q),
        _first_at_or_below(km.time, km.hi, q),
        km.level,
    )


def restricted_mean(km: KaplanMeier, tau: float | None = None) -> RestrictedMean:
    """Restricted mean survival time ``μ_τ = ∫_0^τ S(t) dt`` with its standard error.

    The integral of the Kaplan–Meier step function up to τ (= E[min(T, τ)], a
    model-free summary that stays defined under censoring, unlike the plain
    mean). Variance (Klein & Moeschberger §4.5):
    ``Var μ_τ = Σ_{t_j ≤ τ} A_j² d_j / (n_j (n_j − d_j))`` with
    ``A_j = ∫_{t_j}^τ S(t) dt``; the interval is ``μ_τ ± z·se``.

    Args:
        km: a result of :func:`kaplan_meier` for one grid point.
        tau: the horizon, 0 ≤ τ ≤ ``km.t_max`` (default ``km.t_max``: past the
            last observed time the curve is unknown).

    Returns:
        ``RestrictedMean(mean, se, lo, hi, tau, level)``.

    Raises:
        ValueError: τ negative or past ``km.t_max``.
    """
    tau = km.t_max if tau is None else float(tau)
    if not 0.0 <= tau <= km.t_max:
        raise ValueError(
            f"tau={tau:g} is invalid: expected 0 <= tau <= {km.t_max:g} (the last observed "
            "time; the Kaplan–Meier curve is unknown after it)"
        )
    use = km.time <= tau
    tj, sj = km.time[use], km.survival[use]
    knots = np.concatenate([[0.0], tj, [tau]])
    pieces = np.concatenate([[1.0], sj]) * np.diff(knots)
    mean = float(pieces.sum())
    a = np.cumsum(pieces[::-1])[::-1][1:]  # A_j = Σ of the pieces after t_j
    d, n = km.n_events[use], km.n_at_risk[use]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(a > 0, a**2 * d / (n * (n - d)), 0.0)
    se = float(np.sqrt(terms.sum()))
    half = z_quantile(km.level) * se
    return RestrictedMean(mean, se, mean - half, mean + half, tau, km.level)


_KM_CURVE = ("survival", "variance", "lo", "hi", "n_at_risk", "n_events")
_KM_POINT = ("t_max", "n", "median", "median_lo", "median_hi", "rmst", "rmst_se", "rmst_lo",
             "rmst_hi")


def _grid_rows(func: str, times: xr.DataArray, others: list[xr.DataArray], dim: str):
    """Stack the non-member dims: (other dim names, shape, coords, [rows x member] arrays)."""
    other = [d for d in times.dims if d != dim]
    arrays = [loaded(a).transpose(*times.dims).transpose(*other, dim).values
              for a in [times, *others]]
    shape = tuple(times.sizes[d] for d in other)
    rows = [a.reshape(-1, times.sizes[dim]) for a in arrays]
    coords = {d: times.coords[d] for d in other if d in times.coords}

    def name(g: int) -> str:
        idx = np.unravel_index(g, shape) if shape else ()
        return point_name({d: times[d].values[i] if d in times.coords else i
                           for d, i in zip(other, idx, strict=True)})

    return other, shape, coords, rows, name


def _km_grid(times: xr.DataArray, censored: xr.DataArray, dim: str, level: float, band: str,
             tau: float | None, time_dim: str) -> xr.Dataset:
    if time_dim in times.dims:
        raise ValueError(f"the input already has a dimension {time_dim!r}; pass time_dim=")
    other, shape, coords, (t_rows, c_rows), name = _grid_rows(
        "kaplan_meier", times, [censored], dim)
    curves = []
    for g in range(t_rows.shape[0]):
        try:
            curves.append(_km_core(t_rows[g], c_rows[g], level, band))
        except ValueError as e:
            raise ValueError(f"at {name(g)}: {e}") from None
    union = np.unique(np.concatenate([k.time for k in curves])) if curves else np.array([])
    n_g, n_u = len(curves), union.size
    curve = {k: np.full((n_g, n_u), np.nan) for k in _KM_CURVE}
    point = {k: np.empty(n_g) for k in _KM_POINT}
    for g, km in enumerate(curves):
        j = np.searchsorted(km.time, union, side="right") - 1  # last event at or before u
        before = j < 0
        jj = np.maximum(j, 0)
        inside = union <= km.t_max
        for k, first in (("survival", 1.0), ("variance", 0.0), ("lo", 1.0), ("hi", 1.0)):
            v = getattr(km, k)
            value = np.where(before, first, v[jj]) if v.size else np.full(n_u, first)
            curve[k][g] = np.where(inside, value, np.nan)
        hit = ~before & (km.time[jj] == union) if km.time.size else np.zeros(n_u, bool)
        curve["n_events"][g] = np.where(hit, km.n_events[jj] if km.time.size else 0, 0)
        curve["n_at_risk"][g] = t_rows[g].size - np.searchsorted(np.sort(t_rows[g]), union)
        med = km_median(km)
        try:
            rm = restricted_mean(km, tau)
        except ValueError as e:
            raise ValueError(f"at {name(g)}: {e}") from None
        vals = (km.t_max, t_rows[g].size, med.time, med.lo, med.hi, rm.mean, rm.se, rm.lo,
                rm.hi)
        for k, v in zip(_KM_POINT, vals, strict=True):
            point[k][g] = v
    data = {k: ((*other, time_dim), v.reshape(*shape, n_u)) for k, v in curve.items()}
    data.update({k: (other, v.reshape(shape)) for k, v in point.items()})
    ds = xr.Dataset(data, coords={**coords, time_dim: union})
    for k in ("n_at_risk", "n_events", "n"):
        ds[k] = ds[k].astype(int)
    ds.attrs.update(level=level, band=band, tau="t_max of each grid point" if tau is None
                    else float(tau))
    return ds


def kaplan_meier(
    times: Any,
    censored: Any,
    level: float = 0.95,
    *,
    band: str = "loglog",
    axis: int | None = None,
    dim: str | None = None,
    tau: float | None = None,
    time_dim: str = "time",
) -> KaplanMeier | xr.Dataset:
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

    One grid point (1-D NumPy input) gives a :class:`KaplanMeier`; read the
    median with :func:`km_median` and the restricted mean with
    :func:`restricted_mean`. A DataArray gives one curve per grid point: a
    Dataset with ``survival``, ``variance``, ``lo``, ``hi``, ``n_at_risk`` and
    ``n_events`` over (other dims, ``time_dim``) on the union of the event times
    (S is carried forward between a point's own events, NaN past its ``t_max``),
    and per grid point ``t_max``, ``n``, ``median``, ``median_lo``,
    ``median_hi``, ``rmst``, ``rmst_se``, ``rmst_lo``, ``rmst_hi``.

    Args:
        times: times (event or censoring), finite and ≥ 0: 1-D NumPy, or a
            DataArray with the member dimension ``dim``.
        censored: True where the member had not escaped by its time.
        level: confidence level.
        band: ``"loglog"`` or ``"plain"``.
        axis: NumPy member axis; only a 1-D array (one grid point) is accepted.
        dim: member dimension of a DataArray (default ``"seed"``).
        tau: restricted-mean horizon for DataArray input (default: each grid
            point's ``t_max``).
        time_dim: name of the event-time dimension of the Dataset.

    Returns:
        :class:`KaplanMeier`, or a Dataset for DataArray input.

    Raises:
        ValueError: non-finite or negative times, mismatched or empty inputs, or
            NumPy input with more than one dimension (pass a DataArray: grid
            points are never pooled).
    """
    level = check_level(level)
    choice("band", band, ("loglog", "plain"))
    if isinstance(times, xr.DataArray):
        d = resolve_dim(times, axis, dim, "seed")
        return _km_grid(times, like(times, censored), d, level, band, tau, time_dim)
    no_dim_for_numpy(dim)
    t, c = _member_arrays("kaplan_meier", times, censored, axis)
    if t.ndim != 1:
        raise ValueError(
            f"kaplan_meier: NumPy times of shape {np.shape(times)} hold several grid points; "
            "pass one grid point (1-D) or a DataArray with dim= (grid points are never pooled)"
        )
    return _km_core(t, c, level, band)


# --------------------------------------------------------------------------- #
# Everything per grid point
# --------------------------------------------------------------------------- #
def survival_summary(
    times: xr.DataArray,
    censored: Any,
    dim: str = "seed",
    *,
    level: float = 0.95,
    entry: Any = None,
    tau: float | None = None,
) -> xr.Dataset:
    """Escape statistics per grid point: rate, mean first passage, median, restricted mean.

    One row per grid point (all dims but ``dim``): ``rate``, ``rate_se``,
    ``rate_lo``, ``rate_hi`` (:func:`exponential_rate_mle`, with ``entry`` if
    given), ``mfpt``, ``mfpt_se``, ``mfpt_lo``, ``mfpt_hi``
    (:func:`mean_first_passage`), ``n_events``, ``n``, and the model-free
    ``median``, ``median_lo``, ``median_hi``, ``rmst``, ``rmst_se``, ``rmst_lo``,
    ``rmst_hi`` and ``t_max`` of :func:`kaplan_meier`. Comparing ``mfpt`` with
    the median (``ln 2 · mfpt`` for a constant hazard) checks the exponential model.

    Args:
        times: DataArray of times at risk (see :func:`escape_times`).
        censored: same shape, True for members that had not escaped.
        dim: member dimension.
        level: confidence level.
        entry: delayed entry for the rate (see :func:`exponential_rate_mle`).
        tau: restricted-mean horizon (default: each grid point's ``t_max``).

    Returns:
        A Dataset over the other dims.
    """
    if not isinstance(times, xr.DataArray):
        raise TypeError("survival_summary takes DataArrays; for one grid point use the "
                        "NumPy functions (exponential_rate_mle, kaplan_meier, ...)")
    cens = like(times, censored)
    rate = exponential_rate_mle(times, cens, dim=dim, level=level, entry=entry)
    fp = mean_first_passage(times, cens, dim=dim, level=level)
    km = kaplan_meier(times, cens, level, dim=dim, tau=tau)
    out = xr.Dataset({
        "rate": rate.rate, "rate_se": rate.se, "rate_lo": rate.lo, "rate_hi": rate.hi,
        "mfpt": fp["mean"], "mfpt_se": fp.se, "mfpt_lo": fp.lo, "mfpt_hi": fp.hi,
        "n_events": fp.n_events, "n": fp.n,
        **{k: km[k] for k in _KM_POINT if k != "n"},
    })
    out.attrs.update(level=level, delayed_entry=entry is not None, tau=km.attrs["tau"])
    return out
