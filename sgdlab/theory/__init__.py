"""Closed forms and exact numerical oracles for the SGD results that sgdlab reproduces.

Everything here is plain NumPy/SciPy in float64; JAX is used only by
:func:`villani_minimizer_and_hessian`, which differentiates a user-supplied JAX
loss. The functions are grouped by the paper they come from:

* Liu, Ziyin, Ueda, arXiv:2012.03636 -- stationary covariance of SGD (with
  heavy-ball momentum and matrix learning rates) on a quadratic loss;
  finite-data-set noise.
* Ziyin, Liu, Mori, Ueda, arXiv:2102.05375 -- online linear regression with
  state-dependent minibatch noise; damped Newton and natural gradient.
* Du, Zhai, Poczos, Singh, arXiv:1810.02054 -- infinite-width Gram matrices and
  the linearised (kernel) training dynamics of two-layer ReLU nets.
* Exact discrete-time mean first-passage times of 1-D SGD (Nystrom method) and
  Arrhenius temperatures.
* arXiv:2304.08172 -- the ramp model of mini-batch GD on a ball indicator: the
  population-gradient recursion of its slope, its L1 error and pointwise passage times.
* Hutzenthaler, Jentzen, Pohl, Riekert, Scarpa, arXiv:2112.07369 -- the
  "dead network" special case under constant targets.
* Gopalani, Mukherjee, arXiv:2210.11452 and Shi, Su, Jordan, arXiv:2004.06977 --
  Gibbs-limit loss gaps and the sigmoid convexity threshold.

Conventions (they differ between papers and are kept per paper):

* Heavy-ball momentum is always ``m_t = mu m_{t-1} + g_t; w_t = w_{t-1} - lr m_t``
  (the optax/PyTorch form), i.e. ``w_{t+1} = w_t - Lambda g(w_t) + mu (w_t - w_{t-1})``.
* A learning rate is a positive scalar ``lr`` or a symmetric matrix ``Lambda``.
* Parameters for which no stationary distribution (or finite second moment)
  exists raise :class:`NoStationaryDistribution`, a ``ValueError`` whose message
  starts with ``"no stationary distribution: "`` and names the failed condition
  with its numbers. Malformed input (wrong shapes, non-finite values,
  non-symmetric matrices) raises a plain ``ValueError``.
"""

from sgdlab.theory import gibbs
from sgdlab.theory._checks import NoStationaryDistribution
from sgdlab.theory.constant_target import (
    dead_network_mean_risk,
    dead_network_risk,
    dead_network_risk_schedule,
    dead_risk_inv_asymptotic,
    dead_risk_inv_sq_limit,
)
from sgdlab.theory.du import (
    du_distance_bound,
    du_G_inf,
    du_H_inf,
    du_kernel_loss,
    du_kernel_residual,
    du_lambda0,
    du_rate_bound,
)
from sgdlab.theory.escape import (
    Temperatures,
    arrhenius_sharp_well,
    arrhenius_slope,
    escape_rate_from_mfpt,
    mfpt_nystrom,
    mfpt_nystrom_converged,
)
from sgdlab.theory.indicator import (
    ramp_drift,
    ramp_loss_scale,
    ramp_mean_recursion,
    ramp_passage,
    ramp_shell_density,
    ramp_shell_moment,
    ramp_threshold,
    ramp_time_slope,
)
from sgdlab.theory.linreg import (
    damped_newton_covariance,
    linreg_covariance,
    linreg_train_loss,
    natural_gradient_covariance,
)
from sgdlab.theory.lzu import (
    continuous_time_variance_1d,
    ema_transition,
    excess_loss,
    excess_loss_sgd,
    finite_data_noise_cov,
    heavy_ball_transition,
    lzu_covariance,
    lzu_covariance_commuting,
    lzu_variance_1d,
    nesterov_transition,
    reshuffle_noise_cov,
    stationary_covariance_linear,
    stationary_covariance_lyapunov,
    stationary_covariance_periodic,
)
from sgdlab.theory.stability import Stability, is_stable, stability
from sgdlab.theory.villani import (
    ACTIVATION_BOUNDS,
    StationaryLaw1D,
    VillaniMinimum,
    convexity_threshold,
    discrete_gap,
    laplace_gap,
    sgd_stationary_law_1d,
    sigmoid_convexity_threshold,
    villani_minimizer_and_hessian,
)

__all__ = [
    "NoStationaryDistribution",
    "Stability",
    "Temperatures",
    "VillaniMinimum",
    "stability",
    "is_stable",
    "lzu_variance_1d",
    "continuous_time_variance_1d",
    "lzu_covariance_commuting",
    "lzu_covariance",
    "stationary_covariance_linear",
    "heavy_ball_transition",
    "nesterov_transition",
    "ema_transition",
    "stationary_covariance_periodic",
    "reshuffle_noise_cov",
    "stationary_covariance_lyapunov",
    "excess_loss",
    "excess_loss_sgd",
    "finite_data_noise_cov",
    "linreg_covariance",
    "linreg_train_loss",
    "damped_newton_covariance",
    "natural_gradient_covariance",
    "du_H_inf",
    "du_G_inf",
    "du_lambda0",
    "du_kernel_loss",
    "du_rate_bound",
    "du_distance_bound",
    "mfpt_nystrom",
    "mfpt_nystrom_converged",
    "arrhenius_sharp_well",
    "arrhenius_slope",
    "escape_rate_from_mfpt",
    "dead_network_risk",
    "dead_network_risk_schedule",
    "dead_risk_inv_asymptotic",
    "dead_risk_inv_sq_limit",
    "laplace_gap",
    "discrete_gap",
    "villani_minimizer_and_hessian",
    "sigmoid_convexity_threshold",
    "ramp_loss_scale",
    "ramp_shell_density",
    "ramp_shell_moment",
    "ramp_drift",
    "ramp_mean_recursion",
    "ramp_threshold",
    "ramp_passage",
    "ramp_time_slope",
    "convexity_threshold",
    "sgd_stationary_law_1d",
    "StationaryLaw1D",
    "ACTIVATION_BOUNDS",
    "gibbs",
    "dead_network_mean_risk",
    "du_kernel_residual",
]
