"""Study 2: regularized depth-2 nets under noisy SGD (their Gibbs limit)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab import data as data_lib
from sgdlab import losses, models
from sgdlab._validate import choice, finite_float, positive_int
from sgdlab.problems._base import Problem, data_vector, indexer
from sgdlab.problems.du import sphere_inputs

SMOOTH_ACTIVATIONS = ("sigmoid", "tanh", "softplus")
INIT_LAWS = ("zeros", "normal", "far")
REG_LABELS = ("teacher", "gaussian")
OUTPUT_SCALES = ("1", "1/sqrt_p", "1/p")
"""Output weights a_j = ±c with c = 1, 1/√p or 1/p (the sign drawn per unit)."""
_NP_ACTIVATIONS = {  # NumPy twins, so generated labels do not depend on the x64 mode
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "tanh": np.tanh,
    "softplus": lambda z: np.logaddexp(0.0, z),
}


def regularized_two_layer(width: int, *, reg: float, activation: str = "sigmoid", X=None, y=None,
                          n_data: int = 64, dim: int = 4, labels: str = "teacher", a=None,
                          init: str = "normal", init_scale: float = 1.0,
                          reduction: str = "half_mean", mode: str = "full",
                          batch_size: int | None = None, data_seed: int = 0,
                          output_scale: str = "1/p") -> Problem:
    """A depth-2 net with fixed output weights and L2 regularisation, on a fixed data set.

    Gopalani & Mukherjee (arXiv:2210.11452): ``f(x) = Σ_j a_j σ(w_j·x)``, ``a`` fixed,
    ``L̃(W) = (1/2n) Σ_i (y_i - f(x_i))² + (λ/2)‖W‖_F²`` (``reduction="half_mean"``).
    Their SGD ``W ← W - s(∇L̃ + ξ)``, ξ ~ N(0, I) (Shi, Su & Jordan,
    arXiv:2004.06977), is ``sl.Optimizer("sgd")`` with ``learning_rate = s`` and
    ``noise_std = 1``; its continuous limit has the Gibbs law ∝ exp(-2L̃/s).

    Data (drawn once from ``data_seed`` unless given): ``X`` uniform on the unit
    sphere of R^dim; ``labels="teacher"``: ``y = Σ_j a_j σ(w*_j·x)`` with
    ``w*_j ~ N(0, I)``; ``"gaussian"``: y ~ N(0, 1). Default ``a``: random signs
    times ``output_scale`` (``"1/p"``: ‖a‖₁ = 1, so the sufficient convexity
    threshold of :func:`sgdlab.theory.villani.convexity_threshold` shrinks like 1/p;
    ``"1/sqrt_p"``: it is about width-independent; ``"1"``: it grows like p).

    λ is a problem hyperparameter named ``reg`` (default: the ``reg`` argument):
    a Study may sweep it (``{"learning_rate": s, "reg": [0.1, 0.5]}``), traced,
    with one compile for the whole sweep. ``problem.loss(W, batch, {})`` uses the
    default.

    Args:
      width: p, the number of hidden units.
      reg: λ ≥ 0 (the default of the hyperparameter ``reg``).
      activation: one of ``sigmoid``, ``tanh``, ``softplus``.
      X, y: an explicit data set, shapes ``(n, d)`` and ``(n,)``.
      n_data, dim: sizes of the generated data set.
      labels: ``"teacher"`` or ``"gaussian"`` (generated data).
      a: the fixed output weights, shape ``(p,)``.
      init: the initial law of W: ``"zeros"``, ``"normal"`` (entries
        N(0, init_scale²)) or ``"far"`` (every entry = init_scale, a Dirac start
        far from the minimiser) -- different starts, one stationary law.
      init_scale: the scale of ``init``.
      reduction: data-term scaling; ``"half_mean"`` is the paper's ``1/2n``.
      mode: ``"full"`` (the paper's full-batch gradient) or a minibatch mode.
      batch_size: S for minibatch modes.
      data_seed: seed of the generated data set and of ``a``.
      output_scale: ``"1"``, ``"1/sqrt_p"`` or ``"1/p"``: |a_j| of the default ``a``.

    Params: ``W`` of shape ``(p, d)``. ``data.init`` returns ``{"X", "y", "a"}``, so
    ``lambda W: problem.loss(W, (X, y), {})`` is L̃ (for
    :func:`sgdlab.theory.villani_minimizer_and_hessian`) in full-batch mode.
    Observables: ``empirical_loss`` (L̃ on the whole data set, regulariser included;
    also the ``risk``).
    """
    width = positive_int("width", width)
    reg = finite_float("reg", reg, low=0.0)
    choice("activation", activation, SMOOTH_ACTIVATIONS)
    choice("init", init, INIT_LAWS)
    init_scale = finite_float("init_scale", init_scale, low=0.0)
    losses.check_reduction(reduction)
    rng, Xn = sphere_inputs(data_seed, X, n_data, dim)
    n_data, dim = Xn.shape
    choice("output_scale", output_scale, OUTPUT_SCALES)
    if a is None:
        an = rng.choice([-1.0, 1.0], size=width) * output_weight(width, output_scale)
    else:
        an = data_vector("a", a, width)
    if y is not None:
        yn = data_vector("y", y, n_data)
    elif choice("labels", labels, REG_LABELS) == "teacher":
        w_star = rng.standard_normal((width, dim))
        yn = _NP_ACTIVATIONS[activation](Xn @ w_star.T) @ an
    else:
        yn = rng.standard_normal(n_data)
    idx = indexer(n_data, batch_size, mode)
    # the start's scale is an array too, and W₀ = 0 is the Dirac law at 0: a near and a far
    # start of the same shapes then share one compiled program
    law, scale = ("far", 0.0) if init == "zeros" else (init, init_scale)
    arrays = {"X": Xn, "y": yn, "a": an, "reg": np.asarray(reg), "init_scale": np.asarray(scale)}
    problem = Problem.from_arrays(functools.partial(
        _regularized_two_layer, width=width, dim=dim, activation=activation, init=law,
        reduction=reduction, n_data=n_data, batch_size=idx.batch_size, mode=mode), arrays)
    return dataclasses.replace(
        problem, hyperparams={"reg": reg},
        config={"width": width, "reg": reg, "activation": activation, "n_data": n_data,
                "dim": dim, "labels": "given" if y is not None else labels, "init": init,
                "init_scale": init_scale, "reduction": reduction, "mode": mode,
                "batch_size": idx.batch_size, "data_seed": data_seed, "a": an.tolist(),
                "output_scale": output_scale, "n_params": width * dim})


def _regularized_two_layer(arrays, *, width: int, dim: int, activation: str, init: str,
                           reduction: str, n_data: int, batch_size: int,
                           mode: str) -> Problem:
    """The functions of :func:`regularized_two_layer` around its arrays: the data set X, y,
    the output weights a, the default λ (``reg``) and the initial law's scale."""
    idx = indexer(n_data, batch_size, mode)

    def init_fn(key):
        shape = (width, dim)
        scale = _float(arrays["init_scale"])
        if init == "far":
            return jnp.full(shape, scale)
        return scale * jax.random.normal(key, shape)

    def apply(W, x):
        return models.two_layer_apply(W, _float(arrays["a"]), x, activation)

    def objective(W, x, yb, lam):
        return losses.squared_error(apply(W, x), yb, reduction) + 0.5 * lam * jnp.sum(W * W)

    def reg(hp):
        return hp["reg"] if "reg" in hp else _float(arrays["reg"])

    def loss(W, b, hp):
        return objective(W, *b, reg(hp))

    def data_init(key):
        return {k: _float(arrays[k]) for k in ("X", "y", "a")}

    def batch(data, key, t):
        return idx.batch((data["X"], data["y"]), key, t)

    def empirical_loss(W, data, hp):
        return objective(W, data["X"], data["y"], reg(hp))

    source = data_lib.DataSource(init=data_init, batch=batch, shared=True,
                                 batch_size=idx.batch_size, description=idx.description)
    return Problem(
        name="regularized_two_layer", init=init_fn, loss=loss, data=source,
        risk=lambda W, data, hp: empirical_loss(W, data, hp), apply=apply,
        observables={"empirical_loss": lambda o: empirical_loss(o.params, o.data, o.hp)})


def output_weight(width: int, output_scale: str) -> float:
    """|a_j| for ``output_scale`` ∈ {``"1"``, ``"1/sqrt_p"``, ``"1/p"``} at width p."""
    choice("output_scale", output_scale, OUTPUT_SCALES)
    return {"1": 1.0, "1/sqrt_p": 1.0 / np.sqrt(width), "1/p": 1.0 / width}[output_scale]


def _float(x) -> jnp.ndarray:
    """An array (or a traced argument) in the current default float dtype."""
    return jnp.asarray(x, dtype=jnp.result_type(float))
