"""Study 3: the ramp model and a deep ReLU net on a ball indicator."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab import data as data_lib
from sgdlab import losses, models
from sgdlab._validate import choice, fail, finite_float, positive_int
from sgdlab.problems._base import (
    Observation,
    Problem,
    as_float_array,
    indexer,
    reduction_factor,
)

INDICATOR_MODELS = ("ramp", "mlp")
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(128)


def _ramp_shell_moment(a, radius: float, dim: int, power: int):
    """``E|f_a - f°|^power`` for X uniform on ``[-1, 1)^dim`` when the ramp lies in the unit ball.

    The error is ``1 - a(|x|² - r²)`` on the shell ``r² < |x|² < r² + 1/a`` and 0
    elsewhere; in polar coordinates with ``u = a(|x|² - r²)``:
    ``2^{-d} |S^{d-1}| / (2a) ∫_0^1 (1 - u)^p (r² + u/a)^{d/2 - 1} du``
    (128-node Gauss–Legendre). In d = 2 and p = 2 this is ``π/(12a)``.
    """
    u = as_float_array(0.5 * (_GL_NODES + 1.0))
    w = as_float_array(0.5 * _GL_WEIGHTS)
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
    ``l1_error_mc`` (always the network's own output: the mean of ``|f(x) - f°(x)|``
    over the ``n_eval`` evaluation points, a Monte-Carlo quadrature of the L¹ error)
    and ``l1_error_mc_se`` (that quadrature's standard error, ``sd/√n_eval``),
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
        batch_size = indexer(n_data, batch_size, mode).batch_size
    arrays = {"grid_x": grid, "grid_y": grid_y, "a0": np.asarray(a0),
              "init_scale": np.asarray(init_scale)}
    problem = Problem.from_arrays(functools.partial(
        _indicator_target, model=model, dim=dim, r=r, sizes=tuple(sizes) if sizes else None,
        batch_size=batch_size, n_data=n_data, mode=mode, reduction=reduction, init=init,
        bias_scale=bias_scale, n_eval=n_eval), arrays)
    return dataclasses.replace(problem, config={
        "model": model, "dim": dim, "radius": r,
        "sizes": list(sizes) if model == "mlp" else None, "batch_size": batch_size,
        "n_data": n_data, "mode": mode if n_data is not None else "online",
        "reduction": reduction, "a0": a0, "init_scale": init_scale, "init": init,
        "bias_scale": bias_scale, "grid_size": grid_size, "band": band,
        "grid_points": int(grid.shape[0]), "n_eval": n_eval})


def _indicator_target(arrays, *, model: str, dim: int, r: float, sizes, batch_size: int,
                      n_data: int | None, mode: str, reduction: str, init: str,
                      bias_scale: float, n_eval: int) -> Problem:
    """The functions of :func:`indicator_target` around its arrays: the error grid and its
    labels, and the ramp's initial ``a0`` and ``init_scale``."""
    if n_data is not None:
        idx = indexer(n_data, batch_size, mode)
    c = reduction_factor(reduction)

    def target(x):
        return (jnp.sum(x * x, axis=-1) <= r * r).astype(x.dtype)

    def sample(key, n):
        x = jax.random.uniform(key, (n, dim), minval=-1.0, maxval=1.0)
        return x, target(x)

    if model == "ramp":
        def init_fn(key):
            a0, scale = _float(arrays["a0"]), _float(arrays["init_scale"])
            return {"a": a0 * jnp.exp(scale * jax.random.normal(key, (), a0.dtype))}

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
        d = {"eval_x": ex, "eval_y": ey, "grid_x": _float(arrays["grid_x"]),
             "grid_y": _float(arrays["grid_y"])}
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

    def abs_err(o: Observation):
        return jnp.abs(sample_err(o.params, o.data))

    observables = {
        "pointwise_error": lambda o: jnp.max(grid_err(o)),
        "pointwise_mean_error": lambda o: jnp.mean(grid_err(o)),
        "l1_error": l1_error,
        "l1_error_mc": lambda o: jnp.mean(abs_err(o)),
        "l1_error_mc_se": lambda o: jnp.std(abs_err(o)) / jnp.sqrt(n_eval),
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
    )


def _float(x) -> jnp.ndarray:
    """An array (or a traced argument) in the current default float dtype."""
    return jnp.asarray(x, dtype=jnp.result_type(float))
