"""Optimizers from optax with every swept scalar a traced array.

An :class:`Optimizer` is static structure (which algorithm, which schedule); its
numbers -- learning rate, momentum, schedule parameters, weight decay -- arrive at
run time in the hyperparameter dict ``hp`` as (possibly vmapped) JAX arrays, and
:meth:`Optimizer.build` turns them into an ``optax.GradientTransformation`` inside
the traced program. Changing their values never recompiles.

Conventions (Liu, Ziyin & Ueda 2021, the optax/PyTorch form): heavy-ball momentum
is ``m_t = μ m_{t-1} + g_t; w_t = w_{t-1} - λ m_t``; Nesterov is optax's
``nesterov=True`` form of the same. The power schedule is
``γ_n = γ0 / (n + n0)^α`` for the n-th update (n = 1, 2, ...): α = 0 is constant,
½ is 1/√n, 1 is 1/n (non-summable), 2 is 1/n² (summable); Hutzenthaler et al.
(arXiv:2112.07369).

Hyperparameter names (keys of ``hp``):

==================  =========================================================
``learning_rate``   λ, for ``schedule="constant"``
``gamma0, alpha``   for ``schedule="power"``; ``n0`` optional (default 0)
``momentum``        μ, for ``"momentum"`` and ``"nesterov"``
``b1, b2, eps``     Adam (defaults 0.9, 0.999, 1e-8)
``weight_decay``    optional: adds ``wd · w`` to the gradient (L2)
``noise_std``       optional: the engine adds ``noise_std · ξ``, ξ ~ N(0, I), to
                    every gradient (Shi-Su-Jordan "noisy SGD" when combined with sgd)
==================  =========================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sgdlab._validate import choice, fail

NAMES = ("sgd", "momentum", "nesterov", "adam")
SCHEDULES = ("constant", "power")

_REQUIRED = {
    "sgd": (),
    "momentum": ("momentum",),
    "nesterov": ("momentum",),
    "adam": (),
}
_DEFAULTS = {"adam": {"b1": 0.9, "b2": 0.999, "eps": 1e-8}}
OPTIONAL = ("weight_decay", "noise_std")
# Range checks applied when a study is built: (low, high, open-low).
RANGES = {
    "learning_rate": (0.0, float("inf"), True),
    "gamma0": (0.0, float("inf"), True),
    "alpha": (0.0, float("inf"), False),
    "n0": (0.0, float("inf"), False),
    "momentum": (0.0, 1.0, False),
    "b1": (0.0, 1.0, False),
    "b2": (0.0, 1.0, False),
    "eps": (0.0, float("inf"), True),
    "weight_decay": (0.0, float("inf"), False),
    "noise_std": (0.0, float("inf"), False),
}


@dataclass(frozen=True)
class Optimizer:
    """Static description of an optimizer; numbers come from ``hp`` at run time.

    Args:
      name: ``"sgd"``, ``"momentum"`` (heavy ball), ``"nesterov"`` or ``"adam"``.
      schedule: ``"constant"`` (uses ``learning_rate``) or ``"power"``
        (``γ0/(n+n0)^α``, uses ``gamma0``, ``alpha``, ``n0``).
      preconditioner: a fixed matrix P applied to the gradient of vector
        parameters before the rest of the update, so the matrix learning rate is
        ``Λ = λP`` (damped Newton: ``P = A⁻¹``; natural gradient: ``P = F⁻¹``;
        Liu, Ziyin & Ueda 2021, Sec. 5).
    """

    name: str = "sgd"
    schedule: str = "constant"
    preconditioner: tuple[tuple[float, ...], ...] | None = None

    def __post_init__(self):
        choice("optimizer", self.name, NAMES)
        choice("schedule", self.schedule, SCHEDULES)
        if self.preconditioner is not None:
            p = np.asarray(self.preconditioner, dtype=float)
            if p.ndim != 2 or p.shape[0] != p.shape[1] or not np.all(np.isfinite(p)):
                fail("preconditioner", np.shape(self.preconditioner),
                     "expected a finite square matrix (nested tuples)")
            object.__setattr__(self, "preconditioner", tuple(map(tuple, p.tolist())))

    @property
    def required(self) -> tuple[str, ...]:
        """Hyperparameters the study must provide."""
        lr = ("learning_rate",) if self.schedule == "constant" else ("gamma0", "alpha")
        return lr + _REQUIRED[self.name]

    @property
    def defaults(self) -> dict[str, float]:
        """Hyperparameters with a default value, used when not given."""
        d = dict(_DEFAULTS.get(self.name, {}))
        if self.schedule == "power":
            d["n0"] = 0.0
        return d

    @property
    def accepted(self) -> tuple[str, ...]:
        """Every hyperparameter name this optimizer reads."""
        return self.required + tuple(self.defaults) + OPTIONAL

    def learning_rate(self, hp):
        """The step size: a scalar, or a schedule ``count -> γ`` (count = updates so far)."""
        if self.schedule == "constant":
            return hp["learning_rate"]
        gamma0, alpha, n0 = hp["gamma0"], hp["alpha"], hp["n0"]
        return lambda count: gamma0 / (count + 1 + n0) ** alpha

    def build(self, hp) -> optax.GradientTransformation:
        """The optax transformation for one member's hyperparameters ``hp``."""
        lr = self.learning_rate(hp)
        if self.name == "sgd":
            tx = optax.sgd(lr)
        elif self.name in ("momentum", "nesterov"):
            tx = optax.sgd(lr, momentum=hp["momentum"], nesterov=self.name == "nesterov")
        else:
            tx = optax.adam(lr, b1=hp["b1"], b2=hp["b2"], eps=hp["eps"])
        if self.preconditioner is not None:
            tx = optax.chain(_precondition(jnp.asarray(self.preconditioner)), tx)
        if "weight_decay" in hp:
            tx = optax.chain(optax.add_decayed_weights(hp["weight_decay"]), tx)
        return tx


def _precondition(P: jnp.ndarray) -> optax.GradientTransformation:
    """Multiply the gradient of a vector parameter by the matrix ``P``."""
    def update(updates, state, params=None):
        del params
        return jax.tree_util.tree_map(lambda g: P.astype(g.dtype) @ g, updates), state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def step_size_at(optimizer: Optimizer, hp, n) -> jnp.ndarray:
    """γ_n for the n-th update (1-based), for reporting and theory."""
    lr = optimizer.learning_rate(hp)
    return lr(jnp.asarray(n) - 1) if callable(lr) else jnp.asarray(lr)
