"""Study 4: over-parameterized two-layer ReLU nets (Du et al.)."""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab import data as data_lib
from sgdlab import losses, models, theory
from sgdlab._validate import choice, fail, finite_float, positive_int
from sgdlab.problems._base import (
    Observation,
    Problem,
    data_matrix,
    data_vector,
    indexer,
    needs_init,
    sphere,
)

DU_LABELS = ("gaussian", "teacher")
DU_TRAIN = ("W", "both")


def sphere_inputs(
    data_seed: int, X, n_data: int, dim: int
) -> tuple[np.random.Generator, np.ndarray]:
    """The data generator of ``data_seed`` and the inputs: ``X`` checked, or ``n_data`` points
    drawn uniformly on the unit sphere of dimension ``dim`` (shared by Du's and Villani's nets)."""
    rng = np.random.default_rng(positive_int("data_seed", data_seed, minimum=0))
    if X is None:
        return rng, sphere(rng, positive_int("n_data", n_data), positive_int("dim", dim))
    return rng, data_matrix("X", X)


def du_two_layer(width: int, *, n_data: int = 100, dim: int = 100, X=None, y=None,
                 labels: str = "gaussian", train: str = "W", teacher_width: int = 32,
                 reduction: str = "half_sum", mode: str = "full", batch_size: int | None = None,
                 data_seed: int = 0, sphere_tol: float = 1e-6) -> Problem:
    """The over-parameterized two-layer ReLU net of Du, Zhai, Póczos & Singh (arXiv:1810.02054).

    ``f(x) = m^{-1/2} Σ_r a_r ReLU(w_r·x)`` (ReLU'(0) = 0), ``w_r(0) ~ N(0, I)``,
    ``a_r`` uniform on {±1} per seed; loss ``½ Σ_i (f(x_i) - y_i)²``
    (``reduction="half_sum"``, a sum over the examples), full-batch GD.
    ``train="W"`` keeps ``a`` fixed: it sits in the parameters behind
    ``jax.lax.stop_gradient``, so its gradient is 0 (plain SGD and momentum leave it
    unchanged; injected ``noise_std`` or ``weight_decay`` would move it).
    ``train="both"`` trains both layers. The choice is one of the problem's arrays (a
    flag that selects between ``a`` and its stopped gradient), so the two choices of one
    width run one compiled program.

    Data (one set for the whole study, from ``data_seed`` unless given): inputs
    uniform on the unit sphere of R^dim; labels N(0, 1) or a teacher (a random
    net of this form with ``teacher_width`` units, normalised to unit empirical
    variance). Given inputs must have unit norm (within ``sphere_tol``).

    Observables (``flip_fraction`` and ``max_distance`` need the initial parameters:
    build the study with ``keep_init=True``):

    * ``flip_fraction``: the fraction of (r, i) with ``1{w_r·x_i ≥ 0}`` different
      from initialisation;
    * ``max_distance``: ``max_r ‖w_r(k) - w_r(0)‖``;
    * ``lambda_min_H``: ``λ_min(H(k))``, ``H`` from :func:`sgdlab.models.du_gram`;
    * ``kernel_deviation``: ``‖H(k) - H∞‖₂`` (spectral norm), H∞ from
      :func:`sgdlab.theory.du_H_inf`;
    * ``train_loss``: ``½‖u - y‖²`` on the whole data set (also the ``risk``);
      ``residual``: ``u - y`` (shape ``(n,)``).

    Params: ``{"W": (m, d), "a": (m,)}``. ``data.init`` returns
    ``{"X", "y", "H_inf"}``; ``config["lambda0"]`` is ``λ_min(H∞)``.

    Raises:
      ValueError: non-positive width, inputs off the sphere, bad names.
    """
    width = positive_int("width", width)
    choice("train", train, DU_TRAIN)
    losses.check_reduction(reduction)
    sphere_tol = finite_float("sphere_tol", sphere_tol, low=0.0, low_open=True)
    rng, Xn = sphere_inputs(data_seed, X, n_data, dim)
    n_data, dim = Xn.shape
    if X is not None:
        dev = float(np.max(np.abs(np.linalg.norm(Xn, axis=1) - 1.0)))
        if dev > sphere_tol:
            fail("X", f"max ||x_i| - 1| = {dev:.3g}",
                 "inputs must lie on the unit sphere (normalise the rows)")
    if y is not None:
        yn = data_vector("y", y, n_data)
    elif choice("labels", labels, DU_LABELS) == "gaussian":
        yn = rng.standard_normal(n_data)
    else:
        tw = positive_int("teacher_width", teacher_width)
        w_t, a_t = rng.standard_normal((tw, dim)), rng.choice([-1.0, 1.0], size=tw)
        yn = np.maximum(Xn @ w_t.T, 0.0) @ a_t
        yn = (yn - yn.mean()) / max(float(yn.std()), 1e-300)
    H_inf = theory.du_H_inf(Xn)
    lambda0 = float(np.linalg.eigvalsh(H_inf)[0])
    idx = indexer(n_data, batch_size, mode)
    arrays = {"X": Xn, "y": yn, "H_inf": H_inf, "train_a": np.asarray(train == "both")}
    problem = Problem.from_arrays(functools.partial(
        _du_two_layer, width=width, dim=dim, reduction=reduction,
        n_data=n_data, batch_size=idx.batch_size, mode=mode), arrays)
    return dataclasses.replace(problem, config={
        "width": width, "n_data": n_data, "dim": dim,
        "labels": "given" if y is not None else labels, "train": train,
        "teacher_width": teacher_width, "reduction": reduction, "mode": mode,
        "batch_size": idx.batch_size, "data_seed": data_seed, "lambda0": lambda0})


def _du_two_layer(arrays, *, width: int, dim: int, reduction: str, n_data: int,
                  batch_size: int, mode: str) -> Problem:
    """The functions of :func:`du_two_layer` around its arrays (the data set X, y and H∞,
    and ``train_a``: whether the outer layer is trained)."""
    idx = indexer(n_data, batch_size, mode)
    scale = 1.0 / math.sqrt(width)

    def init_fn(key):
        # one draw (random-stream version 5): W, and a_r = ±1 from the sign of column
        # ``dim``; a normal's sign is exactly fair (jax.random.normal maps half of its
        # uniform grid to each sign) and independent of W
        z = jax.random.normal(key, (width, dim + 1))
        return {"W": z[:, :dim], "a": jnp.where(z[:, dim] >= 0, 1.0, -1.0).astype(z.dtype)}

    def apply(params, x):
        # the same values either way; the gradient reaches a only where train_a
        a = jnp.where(arrays["train_a"], params["a"], jax.lax.stop_gradient(params["a"]))
        return models.two_layer_apply(params["W"], a, x, "relu", scale)

    def loss(params, b, hp):
        x, yb = b
        return losses.squared_error(apply(params, x), yb, reduction)

    def data_init(key):
        return {k: _float(arrays[k]) for k in ("X", "y", "H_inf")}

    def batch(data, key, t):
        return idx.batch((data["X"], data["y"]), key, t)

    def residual(o: Observation):
        return apply(o.params, o.data["X"]) - o.data["y"]

    def flip_fraction(o: Observation):
        p0 = needs_init(o, "flip_fraction")
        s = models.activation_pattern(o.params["W"], o.data["X"])
        s0 = models.activation_pattern(p0["W"], o.data["X"])
        return jnp.mean((s != s0).astype(o.data["X"].dtype))

    def max_distance(o: Observation):
        p0 = needs_init(o, "max_distance")
        return jnp.max(jnp.linalg.norm(o.params["W"] - p0["W"], axis=1))

    def gram(o: Observation):
        return models.du_gram(o.params["W"], o.data["X"])

    def train_loss(params, data):
        return 0.5 * jnp.sum((apply(params, data["X"]) - data["y"]) ** 2)

    source = data_lib.DataSource(init=data_init, batch=batch, shared=True,
                                 batch_size=idx.batch_size,
                                 description="unit-sphere inputs, " + idx.description)
    return Problem(
        name="du_two_layer", init=init_fn, loss=loss, data=source,
        risk=lambda params, data, hp: train_loss(params, data), apply=apply,
        observables={
            "flip_fraction": flip_fraction,
            "max_distance": max_distance,
            "lambda_min_H": lambda o: jnp.linalg.eigvalsh(gram(o))[0],
            "kernel_deviation": lambda o: jnp.max(jnp.abs(
                jnp.linalg.eigvalsh(gram(o) - o.data["H_inf"]))),
            "train_loss": lambda o: train_loss(o.params, o.data),
            "residual": residual,
        },
    )


def _float(x) -> jnp.ndarray:
    """An array (or a traced argument) in the current default float dtype."""
    return jnp.asarray(x, dtype=jnp.result_type(float))
