# %% [markdown]
# # Study 1 — deep ReLU nets on a constant target (Hutzenthaler et al. 2021)
#
# A fully connected ReLU network (ReLU'(0) = 0) is trained by plain SGD with fresh uniform
# inputs on `[0, 1]` to fit a constant ξ; the risk `E[(N(X) − ξ)²]` is computed exactly
# (the 1-D network is piecewise linear). Hutzenthaler, Jentzen, Pohl, Riekert & Scarpa
# (arXiv:2112.07369) prove `E[risk] → 0` when the step sizes are small and **not summable**.
# The `constant-target` experiment runs the schedules `γ0/n^α` with α = 0, ½, 1 (non-summable)
# and 2 (summable) in one compiled grid over 1024 seeds, and the "dead" network, where every
# hidden unit is inactive and only the output bias moves, against its closed form
# `E[L_n] = E[(c_0 − ξ)²] · Π_{k≤n}(1 − 2γ_k)²`.

# %%
import sgdlab.experiments as ex

summary, results, figures = ex.run("constant-target", "quick", progress=False)
print(ex.summary_table(summary))

# %% [markdown]
# The live network's risk has no closed form, so `risk` and `risk_final` carry no prediction;
# the notes state the criterion used for `E[risk] → 0` (the final risk is below the initial
# one by more than 4 SE, and the local power-law exponent over the last decade has a 95%
# interval below 0) and whether it is met. The dead network is checked against the exact
# product formula at every record step where float32 can resolve it.

# %%
assert ex.exit_status(summary) == 0
figures["risk_vs_step"]
