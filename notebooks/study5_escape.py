# %% [markdown]
# # Study 5 — escape of SGD from a minimum (Liu, Ziyin & Ueda 2021)
#
# One-dimensional SGD `w_{t+1} = w_t − λ(U'(w_t) + σξ_t)` starts at the bottom of a well
# and runs until it first leaves the well. With the continuous-time temperature
# `T = λσ²/2`, the mean escape time τ grows like `exp(ΔL/T)` (Arrhenius); at a finite
# learning rate the discrete chain is hotter than `T`, and for a sharp quadratic well the
# paper's effective temperature `T_eff = λσ²/(2 − λa)` predicts the slope `(2 − λa)/2` of
# `ln τ` against `ΔL/T`.
#
# The `escape` experiment measures the escape times of thousands of walkers per
# (λ, ΔL/T) — walkers still inside after `max_steps` are right-censored, not dropped —
# and checks them against exact oracles of the same discrete chain: the Nyström solution
# of `τ(x) = 1 + ∫ p(x → y) τ(y) dy` for the mean, and the leading eigenvalue of the killed
# chain for the escape rate in the exponential tail. The quick preset is the sharp well
# `U = w²/2` with walls at `|w| = 1` (ΔL = 1/2), four learning rates and
# `ΔL/T ∈ {3, 4, 5}`, 3000 walkers each.

# %%
import sgdlab.experiments as ex

summary, results, figures = ex.run("escape", "quick", progress=False)
print(ex.summary_table(summary))

# %% [markdown]
# `mfpt` and `escape_rate` pass when the measurement is within 4 standard errors of the
# oracle; `arrhenius_slope` passes when the 95% interval of the fitted slope covers the
# same weighted fit through the oracle's `ln τ`. The figure shows (a) τ against λ,
# (b) the Arrhenius plot, (c) the fitted slope against λ next to the continuous-time
# slope 1 and the sharp-well `T_eff` slope `(2 − λa)/2` — neither is exact at these
# barrier heights, the oracle is — and (d) Kaplan–Meier survival curves in units of τ
# against `exp(−t/τ)` and the exact survival of the chain.

# %%
assert ex.exit_status(summary) == 0
figures["escape"]

# %% [markdown]
# ## A smooth barrier: the double well
#
# For `U = (w² − 1)²/4`, escaping past the barrier top at `w = 0` (ΔL = 1/4), the
# sharp-well effective temperature does not apply: near the saddle the discrete chain
# sees a different curvature. The Nyström oracle still gives the exact τ and slope.
# (Minibatch noise instead of Gaussian noise: `batch_size=4`; the oracle then uses the
# exact law of the minibatch mean.)

# %%
summary_dw, results_dw, figures_dw = ex.run(
    "escape", "quick",
    {"potential": "double-well", "learning_rate": [0.2, 0.4, 0.6],
     "barrier_over_temperature": [2.0, 3.0, 4.0], "max_steps": 2500, "seeds": 2000},
    progress=False)
print(ex.summary_table(summary_dw))
assert ex.exit_status(summary_dw) == 0
figures_dw["escape"]

# %% [markdown]
# ## Beyond brute force, and where the effective temperature holds
#
# Brute force reaches mean escape times of ~10⁴ steps here. `--set estimator=splitting`
# estimates τ up to 10⁹–10¹⁰ steps by flux × adaptive multilevel splitting, checked
# against the same Nyström oracle (`mfpt`, `inverse_mfpt`); the notebook
# `escape_splitting` explains the method. The oracle's local Arrhenius slope at large
# barriers (ΔL/T between 16 and 20) tests the effective temperature: it holds in the
# sharp well and fails at the double well's smooth saddle.

# %%
from sgdlab.experiments import escape

for kind, lrs in (("sharp-well", (0.1, 1.0, 1.5)), ("double-well", (0.1, 0.3, 0.6))):
    for row in escape.effective_temperature_table(kind, lrs):
        print(f"{kind:12s} λ = {row['learning_rate']:<4g} oracle slope {row['oracle_slope']:.3f}"
              f"  T_eff {row['teff_slope']:.3f} ({100 * row['teff_rel_error']:+.0f}%)"
              f"  continuous 1 ({100 * row['continuous_rel_error']:+.0f}%)")
