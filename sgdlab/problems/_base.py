"""The problem record, the observation an observable sees, and helpers shared by the
problem families."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab import data as data_lib
from sgdlab._validate import choice, fail


class Observation(NamedTuple):
    """What an observable or event predicate sees for one member after ``step`` updates.

    Fields:
      params: the parameters after ``step`` updates.
      opt_state: the optimizer state.
      loss: the minibatch loss of the last step, evaluated at the *pre-update*
        parameters (the value SGD differentiated at step ``step``; at step 0 the
        loss of the step-0 batch at the initial parameters). It is not the loss at
        ``params``; use ``risk`` or your own function of ``params`` for that.
      grad_norm: that step's gradient norm (injected noise included). The engine
        computes ``loss`` and ``grad_norm`` in a run only when a recorded observable or
        predicate reads them (or a user recorder is given); unread, they hold 0.
      params0: initial parameters (None unless an observable needs them).
      step: number of updates done (int32 scalar).
      hp: this member's hyperparameters, optimizer and problem ones (traced scalars).
      data: the data drawn once (shared or per seed), as given to ``risk``.
    """

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
    """A training problem as pure functions (see :mod:`sgdlab.problems`).

    ``hyperparams`` declares the problem's sweepable numbers with their defaults
    (an L2 strength, a noise scale, a target value...): ``{"l2": 0.0}``. A Study
    accepts their names in its grid exactly like ``learning_rate`` (traced: one
    compile for the whole sweep, one labeled Dataset dimension each); unswept
    ones take the default. They reach ``loss(params, batch, hp)``,
    ``risk(params, data, hp)``, observables and events as ``hp[name]``
    (``Observation.hp``). A name an optimizer also reads is refused by the Study.
    """

    name: str
    init: Callable[[jax.Array], Any]
    loss: Callable[[Any, Any, Mapping], jnp.ndarray]
    data: data_lib.DataSource
    risk: Callable[[Any, Any, Mapping], jnp.ndarray] | None = None
    apply: Callable[[Any, jnp.ndarray], jnp.ndarray] | None = None
    observables: Mapping[str, Callable[[Observation], jnp.ndarray]] = field(default_factory=dict)
    events: Mapping[str, Callable[[Observation], jnp.ndarray]] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    hyperparams: Mapping[str, float] = field(default_factory=dict)
    arrays: Any = None
    bind: Callable[[Any], Problem] | None = None
    origin: Any = field(default=None, repr=False)

    def __post_init__(self):
        if not isinstance(self.hyperparams, Mapping):
            fail("hyperparams", self.hyperparams, "expected a mapping name -> default number")
        hp = {}
        for k, v in self.hyperparams.items():
            if not isinstance(k, str) or not k.isidentifier():
                fail("hyperparams", k, "names must be identifiers (strings)")
            if isinstance(v, bool):
                fail(f"hyperparams.{k}", v, "expected a finite number (the default)")
            try:
                x = float(v)
            except (TypeError, ValueError):
                fail(f"hyperparams.{k}", v, "expected a finite number (the default)")
            if not np.isfinite(x):
                fail(f"hyperparams.{k}", v, "expected a finite number (the default)")
            hp[k] = x
        object.__setattr__(self, "hyperparams", hp)

    @property
    def is_pytree(self) -> bool:
        """True when the functions are ``bind(arrays)``'s own (see :func:`from_arrays`).

        A copy with a function replaced (``dataclasses.replace(p, loss=...)``) is no
        longer one: it is then compiled as a closure, like any hand-built Problem.
        """
        return self.bind is not None and self.origin is not None and \
            len(self.origin) == len(_functions(self)) and \
            all(a is b for a, b in zip(self.origin, _functions(self), strict=True))

    def static_key(self):
        """What decides the compiled program: the binder and the array shapes (pytree
        problems), or the object itself."""
        if not self.is_pytree:
            return self
        leaves, treedef = jax.tree_util.tree_flatten(self.arrays)
        shapes = tuple((np.shape(x), str(jax.dtypes.canonicalize_dtype(
            x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype))) for x in leaves)
        return ("pytree", _bind_key(self.bind), treedef, shapes,
                tuple(sorted(self.hyperparams)))

    @staticmethod
    def from_arrays(bind: Callable[[Any], Problem], arrays) -> Problem:
        """See :func:`from_arrays` (a problem whose arrays are program arguments)."""
        return from_arrays(bind, arrays)

    def bound(self, arrays) -> Problem:
        """This problem with its functions bound to ``arrays`` (tracers inside a program)."""
        if not self.is_pytree or arrays is None:
            return self
        return self.bind(arrays)


def _functions(p: Problem) -> tuple:
    return (p.init, p.loss, p.risk, p.apply, *p.data, *p.observables.values(),
            *p.events.values())


def _bind_key(bind):
    if isinstance(bind, functools.partial):
        return (bind.func, bind.args, tuple(sorted(bind.keywords.items())))
    return bind


def from_arrays(bind: Callable[[Any], Problem], arrays) -> Problem:
    """A problem whose arrays are arguments of the compiled program (a pytree problem).

    ``bind(arrays) -> Problem`` builds the problem's functions around a pytree of
    arrays (curvature, noise factor, data set, teacher weights...). The engine calls
    it inside the compiled program with the arrays as traced arguments, so a problem
    rebuilt with new arrays of the same shapes reuses the compiled program (zero new
    traces). ``bind`` must be the same object across rebuilds: a module-level function,
    or a ``functools.partial`` of one with hashable static arguments (sizes, names);
    everything else it uses must come from ``arrays``.
    """
    arrays = jax.tree_util.tree_map(lambda x: np.asarray(x) if not isinstance(x, jax.Array)
                                    else x, arrays)
    p = bind(arrays)
    if not isinstance(p, Problem):
        fail("bind", getattr(bind, "__name__", bind), "must return a Problem")
    return dataclasses.replace(p, arrays=arrays, bind=bind, origin=_functions(p))


def as_float_array(x) -> jnp.ndarray:
    """A NumPy constant as a JAX array of the current default float dtype (x64 aware).

    The dtype is explicit: jax 0.10.1 may hand back a float64 array for a NumPy
    constant already converted inside an ``enable_x64`` context, even with x64 off.
    """
    return jnp.asarray(np.asarray(x, dtype=float), dtype=jnp.result_type(float))


def reduction_factor(reduction: str) -> float:
    """The per-example factor of a reduction: ½ for the ``half_*`` ones, else 1."""
    return 0.5 if reduction.startswith("half") else 1.0


def sphere(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """``n`` points uniform on the unit sphere of R^d (normalised Gaussians)."""
    z = rng.standard_normal((n, d))
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def indexer(n_data: int, batch_size: int | None, mode: str) -> data_lib.DataSource:
    """A :func:`sgdlab.data.fixed` source used only for its minibatch indexing."""
    choice("mode", mode, data_lib.MODES)
    if batch_size is None:
        if mode != "full":
            fail("batch_size", None, f"give a batch size for mode={mode!r}")
        batch_size = n_data
    return data_lib.fixed(lambda key: None, n_data, batch_size, mode)


def needs_init(o: Observation, name: str):
    if o.params0 is None:
        fail("keep_init", False, f"the observable {name!r} needs the initial parameters: "
             "build the Study with keep_init=True")
    return o.params0


def data_matrix(name: str, value, n: int | None = None) -> np.ndarray:
    a = np.asarray(value, dtype=float)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        fail(name, a.shape, "expected a non-empty 2-D array (examples as rows)")
    if n is not None and a.shape[0] != n:
        fail(name, a.shape, f"expected {n} rows")
    if not np.all(np.isfinite(a)):
        fail(name, "non-finite entries", "all entries must be finite")
    return a


def data_vector(name: str, value, n: int) -> np.ndarray:
    a = np.asarray(value, dtype=float)
    if a.shape != (n,):
        fail(name, a.shape, f"expected shape ({n},)")
    if not np.all(np.isfinite(a)):
        fail(name, "non-finite entries", "all entries must be finite")
    return a


def psd_sqrt(name: str, a: np.ndarray) -> np.ndarray:
    """A factor ``L`` with ``L Lᵀ = a`` for a positive semi-definite ``a``."""
    vals, vecs = np.linalg.eigh(a)
    if vals.min() < -1e-12 * max(1.0, abs(vals).max()):
        fail(name, f"eigenvalue {vals.min():.3g}", "must be positive semi-definite")
    return vecs * np.sqrt(np.clip(vals, 0.0, None))


def vector_observables(shift: np.ndarray | None = None) -> dict[str, Callable]:
    def dw(o: Observation):
        return o.params if shift is None else o.params - shift
    return {
        "w": dw,
        "w2": lambda o: dw(o) ** 2,
        "w_outer": lambda o: jnp.outer(dw(o), dw(o)),
    }


def as_matrix(name: str, value, dim: int | None = None) -> np.ndarray:
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
