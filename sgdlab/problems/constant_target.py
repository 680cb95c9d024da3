"""Study 1: deep ReLU nets on a constant target (exact 1-D risk, the dead network)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab import data as data_lib
from sgdlab import losses, models
from sgdlab._validate import choice, fail, finite_float, positive_int
from sgdlab.problems._base import Observation, Problem, reduction_factor
from sgdlab.problems.generic import INPUTS

EVAL_SAMPLES = ("shared", "per_seed", "none")
"""Where the evaluation sample comes from: once per study, once per seed, or none (d = 1)."""
EVAL_TAG = 0x7FFFFFFF
"""A per-seed evaluation sample comes from ``fold_in(data_key, EVAL_TAG)``; no step uses it."""


def constant_target(sizes: Sequence[int], *, target_value: float = 0.0, inputs: str = "uniform",
                    box: tuple[float, float] = (0.0, 1.0), batch_size: int = 1,
                    reduction: str = "mean", init: str = "he", bias_scale: float = 0.0,
                    output_bias: float | None = None, dead: bool = False,
                    dead_margin: float = 1.0, n_eval: int = 16384,
                    max_kinks: int | None = None, eval_sample: str | None = None) -> Problem:
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
    * ``d > 1``: the mean over a fixed evaluation sample of ``n_eval`` inputs; its
      standard error ``std(e²)/√n_eval`` is the ``risk_se`` observable. With
      ``eval_sample="shared"`` (the default for d > 1) the sample is drawn once per
      study, so its error is common to all members (a bias of the ensemble mean);
      with ``"per_seed"`` every seed draws its own, so the errors of different
      seeds are independent and the ensemble's Monte Carlo error already counts
      them.

    In d = 1 an evaluation sample can be drawn as well (``eval_sample="shared"`` or
    ``"per_seed"``; default ``"none"``): ``risk`` stays exact, and the sample's
    estimate and its standard error are the ``risk_sample`` and ``risk_sample_se``
    observables, so the estimator used for d > 1 can be checked against the exact
    integral (for d > 1 those two observables equal ``risk`` and ``risk_se``).

    The dead network (``dead=True``): every first-layer bias is set to
    ``-(margin + Σ_i |W_ij| max(|low|, |high|))`` and every deeper hidden bias to
    ``-margin``, so each hidden unit is inactive on the whole box and stays so;
    only the output bias c moves, ``c_n - ξ = Π_k (1 - 2γ_k)(c_0 - ξ)``
    (:func:`sgdlab.theory.dead_network_risk_schedule`, for ``reduction="mean"``).

    Args:
      sizes: ``(d, h_1, ..., h_L, 1)``.
      target_value: ξ; also a declared hyperparameter of the problem, so a Study's grid
        can sweep it (``{"learning_rate": ..., "target_value": [0.0, 0.5]}``), traced:
        one compiled program for the whole sweep.
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
      eval_sample: ``"shared"``, ``"per_seed"`` or ``"none"`` (d = 1 only); default
        ``"shared"`` for d > 1 and ``"none"`` for d = 1.

    Params: ``[(W_1, b_1), ..., (W_{L+1}, b_{L+1})]``, ``W_l`` of shape ``(fan_in, fan_out)``.
    Observables: ``risk_se`` (0 where ``risk`` is exact), ``output_bias`` (c), for
    d = 1 ``n_kinks``, and with an evaluation sample ``risk_sample`` and
    ``risk_sample_se``.

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
    if eval_sample is None:
        eval_sample = "none" if exact else "shared"
    choice("eval_sample", eval_sample, EVAL_SAMPLES)
    if eval_sample == "none" and not exact:
        fail("eval_sample", eval_sample, "d > 1 needs an evaluation sample: use 'shared' or "
             "'per_seed'")
    has_sample = eval_sample != "none"
    reach = max(abs(low), abs(high))
    c = reduction_factor(reduction)
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

    def xi(hp):  # the target: a declared hyperparameter, so a grid can sweep it (traced)
        return hp["target_value"] if "target_value" in hp else target_value

    def loss(params, x, hp):
        return losses.squared_error(apply(params, x), xi(hp), reduction)

    def data_init(key):
        if not has_sample:
            return None
        if eval_sample == "per_seed":   # the seed's data key; its batches use fold_in(key, t)
            key = jax.random.fold_in(key, EVAL_TAG)
        return {"eval_x": sample_x(key, n_eval)}

    def batch(data, key, t):
        return sample_x(jax.random.fold_in(key, t), batch_size)

    def exact_risk(params, hp):
        return models.relu_risk_1d(params, xi(hp), lo, hi, weight=inputs, max_kinks=max_kinks)

    def sq_err(params, data, hp):
        return (apply(params, data["eval_x"]) - xi(hp)) ** 2

    def risk(params, data, hp):
        if exact:
            return c * exact_risk(params, hp)[0]
        return c * jnp.mean(sq_err(params, data, hp))

    def sample_risk(o: Observation):
        return c * jnp.mean(sq_err(o.params, o.data, o.hp))

    def sample_se(o: Observation):
        e = c * sq_err(o.params, o.data, o.hp)
        return jnp.std(e) / jnp.sqrt(e.shape[0])

    def risk_se(o: Observation):
        if exact:
            return jnp.zeros((), o.params[0][0].dtype)
        return sample_se(o)

    observables = {"risk_se": risk_se, "output_bias": lambda o: o.params[-1][1][0]}
    if has_sample:
        observables["risk_sample"] = sample_risk
        observables["risk_sample_se"] = sample_se
    if exact:
        observables["n_kinks"] = lambda o: exact_risk(o.params, o.hp)[1].astype(
            o.params[0][0].dtype)
    source = data_lib.DataSource(init=data_init, batch=batch, shared=eval_sample != "per_seed",
                                 batch_size=batch_size,
                                 description=f"online {inputs} inputs, constant target")
    return Problem(
        name="constant_target", init=init_fn, loss=loss, data=source, risk=risk, apply=apply,
        observables=observables, hyperparams={"target_value": target_value},
        config={"sizes": list(sizes), "target_value": target_value, "inputs": inputs,
                "box": [low, high], "batch_size": batch_size, "reduction": reduction,
                "init": init, "bias_scale": bias_scale, "output_bias": output_bias,
                "dead": bool(dead), "dead_margin": dead_margin, "n_eval": n_eval,
                "max_kinks": max_kinks, "risk": "exact piecewise-linear" if exact
                else "evaluation sample", "eval_sample": eval_sample},
    )
