# %% [markdown]
# # Study 4 — over-parameterized two-layer ReLU nets (Du, Zhai, Póczos & Singh 2019)
#
# Full-batch gradient descent on the first layer of `f(x) = m^{-1/2} Σ_r a_r ReLU(w_r·x)`
# with inputs on the unit sphere. As the width m grows the dynamics become lazy: the loss
# follows the kernel prediction from `H∞`, and the fraction of flipped activation patterns
# and the largest weight movement shrink like `m^{-1/2}`. This notebook runs the
# `du-overparam` quick preset through the Python API.

# %%
import sgdlab.experiments as ex

summary, results, figures = ex.run("du-overparam", "quick", progress=False)
print(ex.summary_table(summary))

# %% [markdown]
# The fitted log-log slopes of the flip fraction and of `max_r ‖w_r(k) − w_r(0)‖` against m
# are checked against −1/2 with their 95% intervals; `λ0 = λ_min(H∞)` is checked against the
# ensemble estimate of `v0ᵀH(0)v0`.

# %%
assert ex.exit_status(summary) == 0
figures["du-overparam"]
