"""An exact sampler of the Gibbs law of a regularized depth-2 net, independent of the engine.

Gopalani & Mukherjee (arXiv:2210.11452) and Shi, Su & Jordan (arXiv:2004.06977):
the noisy SGD ``W ← W − s(∇L̃(W) + ξ)``, ξ ~ N(0, I), has the continuous limit
``dW = −∇L̃ dt + √s dB`` whose stationary law is the Gibbs law
``μ_s ∝ exp(−2L̃/s)``, i.e. temperature ``T = s/2``. This module computes
``E_μ[L̃] − min L̃`` without any code the SGD runs share:

* :class:`TwoLayerObjective` is its own NumPy (float64) implementation of
  ``L̃(W) = (1/2n) Σ_i (y_i − Σ_j a_j σ(w_j·x_i))² + (λ/2)‖W‖²`` with analytic
  gradient and Hessian (activation derivatives written out by hand), evaluated
  for many chains at once;
* :func:`minimize` finds its global minimiser from several starts (L-BFGS-B,
  then Newton on the analytic Hessian);
* :func:`mala` is a Metropolis-adjusted Langevin sampler (exact: the
  Metropolis–Hastings correction removes the discretisation bias of its
  proposal), preconditioned by the Hessian at the minimiser, run as many
  independent chains; the Monte Carlo standard error (MCSE) comes from the
  spread of the chains' time averages, cross-checked by batch means;
* :func:`gibbs_gap` puts them together.

The SGD chain itself is not the Gibbs law: on a quadratic with curvature h its
stationary variance is ``s/(h(2 − sh))`` against Gibbs' ``s/(2h)``, so its
stationary gap exceeds the Gibbs gap by the relative ``sh/2 + O(s²)`` per
direction (:func:`discretization_bias`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from sgdlab.theory._checks import finite_array, fmt

ACTIVATION_NAMES = ("sigmoid", "tanh", "softplus")


def activation_derivatives(name: str, z, order: int = 2, xp=np) -> tuple:
    """σ(z), σ'(z) and (if ``order`` = 2) σ''(z), written out by hand.

    sigmoid σ = (1 + tanh(z/2))/2: σ' = σ(1 − σ), σ'' = σ'(1 − 2σ);
    tanh: σ' = 1 − σ², σ'' = −2σσ'; softplus log(1 + eᶻ): σ' = sigmoid(z),
    σ'' = sigmoid(z)(1 − sigmoid(z)). ``xp`` is ``numpy`` or ``jax.numpy``.
    """
    if name == "sigmoid":
        f = 0.5 * (1.0 + xp.tanh(0.5 * z))
        d1 = f * (1.0 - f)
        d2 = d1 * (1.0 - 2.0 * f) if order >= 2 else None
    elif name == "tanh":
        f = xp.tanh(z)
        d1 = 1.0 - f * f
        d2 = -2.0 * f * d1 if order >= 2 else None
    elif name == "softplus":
        f = xp.logaddexp(0.0, z)
        d1 = 0.5 * (1.0 + xp.tanh(0.5 * z))
        d2 = d1 * (1.0 - d1) if order >= 2 else None
    else:
        raise ValueError(f"activation={name!r} is invalid: expected one of "
                         + ", ".join(ACTIVATION_NAMES))
    return (f, d1, d2) if order >= 2 else (f, d1)


def loss_and_grad(X, y, a, reg, activation: str, W, xp=np):
    """L̃ and ∇L̃ at ``W`` (``(..., p, d)``), by hand: the formulas shared by both backends.

    ``∂L̃/∂w_j = −(1/n) Σ_i r_i a_j σ'(w_j·x_i) x_i + λ w_j`` with ``r = y − f``.
    """
    Z = W @ X.T                                           # (..., p, n)
    f, d1 = activation_derivatives(activation, Z, order=1, xp=xp)
    r = y - a @ f                                         # (..., n)
    value = 0.5 * xp.mean(r * r, axis=-1) + 0.5 * reg * xp.sum(W * W, axis=(-2, -1))
    coef = d1 * a[:, None] * r[..., None, :]              # (..., p, n)
    grad = -(coef @ X) / X.shape[0] + reg * W
    return value, grad


class TwoLayerObjective:
    """``L̃(W) = (1/2n) Σ_i (y_i − Σ_j a_j σ(w_j·x_i))² + (λ/2)‖W‖_F²`` in NumPy float64.

    Gopalani & Mukherjee, arXiv:2210.11452. ``W`` has shape ``(p, d)``; the
    methods accept a leading batch of chains ``(..., p, d)``.

    Args:
      X: inputs, ``(n, d)``.
      y: labels, ``(n,)``.
      a: fixed output weights, ``(p,)``.
      reg: λ ≥ 0.
      activation: ``sigmoid``, ``tanh`` or ``softplus``.

    Raises:
      ValueError: non-finite data, mismatched shapes, a negative λ or an unknown
        activation.
    """

    def __init__(self, X: Any, y: Any, a: Any, reg: float, activation: str):
        X = finite_array(X, "X")
        y = finite_array(y, "y").reshape(-1)
        a = finite_array(a, "a").reshape(-1)
        if X.ndim != 2 or X.shape[0] != y.size:
            raise ValueError(f"X must have shape (n, d) with n = len(y) = {y.size}, got "
                             f"{X.shape}")
        if activation not in ACTIVATION_NAMES:
            raise ValueError(f"activation={activation!r} is invalid: expected one of "
                             + ", ".join(ACTIVATION_NAMES))
        reg = float(reg)
        if not (math.isfinite(reg) and reg >= 0):
            raise ValueError(f"reg={reg!r} is invalid: expected a finite number ≥ 0")
        self.X, self.y, self.a, self.reg, self.activation = X, y, a, reg, activation
        self.n, self.d = X.shape
        self.p = a.size
        self.shape = (self.p, self.d)
        self.n_params = self.p * self.d

    def _forward(self, W):
        W = np.asarray(W, dtype=np.float64)
        if W.shape[-2:] != self.shape:
            raise ValueError(f"W must have shape (..., {self.p}, {self.d}), got {W.shape}")
        return W, W @ self.X.T                            # (..., p, n)

    def value(self, W: Any) -> np.ndarray:
        """L̃ at ``W`` (shape ``(..., p, d)`` → ``(...)``)."""
        return self.value_and_grad(W)[0]

    def value_and_grad(self, W: Any) -> tuple[np.ndarray, np.ndarray]:
        """L̃ and ∇L̃ (:func:`loss_and_grad`)."""
        W, _ = self._forward(W)
        return loss_and_grad(self.X, self.y, self.a, self.reg, self.activation, W)

    def hessian(self, W: Any) -> np.ndarray:
        """The ``(pd, pd)`` Hessian at one ``W`` (row-major flattening of ``(p, d)``).

        ``(1/n) Σ_i [J_i J_iᵀ − r_i ∇²f_i] + λI`` with ``J_i = ∂f_i/∂W`` (entries
        ``a_j σ'(w_j·x_i) x_i``) and ``∇²f_i`` block diagonal with blocks
        ``a_j σ''(w_j·x_i) x_i x_iᵀ``.
        """
        W, Z = self._forward(W)
        if W.ndim != 2:
            raise ValueError(f"hessian takes one W of shape {self.shape}, got {W.shape}")
        f, d1, d2 = activation_derivatives(self.activation, Z)
        r = self.y - self.a @ f                           # (n,)
        J = (self.a[:, None] * d1)[:, :, None] * self.X[None, :, :]   # (p, n, d)
        J = J.transpose(1, 0, 2).reshape(self.n, -1)      # (n, pd)
        H = J.T @ J / self.n
        blocks = -(self.a[:, None] * d2 * r[None, :])     # (p, n)
        for j in range(self.p):
            sl = slice(j * self.d, (j + 1) * self.d)
            H[sl, sl] += (self.X.T * blocks[j]) @ self.X / self.n
        H[np.diag_indices_from(H)] += self.reg
        return 0.5 * (H + H.T)


class GibbsMinimum(NamedTuple):
    """The global minimiser found by :func:`minimize`.

    Attributes:
      w_min: ``(p, d)`` float64.
      loss_min: L̃ there.
      hessian_eigs: ascending Hessian eigenvalues there.
      hessian: the Hessian itself.
      n_local: number of distinct local minima the starts reached.
    """

    w_min: np.ndarray
    loss_min: float
    hessian_eigs: np.ndarray
    hessian: np.ndarray
    n_local: int


def minimize(obj: TwoLayerObjective, starts: Any = (), *, n_random: int = 8,
             seed: int = 0, grad_tol: float = 1e-9) -> GibbsMinimum:
    """The lowest minimiser of L̃ reached from ``W = 0``, the given starts and random ones.

    Each start runs SciPy's L-BFGS-B on the analytic gradient, then Newton steps
    on the analytic Hessian (accepted while the gradient norm falls); a start
    counts when it ends at gradient norm ≤ ``grad_tol`` with a positive definite
    Hessian. Random starts are N(0, 1) entries.

    Raises:
      RuntimeError: no start reached a point with gradient norm ≤ ``grad_tol``.
    """
    rng = np.random.default_rng(seed)
    pts = [np.zeros(obj.shape)] + [np.asarray(s, dtype=np.float64).reshape(obj.shape)
                                   for s in starts]
    pts += [rng.standard_normal(obj.shape) for _ in range(n_random)]

    def fun(v):
        val, g = obj.value_and_grad(v.reshape(obj.shape))
        return float(val), g.reshape(-1)

    def hess(v):
        return obj.hessian(v.reshape(obj.shape))

    import scipy.optimize  # here: it is a quarter second of ``import sgdlab``

    found = []
    for w0 in pts:
        res = scipy.optimize.minimize(fun, w0.reshape(-1), jac=True, method="L-BFGS-B",
                                      options={"gtol": 1e-10, "ftol": 1e-15, "maxiter": 5000})
        v = res.x
        val, g = fun(v)
        for _ in range(30):                               # Newton polish
            if np.linalg.norm(g) <= grad_tol * 1e-3:
                break
            try:
                v_new = v - np.linalg.solve(hess(v), g)
            except np.linalg.LinAlgError:
                break
            val_new, g_new = fun(v_new)
            if not np.linalg.norm(g_new) < np.linalg.norm(g):
                break
            v, val, g = v_new, val_new, g_new
        if np.linalg.norm(g) <= grad_tol and np.linalg.eigvalsh(hess(v))[0] > 0:
            found.append((val, v))
    if not found:
        raise RuntimeError(f"no minimiser found: no start reached gradient norm ≤ "
                           f"{fmt(grad_tol)} with a positive definite Hessian")
    found.sort(key=lambda t: t[0])
    distinct = []
    for val, v in found:
        if all(np.linalg.norm(v - u) > 1e-6 * (1 + np.linalg.norm(u)) for _, u in distinct):
            distinct.append((val, v))
    val, v = distinct[0]
    H = hess(v)
    return GibbsMinimum(v.reshape(obj.shape), val, np.linalg.eigvalsh(H), H, len(distinct))


class GibbsSample(NamedTuple):
    """Result of :func:`mala`.

    Attributes:
      mean_loss: E_μ[L̃] (average over chains of each chain's time average).
      mcse: its Monte Carlo standard error (across independent chains).
      batch_means_ratio: across-chain SE / pooled batch-means SE (≈ 1 when the
        chains are stationary and the batches long).
      acceptance: mean Metropolis acceptance rate after the warm-up.
      step: the final proposal step ε (whitened coordinates).
      chains, steps, warmup: sizes.
      min_loss_seen: the lowest L̃ any chain visited.
      argmin_seen: where (``(p, d)``).
    """

    mean_loss: float
    mcse: float
    batch_means_ratio: float
    acceptance: float
    step: float
    chains: int
    steps: int
    warmup: int
    min_loss_seen: float
    argmin_seen: np.ndarray


def _mala_program(activation: str, chains: int, warmup: int, per_batch: int, n_batches: int):
    """The compiled, temperature-vmapped sampler for one static configuration."""
    import jax
    import jax.numpy as jnp

    total = warmup + per_batch * n_batches

    def run(key, X, y, a, reg, c, A, T, target_accept):
        D = A.shape[0]
        p, d = a.shape[0], X.shape[1]

        def energy(z):
            w = (c + z @ A.T).reshape(chains, p, d)
            u, g = loss_and_grad(X, y, a, reg, activation, w, xp=jnp)
            return u, u / T, (g.reshape(chains, D) @ A) / T

        def step(carry, i):
            # iteration 0 draws the start from N(0, T·I) and always accepts it, so the
            # energy of the start comes from the same compiled code as every proposal's;
            # iteration i ≥ 1 is MALA step t = i - 1
            z, u, v, gv, log_eps, sums, acc, best_u, best_z = carry
            # one draw per iteration: D uniforms become the proposal's normals (√2·erf⁻¹ of a
            # uniform on (−1, 1), jax.random.normal's own transform) and the last one is the
            # acceptance's uniform: two hash call sites (the fold_in and the draw), not four
            # (a fold_in, a split and two draws)
            uni = jax.random.uniform(jax.random.fold_in(key, i), (chains, D + 1), X.dtype)
            eps = jnp.exp(log_eps)
            xi = math.sqrt(2.0) * jax.lax.erf_inv(
                jnp.maximum(2.0 * uni[:, :D] - 1.0, np.nextafter(-1.0, 0.0)))
            start = i == 0
            z_new = jnp.where(start, jnp.sqrt(T) * xi, z - 0.5 * eps * eps * gv + eps * xi)
            u_new, v_new, gv_new = energy(z_new)
            # log q(z|z') − log q(z'|z), both from the displacements: the forward one is ε·ξ
            # (read from z', so XLA does not compute ξ's erf⁻¹ a second time for the sum)
            fwd = z_new - z + 0.5 * eps * eps * gv
            bwd = z - z_new + 0.5 * eps * eps * gv_new
            log_ratio = v - v_new - (jnp.sum(bwd * bwd, 1) - jnp.sum(fwd * fwd, 1)) \
                / (2 * eps * eps)
            log_ratio = jnp.where(jnp.isfinite(log_ratio), log_ratio, -jnp.inf)
            accept = start | (jnp.log(uni[:, D]) < log_ratio)
            z = jnp.where(accept[:, None], z_new, z)
            u = jnp.where(accept, u_new, u)
            v = jnp.where(accept, v_new, v)
            gv = jnp.where(accept[:, None], gv_new, gv)
            rate = jnp.mean(jnp.exp(jnp.minimum(log_ratio, 0.0)))
            t = i - 1
            warm = t < warmup
            log_eps = log_eps + jnp.where(warm & ~start, 2.0 * (rate - target_accept)
                                          / jnp.sqrt(jnp.maximum(t + 1.0, 1.0)), 0.0)
            k = jnp.clip((t - warmup) // per_batch, 0, n_batches - 1)
            sums = sums.at[k].add(jnp.where(warm, 0.0, u))
            acc = acc + jnp.where(warm, 0.0, rate)
            j = jnp.argmin(u)
            better = u[j] < best_u
            return (z, u, v, gv, log_eps, sums, acc, jnp.where(better, u[j], best_u),
                    jnp.where(better, z[j], best_z)), None

        zeros = jnp.zeros((chains, D), X.dtype)
        carry = (zeros, zeros[:, 0], zeros[:, 0], zeros,
                 jnp.log(jnp.asarray(D, X.dtype) ** (-1.0 / 6.0)),
                 jnp.zeros((n_batches, chains), X.dtype), jnp.zeros((), X.dtype),
                 jnp.asarray(jnp.inf, X.dtype), zeros[0])
        carry, _ = jax.lax.scan(step, carry, jnp.arange(total + 1))
        _, _, _, _, log_eps, sums, acc, best_u, best_z = carry
        return sums / per_batch, acc / (per_batch * n_batches), jnp.exp(log_eps), best_u, \
            c + A @ best_z

    per_temperature = jax.vmap(run, in_axes=(0, None, None, None, None, None, None, 0, None))

    def program(seed, X, y, a, reg, c, A, Ts, target_accept):
        # temperature i's key, derived inside the program: run eagerly, the derivation
        # compiled six one-op programs of its own
        keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(
            jnp.arange(Ts.shape[0]))
        return per_temperature(keys, X, y, a, reg, c, A, Ts, target_accept)
    return jax.jit(program)


_PROGRAMS: dict = {}


def mala(obj: TwoLayerObjective, temperatures: Any, center: np.ndarray, hessian: np.ndarray,
         *, chains: int = 256, steps: int = 2000, warmup: int = 500, seed: int = 0,
         target_accept: float = 0.6, n_batches: int = 10) -> list[GibbsSample]:
    """Metropolis-adjusted Langevin sampling of ``μ_T ∝ exp(−L̃/T)``, many independent chains.

    Whitened coordinates ``W = center + A z`` with ``A Aᵀ = H⁻¹`` (H the given
    Hessian, eigenvalues made positive and floored at 1 % of the largest): the
    target of ``z`` is then close to N(0, T·I). Proposal
    ``z' = z − (ε²/2)∇V(z) + εξ`` with ``V = L̃/T``, accepted with probability
    ``min(1, exp(V(z) − V(z') + log q(z|z') − log q(z'|z)))``: the chain's law is
    exactly μ_T, whatever ε. Chains start from N(0, T·I) in z (the Laplace law);
    during ``warmup`` ε is adapted towards the acceptance rate ``target_accept``
    (Robbins–Monro on log ε), then frozen; the ``steps`` after it are averaged.
    Roberts & Tweedie, Bernoulli 2 (1996). The loss and its gradient are
    :func:`loss_and_grad` (hand-written formulas), run as one JAX ``lax.scan`` in
    float64 for every temperature at once (vmapped); nothing is shared with the
    SGD engine.

    Args:
      obj: the objective (its data, a, λ and activation are used).
      temperatures: T > 0 (a scalar or a 1-D list; one independent run each).
      center, hessian: the minimiser and the Hessian there (the preconditioner).
      chains, steps, warmup: sizes; steps are split into ``n_batches`` batches.
      seed: the sampler's seed (temperature i uses ``fold_in(key(seed), i)``).

    Returns:
      One :class:`GibbsSample` per temperature.
    """
    import jax

    Ts = np.atleast_1d(np.asarray(temperatures, dtype=np.float64))
    if Ts.ndim != 1 or not np.all(np.isfinite(Ts)) or np.any(Ts <= 0):
        raise ValueError(f"temperatures={temperatures!r} is invalid: expected numbers > 0")
    for name, val, lo in (("chains", chains, 2), ("warmup", warmup, 0),
                          ("n_batches", n_batches, 2), ("steps", steps, n_batches)):
        if isinstance(val, bool) or not isinstance(val, int | np.integer) or val < lo:
            raise ValueError(f"{name}={val!r} is invalid: expected an integer ≥ {lo}")
    h, V = np.linalg.eigh(0.5 * (hessian + hessian.T))
    h = np.abs(h)
    h = np.maximum(h, 1e-2 * np.max(h))
    A = V / np.sqrt(h)                                    # A Aᵀ = H⁻¹
    per_batch = steps // n_batches
    static = (obj.activation, int(chains), int(warmup), int(per_batch), int(n_batches))
    if static not in _PROGRAMS:
        _PROGRAMS[static] = _mala_program(*static)
    with jax.enable_x64(True):
        f64 = lambda x: np.asarray(x, dtype=np.float64)  # noqa: E731
        out = _PROGRAMS[static](np.int64(seed), f64(obj.X), f64(obj.y), f64(obj.a), f64(obj.reg),
                                f64(np.asarray(center).reshape(-1)), f64(A), f64(Ts),
                                f64(target_accept))
        batch_means, acc, eps, best_u, best_w = (np.asarray(o, dtype=np.float64) for o in out)
    samples = []
    for i in range(Ts.size):
        bm = batch_means[i]                               # (n_batches, chains)
        chain_means = bm.mean(axis=0)
        mcse = float(chain_means.std(ddof=1) / math.sqrt(chains))
        within = float(bm.var(axis=0, ddof=1).mean() / n_batches)  # Var of one chain mean
        bm_se = math.sqrt(within / chains) if within > 0 else float("nan")
        samples.append(GibbsSample(
            float(chain_means.mean()), mcse, mcse / bm_se if bm_se > 0 else float("nan"),
            float(acc[i]), float(eps[i]), int(chains), per_batch * n_batches, int(warmup),
            float(best_u[i]), best_w[i].reshape(obj.shape)))
    return samples


class GibbsGap(NamedTuple):
    """``E_μ[L̃] − min L̃`` under ``μ ∝ exp(−2L̃/s)`` (:func:`gibbs_gap`).

    Attributes:
      gap, mcse: the gap and its Monte Carlo standard error.
      laplace: the Laplace value D·s/4.
      sample: the sampler's :class:`GibbsSample`.
      minimum: the minimum the gap is measured from (lower than the one given
        when the sampler found a lower basin).
    """

    gap: float
    mcse: float
    laplace: float
    sample: GibbsSample
    minimum: GibbsMinimum


def gibbs_gap(obj: TwoLayerObjective, step_sizes: Any, minimum: GibbsMinimum,
              **mala_kw) -> list[GibbsGap]:
    """The Gibbs law's stationary gap at each step size ``s`` (temperature ``s/2``), with MCSE.

    ``E_μ[L̃] − min L̃`` for ``μ ∝ exp(−2L̃/s)``, from :func:`mala` (keywords are
    passed on). When a chain visits a point lower than ``minimum`` (the minimum
    was not global), L̃ is minimised again from that point and the sampling is
    repeated once around the new minimum. The Laplace value ``D s/4`` is returned
    beside each gap.

    Raises:
      RuntimeError: the chains still find lower points after the second search.
    """
    ss = np.atleast_1d(np.asarray(step_sizes, dtype=np.float64))
    for attempt in range(2):
        samples = mala(obj, ss / 2, minimum.w_min, minimum.hessian, **mala_kw)
        tol = 1e-9 * max(1.0, abs(minimum.loss_min))
        lowest = min(samples, key=lambda smp: smp.min_loss_seen)
        if lowest.min_loss_seen >= minimum.loss_min - tol:
            break
        if attempt == 1:
            raise RuntimeError(f"the sampler visited L̃ = {fmt(lowest.min_loss_seen)} below "
                               f"the minimum {fmt(minimum.loss_min)} twice: the minimiser "
                               "search is not finding the global minimum")
        minimum = minimize(obj, starts=[minimum.w_min, lowest.argmin_seen], n_random=0)
    return [GibbsGap(smp.mean_loss - minimum.loss_min, smp.mcse, obj.n_params * float(s) / 4,
                     smp, minimum) for s, smp in zip(ss, samples, strict=True)]


def discretization_bias(hessian_eigs: Any, s: float) -> float:
    """SGD's stationary gap minus the Gibbs gap for a quadratic with these curvatures.

    Per direction the chain gives ``(s/4)/(1 − sh/2)`` and Gibbs ``s/4``, so the
    difference is ``Σ_i (s/4)(sh_i/2)/(1 − sh_i/2)`` (relative ``sh_i/2 + O(s²)``).
    """
    h = finite_array(hessian_eigs, "hessian_eigs").reshape(-1)
    s = float(s)
    x = s * h / 2
    if np.any(x >= 1) or np.any(h <= 0):
        raise ValueError(f"s={fmt(s)} is invalid for these curvatures: need 0 < s·h_i < 2 "
                         f"(s·h_max = {fmt(s * float(np.max(h)))})")
    return float(np.sum(s / 4 * x / (1 - x)))
