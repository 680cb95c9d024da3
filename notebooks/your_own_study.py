# %% [markdown]
# # Your own study
#
# sgdlab's experiments are clients of a public engine; a study of your own uses the same
# doors. Here: a home-made two-layer tanh network, on a data set you already have as NumPy
# arrays, trained by SGD over **1000 seeds**, sweeping
#
# * the learning rate (a traced hyperparameter: one compile for every value),
# * an L2 strength that lives in *your loss* (a problem hyperparameter: traced too),
# * the batch size (a static sweep: one compiled program per batch size),
#
# and then E[test risk] with error bars, a figure, and a first-passage time ("when does
# the test risk first drop below a target?") with censoring, per grid point.

# %%
import sgdlab as sl  # noqa: I001  (first: it sets up the compile cache before jax loads)

import jax
import jax.numpy as jnp
import numpy as np

# your data: a noisy teacher on 5 inputs, 256 training and 1024 test examples
rng = np.random.default_rng(0)
d, n_train, n_test, width = 5, 256, 1024, 16
teacher = rng.standard_normal(d) / np.sqrt(d)
x_train, x_test = rng.standard_normal((n_train, d)), rng.standard_normal((n_test, d))
y_train = np.tanh(x_train @ teacher) + 0.1 * rng.standard_normal(n_train)
y_test = np.tanh(x_test @ teacher)

# %% [markdown]
# The model and the loss are plain functions of a params pytree. The loss reads the L2
# strength from `hp`, so `l2` can go in the grid; the problem declares it (with a default)
# in `hyperparams`. The data source says what a member sees at step `t`: a minibatch of
# the training set drawn with replacement from `(key, t)` (the same stream for every grid
# point of a seed: common random numbers). `risk` is the test risk on the held-out set.

# %%
def init(key):
    k1, k2 = jax.random.split(key)
    return {"W": jax.random.normal(k1, (width, d)) / jnp.sqrt(d),
            "a": jax.random.normal(k2, (width,)) / jnp.sqrt(width)}


def apply(params, x):
    return jnp.tanh(x @ params["W"].T) @ params["a"]


def loss(params, batch, hp):
    x, y = batch
    l2 = 0.5 * hp["l2"] * sum(jnp.sum(p**2) for p in jax.tree_util.tree_leaves(params))
    return 0.5 * jnp.mean((apply(params, x) - y) ** 2) + l2


def risk(params, data, hp):
    return 0.5 * jnp.mean((apply(params, data["x_test"]) - data["y_test"]) ** 2)


arrays = {k: jnp.asarray(v, jnp.float32) for k, v in
          {"x": x_train, "y": y_train, "x_test": x_test, "y_test": y_test}.items()}


def make_problem(batch_size):
    def batch(data, key, t):
        idx = jax.random.randint(jax.random.fold_in(key, t), (batch_size,), 0, n_train)
        return data["x"][idx], data["y"][idx]

    source = sl.data.DataSource(init=lambda key: arrays, batch=batch, shared=True,
                                batch_size=batch_size, description="my data set")
    return sl.problems.Problem(name="tanh-net", init=init, loss=loss, data=source, risk=risk,
                               hyperparams={"l2": 0.0})


# %% [markdown]
# One `Study`: the grid (learning rate × L2, traced), the static sweep over the batch size
# (the problem factory is called with each value), 1000 seeds, E[test risk] streamed at 12
# log-spaced steps, and the first step at which the test risk is below 0.005, checked every
# 10 steps. Members that never get there are right-censored at the last step.

# %%
target = 0.005
study = sl.Study(
    make_problem, sl.Optimizer("sgd"),
    {"learning_rate": [0.02, 0.2], "l2": [0.0, 0.01]},
    static={"batch_size": [4, 32]},
    steps=400, seeds=1000,
    observe=sl.Observe(("risk",), at="log", num=12, members=False),
    first_passage=sl.FirstPassage(lambda o: risk(o.params, o.data, o.hp) < target, every=10,
                                  freeze=False),
)
print(sl.plan(study).describe())
ds = sl.run(study, progress=False)
ds

# %% [markdown]
# ## E[test risk] with error bars
#
# The Dataset has one labeled dimension per swept quantity. The streamed mean, variance
# and live-member count give the curve and its 95% band at each record step.

# %%
mean, se = ds.risk_mean, np.sqrt(ds.risk_var / ds.risk_n)
final = mean.isel(step=-1)
for b in ds.batch_size.values:
    for lr in ds.learning_rate.values:
        row = [f"{float(final.sel(batch_size=b, learning_rate=lr, l2=l)):.4f} ± "
               f"{float(1.96 * se.isel(step=-1).sel(batch_size=b, learning_rate=lr, l2=l)):.4f}"
               for l in ds.l2.values]
        print(f"batch {b:2d}, lr {lr:.2f}: E[test risk] (l2 = 0, 0.01) = " + ",  ".join(row))

# %%
from matplotlib.figure import Figure  # noqa: E402

fig = Figure(figsize=(7.5, 3.2), layout="constrained")
axes = fig.subplots(1, 2, sharey=True)
for ax, b in zip(axes, ds.batch_size.values, strict=True):
    for i, lr in enumerate(ds.learning_rate.values):
        for ls, l in zip(("-", "--"), ds.l2.values, strict=True):
            m = mean.sel(batch_size=b, learning_rate=lr, l2=l)
            e = 1.96 * se.sel(batch_size=b, learning_rate=lr, l2=l)
            ax.plot(ds.step[1:], m[1:], ls, color=f"C{i}", label=f"λ={lr:g}, l2={l:g}")
            ax.fill_between(ds.step[1:], (m - e)[1:], (m + e)[1:], color=f"C{i}", alpha=0.2)
    ax.axhline(target, color="0.5", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="SGD step", title=f"batch size {b}")
axes[0].set_ylabel("E[test risk] (95% band, 1000 seeds)")
axes[0].legend(fontsize=7)
fig

# %% [markdown]
# ## When does the test risk first fall below the target?
#
# `event_step` is the first checked step at which the predicate held (−1: never, within
# the run); `event_censored` flags those members. The survival analysis is per grid point
# (never pooled): the Kaplan–Meier median time with its interval, and the restricted mean
# (the area under the survival curve up to the last step), which stays finite under
# censoring where the plain mean would not.

# %%
times = sl.analysis.escape_times(ds.event_step, ds.event_censored, study.steps)
surv = sl.analysis.survival_summary(times, ds.event_censored, dim="seed")
print(surv[["median", "median_lo", "median_hi", "rmst", "rmst_se", "n_events"]]
      .to_dataframe().round(1).to_string())
censored_fraction = ds.event_censored.mean("seed")
assert bool((surv.n_events > 0).any())
