"""Turn an ensemble of SGD runs into estimates with error bars.

Every reduction has a NumPy core and an xarray face. Pass an ``xarray.DataArray``
and name the reduced dimension with ``dim`` (``"seed"`` by default for reductions
over members, ``"step"`` for time series): every other dimension and its
coordinates are kept ("one answer per grid point and record step", never pooled)
and the result is an ``xarray.Dataset`` whose variables are the fields of the NumPy
result (``mean``, ``se``, ``lo``, ``hi``, ``n``, ...). With NumPy input the result
is a NamedTuple of arrays (NumPy scalars for one series), and ``axis`` names the
reduced axis: it may be left out only for 1-D input; an array with more dimensions
and no ``axis`` is an error, never a silent flatten.

The modules, by topic:

* :mod:`sgdlab.analysis.intervals` -- means over members, Wilson proportions,
  :func:`summarize`;
* :mod:`sgdlab.analysis.autocorrelation` -- batch means, autocorrelation, the
  integrated autocorrelation time, stationary means;
* :mod:`sgdlab.analysis.fits` -- rates and exponents from ensemble means;
* :mod:`sgdlab.analysis.survival` -- escape times: censored and left-truncated
  exponential rates, Kaplan–Meier curves, their median and restricted mean.
"""

from sgdlab.analysis.autocorrelation import (
    BatchMeans,
    StationaryMean,
    autocorrelation,
    batch_means,
    effective_sample_size,
    integrated_autocorr_time,
    stationary_mean,
)
from sgdlab.analysis.fits import RateFit, fit_exponential_rate, fit_power_law
from sgdlab.analysis.intervals import (
    Interval,
    MeanCI,
    Proportion,
    divergence_probability,
    mean_ci,
    summarize,
    wilson_interval,
)
from sgdlab.analysis.survival import (
    FirstPassage,
    KaplanMeier,
    RateMLE,
    RestrictedMean,
    SurvivalTime,
    escape_times,
    exponential_rate_mle,
    kaplan_meier,
    km_median,
    mean_first_passage,
    restricted_mean,
    survival_summary,
)

__all__ = [
    "BatchMeans",
    "FirstPassage",
    "Interval",
    "KaplanMeier",
    "MeanCI",
    "Proportion",
    "RateFit",
    "RateMLE",
    "RestrictedMean",
    "StationaryMean",
    "SurvivalTime",
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
    "km_median",
    "mean_ci",
    "mean_first_passage",
    "restricted_mean",
    "stationary_mean",
    "summarize",
    "survival_summary",
    "wilson_interval",
]
