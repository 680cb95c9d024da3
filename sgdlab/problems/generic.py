"""General problems: a noisy quadratic, online linear regression, MLP regression."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab import data as data_lib
from sgdlab import losses, models
from sgdlab._validate import choice, fail, finite_float, positive_int
from sgdlab.problems._base import Observation, Problem, as_matrix, psd_sqrt, vector_observables


def noisy_quadratic(curvature, noise_cov, w0=0.0, init_scale: float = 0.0) -> Problem:
    """``L(w) = ½ wᵀKw`` with additive Gaussian gradient noise of covariance ``C``.

    Each step's gradient is ``K w + L ξ`` with ξ ~ N(0, I) and ``L Lᵀ = C``, i.e.
    the minibatch objective is ``½ wᵀKw + (Lξ)·w``. K and C need not commute.
    Liu, Ziyin & Ueda (2021), arXiv:2012.03636.

    Args:
      curvature: K -- a scalar (1-D), the diagonal, or a symmetric matrix.
      noise_cov: C -- same forms; positive semi-definite.
      w0: initial point (scalar broadcast, or a vector).
      init_scale: add N(0, init_scale²) to ``w0`` per seed.

    Observables: ``w``, ``w2`` (elementwise square), ``w_outer`` (w wᵀ); risk ``½ wᵀKw``.
    """
    K = as_matrix("curvature", curvature)
    d = K.shape[0]
    C = as_matrix("noise_cov", noise_cov, d)
    L = psd_sqrt("noise_cov", C)
    w0 = np.broadcast_to(np.asarray(w0, dtype=float), (d,)).copy()
    init_scale = finite_float("init_scale", init_scale, low=0.0)
    arrays = {"K": K, "L": L, "w0": w0, "init_scale": np.asarray(init_scale)}
    problem = Problem.from_arrays(_noisy_quadratic, arrays)
    return dataclasses.replace(problem, config={
        "curvature": K.tolist(), "noise_cov": C.tolist(), "w0": w0.tolist(),
        "init_scale": init_scale})


def _noisy_quadratic(a) -> Problem:
    """The functions of :func:`noisy_quadratic` around its arrays ``a`` (K, L, w0, scale)."""
    d = np.shape(a["K"])[0]

    def init(key):
        w0 = jnp.asarray(a["w0"], jnp.result_type(float))
        return w0 + a["init_scale"] * jax.random.normal(key, (d,), w0.dtype)

    def loss(w, xi, hp):
        return 0.5 * w @ (a["K"] @ w) + (a["L"] @ xi) @ w

    def risk(w, data, hp):
        return 0.5 * w @ (a["K"] @ w)

    return Problem(
        name="noisy_quadratic", init=init, loss=loss,
        data=data_lib.normal_noise((d,), "gradient noise ξ ~ N(0, I)"),
        risk=risk, observables=vector_observables())


def linear_regression(input_cov, label_noise: float, batch_size: int, w_star=None,
                      reduction: str = "half_mean", init_scale: float = 0.0) -> Problem:
    """Online linear regression: x ~ N(0, A), ``y = x·w* + σ ε``, fresh batches of S.

    The minibatch noise is state dependent (Ziyin, Liu, Mori & Ueda 2022,
    arXiv:2102.05375). The loss is ``reduce((x·w - y)², reduction)``; the
    reported risk is the population loss per example with the same ½ factor:
    ``c[(w - w*)ᵀA(w - w*) + σ²]`` with c = ½ for the "half_*" reductions, 1 otherwise.

    Observables: ``w``, ``w2``, ``w_outer`` of the deviation ``w - w*``.
    """
    A = as_matrix("input_cov", input_cov)
    d = A.shape[0]
    LA = psd_sqrt("input_cov", A)
    sigma = finite_float("label_noise", label_noise, low=0.0)
    batch_size = positive_int("batch_size", batch_size)
    losses.check_reduction(reduction)
    ws = np.zeros(d) if w_star is None else np.asarray(w_star, dtype=float).reshape(-1)
    if ws.shape != (d,):
        fail("w_star", ws.shape, f"expected shape ({d},) to match input_cov")
    init_scale = finite_float("init_scale", init_scale, low=0.0)
    arrays = {"A": A, "LA": LA, "w_star": ws, "sigma": np.asarray(sigma),
              "init_scale": np.asarray(init_scale)}
    problem = Problem.from_arrays(
        functools.partial(_linear_regression, batch_size=batch_size, reduction=reduction),
        arrays)
    return dataclasses.replace(problem, config={
        "input_cov": A.tolist(), "label_noise": sigma, "batch_size": batch_size,
        "w_star": ws.tolist(), "reduction": reduction, "init_scale": init_scale})


def _linear_regression(a, *, batch_size: int, reduction: str) -> Problem:
    """The functions of :func:`linear_regression` around its arrays ``a``."""
    d = np.shape(a["A"])[0]
    c = 0.5 if reduction.startswith("half") else 1.0

    def sample(key, n):
        z = jax.random.normal(key, (n, d + 1))  # one draw (random-stream version 5)
        x = z[:, :d] @ a["LA"].T
        return x, x @ a["w_star"] + a["sigma"] * z[:, d]

    def init(key):
        ws = jnp.asarray(a["w_star"], jnp.result_type(float))
        return ws + a["init_scale"] * jax.random.normal(key, (d,), ws.dtype)

    def loss(w, batch, hp):
        x, y = batch
        return losses.squared_error(x @ w, y, reduction)

    def risk(w, data, hp):
        e = w - a["w_star"]
        return c * (e @ (a["A"] @ e) + a["sigma"] ** 2)

    return Problem(
        name="linear_regression", init=init, loss=loss,
        data=data_lib.online(sample, batch_size, "x ~ N(0, A), y = x·w* + σε", iid_rows=True),
        risk=risk, observables=vector_observables(a["w_star"]))


INPUTS = ("uniform", "gaussian")
TARGETS = ("constant", "teacher")


def mlp_regression(sizes: Sequence[int], *, activation: str = "relu", target: str = "constant",
                   target_value: float = 0.0, teacher_sizes: Sequence[int] | None = None,
                   inputs: str = "uniform", box: tuple[float, float] = (0.0, 1.0),
                   batch_size: int = 1, reduction: str = "mean", init: str = "he",
                   n_eval: int = 4096, teacher_seed: int = 0) -> Problem:
    """A fully connected network of any depth/width/activation on a regression target.

    Args:
      sizes: ``(d, h_1, ..., h_L, 1)``.
      activation: hidden activation (``relu`` uses ReLU'(0) = 0).
      target: ``"constant"`` (y = ``target_value``; Hutzenthaler et al.,
        arXiv:2112.07369) or ``"teacher"`` (y = a fixed random network of
        ``teacher_sizes``, drawn once for the study from ``teacher_seed``).
      inputs: ``"uniform"`` on ``box^d`` or ``"gaussian"`` N(0, I).
      batch_size: fresh i.i.d. samples per step.
      reduction: loss scaling; the risk uses the same scaling per example
        (``"mean"`` gives ``E[(N(X) - y)²]`` without ½).
      n_eval: size of the fixed evaluation sample for the risk (drawn once per
        study); its Monte Carlo standard error is the ``risk_se`` observable.
      teacher_seed: the teacher network's seed (independent of the study seed).
    """
    sizes = models.check_sizes(sizes)
    if sizes[-1] != 1:
        fail("sizes", sizes, "the output width must be 1")
    models.get_activation(activation)
    choice("target", target, TARGETS)
    choice("inputs", inputs, INPUTS)
    choice("init", init, models.INITS)
    losses.check_reduction(reduction)
    batch_size = positive_int("batch_size", batch_size)
    n_eval = positive_int("n_eval", n_eval)
    target_value = finite_float("target_value", target_value)
    d = sizes[0]
    tsizes = models.check_sizes(teacher_sizes or sizes)
    if target == "teacher" and (tsizes[0] != d or tsizes[-1] != 1):
        fail("teacher_sizes", tsizes, f"must start with the input dimension {d} and end with 1")
    if inputs == "uniform":
        data_lib.uniform_box(box[0], box[1], d)  # checks the box
    arrays = {"teacher_seed": np.asarray(teacher_seed), "target_value": np.asarray(target_value)}
    problem = Problem.from_arrays(functools.partial(
        _mlp_regression, sizes=tuple(sizes), activation=activation, target=target,
        teacher_sizes=tuple(tsizes), inputs=inputs, box=(float(box[0]), float(box[1])),
        batch_size=batch_size, reduction=reduction, init=init, n_eval=n_eval), arrays)
    return dataclasses.replace(problem, config={
        "sizes": list(sizes), "activation": activation, "target": target,
        "target_value": target_value, "teacher_sizes": list(tsizes), "inputs": inputs,
        "box": list(box), "batch_size": batch_size, "reduction": reduction,
        "init": init, "n_eval": n_eval, "teacher_seed": teacher_seed})


def _mlp_regression(a, *, sizes, activation, target, teacher_sizes, inputs, box, batch_size,
                    reduction, init, n_eval) -> Problem:
    """The functions of :func:`mlp_regression` around its arrays ``a``: the teacher's seed
    (the teacher network is drawn from it inside the program, in the run's float dtype)
    and the constant target value."""
    d = sizes[0]
    sample_x = (data_lib.uniform_box(box[0], box[1], d) if inputs == "uniform"
                else (lambda key, n: jax.random.normal(key, (n, d))))
    c = 0.5 if reduction.startswith("half") else 1.0

    def label(teacher, x):
        if target == "constant":
            return jnp.full(x.shape[:1], a["target_value"], jnp.result_type(float))
        return models.mlp_apply(teacher, x, activation)

    def data_init(key):
        kt = jax.random.key(a["teacher_seed"])
        teacher = models.mlp_init(kt, teacher_sizes, init) if target == "teacher" else None
        x = sample_x(key, n_eval)
        return {"teacher": teacher, "eval_x": x, "eval_y": label(teacher, x)}

    def batch(data, key, t):
        x = sample_x(jax.random.fold_in(key, t), batch_size)
        return x, label(data["teacher"], x)

    def block(data, key, b, B):  # B steps' inputs in one draw, labelled together
        x = sample_x(data_lib.block_key(key, b), B * batch_size)
        y = label(data["teacher"], x)
        return x.reshape(B, batch_size, d), y.reshape((B, batch_size) + y.shape[1:])

    def apply(params, x):
        return models.mlp_apply(params, x, activation)

    def loss(params, b, hp):
        x, y = b
        return losses.squared_error(apply(params, x), y, reduction)

    def _sq_err(params, data):
        return (apply(params, data["eval_x"]) - data["eval_y"]) ** 2

    def risk(params, data, hp):
        return c * jnp.mean(_sq_err(params, data))

    def risk_se(o: Observation):
        e = c * _sq_err(o.params, o.data)
        return jnp.std(e) / jnp.sqrt(e.shape[0])

    source = data_lib.DataSource(init=data_init, batch=batch, shared=True,
                                 batch_size=batch_size,
                                 description=f"online {inputs} inputs, {target} target",
                                 block=block)
    return Problem(
        name="mlp_regression", init=lambda key: models.mlp_init(key, sizes, init),
        loss=loss, data=source, risk=risk, apply=apply,
        observables={"risk_se": risk_se})
