"""Bring your own model: Equinox, Flax linen and Flax NNX modules through sgdlab.adapters.

Each framework test trains a small MLP with ``sl.run`` (seeds × two learning rates in
one compiled program) and compares the parameters after a few SGD steps with the
framework's own training loop (its own call/apply, its own gradient, optax), in float64.
The frameworks are optional (``pip install 'sgdlab[frameworks]'``); without one its
tests are skipped with a message.
"""

import sys
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import sgdlab as sl
from sgdlab import adapters, engine

D, WIDTH, N, BATCH, STEPS, SEEDS, LRS = 3, 5, 24, 4, 6, 3, (0.05, 0.4)


def _importorskip(name):
    return pytest.importorskip(name, reason=f"{name} is not installed (optional test extra: "
                               "pip install 'sgdlab[frameworks]')")


def _data():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((N, D))
    y = np.tanh(x @ rng.standard_normal(D)) + 0.1 * rng.standard_normal(N)
    return {"x": jnp.asarray(x), "y": jnp.asarray(y)}


def _batch(data, key, t):
    idx = jax.random.randint(jax.random.fold_in(key, t), (BATCH,), 0, N)
    return data["x"][idx], data["y"][idx]


def _problem(model: adapters.Model, name: str):
    data = _data()
    source = sl.data.DataSource(init=lambda key: data, batch=_batch, shared=True,
                                batch_size=BATCH, description="a fixed teacher data set")

    def loss(params, batch, hp):
        x, y = batch
        return 0.5 * jnp.mean((model.apply(params, x)[:, 0] - y) ** 2)

    return sl.problems.Problem(name=name, init=model.init, loss=loss, data=source,
                               apply=model.apply)


def _run(problem):
    """Final parameters (flat) from one sl.run: (lr, seed, n_params)."""
    study = sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": list(LRS)},
                     steps=STEPS, seeds=SEEDS,
                     observe=sl.Observe((("theta", lambda o: ravel_pytree(o.params)[0]),
                                         ("theta0", lambda o: ravel_pytree(o.params0)[0])),
                                        at=(STEPS,)),
                     keep_init=True)
    ds = sl.run(study, progress=False)
    return ds["theta"].values[:, :, 0], ds["theta0"].values[:, :, 0]


def _compare(problem, reference):
    """``reference(init_key, batches, lr) -> flat params`` against sl.run, per (lr, seed)."""
    got, start = _run(problem)
    data = _data()
    for s in range(SEEDS):
        init_k, data_k, _ = engine.member_keys(0, s)
        batches = [_batch(data, data_k, jnp.int32(t)) for t in range(1, STEPS + 1)]
        for i, lr in enumerate(LRS):
            ref = reference(init_k, batches, lr)
            assert ref.dtype == np.float64
            np.testing.assert_allclose(got[i, s], ref, rtol=1e-12, atol=1e-12)
        # the check can fail: a learning rate 10% off is far outside the tolerance
        wrong = reference(init_k, batches, LRS[1] * 1.1)
        assert np.abs(got[1, s] - wrong).max() > 1e-6
    moved = np.abs(got - start).max(axis=-1)
    assert (moved > 1e-3).all()
    # each seed starts from its own key
    assert np.abs(start[0, 0] - start[0, 1]).max() > 1e-3


# ------------------------------------------------------------------------------------ Equinox


def test_equinox_mlp_equals_its_own_optax_loop_in_float64():
    eqx = _importorskip("equinox")
    with jax.enable_x64(True):
        def make(key):
            return eqx.nn.MLP(D, 1, WIDTH, 1, activation=jnp.tanh, key=key)

        problem = _problem(adapters.equinox_model(make), "eqx-mlp")

        @eqx.filter_jit
        def step(module, state, x, y, lr):
            def loss(m):
                return 0.5 * jnp.mean((jax.vmap(m)(x)[:, 0] - y) ** 2)
            grads = eqx.filter_grad(loss)(module)
            updates, state = optax.sgd(lr).update(grads, state)
            return eqx.apply_updates(module, updates), state

        def reference(key, batches, lr):
            module = make(key)
            state = optax.sgd(lr).init(eqx.filter(module, eqx.is_inexact_array))
            for x, y in batches:
                module, state = step(module, state, x, y, lr)
            return np.asarray(ravel_pytree(eqx.filter(module, eqx.is_inexact_array))[0])

        _compare(problem, reference)


def test_equinox_batched_module_and_custom_call():
    eqx = _importorskip("equinox")
    x = jnp.arange(2.0 * D).reshape(2, D)
    per_example = adapters.equinox_model(lambda k: eqx.nn.Linear(D, 2, key=k))
    batched = adapters.equinox_model(lambda k: eqx.nn.Linear(D, 2, key=k), vmap=False,
                                     call=lambda m, x: x @ m.weight.T + m.bias)
    p = per_example.init(jax.random.key(3))
    np.testing.assert_allclose(per_example.apply(p, x), batched.apply(p, x), rtol=1e-6)
    assert per_example.apply(p, x).shape == (2, 2)


# ---------------------------------------------------------------------------------- Flax linen


def test_flax_linen_mlp_equals_its_own_optax_loop_in_float64():
    _importorskip("flax")
    from flax import linen as nn

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = jnp.tanh(nn.Dense(WIDTH, param_dtype=jnp.float64)(x))
            return nn.Dense(1, param_dtype=jnp.float64)(h)

    with jax.enable_x64(True):
        module = MLP()
        problem = _problem(adapters.flax_linen_model(module, jnp.zeros((1, D))), "linen-mlp")

        @jax.jit
        def step(variables, state, x, y, lr):
            def loss(v):
                return 0.5 * jnp.mean((module.apply(v, x)[:, 0] - y) ** 2)
            grads = jax.grad(loss)(variables)
            updates, state = optax.sgd(lr).update(grads, state)
            return optax.apply_updates(variables, updates), state

        def reference(key, batches, lr):
            variables = module.init(key, batches[0][0])
            state = optax.sgd(lr).init(variables)
            for x, y in batches:
                variables, state = step(variables, state, x, y, lr)
            return np.asarray(ravel_pytree(variables["params"])[0])

        _compare(problem, reference)


def test_flax_linen_with_batch_stats_is_refused():
    _importorskip("flax")
    from flax import linen as nn

    class WithNorm(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.BatchNorm(use_running_average=False)(nn.Dense(2)(x))

    with pytest.raises(ValueError, match=r"^module='WithNorm' is invalid: .*'batch_stats'"):
        adapters.flax_linen_model(WithNorm(), jnp.zeros((1, D)))


# ------------------------------------------------------------------------------------ Flax NNX


def test_flax_nnx_mlp_equals_its_own_optimizer_loop_in_float64():
    _importorskip("flax")
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(D, WIDTH, param_dtype=jnp.float64, rngs=rngs)
            self.out = nnx.Linear(WIDTH, 1, param_dtype=jnp.float64, rngs=rngs)

        def __call__(self, x):
            return self.out(jnp.tanh(self.hidden(x)))

    with jax.enable_x64(True):
        problem = _problem(adapters.flax_nnx_model(MLP), "nnx-mlp")

        @nnx.jit
        def step(model, optimizer, x, y):
            def loss(m):
                return 0.5 * jnp.mean((m(x)[:, 0] - y) ** 2)
            optimizer.update(model, nnx.grad(loss)(model))

        def reference(key, batches, lr):
            model = MLP(nnx.Rngs(key))
            optimizer = nnx.Optimizer(model, optax.sgd(lr), wrt=nnx.Param)
            for x, y in batches:
                step(model, optimizer, x, y)
            return np.asarray(ravel_pytree(nnx.to_pure_dict(nnx.state(model, nnx.Param)))[0])

        _compare(problem, reference)


# ------------------------------------------------------------------ missing frameworks, errors


@pytest.mark.parametrize("adapter, module", [("equinox_model", "equinox"),
                                             ("flax_linen_model", "flax.linen"),
                                             ("flax_nnx_model", "flax.nnx")])
def test_missing_framework_is_a_one_line_import_error(monkeypatch, adapter, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(ImportError, match=r"^this adapter needs (equinox|flax): pip install "
                       r".*sgdlab\[frameworks\]") as e:
        getattr(adapters, adapter)(lambda k: None, *(() if adapter != "flax_linen_model"
                                                      else (None,)))
    assert "\n" not in str(e.value) and e.value.__suppress_context__


def _assert_friendly(excinfo):
    err = excinfo.value
    assert "\n" not in str(err)
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    assert "jax/_src" not in "".join(traceback.format_exception(err))


def _raises(pattern, **changes):
    fp = changes.pop("first_passage", None)
    model = adapters.Model(lambda key: {"w": jax.random.normal(key, (D, 1))},
                           lambda p, x: x @ p["w"])
    problem = _problem(model, "plain")
    fields = {f: getattr(problem, f) for f in ("name", "init", "loss", "data")}
    study = sl.Study(sl.problems.Problem(**{**fields, **changes}), sl.Optimizer("sgd"),
                     {"learning_rate": 0.1}, steps=3, seeds=1, first_passage=fp)
    with pytest.raises(ValueError, match=pattern) as e:
        sl.run(study, progress=False)
    _assert_friendly(e)
    return str(e.value)


def test_plain_functions_need_no_adapter_and_user_errors_are_one_line():
    # the plain model runs as is
    model = adapters.Model(lambda key: {"w": jax.random.normal(key, (D, 1))},
                           lambda p, x: x @ p["w"])
    ds = sl.run(sl.Study(_problem(model, "plain"), sl.Optimizer("sgd"),
                         {"learning_rate": 0.1}, steps=3, seeds=2), progress=False)
    assert ds.sizes["seed"] == 2
    _raises(r"^problem\.loss\(params, batch, hp\) is invalid: it returned float\d+\[4\]; "
            r"return a float scalar \(reduce over the batch",
            loss=lambda p, b, hp: (b[0] @ p["w"])[:, 0] - b[1])
    _raises(r"^problem\.loss.*returned tuple; return a float scalar alone; an \(loss, aux\)",
            loss=lambda p, b, hp: (jnp.sum(p["w"]), jnp.ones(())))
    _raises(r"^first_passage\.predicate '<lambda>' is invalid: it returned float\d+\[\]; "
            r"return a boolean scalar",
            first_passage=sl.FirstPassage(lambda o: o.params["w"][0, 0]))
    _raises(r"^first_passage\.predicate '<lambda>' is invalid: it returned bool\[3, 1\]",
            first_passage=sl.FirstPassage(lambda o: o.params["w"] > 0))
    _raises(r"^problem\.init \(of problem 'plain'\) is invalid: it returned a leaf of type "
            r"str; parameters must be a pytree of arrays only \(for an Equinox or Flax module, "
            r"use sgdlab\.adapters",
            init=lambda key: {"w": jnp.zeros((D, 1)), "act": "tanh"})


def test_equinox_module_from_init_names_the_adapter():
    eqx = _importorskip("equinox")
    msg = _raises(r"^problem\.init \(of problem 'plain'\) is invalid: it returned an Equinox "
                  r"module \(MLP\); use sgdlab\.adapters\.equinox_model to get a pytree of "
                  r"arrays \(a leaf is of type \w+; parameters must be a pytree of arrays only\)$",
                  init=lambda key: eqx.nn.MLP(D, 1, WIDTH, 1, activation=jnp.tanh, key=key))
    assert "Traceback" not in msg


def test_flax_modules_from_init_name_the_adapter():
    _importorskip("flax")
    from flax import linen as nn
    from flax import nnx

    _raises(r"^problem\.init.*it returned a Flax linen module \(Dense\); use "
            r"sgdlab\.adapters\.flax_linen_model", init=lambda key: nn.Dense(1))
    _raises(r"^problem\.init.*Flax NNX module \(Dropout\); use sgdlab\.adapters\.flax_nnx_model",
            init=lambda key: nnx.Dropout(0.5, rngs=nnx.Rngs(key)))
