"""Problems: a model, its loss, its data and its risk, as pure functions.

A :class:`Problem` bundles

* ``init(key) -> params`` (drawn once per seed: every grid point of a seed starts
  from the same parameters);
* ``loss(params, batch, hp) -> scalar``, the minibatch objective SGD differentiates,
  with its reduction (``"half_mean"``, ``"mean"``, ``"half_sum"``) explicit;
* ``data``, a :class:`sgdlab.data.DataSource`;
* ``risk(params, data, hp) -> scalar``, the population risk: exact where a closed
  form exists, otherwise on a fixed evaluation sample (whose Monte Carlo error is
  exposed as the ``risk_se`` observable);
* named ``observables`` (functions of an :class:`Observation`) and ``events``
  (predicates for the first-passage recorder).

Problems compare by identity: reuse one object to reuse its compiled program.

Factories (the study of the science notes each serves in brackets):

* :func:`noisy_quadratic`, :func:`linear_regression`, :func:`finite_quadratic`,
  :func:`potential_1d` and the helper :func:`newton_preconditioner` [5];
* :func:`constant_target` (deep ReLU nets on a constant, exact 1-D risk, the
  dead network) [1] and the general :func:`mlp_regression`;
* :func:`regularized_two_layer` (noisy SGD towards a Gibbs law) [2];
* :func:`indicator_target` (the ramp model and a deep ReLU net on a ball
  indicator) [3];
* :func:`du_two_layer` (over-parameterized two-layer ReLU, lazy training) [4].

Conventions are explicit parameters, each documented where it is taken:
``reduction`` (loss scaling, :mod:`sgdlab.losses`), ``mode`` (minibatches with
or without replacement, or full batch, :mod:`sgdlab.data`; online sources draw
fresh samples), the ReLU with ReLU'(0) = 0 (:func:`sgdlab.models.relu`), and the
heavy-ball form of momentum (:mod:`sgdlab.optim`). Fixed data sets drawn from a
``data_seed`` at construction are the same for every study seed; ``data.init``
returns them whatever key it is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab import data as data_lib
from sgdlab import losses, models, theory
from sgdlab._validate import choice, fail, finite_float, positive_int


class Observation(NamedTuple):
    """What an observable or event predicate sees for one member."""

    params: Any
    opt_state: Any
    loss: jnp.ndarray       # minibatch loss of the last step, at the pre-update params
    grad_norm: jnp.ndarray  # that step's gradient norm (noise included); tracked only when
    #                         "grad_norm" or a function observable is recorded
    params0: Any            # initial parameters (None unless an observable needs them)
    step: jnp.ndarray       # number of updates done
    hp: Mapping[str, jnp.ndarray]
    data: Any


@dataclass(frozen=True, eq=False)
class Problem:
    """A training problem as pure functions (see the module docstring)."""

    name: str
    init: Callable[[jax.Array], Any]
    loss: Callable[[Any, Any, Mapping], jnp.ndarray]
    data: data_lib.DataSource
    risk: Callable[[Any, Any, Mapping], jnp.ndarray] | None = None
    apply: Callable[[Any, jnp.ndarray], jnp.ndarray] | None = None
    observables: Mapping[str, Callable[[Observation], jnp.ndarray]] = field(default_factory=dict)
    events: Mapping[str, Callable[[Observation], jnp.ndarray]] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)


def _as_matrix(name: str, value, dim: int | None = None) -> np.ndarray:
    """A square symmetric matrix from a scalar, a diagonal vector or a matrix."""
    a = np.asarray(value, dtype=float)
    if a.ndim == 0:
        a = a.reshape(1, 1)
    elif a.ndim == 1:
        a = np.diag(a)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        fail(name, np.asarray(value).shape,
             "expected a scalar, a vector (diagonal) or a square matrix")
    if dim is not None and a.shape[0] != dim:
        fail(name, a.shape, f"expected dimension {dim} to match the other matrices")
    if not np.all(np.isfinite(a)):
        fail(name, "non-finite entries", "all entries must be finite")
    if not np.allclose(a, a.T, atol=1e-12 * max(1.0, np.abs(a).max())):
        fail(name, "non-symmetric matrix", "must be symmetric")
    return a


def _psd_sqrt(name: str, a: np.ndarray) -> np.ndarray:
    """A factor ``L`` with ``L Lᵀ = a`` for a positive semi-definite ``a``."""
    vals, vecs = np.linalg.eigh(a)
    if vals.min() < -1e-12 * max(1.0, abs(vals).max()):
        fail(name, f"eigenvalue {vals.min():.3g}", "must be positive semi-definite")
    return vecs * np.sqrt(np.clip(vals, 0.0, None))


def _vector_observables(shift: np.ndarray | None = None) -> dict[str, Callable]:
    def dw(o: Observation):
        return o.params if shift is None else o.params - shift
    return {
        "w": dw,
        "w2": lambda o: dw(o) ** 2,
        "w_outer": lambda o: jnp.outer(dw(o), dw(o)),
    }


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
    K = _as_matrix("curvature", curvature)
    d = K.shape[0]
    C = _as_matrix("noise_cov", noise_cov, d)
    L = jnp.asarray(_psd_sqrt("noise_cov", C))
    Kj = jnp.asarray(K)
    w0 = np.broadcast_to(np.asarray(w0, dtype=float), (d,)).copy()
    init_scale = finite_float("init_scale", init_scale, low=0.0)

    def init(key):
        return jnp.asarray(w0) + init_scale * jax.random.normal(key, (d,))

    def sample(key, n):
        del n
        return jax.random.normal(key, (d,))

    def loss(w, xi, hp):
        return 0.5 * w @ (Kj @ w) + (L @ xi) @ w

    def risk(w, data, hp):
        return 0.5 * w @ (Kj @ w)

    return Problem(
        name="noisy_quadratic", init=init, loss=loss,
        data=data_lib.online(sample, 1, "gradient noise ξ ~ N(0, I)"),
        risk=risk, observables=_vector_observables(),
        config={"curvature": K.tolist(), "noise_cov": C.tolist(), "w0": w0.tolist(),
                "init_scale": init_scale},
    )


def linear_regression(input_cov, label_noise: float, batch_size: int, w_star=None,
                      reduction: str = "half_mean", init_scale: float = 0.0) -> Problem:
    """Online linear regression: x ~ N(0, A), ``y = x·w* + σ ε``, fresh batches of S.

    The minibatch noise is state dependent (Ziyin, Liu, Mori & Ueda 2022,
    arXiv:2102.05375). The loss is ``reduce((x·w - y)², reduction)``; the
    reported risk is the population loss per example with the same ½ factor:
    ``c[(w - w*)ᵀA(w - w*) + σ²]`` with c = ½ for the "half_*" reductions, 1 otherwise.

    Observables: ``w``, ``w2``, ``w_outer`` of the deviation ``w - w*``.
    """
    A = _as_matrix("input_cov", input_cov)
    d = A.shape[0]
    LA = jnp.asarray(_psd_sqrt("input_cov", A))
    sigma = finite_float("label_noise", label_noise, low=0.0)
    batch_size = positive_int("batch_size", batch_size)
    losses.check_reduction(reduction)
    ws = np.zeros(d) if w_star is None else np.asarray(w_star, dtype=float).reshape(-1)
    if ws.shape != (d,):
        fail("w_star", ws.shape, f"expected shape ({d},) to match input_cov")
    init_scale = finite_float("init_scale", init_scale, low=0.0)
    Aj, wsj = jnp.asarray(A), jnp.asarray(ws)
    c = 0.5 if reduction.startswith("half") else 1.0

    def sample(key, n):
        kx, ke = jax.random.split(key)
        x = jax.random.normal(kx, (n, d)) @ LA.T
        return x, x @ wsj + sigma * jax.random.normal(ke, (n,))

    def init(key):
        return wsj + init_scale * jax.random.normal(key, (d,))

    def loss(w, batch, hp):
        x, y = batch
        return losses.squared_error(x @ w, y, reduction)

    def risk(w, data, hp):
        e = w - wsj
        return c * (e @ (Aj @ e) + sigma**2)

    return Problem(
        name="linear_regression", init=init, loss=loss,
        data=data_lib.online(sample, batch_size, "x ~ N(0, A), y = x·w* + σε"),
        risk=risk, observables=_vector_observables(ws),
        config={"input_cov": A.tolist(), "label_noise": sigma, "batch_size": batch_size,
                "w_star": ws.tolist(), "reduction": reduction, "init_scale": init_scale},
    )


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
    sample_x = (data_lib.uniform_box(box[0], box[1], d) if inputs == "uniform"
                else (lambda key, n: jax.random.normal(key, (n, d))))
    c = 0.5 if reduction.startswith("half") else 1.0

    def label(teacher, x):
        if target == "constant":
            return jnp.full(x.shape[:1], target_value)
        return models.mlp_apply(teacher, x, activation)

    def data_init(key):
        kt = jax.random.key(teacher_seed)
        teacher = models.mlp_init(kt, tsizes, init) if target == "teacher" else None
        x = sample_x(key, n_eval)
        return {"teacher": teacher, "eval_x": x, "eval_y": label(teacher, x)}

    def batch(data, key, t):
        x = sample_x(jax.random.fold_in(key, t), batch_size)
        return x, label(data["teacher"], x)

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
                                 description=f"online {inputs} inputs, {target} target")
    return Problem(
        name="mlp_regression", init=lambda key: models.mlp_init(key, sizes, init),
        loss=loss, data=source, risk=risk, apply=apply,
        observables={"risk_se": risk_se},
        config={"sizes": list(sizes), "activation": activation, "target": target,
                "target_value": target_value, "teacher_sizes": list(tsizes), "inputs": inputs,
                "box": list(box), "batch_size": batch_size, "reduction": reduction,
                "init": init, "n_eval": n_eval, "teacher_seed": teacher_seed},
    )


# --------------------------------------------------------------------------- shared helpers


def _f(x) -> jnp.ndarray:
    """A NumPy constant as a JAX array of the current default float dtype (x64 aware).

    The dtype is explicit: jax 0.10.1 may hand back a float64 array for a NumPy
    constant already converted inside an ``enable_x64`` context, even with x64 off.
    """
    return jnp.asarray(np.asarray(x, dtype=float), dtype=jnp.result_type(float))


def _reduction_factor(reduction: str) -> float:
    """The per-example factor of a reduction: ½ for the ``half_*`` ones, else 1."""
    return 0.5 if reduction.startswith("half") else 1.0


def _sphere(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """``n`` points uniform on the unit sphere of R^d (normalised Gaussians)."""
    z = rng.standard_normal((n, d))
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def _indexer(n_data: int, batch_size: int | None, mode: str) -> data_lib.DataSource:
    """A :func:`sgdlab.data.fixed` source used only for its minibatch indexing."""
    choice("mode", mode, data_lib.MODES)
    if batch_size is None:
        if mode != "full":
            fail("batch_size", None, f"give a batch size for mode={mode!r}")
        batch_size = n_data
    return data_lib.fixed(lambda key: None, n_data, batch_size, mode)


def _needs_init(o: Observation, name: str):
    if o.params0 is None:
        fail("keep_init", False, f"the observable {name!r} needs the initial parameters: "
             "build the Study with keep_init=True")
    return o.params0


def _data_matrix(name: str, value, n: int | None = None) -> np.ndarray:
    a = np.asarray(value, dtype=float)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        fail(name, a.shape, "expected a non-empty 2-D array (examples as rows)")
    if n is not None and a.shape[0] != n:
        fail(name, a.shape, f"expected {n} rows")
    if not np.all(np.isfinite(a)):
        fail(name, "non-finite entries", "all entries must be finite")
    return a


def _data_vector(name: str, value, n: int) -> np.ndarray:
    a = np.asarray(value, dtype=float)
    if a.shape != (n,):
        fail(name, a.shape, f"expected shape ({n},)")
    if not np.all(np.isfinite(a)):
        fail(name, "non-finite entries", "all entries must be finite")
    return a


# --------------------------------------------------------------------------- study 1


def constant_target(sizes: Sequence[int], *, target_value: float = 0.0, inputs: str = "uniform",
                    box: tuple[float, float] = (0.0, 1.0), batch_size: int = 1,
                    reduction: str = "mean", init: str = "he", bias_scale: float = 0.0,
                    output_bias: float | None = None, dead: bool = False,
                    dead_margin: float = 1.0, n_eval: int = 16384,
                    max_kinks: int | None = None) -> Problem:
    """A fully connected ReLU network trained on a constant target ξ with fresh samples.

    Hutzenthaler, Jentzen, Pohl, Riekert & Scarpa (arXiv:2112.07369): inputs i.i.d.
    uniform on ``box^d`` (or N(0, I)), target ξ = ``target_value``, plain SGD with
    fresh minibatches each step and the generalized gradient ReLU'(0) = 0
    (:func:`sgdlab.models.relu`); risk ``E[(N(X) - ξ)²]`` (``reduction="mean"``,
    no ½; a ``half_*`` reduction halves loss and risk alike). Step-size schedules
    ``γ0/(n+n0)^α`` come from ``sl.Optimizer("sgd", schedule="power")``.

    The population risk:

    * ``d = 1``: exact -- the network is piecewise linear in x; its kinks are found
      layer by layer and the squared error of each linear piece is integrated in
      closed form (:func:`sgdlab.models.relu_risk_1d`; uniform, or Gaussian on
      ±10). At most ``max_kinks`` kinks (default the worst case
      :func:`sgdlab.models.kink_bound` capped at 1024); the risk is NaN if a
      network ever has more (``n_kinks`` reports the count).
    * ``d > 1``: the mean over a fixed evaluation sample of ``n_eval`` inputs
      drawn once per study; its standard error is the ``risk_se`` observable
      (common to all members: a bias of the ensemble mean, to be kept below the
      ensemble's Monte Carlo error).

    The dead network (``dead=True``): every first-layer bias is set to
    ``-(margin + Σ_i |W_ij| max(|low|, |high|))`` and every deeper hidden bias to
    ``-margin``, so each hidden unit is inactive on the whole box and stays so;
    only the output bias c moves, ``c_n - ξ = Π_k (1 - 2γ_k)(c_0 - ξ)``
    (:func:`sgdlab.theory.dead_network_risk_schedule`, for ``reduction="mean"``).

    Args:
      sizes: ``(d, h_1, ..., h_L, 1)``.
      target_value: ξ.
      inputs: ``"uniform"`` on ``box^d`` or ``"gaussian"`` N(0, I).
      box: ``(low, high)``.
      batch_size: fresh i.i.d. inputs per step.
      reduction: loss scaling (:mod:`sgdlab.losses`), default ``"mean"`` as in the paper.
      init: weight initialisation (:data:`sgdlab.models.INITS`).
      bias_scale: biases ~ N(0, bias_scale²).
      output_bias: c_0, the initial output bias (default: drawn like the others).
      dead: make every hidden unit inactive on the box (needs uniform inputs and
        a hidden layer).
      dead_margin: how far below 0 the dead pre-activations stay.
      n_eval: evaluation sample size (d > 1).
      max_kinks: kink cap of the exact 1-D risk.

    Params: ``[(W_1, b_1), ..., (W_{L+1}, b_{L+1})]``, ``W_l`` of shape ``(fan_in, fan_out)``.
    Observables: ``risk_se``, ``output_bias`` (c), and for d = 1 ``n_kinks``.

    Raises:
      ValueError: bad sizes, box, names, or ``dead`` without uniform inputs.
    """
    sizes = models.check_sizes(sizes)
    if sizes[-1] != 1:
        fail("sizes", sizes, "the output width must be 1")
    choice("inputs", inputs, INPUTS)
    choice("init", init, models.INITS)
    losses.check_reduction(reduction)
    batch_size = positive_int("batch_size", batch_size)
    n_eval = positive_int("n_eval", n_eval)
    target_value = finite_float("target_value", target_value)
    bias_scale = finite_float("bias_scale", bias_scale, low=0.0)
    if output_bias is not None:
        output_bias = finite_float("output_bias", output_bias)
    dead_margin = finite_float("dead_margin", dead_margin, low=0.0, low_open=True)
    if np.shape(box) != (2,):
        fail("box", box, "expected a pair (low, high)")
    low, high = (finite_float("box", v) for v in box)
    d = sizes[0]
    sample_x = (data_lib.uniform_box(low, high, d) if inputs == "uniform"
                else (lambda key, n: jax.random.normal(key, (n, d))))
    if dead and inputs != "uniform":
        fail("dead", dead, "a dead network needs inputs='uniform' (a bounded support)")
    if dead and len(sizes) < 3:
        fail("dead", dead, "a dead network needs at least one hidden layer")
    bound = models.kink_bound(sizes)
    if max_kinks is None:
        max_kinks = min(bound, 1024)
    max_kinks = positive_int("max_kinks", max_kinks, minimum=0)
    exact = d == 1
    reach = max(abs(low), abs(high))
    c = _reduction_factor(reduction)
    lo, hi = (low, high) if inputs == "uniform" else (-10.0, 10.0)

    def init_fn(key):
        params = models.mlp_init(key, sizes, init, bias_scale)
        if dead:
            w1, _ = params[0]
            params[0] = (w1, -(dead_margin + reach * jnp.sum(jnp.abs(w1), axis=0)))
            for i in range(1, len(params) - 1):
                params[i] = (params[i][0], jnp.full_like(params[i][1], -dead_margin))
        if output_bias is not None:
            params[-1] = (params[-1][0], jnp.full_like(params[-1][1], output_bias))
        return params

    def apply(params, x):
        return models.mlp_apply(params, x, "relu")

    def loss(params, x, hp):
        return losses.squared_error(apply(params, x), target_value, reduction)

    def data_init(key):
        return None if exact else {"eval_x": sample_x(key, n_eval)}

    def batch(data, key, t):
        return sample_x(jax.random.fold_in(key, t), batch_size)

    def exact_risk(params):
        return models.relu_risk_1d(params, target_value, lo, hi, weight=inputs,
                                   max_kinks=max_kinks)

    def sq_err(params, data):
        return (apply(params, data["eval_x"]) - target_value) ** 2

    def risk(params, data, hp):
        if exact:
            return c * exact_risk(params)[0]
        return c * jnp.mean(sq_err(params, data))

    def risk_se(o: Observation):
        if exact:
            return jnp.zeros((), o.params[0][0].dtype)
        e = c * sq_err(o.params, o.data)
        return jnp.std(e) / jnp.sqrt(e.shape[0])

    observables = {"risk_se": risk_se, "output_bias": lambda o: o.params[-1][1][0]}
    if exact:
        observables["n_kinks"] = lambda o: exact_risk(o.params)[1].astype(o.params[0][0].dtype)
    source = data_lib.DataSource(init=data_init, batch=batch, shared=True, batch_size=batch_size,
                                 description=f"online {inputs} inputs, constant target")
    return Problem(
        name="constant_target", init=init_fn, loss=loss, data=source, risk=risk, apply=apply,
        observables=observables,
        config={"sizes": list(sizes), "target_value": target_value, "inputs": inputs,
                "box": [low, high], "batch_size": batch_size, "reduction": reduction,
                "init": init, "bias_scale": bias_scale, "output_bias": output_bias,
                "dead": bool(dead), "dead_margin": dead_margin, "n_eval": n_eval,
                "max_kinks": max_kinks, "risk": "exact piecewise-linear" if exact
                else "evaluation sample"},
    )


# --------------------------------------------------------------------------- study 2

SMOOTH_ACTIVATIONS = ("sigmoid", "tanh", "softplus")
INIT_LAWS = ("zeros", "normal", "far")
REG_LABELS = ("teacher", "gaussian")
_NP_ACTIVATIONS = {  # NumPy twins, so generated labels do not depend on the x64 mode
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "tanh": np.tanh,
    "softplus": lambda z: np.logaddexp(0.0, z),
}


def regularized_two_layer(width: int, *, reg: float, activation: str = "sigmoid", X=None, y=None,
                          n_data: int = 64, dim: int = 4, labels: str = "teacher", a=None,
                          init: str = "normal", init_scale: float = 1.0,
                          reduction: str = "half_mean", mode: str = "full",
                          batch_size: int | None = None, data_seed: int = 0) -> Problem:
    """A depth-2 net with fixed output weights and L2 regularisation, on a fixed data set.

    Gopalani & Mukherjee (arXiv:2210.11452): ``f(x) = Σ_j a_j σ(w_j·x)``, ``a`` fixed,
    ``L̃(W) = (1/2n) Σ_i (y_i - f(x_i))² + (λ/2)‖W‖_F²`` (``reduction="half_mean"``).
    Their SGD ``W ← W - s(∇L̃ + ξ)``, ξ ~ N(0, I) (Shi, Su & Jordan,
    arXiv:2004.06977), is ``sl.Optimizer("sgd")`` with ``learning_rate = s`` and
    ``noise_std = 1``; its continuous limit has the Gibbs law ∝ exp(-2L̃/s).

    Data (drawn once from ``data_seed`` unless given): ``X`` uniform on the unit
    sphere of R^dim; ``labels="teacher"``: ``y = Σ_j a_j σ(w*_j·x)`` with
    ``w*_j ~ N(0, I)``; ``"gaussian"``: y ~ N(0, 1). Default ``a``: random signs
    divided by the width (‖a‖₁ = 1, so the convexity threshold of
    :func:`sgdlab.theory.sigmoid_convexity_threshold` does not grow with it).

    Args:
      width: p, the number of hidden units.
      reg: λ ≥ 0 (static).
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
    rng = np.random.default_rng(positive_int("data_seed", data_seed, minimum=0))
    if X is None:
        n_data, dim = positive_int("n_data", n_data), positive_int("dim", dim)
        Xn = _sphere(rng, n_data, dim)
    else:
        Xn = _data_matrix("X", X)
        n_data, dim = Xn.shape
    if a is None:
        an = rng.choice([-1.0, 1.0], size=width) / width
    else:
        an = _data_vector("a", a, width)
    if y is not None:
        yn = _data_vector("y", y, n_data)
    elif choice("labels", labels, REG_LABELS) == "teacher":
        w_star = rng.standard_normal((width, dim))
        yn = _NP_ACTIVATIONS[activation](Xn @ w_star.T) @ an
    else:
        yn = rng.standard_normal(n_data)
    idx = _indexer(n_data, batch_size, mode)

    def init_fn(key):
        shape = (width, dim)
        if init == "zeros":
            return jnp.zeros(shape)
        if init == "far":
            return jnp.full(shape, init_scale)
        return init_scale * jax.random.normal(key, shape)

    def apply(W, x):
        return models.two_layer_apply(W, _f(an), x, activation)

    def objective(W, x, yb):
        return losses.squared_error(apply(W, x), yb, reduction) + 0.5 * reg * jnp.sum(W * W)

    def loss(W, b, hp):
        return objective(W, *b)

    def data_init(key):
        return {"X": _f(Xn), "y": _f(yn), "a": _f(an)}

    def batch(data, key, t):
        return idx.batch((data["X"], data["y"]), key, t)

    def empirical_loss(W, data):
        return objective(W, data["X"], data["y"])

    source = data_lib.DataSource(init=data_init, batch=batch, shared=True,
                                 batch_size=idx.batch_size, description=idx.description)
    return Problem(
        name="regularized_two_layer", init=init_fn, loss=loss, data=source,
        risk=lambda W, data, hp: empirical_loss(W, data), apply=apply,
        observables={"empirical_loss": lambda o: empirical_loss(o.params, o.data)},
        config={"width": width, "reg": reg, "activation": activation, "n_data": n_data,
                "dim": dim, "labels": "given" if y is not None else labels, "init": init,
                "init_scale": init_scale, "reduction": reduction, "mode": mode,
                "batch_size": idx.batch_size, "data_seed": data_seed, "a": an.tolist(),
                "n_params": width * dim},
    )


# --------------------------------------------------------------------------- study 3

INDICATOR_MODELS = ("ramp", "mlp")
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(128)


def _ramp_shell_moment(a, radius: float, dim: int, power: int):
    """``E|f_a - f°|^power`` for X uniform on ``[-1, 1)^dim`` when the ramp lies in the unit ball.

    The error is ``1 - a(|x|² - r²)`` on the shell ``r² < |x|² < r² + 1/a`` and 0
    elsewhere; in polar coordinates with ``u = a(|x|² - r²)``:
    ``2^{-d} |S^{d-1}| / (2a) ∫_0^1 (1 - u)^p (r² + u/a)^{d/2 - 1} du``
    (128-node Gauss–Legendre). In d = 2 and p = 2 this is ``π/(12a)``.
    """
    u = _f(0.5 * (_GL_NODES + 1.0))
    w = _f(0.5 * _GL_WEIGHTS)
    sphere = 2.0 * math.pi ** (dim / 2) / math.gamma(dim / 2)
    coef = sphere / 2.0**dim
    integrand = (1.0 - u) ** power * (radius**2 + u / a) ** (dim / 2 - 1)
    return coef / (2.0 * a) * jnp.sum(w * integrand)


def indicator_target(model: str = "ramp", *, dim: int = 2, radius: float = 0.5,
                     sizes: Sequence[int] | None = None, batch_size: int = 16,
                     n_data: int | None = None, mode: str = "with_replacement",
                     reduction: str = "half_mean", a0: float = 1.0, init_scale: float = 0.0,
                     init: str = "he", bias_scale: float = 0.0, grid_size: int | None = None,
                     band: float = 0.05, n_eval: int = 16384) -> Problem:
    """The ball indicator ``f°(x) = 1{|x| ≤ r}`` on ``[-1, 1)^d`` by mini-batch gradient descent.

    arXiv:2304.08172 (pointwise convergence of mini-batch GD to an indicator):

    * ``model="ramp"``: the solvable ``f_a(x) = ReLU(1 - ReLU(a(|x|² - r²)))``
      (:func:`sgdlab.models.ramp_apply`) with one trained scalar ``a > 0``; its
      population loss ``½E(f_a - f°)²`` is ``c/a`` (``c = π/24`` in d = 2) while the
      ramp lies in the unit ball (``r² + 1/a ≤ 1``), computed exactly there
      (:func:`_ramp_shell_moment`) and from the evaluation sample otherwise;
    * ``model="mlp"``: a generic deep ReLU network of ``sizes`` (risk from the
      evaluation sample).

    Data: fresh uniform samples each step (``n_data=None``) or a fixed data set of
    ``n_data`` points drawn once per study, in minibatches of ``mode``.

    Args:
      model: ``"ramp"`` or ``"mlp"``.
      dim: d.
      radius: r in (0, 1).
      sizes: the mlp's ``(d, h_1, ..., 1)`` (default ``(d, 32, 32, 1)``).
      batch_size: S.
      n_data: size of a fixed data set (None: online).
      mode: minibatch mode for a fixed data set (:data:`sgdlab.data.MODES`).
      reduction: loss scaling, default ``"half_mean"`` (the ``½E(f - f°)²`` of the paper).
      a0: the ramp's initial ``a`` (> 0); with ``init_scale > 0``,
        ``a = a0·exp(init_scale·N(0, 1))`` per seed.
      init, bias_scale: the mlp's initialisation (:func:`sgdlab.models.mlp_init`).
      grid_size: points per axis of the fixed error grid (cell midpoints of
        ``[-1, 1)^d``; default ``⌊4096^{1/d}⌋``, at least 2, and at most 2²⁰ points).
      band: grid points with ``||x| - r| ≤ band`` are excluded.
      n_eval: evaluation sample size (drawn once per study).

    Params: ramp ``{"a": scalar}``; mlp ``[(W, b), ...]``.
    Observables: ``pointwise_error`` (max over the kept grid points of
    ``|f - f°|``), ``pointwise_mean_error`` (their mean; not ``pointwise_error_mean``,
    which the results already use for the ensemble mean of ``pointwise_error``), ``l1_error``
    (``E|f - f°|``: exact for the ramp in the unit ball, else the sample),
    ``risk_se``, and for the ramp ``a``.
    """
    choice("model", model, INDICATOR_MODELS)
    choice("mode", mode, data_lib.MODES)
    dim = positive_int("dim", dim)
    r = finite_float("radius", radius)
    if not 0.0 < r < 1.0:
        fail("radius", radius, "expected a number in the open interval (0, 1)")
    losses.check_reduction(reduction)
    batch_size = positive_int("batch_size", batch_size)
    n_eval = positive_int("n_eval", n_eval)
    band = finite_float("band", band, low=0.0)
    a0 = finite_float("a0", a0, low=0.0, low_open=True)
    init_scale = finite_float("init_scale", init_scale, low=0.0)
    bias_scale = finite_float("bias_scale", bias_scale, low=0.0)
    choice("init", init, models.INITS)
    if model == "mlp":
        sizes = models.check_sizes(sizes or (dim, 32, 32, 1))
        if sizes[0] != dim or sizes[-1] != 1:
            fail("sizes", sizes, f"must start with the input dimension {dim} and end with 1")
    if grid_size is None:
        grid_size = max(2, int(math.floor(4096 ** (1.0 / dim) + 1e-9)))
    grid_size = positive_int("grid_size", grid_size)
    if grid_size**dim > 2**20:
        fail("grid_size", grid_size, f"grid_size**dim = {grid_size**dim} exceeds 2**20 points")
    axis = -1.0 + (2.0 * np.arange(grid_size) + 1.0) / grid_size
    grid = np.stack(np.meshgrid(*([axis] * dim), indexing="ij"), axis=-1).reshape(-1, dim)
    norm = np.linalg.norm(grid, axis=1)
    grid = grid[np.abs(norm - r) > band]
    if grid.shape[0] == 0:
        fail("band", band, "excludes every grid point; lower it or raise grid_size")
    grid_y = (np.linalg.norm(grid, axis=1) <= r).astype(float)
    if n_data is not None:
        n_data = positive_int("n_data", n_data)
        idx = _indexer(n_data, batch_size, mode)
        batch_size = idx.batch_size
    c = _reduction_factor(reduction)

    def target(x):
        return (jnp.sum(x * x, axis=-1) <= r * r).astype(x.dtype)

    def sample(key, n):
        x = jax.random.uniform(key, (n, dim), minval=-1.0, maxval=1.0)
        return x, target(x)

    if model == "ramp":
        def init_fn(key):
            return {"a": a0 * jnp.exp(init_scale * jax.random.normal(key, ()))}

        def apply(params, x):
            return models.ramp_apply(params["a"], x, r)
    else:
        def init_fn(key):
            return models.mlp_init(key, sizes, init, bias_scale)

        def apply(params, x):
            return models.mlp_apply(params, x, "relu")

    def loss(params, b, hp):
        x, yb = b
        return losses.squared_error(apply(params, x), yb, reduction)

    def data_init(key):
        k_data, k_eval = jax.random.split(key)
        ex, ey = sample(k_eval, n_eval)
        d = {"eval_x": ex, "eval_y": ey, "grid_x": _f(grid), "grid_y": _f(grid_y)}
        if n_data is not None:
            d["x"], d["y"] = sample(k_data, n_data)
        return d

    def batch(data, key, t):
        if n_data is None:
            return sample(jax.random.fold_in(key, t), batch_size)
        return idx.batch((data["x"], data["y"]), key, t)

    def sample_err(params, data):
        return apply(params, data["eval_x"]) - data["eval_y"]

    def ramp_exact(params):
        a = params["a"]
        ok = (a > 0) & (r * r + 1.0 / jnp.where(a > 0, a, 1.0) <= 1.0)
        return ok, jnp.where(ok, a, 1.0)

    def risk(params, data, hp):
        sampled = c * jnp.mean(sample_err(params, data) ** 2)
        if model == "mlp":
            return sampled
        ok, a = ramp_exact(params)
        return jnp.where(ok, c * _ramp_shell_moment(a, r, dim, 2), sampled)

    def risk_se(o: Observation):
        e = c * sample_err(o.params, o.data) ** 2
        se = jnp.std(e) / jnp.sqrt(e.shape[0])
        return se if model == "mlp" else jnp.where(ramp_exact(o.params)[0], 0.0, se)

    def l1_error(o: Observation):
        sampled = jnp.mean(jnp.abs(sample_err(o.params, o.data)))
        if model == "mlp":
            return sampled
        ok, a = ramp_exact(o.params)
        return jnp.where(ok, _ramp_shell_moment(a, r, dim, 1), sampled)

    def grid_err(o: Observation):
        return jnp.abs(apply(o.params, o.data["grid_x"]) - o.data["grid_y"])

    observables = {
        "pointwise_error": lambda o: jnp.max(grid_err(o)),
        "pointwise_mean_error": lambda o: jnp.mean(grid_err(o)),
        "l1_error": l1_error,
        "risk_se": risk_se,
    }
    if model == "ramp":
        observables["a"] = lambda o: o.params["a"]
    desc = ("online uniform inputs" if n_data is None else idx.description) + \
        f", target 1{{|x| <= {r}}}"
    source = data_lib.DataSource(init=data_init, batch=batch, shared=True, batch_size=batch_size,
                                 description=desc)
    return Problem(
        name="indicator_target", init=init_fn, loss=loss, data=source, risk=risk, apply=apply,
        observables=observables,
        config={"model": model, "dim": dim, "radius": r,
                "sizes": list(sizes) if model == "mlp" else None, "batch_size": batch_size,
                "n_data": n_data, "mode": mode if n_data is not None else "online",
                "reduction": reduction, "a0": a0, "init_scale": init_scale, "init": init,
                "bias_scale": bias_scale, "grid_size": grid_size, "band": band,
                "grid_points": int(grid.shape[0]), "n_eval": n_eval},
    )


# --------------------------------------------------------------------------- study 4

DU_LABELS = ("gaussian", "teacher")
DU_TRAIN = ("W", "both")


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
    ``train="both"`` trains both layers.

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
    rng = np.random.default_rng(positive_int("data_seed", data_seed, minimum=0))
    if X is None:
        n_data, dim = positive_int("n_data", n_data), positive_int("dim", dim)
        Xn = _sphere(rng, n_data, dim)
    else:
        Xn = _data_matrix("X", X)
        n_data, dim = Xn.shape
        dev = float(np.max(np.abs(np.linalg.norm(Xn, axis=1) - 1.0)))
        if dev > sphere_tol:
            fail("X", f"max ||x_i| - 1| = {dev:.3g}",
                 "inputs must lie on the unit sphere (normalise the rows)")
    if y is not None:
        yn = _data_vector("y", y, n_data)
    elif choice("labels", labels, DU_LABELS) == "gaussian":
        yn = rng.standard_normal(n_data)
    else:
        tw = positive_int("teacher_width", teacher_width)
        w_t, a_t = rng.standard_normal((tw, dim)), rng.choice([-1.0, 1.0], size=tw)
        yn = np.maximum(Xn @ w_t.T, 0.0) @ a_t
        yn = (yn - yn.mean()) / max(float(yn.std()), 1e-300)
    H_inf = theory.du_H_inf(Xn)
    lambda0 = float(np.linalg.eigvalsh(H_inf)[0])
    idx = _indexer(n_data, batch_size, mode)
    scale = 1.0 / math.sqrt(width)

    def init_fn(key):
        kw, ka = jax.random.split(key)
        W = jax.random.normal(kw, (width, dim))
        return {"W": W, "a": jax.random.rademacher(ka, (width,), dtype=W.dtype)}

    def apply(params, x):
        a = params["a"] if train == "both" else jax.lax.stop_gradient(params["a"])
        return models.two_layer_apply(params["W"], a, x, "relu", scale)

    def loss(params, b, hp):
        x, yb = b
        return losses.squared_error(apply(params, x), yb, reduction)

    def data_init(key):
        return {"X": _f(Xn), "y": _f(yn), "H_inf": _f(H_inf)}

    def batch(data, key, t):
        return idx.batch((data["X"], data["y"]), key, t)

    def residual(o: Observation):
        return apply(o.params, o.data["X"]) - o.data["y"]

    def flip_fraction(o: Observation):
        p0 = _needs_init(o, "flip_fraction")
        s = models.activation_pattern(o.params["W"], o.data["X"])
        s0 = models.activation_pattern(p0["W"], o.data["X"])
        return jnp.mean((s != s0).astype(o.data["X"].dtype))

    def max_distance(o: Observation):
        p0 = _needs_init(o, "max_distance")
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
        config={"width": width, "n_data": n_data, "dim": dim,
                "labels": "given" if y is not None else labels, "train": train,
                "teacher_width": teacher_width, "reduction": reduction, "mode": mode,
                "batch_size": idx.batch_size, "data_seed": data_seed, "lambda0": lambda0},
    )


# --------------------------------------------------------------------------- study 5


def finite_quadratic(curvature, centers=None, batch_size: int = 1,
                     mode: str = "with_replacement", *, n_data: int | None = None,
                     centers_cov=None, exact_cov: bool = True, w0=0.0, init_scale: float = 0.0,
                     data_seed: int = 0) -> Problem:
    """A finite data set of quadratics sharing a Hessian: ``ℓ_i(w) = ½(w - c_i)ᵀK(w - c_i)``.

    The minibatch loss is the mean of ``ℓ_i`` over the batch, so the gradient is
    ``K(w - c̄_B)`` and its noise ``K(c̄ - c̄_B)`` does not depend on w, with
    covariance ``C = K C_c K / S`` with replacement, times ``(N - S)/(N - 1)``
    without (:func:`sgdlab.theory.finite_data_noise_cov`; C_c the 1/N covariance
    of the centres). Liu, Ziyin & Ueda (arXiv:2012.03636); Ziyin, Liu, Mori &
    Ueda (arXiv:2102.05375).

    Args:
      curvature: K (scalar, diagonal or symmetric matrix).
      centers: the centres c_i as rows ``(N, d)``; or None to draw ``n_data`` of
        them from N(0, centers_cov) with ``data_seed``.
      batch_size: S.
      mode: ``"with_replacement"``, ``"without_replacement"`` (epochs of random
        permutations) or ``"full"`` (:mod:`sgdlab.data`).
      n_data, centers_cov: for drawn centres.
      exact_cov: recentre and rescale drawn centres so that their mean is exactly
        0 and their 1/N covariance exactly ``centers_cov`` (needs N > d).
      w0, init_scale: start ``w0 + init_scale·N(0, I)`` per seed.
      data_seed: seed of the drawn centres.

    Params: w of shape ``(d,)``. Observables: ``w``, ``w2``, ``w_outer`` of
    ``w - c̄``, and ``excess_loss = ½(w - c̄)ᵀK(w - c̄)``; risk the full-data
    loss ``(1/N) Σ ℓ_i``. ``config`` holds ``centers_cov_empirical`` and the
    resulting ``noise_cov`` C.
    """
    K = _as_matrix("curvature", curvature)
    d = K.shape[0]
    if centers is not None:
        cn = _data_matrix("centers", centers)
        if cn.shape[1] != d:
            fail("centers", cn.shape, f"expected {d} columns to match curvature")
    else:
        if n_data is None or centers_cov is None:
            fail("centers", None, "give the centres, or n_data and centers_cov")
        n = positive_int("n_data", n_data)
        Cc = _as_matrix("centers_cov", centers_cov, d)
        L = _psd_sqrt("centers_cov", Cc)
        rng = np.random.default_rng(positive_int("data_seed", data_seed, minimum=0))
        z = rng.standard_normal((n, d))
        if exact_cov:
            if n <= d:
                fail("n_data", n, f"exact_cov needs more centres than dimensions ({d})")
            z = z - z.mean(axis=0)
            vals, vecs = np.linalg.eigh(z.T @ z / n)
            z = z @ (vecs / np.sqrt(vals)) @ vecs.T
        cn = z @ L.T
    N = cn.shape[0]
    idx = _indexer(N, batch_size, mode)
    S = idx.batch_size
    cbar = cn.mean(axis=0)
    Cc_emp = (cn - cbar).T @ (cn - cbar) / N
    if mode == "full":
        C = np.zeros((d, d))
    elif mode == "without_replacement" and N < 2:
        C = np.zeros((d, d))
    else:
        C = theory.finite_data_noise_cov(K, Cc_emp, S, N, replacement=mode == "with_replacement")
    w0 = np.broadcast_to(np.asarray(w0, dtype=float), (d,)).copy()
    init_scale = finite_float("init_scale", init_scale, low=0.0)

    def init_fn(key):
        return _f(w0) + init_scale * jax.random.normal(key, (d,))

    def loss(w, cb, hp):
        e = w - cb
        return 0.5 * jnp.mean(jnp.sum((e @ _f(K)) * e, axis=-1))

    def data_init(key):
        return _f(cn)

    def batch(data, key, t):
        return idx.batch(data, key, t)

    def risk(w, data, hp):
        return loss(w, data, hp)

    def excess(o: Observation):
        e = o.params - _f(cbar)
        return 0.5 * e @ (_f(K) @ e)

    observables = _vector_observables(cbar)
    observables["excess_loss"] = excess
    source = data_lib.DataSource(init=data_init, batch=batch, shared=True, batch_size=S,
                                 description="quadratic centres " + idx.description)
    return Problem(
        name="finite_quadratic", init=init_fn, loss=loss, data=source, risk=risk,
        observables=observables,
        config={"curvature": K.tolist(), "n_data": N, "batch_size": S, "mode": mode,
                "center_mean": cbar.tolist(), "centers_cov_empirical": Cc_emp.tolist(),
                "noise_cov": C.tolist(), "w0": w0.tolist(), "init_scale": init_scale,
                "data_seed": data_seed if centers is None else None},
    )


def newton_preconditioner(A) -> tuple[tuple[float, ...], ...]:
    """``P = A⁻¹`` for damped Newton: ``sl.Optimizer("sgd", preconditioner=P)`` gives ``Λ = λA⁻¹``.

    For linear regression with x ~ N(0, A) (:func:`linear_regression`) the
    Hessian is A and the Fisher information of the unit-variance Gaussian
    likelihood is ``E[xxᵀ] = A`` too, so natural gradient descent uses the same
    preconditioner (with the Fisher ``A/σ²``, rescale the learning rate by σ²).
    Ziyin, Liu, Mori & Ueda (arXiv:2102.05375); Liu, Ziyin & Ueda (arXiv:2012.03636).

    Args:
      A: a symmetric positive definite matrix (or a scalar / diagonal).

    Returns:
      ``A⁻¹`` as nested tuples (hashable, as :class:`sgdlab.optim.Optimizer` stores it).

    Raises:
      ValueError: A not symmetric positive definite.
    """
    a = _as_matrix("A", A)
    vals, vecs = np.linalg.eigh(a)
    if vals.min() <= 0:
        fail("A", f"eigenvalue {vals.min():.3g}", "must be positive definite")
    inv = (vecs / vals) @ vecs.T
    inv = 0.5 * (inv + inv.T)
    return tuple(map(tuple, inv.tolist()))


POTENTIALS = ("sharp-well", "double-well")
NOISE_KINDS = ("gaussian", "minibatch")


def potential_fns(kind: str | Callable, curvature: float = 1.0):
    """``(U, U')`` of a named 1-D potential, usable on NumPy and JAX arrays alike.

    ``"sharp-well"``: ``U = a w²/2`` (a = ``curvature``); ``"double-well"``:
    ``U = (w² - 1)²/4``. A callable U (JAX-traceable) gets ``U' = jax.grad(U)``
    mapped over its input (returning a NumPy array for NumPy input), ready for
    :func:`sgdlab.theory.mfpt_nystrom`.
    """
    if callable(kind):
        grad = jax.vmap(jax.grad(kind))

        def dU(w):
            if isinstance(w, np.ndarray):
                return np.asarray(grad(jnp.asarray(w).reshape(-1))).reshape(w.shape)
            w = jnp.asarray(w)
            return grad(w.reshape(-1)).reshape(w.shape)
        return kind, dU
    choice("kind", kind, POTENTIALS)
    a = finite_float("curvature", curvature, low=0.0, low_open=True)
    if kind == "sharp-well":
        return (lambda w: 0.5 * a * w * w), (lambda w: a * w)
    return (lambda w: 0.25 * (w * w - 1.0) ** 2), (lambda w: w * w * w - w)


def potential_1d(kind: str | Callable = "double-well", *, curvature: float = 1.0,
                 wall: float = 1.0, threshold: float = 0.0,
                 bounds: tuple[float, float] | None = None, w0: float | None = None,
                 noise_var: float = 0.0, noise: str = "gaussian", n_data: int = 1000,
                 batch_size: int = 1, mode: str = "with_replacement", init_scale: float = 0.0,
                 data_seed: int = 0) -> Problem:
    """SGD in a 1-D potential with an absorbing escape region, for escape-time studies.

    Liu, Ziyin & Ueda (arXiv:2012.03636), escape from a minimum:

    * ``"sharp-well"``: ``U = a w²/2`` (a = ``curvature``), absorbing walls at
      ``|w| ≥ wall`` (non-escaped region ``(-wall, wall)``), start ``w0 = 0``;
      barrier ``a·wall²/2``;
    * ``"double-well"``: ``U = (w² - 1)²/4``, start in the left well ``w0 = -1``,
      escaped once ``w > threshold`` (0, the barrier top, by default; 1 is the right
      well); barrier ``max U`` on ``[-1, threshold]`` minus ``U(-1) = 0``;
    * a callable ``U(w)`` (JAX-traceable): give ``bounds=(lo, hi)`` (either may be
      ±inf) and ``w0``.

    Gradient noise:

    * ``noise="gaussian"``: the minibatch objective is ``U(w) + √noise_var·ξ·w``,
      ξ ~ N(0, 1) fresh each step, so the gradient is ``U'(w) + σξ`` with
      ``σ² = noise_var`` -- the chain of :func:`sgdlab.theory.mfpt_nystrom`. The
      engine's traced ``noise_std`` hyperparameter adds independent N(0,
      noise_std²) noise on top (use either, or both: variances add).
    * ``noise="minibatch"``: a finite data set of ``n_data`` per-example losses
      ``ℓ_i(w) = U(w) + z_i w`` whose empirical loss is exactly U: the z_i are
      standard normal draws (``data_seed``) recentred to mean 0 and rescaled to
      ``(1/N) Σ z_i² = noise_var``. The minibatch gradient is ``U'(w) + z̄_B``, noise
      of variance ``noise_var/S`` with replacement and ``noise_var/S·(N-S)/(N-1)``
      without (``config["gradient_noise_var"]``); not Gaussian.

    Escape is checked after each step: the event ``escaped`` holds when w is
    outside the non-escaped region (``sl.FirstPassage("escaped")``); the same
    convention as :func:`sgdlab.theory.mfpt_nystrom` with ``lo, hi = config["bounds"]``.

    Params: a scalar w (shape ``()``). Observables: ``w``, ``potential`` (U(w));
    risk U(w).

    Raises:
      ValueError: unknown potential or noise names, bad bounds or start.
    """
    if callable(kind):
        if bounds is None or w0 is None:
            fail("bounds", bounds, "a callable potential needs bounds=(lo, hi) and w0")
        name = getattr(kind, "__name__", "callable")
    else:
        choice("kind", kind, POTENTIALS)
        name = kind
    U, _ = potential_fns(kind, curvature)
    choice("noise", noise, NOISE_KINDS)
    noise_var = finite_float("noise_var", noise_var, low=0.0)
    init_scale = finite_float("init_scale", init_scale, low=0.0)
    if callable(kind):
        try:
            lo, hi = (float(v) for v in bounds)
        except (TypeError, ValueError):
            fail("bounds", bounds, "expected a pair (lo, hi) of numbers")
        if math.isnan(lo) or math.isnan(hi) or not lo < hi:
            fail("bounds", bounds, "expected lo < hi (either may be infinite)")
    elif kind == "sharp-well":
        wall = finite_float("wall", wall, low=0.0, low_open=True)
        lo, hi = -wall, wall
        w0 = 0.0 if w0 is None else w0
    else:
        threshold = finite_float("threshold", threshold)
        lo, hi = -math.inf, threshold
        w0 = -1.0 if w0 is None else w0
    w0 = finite_float("w0", w0)
    if not lo < w0 < hi:
        fail("w0", w0, f"the start must lie inside the non-escaped region ({lo}, {hi})")
    if callable(kind):
        barrier = None
    elif kind == "sharp-well":
        barrier = 0.5 * curvature * wall * wall
    else:
        ws = np.linspace(-1.0, threshold, 2001) if threshold > -1 else np.array([-1.0])
        barrier = float(np.max(U(ws)) - U(-1.0))
    if noise == "gaussian":
        grad_var = noise_var
        source = data_lib.online(lambda key, n: jax.random.normal(key, (n,)), 1,
                                 "gradient noise ξ ~ N(0, 1)")
    else:
        n = positive_int("n_data", n_data, minimum=2)
        idx = _indexer(n, batch_size, mode)
        S = idx.batch_size
        z = np.random.default_rng(positive_int("data_seed", data_seed, minimum=0)
                                  ).standard_normal(n)
        z = z - z.mean()
        z = z * math.sqrt(noise_var / np.mean(z * z))
        grad_var = noise_var / S
        if mode == "without_replacement":
            grad_var *= (n - S) / (n - 1)
        elif mode == "full":
            grad_var = 0.0
        source = data_lib.DataSource(init=lambda key: _f(z), batch=idx.batch, shared=True,
                                     batch_size=S, description="linear tilts " + idx.description)
    sigma = math.sqrt(noise_var)

    def init_fn(key):
        return w0 + init_scale * jax.random.normal(key, ())

    def loss(w, b, hp):
        if noise == "gaussian":
            return U(w) + sigma * b[0] * w
        return U(w) + jnp.mean(b) * w

    def escaped(o: Observation):
        return (o.params < lo) | (o.params > hi)

    return Problem(
        name="potential_1d", init=init_fn, loss=loss, data=source,
        risk=lambda w, data, hp: U(w),
        observables={"w": lambda o: o.params, "potential": lambda o: U(o.params)},
        events={"escaped": escaped},
        config={"kind": name, "curvature": curvature, "bounds": [lo, hi], "w0": w0,
                "noise_var": noise_var, "noise": noise, "gradient_noise_var": grad_var,
                "barrier": barrier, "n_data": n_data if noise == "minibatch" else None,
                "batch_size": batch_size if noise == "minibatch" else 1,
                "mode": mode if noise == "minibatch" else "online", "init_scale": init_scale,
                "data_seed": data_seed},
    )
