# %% [markdown]
# # Study 2 — noisy SGD on regularized two-layer nets and the Gibbs limit
#
# Gopalani & Mukherjee (arXiv:2210.11452), building on Shi, Su & Jordan (arXiv:2004.06977):
# for `f(x) = Σ_j a_j σ(w_j·x)` with fixed `a` and
# `L̃(W) = (1/2n) Σ_i (y_i − f(x_i))² + (λ/2)‖W‖²`, the update `W ← W − s(∇L̃ + ξ)`,
# ξ ~ N(0, I), has a unique stationary law once λ is above a convexity threshold (L̃ is then a
# Villani function), close to the Gibbs law `∝ exp(−2L̃/s)`. Its loss gap is
# `E[L̃] − min L̃ ≈ D·s/4` (Laplace), and the discrete-time value for the quadratic
# approximation is `(s/4) Σ_i 1/(1 − s·h_i/2)` with `h_i` the Hessian eigenvalues at the
# minimiser. The `villani` experiment starts two independent ensembles, one at `W = 0` (near the
# minimiser) and one far away, and measures the stationary gap of each at three step sizes.

# %%
import sgdlab.experiments as ex

summary, results, figures = ex.run("villani", "quick", progress=False)
print(ex.summary_table(summary))

# %% [markdown]
# `stationary_gap` is compared with the discrete-time formula (the Laplace value `D·s/4` is
# too small by the factor `1/(1 − s·h/2)`, which the right-hand panel makes visible), and
# `start_gap_difference` checks that both starts reach the same stationary value. The left
# panels show `E[L̃(W_k)] − min L̃` from both starts settling on the predicted level.

# %%
assert ex.exit_status(summary) == 0
figures["stationary_gap"]
