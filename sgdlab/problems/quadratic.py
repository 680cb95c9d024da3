"""Study 5: finite-data quadratics, the Newton preconditioner, 1-D escape potentials."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab import data as data_lib
from sgdlab import theory
from sgdlab._validate import choice, fail, finite_float, positive_int
from sgdlab.problems._base import (
    Observation,
    Problem,
    as_float_array,
    as_matrix,
    data_matrix,
    indexer,
    psd_sqrt,
    vector_observables,
)

FINITE_MODES = data_lib.MODES + ("independent_subsets",)
"""Minibatch modes of :func:`finite_quadratic`: those of :mod:`sgdlab.data` and one more."""


def random_subset(key, n: int, s: int) -> jnp.ndarray:
    """A uniformly random s-subset of ``{0..n-1}`` as s distinct indices (Floyd's algorithm).

    For j = n-s, ..., n-1 draw t uniform on {0..j} and take t, or j if t is already
    taken: every s-subset is equally likely. s draws and s²/2 comparisons, no sort
    (a vmapped sort of n keys per step is slow on CPU).
    """
    if s > n:
        fail("batch_size", s, f"a subset needs batch_size <= n_data = {n}")
    tops = jnp.arange(n - s, n)
    draws = jax.random.randint(key, (s,), 0, tops + 1)
    chosen = []
    for j in range(s):
        t = draws[j]
        taken = jnp.zeros((), bool)
        for c in chosen:
            taken = taken | (c == t)
        chosen.append(jnp.where(taken, tops[j], t))
    return jnp.stack(chosen)


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
        permutations) or ``"full"`` (:mod:`sgdlab.data`), or
        ``"independent_subsets"``: every step a fresh uniformly random S-subset,
        independent of the other steps -- the setting of the ``(N - S)/(N - 1)``
        formula and of Theorem 1, which assumes noise independent across steps.
        ``"without_replacement"`` has the same per-step covariance C, but its
        batches within an epoch are disjoint and so negatively correlated
        (``Cov = -K C_c K/(N - 1)`` between two of them): its stationary law is
        not Theorem 1's with that C.
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
    K = as_matrix("curvature", curvature)
    d = K.shape[0]
    if centers is not None:
        cn = data_matrix("centers", centers)
        if cn.shape[1] != d:
            fail("centers", cn.shape, f"expected {d} columns to match curvature")
    else:
        if n_data is None or centers_cov is None:
            fail("centers", None, "give the centres, or n_data and centers_cov")
        n = positive_int("n_data", n_data)
        Cc = as_matrix("centers_cov", centers_cov, d)
        L = psd_sqrt("centers_cov", Cc)
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
    choice("mode", mode, FINITE_MODES)
    subsets = mode == "independent_subsets"
    idx = indexer(N, batch_size, "without_replacement" if subsets else mode)
    S = idx.batch_size
    cbar = cn.mean(axis=0)
    Cc_emp = (cn - cbar).T @ (cn - cbar) / N
    if mode == "full":
        C = np.zeros((d, d))
    elif mode in ("without_replacement", "independent_subsets") and N < 2:
        C = np.zeros((d, d))
    else:
        C = theory.finite_data_noise_cov(K, Cc_emp, S, N, replacement=mode == "with_replacement")
    description = (f"quadratic centres (independent_subsets, N={N}, S={S})" if subsets
                   else "quadratic centres " + idx.description)
    w0 = np.broadcast_to(np.asarray(w0, dtype=float), (d,)).copy()
    init_scale = finite_float("init_scale", init_scale, low=0.0)

    def init_fn(key):
        if not init_scale:  # no zero-scale draw: it would cost the init program a threefry
            return as_float_array(w0)
        return as_float_array(w0) + init_scale * jax.random.normal(key, (d,))

    def loss(w, cb, hp):
        e = w - cb
        return 0.5 * jnp.mean(jnp.sum((e @ as_float_array(K)) * e, axis=-1))

    def data_init(key):
        return as_float_array(cn)

    def batch(data, key, t):
        if subsets:
            return data[random_subset(jax.random.fold_in(key, t), N, S)]
        return idx.batch(data, key, t)

    def risk(w, data, hp):
        return loss(w, data, hp)

    def excess(o: Observation):
        e = o.params - as_float_array(cbar)
        return 0.5 * e @ (as_float_array(K) @ e)

    observables = vector_observables(cbar)
    observables["excess_loss"] = excess
    source = data_lib.DataSource(init=data_init, batch=batch, shared=True, batch_size=S,
                                 description=description)
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
    a = as_matrix("A", A)
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
      without (``config["gradient_noise_var"]``); not Gaussian. The problem declares
      the traced hyperparameter ``noise_scale`` (default 1): every tilt is
      multiplied by it, so the per-example variance is ``noise_var·noise_scale²``
      and the gradient-noise variance ``gradient_noise_var·noise_scale²``
      (``config`` and ``data.init`` describe the default scale 1). Sweeping it in
      a Study's grid changes the noise level without a new compiled program.

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
        source = data_lib.normal_noise((1,), "gradient noise ξ ~ N(0, 1)")
    else:
        n = positive_int("n_data", n_data, minimum=2)
        idx = indexer(n, batch_size, mode)
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
        source = data_lib.DataSource(init=lambda key: as_float_array(z), batch=idx.batch,
                                     shared=True,
                                     batch_size=S, description="linear tilts " + idx.description)
    sigma = math.sqrt(noise_var)

    def init_fn(key):
        if not init_scale:  # no zero-scale draw (the same start, bit for bit)
            return as_float_array(w0)
        return w0 + init_scale * jax.random.normal(key, ())

    def loss(w, b, hp):
        if noise == "gaussian":
            return U(w) + sigma * b[0] * w
        scale = hp["noise_scale"] if "noise_scale" in hp else 1.0
        return U(w) + scale * jnp.mean(b) * w

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
        hyperparams={"noise_scale": 1.0} if noise == "minibatch" else {},
    )
