"""Friendly errors for user functions, found before compiling with ``jax.eval_shape``.

Each user function of a study (``problem.init``, ``problem.data.init``,
``problem.data.batch``, ``problem.loss``, the optimizer, observables, the
first-passage predicate) is run once on abstract values of one member. A
failure, or an output of the wrong kind, becomes a one-line ``ValueError`` that
names the function and says what to return; the JAX traceback is dropped
(``raise ... from None``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab import data as data_lib
from sgdlab.engine._state import abstract_key
from sgdlab.problems import Observation


class UserFunctionError(ValueError):
    """A user function of a study does not fit the engine (one line, no traceback)."""


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    first = msg[0] if msg else ""
    if len(first) > 200:
        first = first[:197] + "..."
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def _like(tree, ref, lead: tuple = ()) -> bool:
    """Whether ``tree`` has ``ref``'s structure, dtypes and shapes (each with the leading
    axes ``lead``)."""
    return jax.tree_util.tree_structure(tree) == jax.tree_util.tree_structure(ref) and all(
        x.shape == lead + r.shape and x.dtype == r.dtype for x, r in zip(
            jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(ref), strict=True))


def _shapes(tree) -> str:
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return "()"
    s = ", ".join(f"{getattr(x, 'dtype', type(x).__name__)}{list(getattr(x, 'shape', ()))}"
                  for x in leaves[:6])
    return s + (", ..." if len(leaves) > 6 else "")


def _fail(what: str, allowed: str) -> None:
    raise UserFunctionError(f"{what} is invalid: {allowed}")


def _abstract(fn: Callable, name: str, returns: str, *args):
    """``jax.eval_shape(fn, *args)`` with any failure turned into a one-line error."""
    try:
        return jax.eval_shape(fn, *args)
    except UserFunctionError as e:
        # raised inside the trace: JAX may have appended its traceback-filtering note
        raise UserFunctionError(str(e).strip().splitlines()[0]) from None
    except Exception as e:  # noqa: BLE001 -- any user error becomes one line
        msg = _one_line(e)
    _fail(name, f"it failed on abstract inputs ({msg}); it must return {returns}")
    raise AssertionError


# framework module classes and the adapter that turns each into (init, apply); looked up
# in sys.modules only, so no framework is imported to produce a message
_ADAPTERS = (("equinox", "Module", "an Equinox module", "equinox_model"),
             ("flax.nnx", "Module", "a Flax NNX module", "flax_nnx_model"),
             ("flax.linen", "Module", "a Flax linen module", "flax_linen_model"))


def _framework_module(tree) -> str | None:
    """``"an Equinox module (MLP) -- use sgdlab.adapters.equinox_model"`` or None."""
    classes = []
    for mod, cls, what, adapter in _ADAPTERS:
        c = getattr(sys.modules.get(mod), cls, None)
        if isinstance(c, type):
            classes.append((c, what, adapter))
    if not classes:
        return None
    types = tuple(c for c, _, _ in classes)
    for node in jax.tree_util.tree_leaves(tree, is_leaf=lambda x: isinstance(x, types)):
        for c, what, adapter in classes:
            if isinstance(node, c):
                return f"{what} ({type(node).__name__}); use sgdlab.adapters.{adapter}"
    return None


def _array_leaves(tree, name: str, what: str):
    """Refuse non-array leaves (functions, strings, modules' static fields) and
    non-float ones (SGD differentiates the parameters)."""
    leaves, _ = jax.tree_util.tree_flatten(tree)
    for x in leaves:
        if not isinstance(x, jax.Array | np.ndarray | np.generic | float | int | complex) or \
                isinstance(x, bool):
            module = _framework_module(tree)
            if module:
                _fail(name, f"it returned {module} to get a pytree of arrays (a leaf is of "
                      f"type {type(x).__name__}; {what} must be a pytree of arrays only)")
            _fail(name, f"it returned a leaf of type {type(x).__name__}; {what} must be a "
                  "pytree of arrays only (for an Equinox or Flax module, use "
                  "sgdlab.adapters, or return its array leaves and close over the rest)")
    for x in leaves:
        dtype = jnp.result_type(x) if not hasattr(x, "dtype") else x.dtype
        if not jnp.issubdtype(dtype, jnp.inexact):
            module = _framework_module(tree)
            hint = f" ({module})" if module else ""
            _fail(name, f"it returned a {dtype} leaf of shape {list(np.shape(x))}; {what} "
                  f"must be float arrays (SGD differentiates them){hint}")


class Abstract(NamedTuple):
    """Shapes of one member's quantities (``jax.ShapeDtypeStruct`` pytrees)."""

    params: Any
    data: Any
    batch: Any
    loss: Any
    opt_state: Any
    event: Any          # ShapeDtypeStruct of the predicate's output, or None
    observation: Any    # the Observation the observables and predicate were checked with


def check_study(study, event_fn: Callable | None = None,
                observables: Mapping[str, Callable] | None = None) -> Abstract:
    """Run every user function of ``study`` abstractly; raise a one-line error on misfit."""
    problem = study.problem
    key = abstract_key()
    int32 = jax.ShapeDtypeStruct((), jnp.int32)
    float_t = jnp.result_type(float)
    hp1 = {k: jax.ShapeDtypeStruct((), float_t) for k in study.hparams}

    def init_arrays(k):
        out = problem.init(k)
        _array_leaves(out, f"problem.init (of problem {problem.name!r})", "parameters")
        return out

    params = _abstract(init_arrays, f"problem.init (of problem {problem.name!r})",
                       "the parameters as a pytree of float arrays", key)
    data = _abstract(problem.data.init, "problem.data.init",
                     "the data drawn once (a pytree of arrays, or None)", key)
    batch = _abstract(problem.data.batch, "problem.data.batch",
                      "the step's minibatch (a pytree of arrays)", data, key, int32)
    if problem.data.row is not None and problem.data.block is None:
        _fail("problem.data.row(data, key, j, B)", "a row is row j of the source's block: "
              "give block(data, key, b, B) too, or leave row out")
    if problem.data.block is not None:
        B = data_lib.block_steps(problem.data, data)
        want = f"the batches of {B} steps stacked on a leading axis ({_shapes(batch)} " \
            f"each, so {B} × those shapes)"
        rows = _abstract(lambda d, k, b: problem.data.block(d, k, b, B),
                         "problem.data.block(data, key, b, B)", want, data, key, int32)
        if not _like(rows, batch, (B,)):
            _fail("problem.data.block(data, key, b, B)", f"it returned {_shapes(rows)}; it "
                  f"must return {want}")
        if problem.data.row is not None:
            one = _abstract(lambda d, k, j: problem.data.row(d, k, j, B),
                            "problem.data.row(data, key, j, B)",
                            f"one step's batch ({_shapes(batch)})", data, key, int32)
            if not _like(one, batch):
                _fail("problem.data.row(data, key, j, B)", f"it returned {_shapes(one)}; it "
                      f"must return one step's batch ({_shapes(batch)}), row j of the block")
    loss = _abstract(problem.loss, "problem.loss(params, batch, hp)",
                     f"a scalar; params are {_shapes(params)} and the batch is {_shapes(batch)}",
                     params, batch, hp1)
    if not hasattr(loss, "shape") or loss.shape != () or \
            not jnp.issubdtype(loss.dtype, jnp.floating):
        got = (f"{loss.dtype}{list(loss.shape)}" if hasattr(loss, "shape")
               else type(loss).__name__)
        extra = (" alone; an (loss, aux) pair is not accepted: record extras with an "
                 "observable" if isinstance(loss, tuple | list) else
                 " (reduce over the batch, e.g. jnp.mean)")
        _fail("problem.loss(params, batch, hp)",
              f"it returned {got}; return a float scalar{extra}")
    _abstract(jax.grad(problem.loss), "jax.grad(problem.loss)",
              "a differentiable scalar of the parameters", params, batch, hp1)
    opt_state = _abstract(lambda p, h: study.optimizer.build(h).init(p),
                          "the optimizer's init(params)", "an optax state", params, hp1)
    obs = Observation(params, opt_state, loss, loss, params, jax.ShapeDtypeStruct((), jnp.int32),
                      hp1, data)
    for name, fn in (observables or {}).items():
        _abstract(fn, f"observable {name!r}", "an array (a function of the Observation)", obs)
    event = None
    if event_fn is not None:
        name = getattr(event_fn, "__name__", "predicate")
        event = _abstract(event_fn, f"first_passage.predicate {name!r}",
                          "a boolean scalar or a boolean vector (E,)", obs)
        if not hasattr(event, "shape") or event.dtype != jnp.bool_ or event.ndim > 1 or \
                (event.ndim == 1 and event.shape[0] == 0):
            got = f"{getattr(event, 'dtype', type(event).__name__)}" \
                f"{list(getattr(event, 'shape', ()))}"
            _fail(f"first_passage.predicate {name!r}",
                  f"it returned {got}; return a boolean scalar (e.g. jnp.abs(o.params[0]) > 1) "
                  "or a boolean vector of shape (E,) for E events")
    return Abstract(params, data, batch, loss, opt_state, event, obs)
