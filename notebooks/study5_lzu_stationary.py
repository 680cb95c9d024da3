# %% [markdown]
# # Study 5 — finite-learning-rate SGD on quadratics (Liu, Ziyin & Ueda 2021)
#
# SGD with heavy-ball momentum on `L(w) = ½ wᵀKw` with Gaussian gradient noise of
# covariance `C` has an exact stationary distribution at any stable learning rate. In 1-D,
# `Var(w) = λσ²(1+μ) / [k(1−μ)(2(1+μ) − λk)]`; the continuous-time answer `λσ²/(2k(1−μ))`
# misses the factor `1/(1 − λk/(2(1+μ)))`. This notebook runs the `lzu-stationary`
# experiment's quick preset through the Python API (4000 seeds per grid point) and
# compares every measured variance with its prediction:
#
# * heavy ball against Theorem 1 (a linear solve);
# * optax's Nesterov SGD against the exact stationary covariance of its linear recursion
#   (the augmented discrete Lyapunov equation, for the update matrix of
#   `theory.lzu.nesterov_transition`);
# * a finite data set of N = 16 quadratics sharing K, minibatches of S = 4 drawn with
#   replacement or as independent 4-subsets: the noise is `C = K C_c K/S`, times
#   `(N−S)/(N−1)` without replacement;
# * the same data set under epoch reshuffling, against the exact periodic solve.

# %%
import numpy as np

import sgdlab.experiments as ex
from sgdlab.theory import lzu as TL

summary, results, figures = ex.run("lzu-stationary", "quick", progress=False)
print(ex.summary_table(summary))

# %% [markdown]
# Every check compares the Monte Carlo estimate with the prediction in units of its
# standard error (|z| ≤ 4 passes; the run's policy is Holm over all checks). The first
# figure shows the measured variance (±2 SE) against the exact curves and the
# continuous-time curves; Nesterov (squares) is stable only for `λk < 2(1+μ)/(1+2μ)`.

# %%
assert ex.exit_status(summary) == 0
figures["variance_vs_lr"]

# %% [markdown]
# ## Any linear optimizer
#
# On a quadratic with additive noise every linear optimizer is a chain
# `z_{t+1} = A z_t + B ξ_t` on its augmented state, and its stationary covariance solves
# `Σ = AΣAᵀ + BCBᵀ`. `theory.lzu.stationary_covariance_linear(A, B, C)` takes any update
# matrix: here heavy ball and Nesterov at the same λ and μ, and an exponential average of
# SGD iterates, which shrinks the variance.

# %%
K, C, lr, mu = np.array([[1.0]]), np.array([[1.0]]), 1.0, 0.5
for name, (A, B) in {"heavy ball": TL.heavy_ball_transition(lr, K, mu),
                     "Nesterov": TL.nesterov_transition(lr, K, mu),
                     "SGD + EMA(0.9) of iterates": TL.ema_transition(lr, K, 0.9)}.items():
    S = TL.stationary_covariance_linear(A, B, C)
    print(f"{name:28s} Var(w) = {S[0, 0]:.4f}"
          + (f"   Var(averaged w) = {S[1, 1]:.4f}" if "EMA" in name else ""))

# %% [markdown]
# ## Finite data: with and without replacement, and epoch reshuffling
#
# With replacement and with independent subsets the noise is independent across steps,
# so Theorem 1 with `C = K C_c K/S` (times `(N−S)/(N−1)`) is exact, and the ratio of the
# two variances is `(N−S)/(N−1) = 0.8` at every λ. Epoch reshuffling (the engine's
# `without_replacement` mode) has the same per-step C, but the batches of an epoch are
# negatively correlated: at small λ the variance is several times smaller than the
# independent-subsets formula (the notes give the ratio), and the periodic solve predicts it.

# %%
figures["finite_data"]

# %% [markdown]
# ## Minibatch noise: online linear regression
#
# With `x ~ N(0, A)` and label noise σ², the gradient noise depends on the state.
# `lzu-minibatch` measures the stationary covariance for SGD and damped Newton at two
# batch sizes against the closed form of Ziyin, Liu, Mori & Ueda (2022). (Natural
# gradient is damped Newton on this problem: the Fisher is A, the Hessian.)

# %%
summary_mb, results_mb, figures_mb = ex.run("lzu-minibatch", "quick", progress=False)
print(ex.summary_table(summary_mb))
assert ex.exit_status(summary_mb) == 0
figures_mb["variance_vs_lr"]
