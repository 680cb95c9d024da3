"""The problem record, the observation an observable sees, and helpers shared by the
problem families."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab import data as data_lib
from sgdlab._validate import choice, fail


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
