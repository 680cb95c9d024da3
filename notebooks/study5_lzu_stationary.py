# %% [markdown]
# # Study 5 — finite-learning-rate SGD on quadratics (Liu, Ziyin & Ueda 2021)
#
# SGD with heavy-ball momentum on `L(w) = ½ wᵀKw` with Gaussian gradient noise of
# covariance `C` has an exact stationary distribution at any stable learning rate. In 1-D,
# `Var(w) = λσ²(1+μ) / [k(1−μ)(2(1+μ) − λk)]`; the continuous-time answer `λσ²/(2k(1−μ))`
# misses the factor `1/(1 − λk/(2(1+μ)))`. This notebook runs the `lzu-stationary`
# experiment's quick preset through the Python API (4000 seeds per grid point) and
# compares every measured variance with Theorem 1.

# %%
import sgdlab.experiments as ex

summary, results, figures = ex.run("lzu-stationary", "quick", progress=False)
print(ex.summary_table(summary))

# %% [markdown]
# Every check compares the Monte Carlo estimate with the prediction in units of its
# standard error (|z| ≤ 4 passes). The figure shows the measured variance (±2 SE) against
# the exact curve and the continuous-time curve.

# %%
assert ex.exit_status(summary) == 0
figures["variance_vs_lr"]

# %% [markdown]
# ## Minibatch noise: online linear regression
#
# With `x ~ N(0, A)` and label noise σ², the gradient noise depends on the state.
# `lzu-minibatch` measures the stationary covariance for SGD and damped Newton at two
# batch sizes against the closed form of Ziyin, Liu, Mori & Ueda (2022).

# %%
summary_mb, results_mb, figures_mb = ex.run("lzu-minibatch", "quick", progress=False)
print(ex.summary_table(summary_mb))
assert ex.exit_status(summary_mb) == 0
figures_mb["variance_vs_lr"]
