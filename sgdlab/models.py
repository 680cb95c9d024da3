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
    a given JAX release; ``tests/test_models.py`` checks it.
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
    """
    sizes = check_sizes(sizes)
    choice("init", init, INITS)
    params = []
    keys = jax.random.split(key, 2 * (len(sizes) - 1))
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        scale = {"he": (2.0 / n_in) ** 0.5, "lecun": (1.0 / n_in) ** 0.5, "normal": 1.0}[init]
        w = scale * jax.random.normal(keys[2 * i], (n_in, n_out))
        b = bias_scale * jax.random.normal(keys[2 * i + 1], (n_out,))
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
