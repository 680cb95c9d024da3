"""Bring your own model: Equinox and Flax modules as sgdlab's pure ``(init, apply)`` pair.

sgdlab trains a *pytree of arrays*: ``Problem.init(key)`` returns the parameters and
the loss is a pure function of them. A framework module mixes trainable arrays with
structure (layer sizes, activation functions, graph nodes). Each adapter here splits
the two once: ``init(key)`` returns only the trainable arrays, and
``apply(params, x)`` rebuilds the module around them and calls it:

```python
import equinox as eqx
import sgdlab as sl
from sgdlab import adapters

model = adapters.equinox_model(lambda key: eqx.nn.MLP(5, 1, 16, 1, key=key))

def loss(params, batch, hp):
    x, y = batch
    return 0.5 * jnp.mean((model.apply(params, x)[:, 0] - y) ** 2)

problem = sl.problems.Problem(name="eqx-mlp", init=model.init, loss=loss,
                              data=source, apply=model.apply)
```

A model that is already a pytree of arrays needs no adapter: plain functions, an
Equinox module whose every leaf is an array (e.g. ``eqx.nn.Linear``) and a Flax
linen ``params`` dict can be returned from ``init`` directly.

Each framework is imported when its adapter is called; a missing one raises an
``ImportError`` naming the pip extra (``pip install 'sgdlab[frameworks]'``).

Dtypes: Equinox follows JAX's default float (float64 under ``jax_enable_x64``);
Flax creates float32 parameters unless the module is given ``param_dtype``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from sgdlab._validate import fail

__all__ = ["Model", "equinox_model", "flax_linen_model", "flax_nnx_model"]


class Model(NamedTuple):
    """A model as two pure functions (unpacks as ``init, apply = model``).

    Fields:
      init: ``init(key) -> params``, a pytree of float arrays (the trainable ones).
      apply: ``apply(params, x) -> outputs`` for a batch ``x`` (leading axis = examples).
    """

    init: Callable[[jax.Array], Any]
    apply: Callable[[Any, Any], Any]


def _need(module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"this adapter needs {package}: pip install {package} "
                          "(or pip install 'sgdlab[frameworks]')") from None


def _callable(name: str, value) -> None:
    if not callable(value):
        fail(name, type(value).__name__, "expected a function")


def equinox_model(make: Callable[[jax.Array], Any], *, vmap: bool = True,
                  call: Callable[[Any, Any], Any] | None = None) -> Model:
    """An Equinox module as ``(init, apply)``.

    Args:
      make: ``make(key) -> eqx.Module``, e.g. ``lambda key: eqx.nn.MLP(5, 1, 16, 1, key=key)``.
      vmap: Equinox layers act on *one* example, so by default ``apply`` maps the
        module over the leading axis of ``x`` (``jax.vmap(module)(x)``). Pass
        ``vmap=False`` for a module whose ``__call__`` takes a whole batch.
      call: ``call(module, x) -> outputs`` replaces the default call (and ``vmap``)
        entirely, e.g. ``lambda m, x: jax.vmap(m.features)(x)``.

    The parameters are the module's floating-point arrays
    (``eqx.partition(module, eqx.is_inexact_array)``): a module of the same type with
    ``None`` in place of everything else, so ``params.layers[0].weight`` still reads.
    The rest (activation functions, sizes, integer arrays) is taken from one build
    with ``jax.random.key(0)`` when the adapter is made, and held fixed.
    """
    eqx = _need("equinox", "equinox")
    _callable("make", make)
    if call is not None:
        _callable("call", call)
    _, static = eqx.partition(make(jax.random.key(0)), eqx.is_inexact_array)

    def init(key):
        params, _ = eqx.partition(make(key), eqx.is_inexact_array)
        return params

    def apply(params, x):
        module = eqx.combine(params, static)
        if call is not None:
            return call(module, x)
        return jax.vmap(module)(x) if vmap else module(x)

    return Model(init, apply)


def flax_linen_model(module, example_input, *, method: str | Callable | None = None) -> Model:
    """A Flax linen module as ``(init, apply)``.

    Args:
      module: an ``flax.linen.Module`` instance, e.g. ``nn.Dense(1)`` or your own.
      example_input: an input of the shape ``apply`` will see (a batch, e.g.
        ``jnp.zeros((1, d))``); only its shape and dtype are used.
      method: passed to ``module.init`` and ``module.apply`` (default ``__call__``).

    ``init(key)`` returns ``module.init(key, example_input)["params"]`` and
    ``apply(params, x)`` is ``module.apply({"params": params}, x)``. Only modules whose
    variables are all in the ``params`` collection are supported: the engine's loss is a
    pure function of the parameters, so running statistics (``batch_stats``) or other
    mutable collections would be silently dropped; they are refused instead.
    """
    nn = _need("flax.linen", "flax")
    if not isinstance(module, nn.Module):
        fail("module", type(module).__name__, "expected a flax.linen.Module instance")
    kw = {} if method is None else {"method": method}
    shapes = jax.eval_shape(lambda k: module.init(k, example_input, **kw), jax.random.key(0))
    extra = sorted(set(shapes) - {"params"})
    if extra:
        fail("module", type(module).__name__,
             f"it has variable collections {extra} besides 'params'; flax_linen_model "
             "supports modules whose variables are all trainable parameters")

    def init(key):
        return module.init(key, example_input, **kw)["params"]

    def apply(params, x):
        return module.apply({"params": params}, x, **kw)

    return Model(init, apply)


def flax_nnx_model(make: Callable[[Any], Any]) -> Model:
    """A Flax NNX module as ``(init, apply)``.

    Args:
      make: ``make(rngs) -> nnx.Module``, e.g. ``lambda rngs: MyNet(rngs=rngs)``; ``init``
        calls it with ``nnx.Rngs(key)``.

    The parameters are the module's ``nnx.Param`` variables as a plain nested dict of
    arrays (``nnx.to_pure_dict``), e.g. ``params["linear"]["kernel"]``. ``apply`` merges
    them back into the module's graph (``nnx.merge``) and calls it on the batch ``x``.
    State that is not an ``nnx.Param`` (batch statistics, RNG streams) is taken from
    one build with ``nnx.Rngs(0)`` when the adapter is made; ``apply`` is pure, so
    updates a call makes to that state are not carried to the next step.
    """
    nnx = _need("flax.nnx", "flax")
    _callable("make", make)
    graphdef, template, rest = nnx.split(make(nnx.Rngs(0)), nnx.Param, ...)
    template = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                                      template)

    def init(key):
        _, state, _ = nnx.split(make(nnx.Rngs(key)), nnx.Param, ...)
        return nnx.to_pure_dict(state)

    def apply(params, x):
        state = jax.tree_util.tree_map(lambda a: a, template)  # a fresh State to fill
        nnx.replace_by_pure_dict(state, params)
        return nnx.merge(graphdef, state, rest)(x)

    return Model(init, apply)
