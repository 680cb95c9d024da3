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

Any ``hp -> optax.GradientTransformation`` factory is an optimizer too::

    def clipped_sgd(hp):
        return optax.chain(optax.clip_by_global_norm(hp["clip"]), optax.sgd(hp["learning_rate"]))

    sl.Optimizer(clipped_sgd)          # sweep {"clip": [...], "learning_rate": [...]}

Every number the factory reads from ``hp`` is traced (sweepable, no recompile); the
keys it reads are found by tracing it once (nothing is compiled), and a study must give
each of them (or ``Optimizer(factory, defaults={...})`` does). The named optimizers below
are such factories, and so are schedules (``hp -> step size or count -> step size``).

Hyperparameter names of the named optimizers (keys of ``hp``):

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

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sgdlab._validate import choice, fail

Factory = Callable[[Mapping[str, Any]], optax.GradientTransformation]
Schedule = Callable[[Mapping[str, Any]], Any]


def _constant(hp):
    return hp["learning_rate"]


def _power(hp):
    gamma0, alpha, n0 = hp["gamma0"], hp["alpha"], hp["n0"]
    return lambda count: gamma0 / (count + 1 + n0) ** alpha


SCHEDULE_FNS: dict[str, tuple[Schedule, dict[str, float]]] = {
    "constant": (_constant, {}),
    "power": (_power, {"n0": 0.0}),
}
"""Named schedules: ``hp -> step size (or count -> step size)``, and their defaults."""


def _sgd(lr, hp):
    return optax.sgd(lr)


def _momentum(lr, hp):
    return optax.sgd(lr, momentum=hp["momentum"], nesterov=False)


def _nesterov(lr, hp):
    return optax.sgd(lr, momentum=hp["momentum"], nesterov=True)


def _adam(lr, hp):
    return optax.adam(lr, b1=hp["b1"], b2=hp["b2"], eps=hp["eps"])


OPTIMIZER_FNS: dict[str, tuple[Callable, dict[str, float]]] = {
    "sgd": (_sgd, {}),
    "momentum": (_momentum, {}),
    "nesterov": (_nesterov, {}),
    "adam": (_adam, {"b1": 0.9, "b2": 0.999, "eps": 1e-8}),
}
"""Named optimizers: ``(step size, hp) -> optax transformation``, and their defaults."""

NAMES = tuple(OPTIMIZER_FNS)
SCHEDULES = tuple(SCHEDULE_FNS)
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


class _Reads(Mapping):
    """A stand-in ``hp`` that records which keys a factory reads."""

    def __init__(self):
        self.keys_read: list[str] = []

    def __getitem__(self, key):
        if key not in self.keys_read:
            self.keys_read.append(key)
        return jnp.asarray(0.01)

    def __contains__(self, key):
        self[key]
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys_read)

    def __len__(self) -> int:
        return len(self.keys_read)


def reads(fn: Callable, *args) -> tuple[str, ...]:
    """The ``hp`` keys ``fn(hp, *args)`` reads (traced once on placeholder values)."""
    hp = _Reads()

    def probe():
        out = fn(hp, *args)
        if callable(out) and not isinstance(out, optax.GradientTransformation):
            out(jnp.asarray(0))  # a schedule count -> value reads when called
        return jnp.zeros(())

    try:
        # traced, not run: the placeholders' arithmetic compiles nothing (run eagerly, a
        # power schedule compiled five one-op programs, 0.1 s)
        jax.eval_shape(probe)
    except Exception as e:  # noqa: BLE001
        name = getattr(fn, "__name__", "factory")
        raise ValueError(f"optimizer={name!r} is invalid: calling it with hp failed "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                         "it must map hp (name -> traced scalar) to an optax "
                         "GradientTransformation") from None
    return tuple(hp.keys_read)


def _fn_name(fn) -> str:
    return getattr(fn, "__qualname__", getattr(fn, "__name__", type(fn).__name__))


@dataclass(frozen=True)
class Optimizer:
    """An optimizer as static structure; its numbers come from ``hp`` at run time.

    Args:
      name: ``"sgd"``, ``"momentum"`` (heavy ball), ``"nesterov"``, ``"adam"``, or any
        factory ``hp -> optax.GradientTransformation`` (every number it reads from
        ``hp`` is then a traced, sweepable hyperparameter).
      schedule: ``"constant"`` (uses ``learning_rate``), ``"power"``
        (``γ0/(n+n0)^α``, uses ``gamma0``, ``alpha``, ``n0``), or a function
        ``hp -> step size`` or ``hp -> (count -> step size)`` (named optimizers only).
      preconditioner: a fixed matrix P applied to the gradient of vector
        parameters before the rest of the update, so the matrix learning rate is
        ``Λ = λP`` (damped Newton: ``P = A⁻¹``; natural gradient: ``P = F⁻¹``;
        Liu, Ziyin & Ueda 2021, Sec. 5).
      defaults: values for ``hp`` keys a factory or schedule function reads that a
        study may leave out.
      factory: the factory (also accepted as ``name``).
    """

    name: str | Factory = "sgd"
    schedule: str | Schedule = "constant"
    preconditioner: tuple[tuple[float, ...], ...] | None = None
    defaults_: tuple[tuple[str, float], ...] | None = field(default=None, repr=False)
    factory: Factory | None = None

    def __init__(self, name: str | Factory = "sgd", schedule: str | Schedule = "constant",
                 preconditioner=None, *, defaults: Mapping[str, float] | None = None,
                 factory: Factory | None = None, defaults_=None):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        if defaults is None and defaults_ is not None:  # dataclasses.replace passes the field
            defaults = dict(defaults_)
        if callable(name):
            factory, name = name, _fn_name(name)
        if factory is not None and not callable(factory):
            fail("optimizer", factory, "expected a name or a function hp -> optax transformation")
        set_("name", name)
        set_("schedule", schedule)
        set_("preconditioner", preconditioner)
        set_("factory", factory)
        set_("defaults_", None if defaults is None else
             tuple((str(k), float(v)) for k, v in dict(defaults).items()))
        if factory is None:
            choice("optimizer", self.name, NAMES)
        elif not isinstance(self.name, str):
            fail("optimizer", self.name, "expected a name")
        if not callable(schedule):
            choice("schedule", self.schedule, SCHEDULES)
        if self.preconditioner is not None:
            p = np.asarray(self.preconditioner, dtype=float)
            if p.ndim != 2 or p.shape[0] != p.shape[1] or not np.all(np.isfinite(p)):
                fail("preconditioner", np.shape(self.preconditioner),
                     "expected a finite square matrix (nested tuples)")
            set_("preconditioner", tuple(map(tuple, p.tolist())))
        self.reads()  # a factory that cannot be called fails here, in one line

    # ---- which hp keys
    def reads(self) -> tuple[str, ...]:
        """Every ``hp`` key the transformation reads (``weight_decay``/``noise_std`` aside)."""
        cached = self.__dict__.get("_reads")
        if cached is None:
            if self.factory is not None:
                cached = reads(self.factory)
            else:
                sched = self.schedule if callable(self.schedule) else \
                    SCHEDULE_FNS[self.schedule][0]
                cached = reads(sched) + tuple(
                    k for k in reads(lambda hp: OPTIMIZER_FNS[self.name][0](0.1, hp))
                    if k not in reads(sched))
            object.__setattr__(self, "_reads", cached)
        return cached

    @property
    def defaults(self) -> dict[str, float]:
        """Hyperparameters with a default value, used when not given."""
        d: dict[str, float] = {}
        if self.factory is None:
            d.update(OPTIMIZER_FNS[self.name][1])
            if not callable(self.schedule):
                d.update(SCHEDULE_FNS[self.schedule][1])
        d.update(dict(self.defaults_ or ()))
        return {k: v for k, v in d.items() if k in self.reads()}

    @property
    def required(self) -> tuple[str, ...]:
        """Hyperparameters the study must provide."""
        return tuple(k for k in self.reads() if k not in self.defaults)

    @property
    def accepted(self) -> tuple[str, ...]:
        """Every hyperparameter name this optimizer reads."""
        return self.required + tuple(self.defaults) + OPTIONAL

    @property
    def label(self) -> str:
        """``name`` with the schedule, for messages."""
        sched = self.schedule if isinstance(self.schedule, str) else _fn_name(self.schedule)
        return f"{self.name!r} (schedule {sched!r})" if self.factory is None else repr(self.name)

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (the named optimizers keep their historical form)."""
        d: dict[str, Any] = {
            "name": self.name,
            "schedule": self.schedule if isinstance(self.schedule, str)
            else f"{_fn_name(self.schedule)} (function)",
            "preconditioner": self.preconditioner,
        }
        if self.factory is not None:
            d["factory"] = f"{getattr(self.factory, '__module__', '?')}.{_fn_name(self.factory)}"
        if self.defaults_:
            d["defaults"] = dict(self.defaults_)
        return d

    # ---- what a compiled program takes as an argument
    def static_key(self):
        """What decides the compiled program: everything but the preconditioner's values
        (only its shape), which a program takes as an argument (:meth:`arrays`). Studies
        whose optimizers differ only in the matrix run one compiled program."""
        if self.preconditioner is None:
            return self
        return (replace(self, preconditioner=None),
                ("preconditioner", np.shape(self.preconditioner)))

    def arrays(self) -> np.ndarray | None:
        """The numbers a program takes as arguments: the preconditioner matrix, or None."""
        return None if self.preconditioner is None else np.asarray(self.preconditioner)

    # ---- the transformation
    def learning_rate(self, hp):
        """The step size: a scalar, or a schedule ``count -> γ`` (count = updates so far)."""
        if callable(self.schedule):
            return self.schedule(hp)
        return SCHEDULE_FNS[self.schedule][0](hp)

    def build(self, hp, arrays=None) -> optax.GradientTransformation:
        """The optax transformation for one member's hyperparameters ``hp``; ``arrays``:
        :meth:`arrays` as a program's argument (traced), else the stored values."""
        if self.factory is not None:
            tx = self.factory(hp)
        else:
            tx = OPTIMIZER_FNS[self.name][0](self.learning_rate(hp), hp)
        if self.preconditioner is not None:
            P = jnp.asarray(self.preconditioner if arrays is None else arrays)
            tx = optax.chain(_precondition(P), tx)
        if "weight_decay" in hp and "weight_decay" not in self.reads():
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
