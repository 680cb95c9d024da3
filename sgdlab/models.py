"""Networks as pure functions: ``init(key) -> params`` and ``apply(params, x)``.

Parameters are plain pytrees (lists of ``(W, b)`` tuples), so optax, vmap and
checkpointing see ordinary arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from sgdlab._validate import choice, fail


def relu(x: jnp.ndarray) -> jnp.ndarray:
    """ReLU with the generalized derivative ReLU'(0) = 0.

    Hutzenthaler et al. (arXiv:2112.07369) define the SGD step with the
    generalized gradient that takes the derivative of ``max(x, 0)`` at 0 to be 0.
    ``jnp.where(x > 0, x, 0)`` differentiates to exactly that (the ``x > 0``
    branch is not taken at 0), independently of how ``jax.nn.relu`` is defined in
    a given JAX release; ``tests/test_engine.py`` and ``tests/test_problems.py``
    check it in trained networks.
    """
    return jnp.where(x > 0, x, jnp.zeros_like(x))


ACTIVATIONS: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
    "relu": relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
    "identity": lambda x: x,
}

INITS = ("he", "lecun", "normal")


def get_activation(name: str) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """Look an activation up by name (ValueError listing the known ones)."""
    choice("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]


def check_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    """Validate layer sizes ``(d_in, h_1, ..., h_L, d_out)``."""
    sizes = tuple(sizes)
    if len(sizes) < 2:
        fail("sizes", sizes, "need at least an input and an output size")
    for i, s in enumerate(sizes):
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            fail(f"sizes[{i}]", s, "layer widths must be positive integers")
    return sizes


def mlp_init(key: jax.Array, sizes: Sequence[int], init: str = "he",
             bias_scale: float = 0.0) -> list[tuple[jnp.ndarray, jnp.ndarray]]:
    """Initialise a fully connected network.

    Args:
      key: a ``jax.random.key``.
      sizes: ``(d_in, h_1, ..., d_out)``.
      init: ``"he"`` (N(0, 2/fan_in)), ``"lecun"`` (N(0, 1/fan_in)) or ``"normal"`` (N(0, 1)).
      bias_scale: biases ~ N(0, bias_scale²) (0 gives zero biases).

    Returns:
      A list of ``(W, b)`` with ``W`` of shape ``(fan_in, fan_out)``.

    The whole network comes from one normal draw (random-stream version 3): the
    weights of every layer in order, then, when ``bias_scale > 0``, the biases. One
    draw instead of one per array keeps the compiled init program small (a draw is a
    threefry loop plus an inverse error function), and the weights of a seed do not
    depend on ``bias_scale``.
    """
    sizes = check_sizes(sizes)
    choice("init", init, INITS)
    layers = list(zip(sizes[:-1], sizes[1:], strict=True))
    n_weights = sum(n_in * n_out for n_in, n_out in layers)
    n_biases = sum(n_out for _, n_out in layers) if bias_scale else 0
    z = jax.random.normal(key, (n_weights + n_biases,))
    params, at_w, at_b = [], 0, n_weights
    for n_in, n_out in layers:
        scale = {"he": (2.0 / n_in) ** 0.5, "lecun": (1.0 / n_in) ** 0.5, "normal": 1.0}[init]
        w = scale * z[at_w:at_w + n_in * n_out].reshape(n_in, n_out)
        at_w += n_in * n_out
        if bias_scale:
            b = bias_scale * z[at_b:at_b + n_out]
            at_b += n_out
        else:
            b = jnp.zeros((n_out,), z.dtype)
        params.append((w, b))
    return params


def mlp_apply(params, x: jnp.ndarray, activation: str = "relu") -> jnp.ndarray:
    """Apply the network to a batch ``x`` of shape ``(S, d_in)``.

    The activation acts on every hidden layer, not the output. A scalar output
    (``d_out = 1``) is returned with shape ``(S,)``.
    """
    act = get_activation(activation)
    h = x
    for i, (w, b) in enumerate(params):
        h = h @ w + b
        if i < len(params) - 1:
            h = act(h)
    return h[..., 0] if h.shape[-1] == 1 else h


def hidden_preactivation(params, x: jnp.ndarray, layer: int,
                         activation: str = "relu") -> jnp.ndarray:
    """Pre-activations of hidden layer ``layer`` (0-based) for a batch ``x`` of shape (S, d_in)."""
    act = get_activation(activation)
    h = x
    for i, (w, b) in enumerate(params[: layer + 1]):
        h = h @ w + b
        if i < layer:
            h = act(h)
    return h


def kink_bound(sizes: Sequence[int]) -> int:
    """An upper bound on the number of kinks of a scalar-input ReLU network.

    A unit of hidden layer ``l`` is linear between consecutive kinks of the
    layers below, so it crosses zero at most once per such interval:
    ``K_l = K_{l-1} + h_l (K_{l-1} + 1)``, ``K_0 = 0``. One hidden layer gives the
    sum of its width, ``h_1``.
    """
    sizes = check_sizes(sizes)
    k = 0
    for h in sizes[1:-1]:
        k = k + h * (k + 1)
    return k


def relu_breakpoints_1d(params, lo, hi, max_kinks: int | None = None):
    """The sorted kinks of a scalar-input ReLU network on ``[lo, hi]``, layer by layer.

    Starting from the points ``{lo, hi}``, each hidden layer's pre-activations are
    evaluated at the current points; on each interval between consecutive points
    every unit is linear, so a strict sign change locates its zero by linear
    interpolation. The new zeros join the points (sorted). Shapes are static: the
    array after layer ``l`` has ``min(max_kinks, K_l) + 2`` entries (see
    :func:`kink_bound`), padded with ``hi``. jit/vmap compatible.

    Args:
      params: an :func:`mlp_init` network with ``d_in = 1``.
      lo, hi: the interval.
      max_kinks: cap on the number of interior kinks kept (default
        :func:`kink_bound`).

    Returns:
      ``(points, n_kinks, overflow)``: the sorted points (``lo``, the kinks,
      then ``hi`` repeated), the number of kinks found, and whether more than
      ``max_kinks`` existed (then ``points`` is incomplete).
    """
    sizes = (params[0][0].shape[0],) + tuple(w.shape[1] for w, _ in params)
    if sizes[0] != 1:
        fail("params", sizes, "breakpoints need a scalar input (d_in = 1)")
    cap = kink_bound(sizes) if max_kinks is None else int(max_kinks)
    dtype = params[0][0].dtype
    lo, hi = jnp.asarray(lo, dtype), jnp.asarray(hi, dtype)
    pts = jnp.stack([lo, hi])
    kept = jnp.zeros((), jnp.int32)
    overflow = jnp.zeros((), bool)
    bound = 0
    for layer, width in enumerate(sizes[1:-1]):
        z = hidden_preactivation(params, pts[:, None], layer)    # (P, h)
        z0, z1 = z[:-1], z[1:]
        p0, p1 = pts[:-1, None], pts[1:, None]
        cross = z0 * z1 < 0
        frac = z0 / jnp.where(cross, z0 - z1, jnp.ones_like(z0))
        new = jnp.where(cross, p0 + frac * (p1 - p0), hi)
        bound = bound + width * (bound + 1)
        k = min(cap, bound)
        total = kept + jnp.sum(cross, dtype=jnp.int32)
        overflow = overflow | (total > k)
        kept = jnp.minimum(total, k)
        pts = jnp.sort(jnp.concatenate([pts, new.reshape(-1)]))[: k + 2]
    return pts, kept, overflow


def relu_risk_1d(params, target, lo, hi, weight: str = "uniform",
                 max_kinks: int | None = None):
    """Exact ``E[(N(X) - target)²]`` of a scalar-input ReLU network (piecewise linear).

    Between consecutive kinks (:func:`relu_breakpoints_1d`) the error
    ``e(x) = N(x) - target`` is linear, so each piece integrates in closed form:

    * ``weight="uniform"``: X uniform on ``[lo, hi]``; a piece of length ``h``
      with end errors ``e0, e1`` contributes ``h (e0² + e0 e1 + e1²) / 3``;
    * ``weight="gaussian"``: X ~ N(0, 1) restricted to ``[lo, hi]`` (take
      ``±10``: the mass outside is < 2e-23); with ``e(x) = α + βx``,
      ``∫ e² φ = α² m0 + 2αβ m1 + β² m2`` from the moments
      ``m0 = Φ(q) - Φ(p)``, ``m1 = φ(p) - φ(q)``, ``m2 = m0 + pφ(p) - qφ(q)``.

    Returns:
      ``(risk, n_kinks)``; ``risk`` is NaN if the network has more than
      ``max_kinks`` kinks in ``[lo, hi]`` (never silently inexact).
    """
    choice("weight", weight, ("uniform", "gaussian"))
    pts, n_kinks, overflow = relu_breakpoints_1d(params, lo, hi, max_kinks)
    e = mlp_apply(params, pts[:, None], "relu") - target
    e0, e1 = e[:-1], e[1:]
    p, q = pts[:-1], pts[1:]
    h = q - p
    if weight == "uniform":
        risk = jnp.sum(h * (e0 * e0 + e0 * e1 + e1 * e1)) / (3 * (pts[-1] - pts[0]))
    else:
        pos = h > 0
        beta = jnp.where(pos, (e1 - e0) / jnp.where(pos, h, jnp.ones_like(h)), 0.0)
        alpha = e0 - beta * p
        phi_p, phi_q = jax.scipy.stats.norm.pdf(p), jax.scipy.stats.norm.pdf(q)
        m0 = jax.scipy.special.ndtr(q) - jax.scipy.special.ndtr(p)
        m1 = phi_p - phi_q
        m2 = m0 + p * phi_p - q * phi_q
        risk = jnp.sum(jnp.where(pos, alpha**2 * m0 + 2 * alpha * beta * m1 + beta**2 * m2, 0.0))
    return jnp.where(overflow, jnp.nan, risk), n_kinks


def two_layer_apply(W: jnp.ndarray, a: jnp.ndarray, x: jnp.ndarray,
                    activation: str = "relu", scale: float = 1.0) -> jnp.ndarray:
    """``f(x) = scale · Σ_j a_j σ(w_j·x)`` for a batch ``x`` of shape ``(S, d)``.

    ``W`` has shape ``(p, d)`` (one row per hidden unit) and ``a`` shape ``(p,)``.
    Gopalani & Mukherjee (arXiv:2210.11452) use ``scale = 1``; Du et al.
    (arXiv:1810.02054) use ``scale = m^{-1/2}`` with ReLU.
    """
    return scale * (get_activation(activation)(x @ W.T) @ a)


def activation_pattern(W: jnp.ndarray, X: jnp.ndarray) -> jnp.ndarray:
    """``1{w_r·x_i ≥ 0}`` as a boolean ``(p, n)`` array (Du et al.'s convention, ≥)."""
    return (W @ X.T) >= 0


def du_gram(W: jnp.ndarray, X: jnp.ndarray) -> jnp.ndarray:
    """The Gram matrix ``H_ij = (1/m) x_i·x_j Σ_r 1{w_r·x_i ≥ 0, w_r·x_j ≥ 0}``.

    Du, Zhai, Póczos & Singh (arXiv:1810.02054), ``H(k)`` at the weights ``W``
    (shape ``(m, d)``); its infinite-width limit is :func:`sgdlab.theory.du_H_inf`.
    """
    s = activation_pattern(W, X).astype(X.dtype)
    return (X @ X.T) * (s.T @ s) / W.shape[0]


def ramp_apply(a: jnp.ndarray, x: jnp.ndarray, radius: float) -> jnp.ndarray:
    """``f_a(x) = ReLU(1 - ReLU(a(|x|² - r²)))``, the solvable indicator model.

    A ReLU ramp from 1 (inside the ball of radius ``r``) down to 0 at
    ``|x|² = r² + 1/a``; arXiv:2304.08172 (the mechanism of its ball indicator
    construction). ``x`` has shape ``(S, d)``; returns shape ``(S,)``.
    """
    s = jnp.sum(x * x, axis=-1)
    return relu(1.0 - relu(a * (s - radius**2)))
