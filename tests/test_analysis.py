"""Tests for sgdlab.analysis and sgdlab.plots.

Statistical tests use a fixed seed, but their tolerances come from the
statistics: a coverage over R = 1000 replications has SE √(0.95·0.05/R) ≈ 0.7%,
so the band [93%, 97%] is about ±3 SE; other tolerances are ≈ 4 SE of the
estimator, with the SE written next to the assertion.
"""

from __future__ import annotations

import io
import math
from fractions import Fraction

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure
from scipy import signal, stats

from sgdlab import analysis as A
from sgdlab import plots as P

Z95 = stats.norm.ppf(0.975)


def ar1(rng: np.random.Generator, rho: float, shape: tuple[int, ...]) -> np.ndarray:
    """Stationary AR(1) series x_t = ρ x_{t−1} + ε_t, ε ~ N(0, 1), along the last axis."""
    eps = rng.standard_normal(shape)
    x_prev = rng.standard_normal(shape[:-1]) / math.sqrt(1.0 - rho**2)
    out, _ = signal.lfilter([1.0], [1.0, -rho], eps, axis=-1, zi=(rho * x_prev)[..., None])
    return out


def ar1_var_of_mean(rho: float, n: int) -> float:
    """Exact Var(x̄) of n consecutive stationary AR(1) samples with unit innovations."""
    k = np.arange(1, n)
    return (n + 2.0 * np.sum((n - k) * rho**k)) / n**2 / (1.0 - rho**2)


# --------------------------------------------------------------------------- #
# mean_ci
# --------------------------------------------------------------------------- #
def test_mean_ci_t_interval_coverage():
    # Normal members, n = 20: the t interval is exact, coverage 95%.
    rng = np.random.default_rng(20240601)
    x = rng.normal(3.0, 2.0, size=(1000, 20))
    r = A.mean_ci(x, axis=1)
    covered = np.mean((r.lo < 3.0) & (3.0 < r.hi))
    assert 0.93 <= covered <= 0.97


def test_mean_ci_matches_scipy_and_drops_nan():
    rng = np.random.default_rng(1)
    x = rng.exponential(size=(4, 30))
    x[1, :7] = np.nan
    x[2, 3] = np.inf  # a diverged member may also overflow
    r = A.mean_ci(x, axis=1, level=0.9)
    for i in range(4):
        v = x[i][np.isfinite(x[i])]
        assert r.n[i] == v.size
        lo, hi = stats.t.interval(0.9, v.size - 1, loc=v.mean(), scale=stats.sem(v))
        np.testing.assert_allclose([r.mean[i], r.se[i], r.lo[i], r.hi[i]],
                                   [v.mean(), stats.sem(v), lo, hi], rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=25),
    st.lists(st.booleans(), min_size=25, max_size=25),
)
def test_mean_ci_nan_members_equal_dropping_them(values, drop):
    x = np.array(values)
    mask = np.array(drop[: x.size])
    if mask.sum() > x.size - 2:
        mask[:] = False
    with_nan = np.where(mask, np.nan, x)
    a = A.mean_ci(with_nan)
    b = A.mean_ci(x[~mask])
    assert a.n == b.n == (~mask).sum()
    np.testing.assert_allclose([a.mean, a.se, a.lo, a.hi], [b.mean, b.se, b.lo, b.hi],
                               rtol=1e-9, atol=1e-9)


def test_mean_ci_few_members_give_nan_not_errors():
    x = np.array([[np.nan, np.nan, np.nan], [1.0, np.nan, np.nan], [1.0, 2.0, np.nan]])
    r = A.mean_ci(x, axis=1)
    np.testing.assert_array_equal(r.n, [0, 1, 2])
    assert np.isnan(r.mean[0]) and r.mean[1] == 1.0 and r.mean[2] == 1.5
    assert np.isnan(r.se[:2]).all() and np.isnan(r.lo[:2]).all() and np.isfinite(r.hi[2])


def test_bootstrap_agrees_with_t_for_many_members_and_is_seeded():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 400))
    x[0, :50] = np.nan
    t = A.mean_ci(x, axis=1)
    b1 = A.mean_ci(x, axis=1, method="bootstrap", seed=7)
    b2 = A.mean_ci(x, axis=1, method="bootstrap", seed=7)
    np.testing.assert_array_equal(b1.lo, b2.lo)
    # The 2.5% quantile of 2000 resamples has MC sd ≈ 0.06 σ_mean ≈ 3% of the
    # half-width; t_{399} vs z adds 0.3%. Allow 12%.
    half = t.hi - t.mean
    np.testing.assert_allclose(b1.lo, t.lo, atol=0.12 * half.max())
    np.testing.assert_allclose(b1.hi, t.hi, atol=0.12 * half.max())
    np.testing.assert_array_equal(b1.n, [350, 400, 400])


# --------------------------------------------------------------------------- #
# xarray faces
# --------------------------------------------------------------------------- #
def engine_like_dataset(rng: np.random.Generator) -> xr.Dataset:
    lr = [0.01, 0.02, 0.05]
    loss = rng.normal(1.0, 0.5, size=(3, 40, 5))
    loss[2, :6, 2:] = np.nan  # six members diverged at the largest rate after step 2
    stat = rng.normal(0.3, 0.1, size=(3, 40, 8))
    stat[2, :6] = np.nan
    return xr.Dataset(
        {
            "loss": (("learning_rate", "seed", "step"), loss),
            "stationary_loss": (("learning_rate", "seed", "batch"), stat),
        },
        coords={"learning_rate": lr, "seed": np.arange(40), "step": [0, 10, 20, 30, 40]},
    )


def test_summarize_keeps_other_dims_and_counts_nan():
    ds = engine_like_dataset(np.random.default_rng(3))
    out = A.summarize(ds, "loss")
    assert set(out.data_vars) == {"mean", "se", "lo", "hi", "n"}
    assert out["mean"].dims == ("learning_rate", "step")
    np.testing.assert_array_equal(out.learning_rate, ds.learning_rate)
    np.testing.assert_array_equal(out.step, ds.step)
    expected_n = np.full((3, 5), 40)
    expected_n[2, 2:] = 34
    np.testing.assert_array_equal(out["n"], expected_n)
    ref = ds.loss.sel(learning_rate=0.05, step=30).dropna("seed")
    np.testing.assert_allclose(out["mean"].sel(learning_rate=0.05, step=30), ref.mean())
    np.testing.assert_allclose(
        out["se"].sel(learning_rate=0.05, step=30), ref.std(ddof=1) / math.sqrt(34)
    )


def test_summarize_stationary_variable_uses_batches():
    ds = engine_like_dataset(np.random.default_rng(4))
    out = A.summarize(ds, "stationary_loss")
    assert out["mean"].dims == ("learning_rate",)
    assert {"se_within", "ratio"} <= set(out.data_vars)
    np.testing.assert_array_equal(out["n"], [40, 40, 34])


def test_dim_and_axis_errors_are_plain():
    ds = engine_like_dataset(np.random.default_rng(5))
    with pytest.raises(ValueError, match="dimension 'member' not found"):
        A.mean_ci(ds.loss, dim="member")
    with pytest.raises(TypeError, match="axis="):
        A.mean_ci(np.ones(3), dim="seed")
    with pytest.raises(ValueError, match="variable 'acc' not in the Dataset"):
        A.summarize(ds, "acc")


# --------------------------------------------------------------------------- #
# Autocorrelation, batch means, stationary means
# --------------------------------------------------------------------------- #
def test_integrated_autocorr_time_ar1():
    rho, n, reps = 0.8, 1_000_000, 4
    x = ar1(np.random.default_rng(6), rho, (reps, n))
    tau = A.integrated_autocorr_time(x, axis=-1)
    tau_true = (1 + rho) / (1 - rho)  # = 9
    # Var(τ̂)/τ² ≈ 2(2M+1)/N with window M ≈ 5τ; average of `reps` series; 4 SE.
    rel_sd = math.sqrt(2 * (2 * 5 * tau_true + 1) / n / reps)
    assert abs(tau.mean() / tau_true - 1) < 4 * rel_sd  # ≈ 2.7%
    ess = A.effective_sample_size(x, axis=-1)
    np.testing.assert_allclose(ess, n / tau)


def test_integrated_autocorr_time_white_noise_and_xarray():
    x = np.random.default_rng(7).standard_normal((2, 3, 50_000))
    da = xr.DataArray(x, dims=("learning_rate", "seed", "step"),
                      coords={"learning_rate": [0.1, 0.2]})
    tau = A.integrated_autocorr_time(da)
    assert tau.dims == ("learning_rate", "seed")
    np.testing.assert_array_equal(tau.learning_rate, [0.1, 0.2])
    assert np.all(np.abs(tau.values - 1) < 0.1)  # sd ≈ √(2·11/5e4) ≈ 0.02
    with pytest.warns(RuntimeWarning, match="shorter than 50 autocorrelation times"):
        A.integrated_autocorr_time(ar1(np.random.default_rng(0), 0.99, (300,)))
    rho = A.autocorrelation(da.isel(seed=0))
    assert rho.dims == ("learning_rate", "lag") and np.allclose(rho.isel(lag=0), 1.0)


def test_batch_means_se_is_calibrated_for_ar1():
    rho, n, reps, n_batches = 0.8, 10_000, 1000, 20
    x = ar1(np.random.default_rng(8), rho, (reps, n))
    r = A.batch_means(x, axis=-1, n_batches=n_batches)
    assert r.batch_size == n // n_batches
    true_var = ar1_var_of_mean(rho, n)
    z = r.mean / r.se
    # Batches of 500 ≫ τ = 9: z ≈ t_19, std √(19/17) ≈ 1.06.
    assert 0.85 <= z.std() <= 1.15
    t_crit = stats.t.ppf(0.975, n_batches - 1)
    assert 0.93 <= np.mean(np.abs(z) < t_crit) <= 0.97
    # E[se²] ≈ Var(x̄); se²/Var(x̄) ≈ χ²_19/19 has sd √(2/19); mean of 1000: 4 SE ≈ 4.1%.
    assert abs(np.mean(r.se**2) / true_var - 1) < 4 * math.sqrt(2 / 19 / reps)
    # Ignoring the autocorrelation would understate the SE by about √τ = 3.
    naive = x.std(axis=1, ddof=1) / math.sqrt(n)
    assert 2.7 < np.mean(r.se / naive) < 3.3


def test_batch_means_rejects_too_few_samples():
    with pytest.raises(ValueError, match="fewer than n_batches=20"):
        A.batch_means(np.arange(10.0))
    with pytest.raises(ValueError, match="n_batches=1 is invalid"):
        A.batch_means(np.arange(10.0), n_batches=1)


def test_stationary_mean_hand_example():
    # Two members, three batches each:
    #   member 0: 1, 2, 3 -> A_0 = 2, v_0 = var(ddof=1)/3 = 1/3
    #   member 1: 3, 3, 6 -> A_1 = 4, v_1 = 3/3 = 1
    # mean = 3, se = std([2, 4], ddof=1)/√2 = √2/√2 = 1,
    # se_within = √(mean(1/3, 1)/2) = √(1/3).
    x = np.array([[1.0, 2.0, 3.0], [3.0, 3.0, 6.0], [np.nan, 1.0, 1.0]])
    r = A.stationary_mean(x)
    assert r.n == 2 and r.mean == pytest.approx(3.0) and r.se == pytest.approx(1.0)
    assert r.se_within == pytest.approx(math.sqrt(1 / 3))
    assert r.ratio == pytest.approx(math.sqrt(3))
    assert r.hi - r.mean == pytest.approx(stats.t.ppf(0.975, 1))


def test_stationary_mean_ratio_near_one_for_long_batches_and_flags_offsets():
    rho, members, n, n_batches = 0.8, 400, 4000, 20
    x = ar1(np.random.default_rng(9), rho, (members, n))
    bm = x.reshape(members, n_batches, -1).mean(axis=-1)
    r = A.stationary_mean(bm)
    # rel. sd of the across-member se ≈ 1/√(2(M−1)) ≈ 3.5%; within-member ≈ 0.8%;
    # correlation of adjacent batches of 200 adds ≈ 2%: allow 4 SE + bias ≈ 0.16.
    assert abs(r.ratio - 1) < 0.16
    assert abs(r.mean) < 4 * r.se
    # Member-specific offsets (burn-in not done): within-member SE misses them.
    shifted = bm + np.random.default_rng(10).normal(0.0, 1.0, size=(members, 1))
    assert A.stationary_mean(shifted).ratio > 2


def test_stationary_mean_xarray_dims():
    ds = engine_like_dataset(np.random.default_rng(11))
    out = A.stationary_mean(ds.stationary_loss)
    assert out["mean"].dims == ("learning_rate",)
    np.testing.assert_array_equal(out["n"], [40, 40, 34])
    ref = ds.stationary_loss.isel(learning_rate=2).mean("batch").dropna("seed")
    np.testing.assert_allclose(out["mean"][2], ref.mean())


# --------------------------------------------------------------------------- #
# Rate fits
# --------------------------------------------------------------------------- #
def test_power_law_exponent_coverage():
    # Means C t^p (1 + σ_i ε), SE σ_i C t^p known; 12 points over three decades.
    # σ_i varies (2% to 5%) to exercise the weights; ln(1 + σε) is biased by
    # ≈ −σ²/2, which tilts the slope by ≈ 0.09 SE (coverage ≈ 94.9% over 2·10⁴ reps).
    rng = np.random.default_rng(12)
    t = np.logspace(1, 4, 12)
    p, c = -1.0 / 3.0, 2.0
    sigma = np.linspace(0.02, 0.05, 12)
    truth = c * t**p
    noisy = truth * (1 + sigma * rng.standard_normal((1000, 12)))
    covered = 0
    for m in noisy:
        fit = A.fit_power_law(t, m, sigma * truth)
        covered += fit.lo < p < fit.hi
    assert 0.93 <= covered / 1000 <= 0.97


def test_fits_recover_noise_free_data_and_match_polyfit():
    t = np.linspace(0.0, 50.0, 11)
    m = 3.0 * np.exp(-0.07 * t)
    se = 0.01 * m * (1 + t / 50)
    fit = A.fit_exponential_rate(t, m, se)
    assert fit.estimate == pytest.approx(0.07, rel=1e-10)
    assert fit.intercept == pytest.approx(math.log(3.0), rel=1e-10)
    assert fit.chi2 < 1e-15 and fit.n_points == 11 and fit.dof == 9
    # Independent reference: numpy's weighted polyfit, unscaled covariance.
    noisy = m * (1 + 0.01 * np.random.default_rng(13).standard_normal(11))
    fit = A.fit_exponential_rate(t, noisy, se)
    # Log-scale SE is se/mean, so polyfit's weights (1/σ) are mean/se.
    coef, cov = np.polyfit(t, np.log(noisy), 1, w=noisy / se, cov="unscaled")
    assert fit.estimate == pytest.approx(-coef[0], rel=1e-10)
    assert fit.se == pytest.approx(math.sqrt(cov[0, 0]), rel=1e-10)
    assert fit.hi - fit.estimate == pytest.approx(Z95 * fit.se)
    scaled = A.fit_exponential_rate(t, noisy, se, interval="t")
    assert scaled.se == pytest.approx(fit.se * math.sqrt(fit.chi2_dof))
    assert scaled.hi - scaled.estimate == pytest.approx(stats.t.ppf(0.975, 9) * scaled.se)


def test_fit_range_is_reported():
    t = np.arange(1.0, 21.0)
    m = 5.0 * t**-0.5
    fit = A.fit_power_law(t, m, 0.01 * m, t_min=3, t_max=15)
    assert (fit.t_min, fit.t_max, fit.n_points) == (3.0, 15.0, 13)
    assert fit.estimate == pytest.approx(-0.5, rel=1e-10)


def test_fits_reject_too_few_usable_points():
    t = np.arange(1.0, 6.0)
    m = np.array([1.0, 0.5, 0.0, -0.1, np.nan])
    with pytest.raises(ValueError, match="at least 3 usable points, got 2 of 5") as err:
        A.fit_exponential_rate(t, m, np.full(5, 0.01))
    assert "3 had a non-positive or non-finite mean" in str(err.value)
    with pytest.raises(ValueError, match="got 2 of 5"):
        A.fit_power_law(t, np.ones(5), np.ones(5), t_max=2)
    with pytest.raises(ValueError, match="non-finite se"):
        A.fit_power_law(t, np.ones(5), np.array([1.0, 0.0, 0.0, 0.0, 1.0]))


# --------------------------------------------------------------------------- #
# Escape statistics
# --------------------------------------------------------------------------- #
def test_censored_exponential_rate_coverage():
    # Exponential times (rate 1), censored at c with P(T > c) = 0.3; 200 members.
    rng = np.random.default_rng(14)
    c = math.log(1 / 0.3)
    raw = rng.exponential(1.0, size=(1000, 200))
    censored = raw > c
    times = np.minimum(raw, c)
    assert 0.28 < censored.mean() < 0.32
    r = A.exponential_rate_mle(times, censored, axis=1)
    assert 0.93 <= np.mean((r.lo < 1.0) & (1.0 < r.hi)) <= 0.97
    # The delta-method SE matches the spread of the estimates (sd 1000 reps: 4 SE ≈ 9%).
    assert abs(r.rate.std() / r.se.mean() - 1) < 4 / math.sqrt(2 * 1000)


def test_kaplan_meier_and_rate_hand_example():
    # times 2, 3, 3, 5, 8 with the second 3 and the 8 censored (+):
    #   t=2: at risk 5, events 1 -> S = 4/5;          Σ d/(n(n−d)) = 1/20
    #   t=3: at risk 4 (3, 3+, 5, 8+), events 1
    #                             -> S = 4/5·3/4 = 3/5; Σ = 1/20 + 1/12 = 2/15
    #   t=5: at risk 2, events 1  -> S = 3/5·1/2 = 3/10; Σ = 2/15 + 1/2 = 19/30
    # Greenwood: S²Σ = 16/25·1/20 = 4/125, 9/25·2/15 = 6/125, 9/100·19/30 = 57/1000.
    # Exponential MLE: 3 events, exposure 2+3+3+5+8 = 21 -> rate 1/7, MFPT 7.
    times = np.array([2, 3, 3, 5, 8])
    cens = np.array([False, False, True, False, True])
    km = A.kaplan_meier(times, cens)
    np.testing.assert_array_equal(km.time, [2, 3, 5])
    np.testing.assert_array_equal(km.n_at_risk, [5, 4, 2])
    np.testing.assert_array_equal(km.n_events, [1, 1, 1])
    exact_s = [Fraction(4, 5), Fraction(3, 5), Fraction(3, 10)]
    exact_var = [Fraction(4, 125), Fraction(6, 125), Fraction(57, 1000)]
    np.testing.assert_allclose(km.survival, [float(f) for f in exact_s], rtol=1e-14)
    np.testing.assert_allclose(km.variance, [float(f) for f in exact_var], rtol=1e-14)
    assert km.t_max == 8
    # Log-log band at t=2: s = √(1/20)/|ln 0.8|, band 0.8^{e^{±z s}}.
    s = math.sqrt(1 / 20) / abs(math.log(0.8))
    assert km.lo[0] == pytest.approx(0.8 ** math.exp(Z95 * s), rel=1e-12)
    assert km.hi[0] == pytest.approx(0.8 ** math.exp(-Z95 * s), rel=1e-12)
    plain = A.kaplan_meier(times, cens, band="plain")
    assert plain.hi[0] == pytest.approx(min(1.0, 0.8 + Z95 * math.sqrt(4 / 125)))

    r = A.exponential_rate_mle(times, cens)
    assert (r.n_events, r.exposure, r.n) == (3, 21.0, 5)
    assert r.rate == pytest.approx(1 / 7) and r.se == pytest.approx(1 / 7 / math.sqrt(3))
    # χ² table, 6 dof: 2.5% point 1.2373, 97.5% point 14.449; interval = q / 42.
    assert r.lo == pytest.approx(1.2373 / 42, rel=1e-4)
    assert r.hi == pytest.approx(14.449 / 42, rel=1e-4)
    f = A.mean_first_passage(times, cens)
    assert f.mean == pytest.approx(7.0) and f.se == pytest.approx(7 / math.sqrt(3))
    assert f.lo == pytest.approx(1 / r.hi) and f.hi == pytest.approx(1 / r.lo)
    assert np.isnan(f.plain_mean)


def test_kaplan_meier_without_censoring_is_empirical_survival():
    km = A.kaplan_meier([1, 2, 2, 4], [False] * 4)
    np.testing.assert_allclose(km.survival, [3 / 4, 1 / 4, 0.0])
    assert km.variance[-1] == 0 and km.lo[-1] == 0 and km.hi[-1] == 0
    f = A.mean_first_passage(np.array([1.0, 2, 2, 4]), np.zeros(4, bool))
    assert f.plain_mean == f.mean == pytest.approx(9 / 4)
    assert f.plain_se == pytest.approx(stats.sem([1, 2, 2, 4]))


def test_all_censored_rate_raises_but_kaplan_meier_works():
    times = np.full(5, 100.0)
    cens = np.ones(5, bool)
    msg = "no escape events: all 5 members were censored at step 100; run longer"
    with pytest.raises(ValueError, match=msg):
        A.exponential_rate_mle(times, cens)
    with pytest.raises(ValueError, match="no escape events"):
        A.mean_first_passage(times, cens)
    km = A.kaplan_meier(times, cens)
    assert km.time.size == 0 and km.survival.size == 0 and km.t_max == 100.0


def test_escape_inputs_must_be_finite():
    with pytest.raises(ValueError, match="1 times are NaN or infinite"):
        A.exponential_rate_mle(np.array([1.0, np.nan, 3.0]), np.zeros(3, bool))
    with pytest.raises(ValueError, match="NaN or infinite"):
        A.kaplan_meier([1.0, np.inf], [False, True])
    with pytest.raises(ValueError, match="negative"):
        A.kaplan_meier([1.0, -2.0], [False, False])


def test_escape_times_and_xarray_rate_per_grid_point():
    # Engine output: event_step (−1 if never), event_censored, steps = 50.
    event_step = np.array([[3, -1, 10, 7], [-1, 20, 5, -1]])
    censored = event_step < 0
    da = xr.DataArray(event_step, dims=("learning_rate", "seed"),
                      coords={"learning_rate": [0.1, 0.2]})
    times = A.escape_times(da, xr.DataArray(censored, dims=da.dims), 50)
    np.testing.assert_array_equal(times, [[3, 50, 10, 7], [50, 20, 5, 50]])
    out = A.exponential_rate_mle(times, censored, dim="seed")
    assert out["rate"].dims == ("learning_rate",)
    np.testing.assert_allclose(out["rate"], [3 / 70, 2 / 125])
    np.testing.assert_array_equal(out["n_events"], [3, 2])
    with pytest.raises(ValueError, match="event_step and censored disagree"):
        A.escape_times(event_step, np.zeros_like(censored), 50)
    with pytest.raises(ValueError, match="at 1 of 2 grid points"):
        A.exponential_rate_mle(np.array([[1.0, 2.0], [9.0, 9.0]]),
                               np.array([[False, True], [True, True]]), axis=1)


# --------------------------------------------------------------------------- #
# Divergence probability (Wilson)
# --------------------------------------------------------------------------- #
def test_wilson_known_values():
    # k = 0, n = 10: upper end z²/(n + z²) = 3.8415/13.8415 = 0.2775.
    # k = 5, n = 10: 0.5 ± z/(2√(n + z²)) = 0.5 ± 0.2634 -> (0.2366, 0.7634).
    lo, hi = A.wilson_interval([0, 5], [10, 10])
    np.testing.assert_allclose(lo, [0.0, 0.2366], atol=5e-5)
    np.testing.assert_allclose(hi, [0.2775, 0.7634], atol=5e-5)
    assert hi[0] == pytest.approx(Z95**2 / (10 + Z95**2), rel=1e-12)
    assert hi[1] - 0.5 == pytest.approx(Z95 / (2 * math.sqrt(10 + Z95**2)), rel=1e-12)


def test_wilson_exact_coverage_sanity():
    # Exact binomial coverage averaged over p ∈ [0.05, 0.95] for n = 50.
    n = 50
    k = np.arange(n + 1)
    lo, hi = A.wilson_interval(k, n)
    ps = np.linspace(0.05, 0.95, 181)
    cov = np.array([(stats.binom.pmf(k, n, p) * ((lo <= p) & (p <= hi))).sum() for p in ps])
    assert 0.94 < cov.mean() < 0.96 and cov.min() > 0.90


def test_divergence_probability_numpy_and_xarray():
    steps = np.array([[-1] * 10, [4, 9, -1, -1, 2, -1, 0, -1, 7, -1]])
    r = A.divergence_probability(steps, axis=1)
    np.testing.assert_array_equal(r.k, [0, 5])
    np.testing.assert_allclose(r.p, [0.0, 0.5])
    np.testing.assert_allclose(r.hi, [0.2775, 0.7634], atol=5e-5)
    da = xr.DataArray(steps, dims=("learning_rate", "seed"),
                      coords={"learning_rate": [0.1, 0.9]})
    out = A.divergence_probability(da)
    assert out["p"].dims == ("learning_rate",)
    np.testing.assert_allclose(out["lo"], r.lo)


# --------------------------------------------------------------------------- #
# Plots
# --------------------------------------------------------------------------- #
def test_plots_return_figures_without_pyplot():
    fig = P.plot_mean_band(None, [1, 10, 100], [1, 0.5, 0.2], [0.9, 0.4, 0.1],
                           [1.1, 0.6, 0.3], label="E[loss]", logx=True, logy=True)
    assert isinstance(fig, Figure) and fig.axes[0].get_xscale() == "log"
    km = A.kaplan_meier([2, 3, 3, 5, 8], [False, False, True, False, True])
    ax = fig.add_subplot(2, 1, 2)
    assert P.plot_survival(ax, km, label="KM") is fig
    empty = A.kaplan_meier([4.0, 4.0], [True, True])
    P.plot_survival(None, empty)
    fig2 = P.plot_measured_vs_predicted(None, [0.1, 0.2], [1.0, 2.1], [0.05, 0.1], [1.0, 2.0])
    for f in (fig, fig2):
        buf = io.BytesIO()
        f.savefig(buf, format="png")
        assert buf.tell() > 0


# --------------------------------------------------------------------------- #
# Survival by grid point, median, restricted mean, delayed entry
# --------------------------------------------------------------------------- #
def grid_escape_times(rng: np.random.Generator, seeds: int = 50, steps: int = 60):
    """Engine-like escape times on a 2 × 3 grid: integer steps, censored at ``steps``."""
    lr, bs = [0.1, 0.2], [1, 4, 16]
    scale = np.array([[20.0, 40.0, 80.0], [10.0, 25.0, 50.0]])
    raw = np.ceil(rng.exponential(scale[..., None], size=(2, 3, seeds)))
    censored = raw > steps
    times = np.minimum(raw, steps)
    coords = {"learning_rate": lr, "batch_size": bs}
    dims = ("learning_rate", "batch_size", "seed")
    return (xr.DataArray(times, dims=dims, coords=coords),
            xr.DataArray(censored, dims=dims, coords=coords))


def test_kaplan_meier_by_grid_point_equals_per_point_calls():
    times, cens = grid_escape_times(np.random.default_rng(21))
    ds = A.kaplan_meier(times, cens)
    assert ds["survival"].dims == ("learning_rate", "batch_size", "time")
    assert ds["median"].dims == ("learning_rate", "batch_size")
    for lr in times.learning_rate.values:
        for bs in times.batch_size.values:
            t = times.sel(learning_rate=lr, batch_size=bs).values
            c = cens.sel(learning_rate=lr, batch_size=bs).values
            km = A.kaplan_meier(t, c)
            row = ds.sel(learning_rate=lr, batch_size=bs)
            own = row.n_events.values > 0
            np.testing.assert_array_equal(row.time.values[own], km.time)
            for k in ("survival", "variance", "lo", "hi", "n_at_risk", "n_events"):
                np.testing.assert_array_equal(row[k].values[own], getattr(km, k), err_msg=k)
            assert row.n_at_risk.values[0] <= 50  # the old pooled call reported 300 here
            med, rm = A.km_median(km), A.restricted_mean(km)
            assert float(row.t_max) == km.t_max and int(row.n) == 50
            assert (float(row["median"]), float(row.median_lo), float(row.median_hi)) == tuple(
                med[:3])
            assert (float(row.rmst), float(row.rmst_se)) == (rm.mean, rm.se)
            # between its own events the curve is carried forward
            s_all = row.survival.values[row.time.values <= km.t_max]
            assert np.all(np.diff(s_all) <= 0)
    with pytest.raises(ValueError, match="never pooled"):
        A.kaplan_meier(times.values, cens.values, axis=-1)


def test_kaplan_meier_median_and_restricted_mean_hand_example():
    # S: 1 on [0,2), 0.8 on [2,3), 0.6 on [3,5), 0.3 on [5,8]; median = 5 (first S ≤ ½).
    # RMST(τ=8) = 2·1 + 1·0.8 + 2·0.6 + 3·0.3 = 4.9.
    # A_j = ∫_{t_j}^8 S: 2.9, 2.1, 0.9; Var = 2.9²/(5·4) + 2.1²/(4·3) + 0.9²/(2·1) = 1.193.
    km = A.kaplan_meier([2, 3, 3, 5, 8], [False, False, True, False, True])
    med = A.km_median(km)
    assert med.time == 5.0 and med.level == 0.95
    # lower band at 2: 0.8^{exp(z·s)}, s = √(1/20)/|ln 0.8| ≈ 1.00 -> 0.20 ≤ ½
    assert med.lo == 2.0
    # upper band at 5: 0.3^{exp(−z·s)}, s = √(19/30)/|ln 0.3| ≈ 0.66 -> 0.72 > ½: never reached
    assert math.isinf(med.hi)
    rm = A.restricted_mean(km)
    assert rm.tau == 8 and rm.mean == pytest.approx(4.9, rel=1e-14)
    assert rm.se == pytest.approx(math.sqrt(1.193), rel=1e-14)
    assert rm.hi - rm.mean == pytest.approx(Z95 * math.sqrt(1.193), rel=1e-12)
    assert A.restricted_mean(km, tau=4).mean == pytest.approx(2 + 0.8 + 0.6, rel=1e-14)
    with pytest.raises(ValueError, match="tau=9 is invalid"):
        A.restricted_mean(km, tau=9)


def test_restricted_mean_without_censoring_is_the_plain_mean():
    # Without censoring ∫_0^{t_max} S = mean(T) and its Greenwood variance is Σ(t − t̄)²/n².
    t = np.array([1.0, 2, 2, 4, 7, 7, 9])
    rm = A.restricted_mean(A.kaplan_meier(t, np.zeros(7, bool)))
    assert rm.mean == pytest.approx(t.mean(), rel=1e-14)
    assert rm.se == pytest.approx(t.std() / math.sqrt(t.size), rel=1e-12)
    km = A.kaplan_meier([1, 2, 3, 4], [False] * 4)
    assert A.km_median(km).time == 2.0  # S(2) = ½ exactly: the first t with S ≤ ½


def test_restricted_mean_interval_coverage_by_grid_point():
    # 400 independent grid points × 100 members, T = ⌈50·Exp(1)⌉ censored at 75 steps:
    # true RMST(75) = Σ_{k<75} P(T > k) = Σ e^{−k/50}. Coverage SE √(.95·.05/400) ≈ 1.1%.
    rng = np.random.default_rng(23)
    raw = np.ceil(50 * rng.exponential(size=(400, 100)))
    times = xr.DataArray(np.minimum(raw, 75), dims=("rep", "seed"))
    ds = A.kaplan_meier(times, raw > 75, tau=75)
    truth = np.exp(-np.arange(75) / 50).sum()
    covered = float(((ds.rmst_lo <= truth) & (truth <= ds.rmst_hi)).mean())
    assert 0.95 - 3 * 0.011 <= covered <= 0.95 + 3 * 0.011
    # SE calibration: sd of 400 estimates has relative SE ≈ 1/√800 = 3.5%; 4 SE.
    assert abs(float(ds.rmst.std()) / float(ds.rmst_se.mean()) - 1) < 4 / math.sqrt(800)
    assert abs(float(ds.rmst.mean()) - truth) < 4 * float(ds.rmst.std()) / 20


def test_delayed_entry_rate_hand_example_and_transient_bias():
    times = np.array([2.0, 3, 3, 5, 8])
    cens = np.array([False, False, True, False, True])
    # entry 2.5: at risk 3, 3+, 5, 8+ (n = 4); events at 3 and 5; exposure .5+.5+2.5+5.5 = 9.
    r = A.exponential_rate_mle(times, cens, entry=2.5)
    assert (r.n, r.n_events, r.exposure) == (4, 2, 9.0) and r.rate == pytest.approx(2 / 9)
    per_member = A.exponential_rate_mle(times, cens, entry=np.full(5, 2.5))
    assert per_member == r
    # A transient of t0 = 100 steps with no escape, then a geometric hazard λ = 0.01.
    rng = np.random.default_rng(24)
    lam, t0, steps = 0.01, 100, 400
    raw = t0 + rng.geometric(lam, size=2000)
    t, c = np.minimum(raw, steps).astype(float), raw > steps
    naive = A.exponential_rate_mle(t, c)
    fixed = A.exponential_rate_mle(t, c, entry=t0)
    # geometric MLE: events / steps at risk -> p; its SE is ≈ p/√d.
    assert abs(fixed.rate - lam) < 4 * fixed.se
    assert naive.rate < lam / 2 + 4 * naive.se  # the naive rate is ~2.5× too low
    with pytest.raises(ValueError, match="no escape events after entry"):
        A.exponential_rate_mle(t, c, entry=steps)


def test_rate_and_summary_by_grid_point_equal_per_point_calls():
    times, cens = grid_escape_times(np.random.default_rng(25), seeds=80)
    entry = xr.DataArray([2.0, 5.0], dims="learning_rate",
                         coords={"learning_rate": times.learning_rate})
    rate = A.exponential_rate_mle(times, cens, entry=entry)
    summ = A.survival_summary(times, cens, entry=3.0)
    assert rate["rate"].dims == ("learning_rate", "batch_size")
    for i, lr in enumerate(times.learning_rate.values):
        for bs in times.batch_size.values:
            t = times.sel(learning_rate=lr, batch_size=bs).values
            c = cens.sel(learning_rate=lr, batch_size=bs).values
            one = A.exponential_rate_mle(t, c, entry=[2.0, 5.0][i])
            row = rate.sel(learning_rate=lr, batch_size=bs)
            assert all(float(row[k]) == v for k, v in one._asdict().items())
            s = summ.sel(learning_rate=lr, batch_size=bs)
            assert float(s.rate) == A.exponential_rate_mle(t, c, entry=3.0).rate
            assert float(s.mfpt) == A.mean_first_passage(t, c).mean
            assert float(s.rmst) == A.restricted_mean(A.kaplan_meier(t, c)).mean


def test_fits_by_grid_point_equal_per_point_calls():
    rng = np.random.default_rng(26)
    steps = np.arange(0, 50, 5.0)
    rates = np.array([0.02, 0.05, 0.1])
    mean = np.exp(-rates[:, None] * steps) * (1 + 0.01 * rng.standard_normal((3, 10)))
    se = 0.01 * mean
    da = xr.DataArray(mean, dims=("learning_rate", "step"),
                      coords={"learning_rate": [0.1, 0.2, 0.3], "step": steps})
    ds = A.fit_exponential_rate(None, da, se, t_max=40)
    for i in range(3):
        one = A.fit_exponential_rate(steps, mean[i], se[i], t_max=40)
        for k in ("estimate", "se", "lo", "hi", "chi2", "n_points", "p_value"):
            assert float(ds[k][i]) == getattr(one, k), k
    assert ds["estimate"].dims == ("learning_rate",)
    bad = da.copy()
    bad[1, 2:] = -1.0
    with pytest.raises(ValueError, match="at learning_rate=0.2: fit_exponential_rate needs"):
        A.fit_exponential_rate(None, bad, se)


def test_one_meaning_of_axis_and_namedtuple_returns():
    x = np.ones((3, 5))
    calls = [
        lambda: A.mean_ci(x), lambda: A.batch_means(x, n_batches=2),
        lambda: A.integrated_autocorr_time(x), lambda: A.autocorrelation(x),
        lambda: A.effective_sample_size(x), lambda: A.divergence_probability(x),
        lambda: A.exponential_rate_mle(x, x == 0), lambda: A.mean_first_passage(x, x == 0),
        lambda: A.kaplan_meier(x, x == 0),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="axis="):
            call()
    # 1-D input has one axis: no axis needed, same answer as axis=0.
    y = np.random.default_rng(27).standard_normal(200)
    assert A.mean_ci(y) == A.mean_ci(y, axis=0)
    tau = A.integrated_autocorr_time(y)
    assert isinstance(tau, np.floating)
    w = A.wilson_interval(3, 10)
    assert isinstance(w, A.Interval) and w.lo < 0.3 < w.hi
    lo, hi = w
    assert (lo, hi) == (w.lo, w.hi)
    fit = A.fit_power_law([1.0, 2, 4, 8], [1.0, 0.5, 0.25, 0.125], [0.01] * 4)
    assert isinstance(fit, tuple) and fit._fields[0] == "estimate"


# --------------------------------------------------------------------------- #
# Optional comparison with lifelines and statsmodels (the `compare` extra)
# --------------------------------------------------------------------------- #
def _censored_sample(seed: int, n: int = 300):
    rng = np.random.default_rng(seed)
    raw = rng.exponential(10.0, n)
    cens_at = rng.uniform(5.0, 25.0, n)
    return np.minimum(raw, cens_at), raw > cens_at


def test_survival_agrees_with_lifelines():
    lifelines = pytest.importorskip(
        "lifelines", reason="lifelines is not installed (pip install -e '.[compare]')")
    from lifelines.utils import median_survival_times, restricted_mean_survival_time

    t, c = _censored_sample(31)
    km = A.kaplan_meier(t, c)
    kmf = lifelines.KaplanMeierFitter().fit(t, event_observed=~c)
    np.testing.assert_allclose(km.survival, kmf.survival_function_at_times(km.time).values,
                               rtol=1e-13)
    band = kmf.confidence_interval_.loc[km.time]
    np.testing.assert_allclose(km.lo, band.iloc[:, 0].values, rtol=1e-12)
    np.testing.assert_allclose(km.hi, band.iloc[:, 1].values, rtol=1e-12)
    med = A.km_median(km)
    assert med.time == kmf.median_survival_time_
    ci = median_survival_times(kmf.confidence_interval_).values[0]
    assert (med.lo, med.hi) == (ci[0], ci[1])
    for tau in (10.0, km.t_max):
        rm = A.restricted_mean(km, tau)
        assert rm.mean == pytest.approx(restricted_mean_survival_time(kmf, t=tau), rel=1e-12)
    ef = lifelines.ExponentialFitter().fit(t, event_observed=~c)
    fp = A.mean_first_passage(t, c)
    # lifelines maximises the likelihood numerically (6e-7 relative here); ours is closed form
    assert fp.mean == pytest.approx(ef.lambda_, rel=1e-5)


def test_wilson_and_wls_agree_with_statsmodels():
    pytest.importorskip("statsmodels",
                        reason="statsmodels is not installed (pip install -e '.[compare]')")
    import statsmodels.api as sm
    from statsmodels.stats.proportion import proportion_confint

    k, n = np.array([0, 3, 17, 50]), np.array([40, 40, 40, 50])
    lo, hi = A.wilson_interval(k, n)
    slo, shi = proportion_confint(k, n, alpha=0.05, method="wilson")
    np.testing.assert_allclose(lo, slo, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(hi, shi, rtol=1e-13)
    rng = np.random.default_rng(32)
    t = np.arange(1.0, 30.0)
    m = np.exp(-0.07 * t) * (1 + 0.02 * rng.standard_normal(t.size))
    se = 0.02 * m
    fit = A.fit_exponential_rate(t, m, se)
    sigma = se / m
    res = sm.WLS(np.log(m), sm.add_constant(t), weights=1 / sigma**2).fit(
        cov_type="fixed scale")
    assert fit.estimate == pytest.approx(-res.params[1], rel=1e-13)
    assert fit.se == pytest.approx(res.bse[1], rel=1e-12)
    assert fit.intercept == pytest.approx(res.params[0], rel=1e-13)


def test_enable_inline_registers_a_png_formatter_only_inside_ipython(monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert P.enable_inline() is False  # a plain interpreter: nothing to do, nothing imported
    assert "IPython" not in sys.modules
    pytest.importorskip("IPython", reason="IPython is not installed (notebooks extra)")
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        assert P.enable_inline() is True
        fig = Figure(figsize=(1, 1))
        fig.add_subplot().plot([0, 1])
        data, _ = shell.display_formatter.format(fig)
        assert data["image/png"][:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        InteractiveShell.clear_instance()
