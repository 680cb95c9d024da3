"""The open engine: problem hyperparameters, first passage every k steps and with many
events, friendly errors, user optimizers and recorders, static sweeps, pytree problems,
the compile cache."""

import dataclasses
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgdlab as sl
from sgdlab import engine


def gd_problem(w0=1.0, **hyperparams):
    """Noise-free GD on ``½(1 + l2)w²``: ``w_t = (1 − λ(1 + l2))^t w0`` exactly."""
    base = sl.problems.noisy_quadratic(1.0, 0.0, w0=w0)

    def loss(w, xi, hp):
        return 0.5 * (1.0 + hp["l2"]) * (w @ w)

    def risk(w, data, hp):
        return 0.5 * (1.0 + hp["l2"]) * (w @ w)

    return dataclasses.replace(base, name="gd_l2", loss=loss, risk=risk,
                               hyperparams={"l2": 0.25, **hyperparams})


def assert_friendly(excinfo):
    """One line, nothing chained, and no JAX frame in the whole printed traceback."""
    err = excinfo.value
    assert "\n" not in str(err)
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    printed = "".join(traceback.format_exception(err))
    assert "jax/_src" not in printed and "Traceback" not in str(err)


# ------------------------------------------------------------------------- problem hyperparameters


def test_problem_hyperparameter_is_swept_traced_labeled_and_defaulted():
    problem = gd_problem()
    lrs, l2s = [0.1, 0.2], [0.0, 0.5, 1.0]
    with jax.enable_x64(True):
        study = sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": lrs, "l2": l2s},
                         steps=20, seeds=2, observe=sl.Observe(("w", "risk"), at=(0, 20)))
        ds = sl.run(study, progress=False)
        assert ds["w"].dims[:2] == ("learning_rate", "l2")
        assert ds.l2.values.tolist() == l2s
        for i, lr in enumerate(lrs):
            for j, c in enumerate(l2s):
                w = (1 - lr * (1 + c)) ** 20
                np.testing.assert_allclose(ds["w"][i, j, :, -1, 0], w, rtol=1e-12)
                np.testing.assert_allclose(ds["risk"][i, j, :, -1], 0.5 * (1 + c) * w**2,
                                           rtol=1e-12)
        # one compile for the sweep: new values of the same shape do not retrace
        before = engine.trace_count()
        ds2 = sl.run(study.with_hparams(l2=[2.0, 3.0, 4.0]), progress=False)
        assert engine.trace_count() == before
        np.testing.assert_allclose(ds2["w"][0, 2, 0, -1, 0], (1 - 0.1 * 5.0) ** 20, rtol=1e-12)
        # not swept: the problem's default (0.25) is used and recorded
        d = sl.run(sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": 0.1}, steps=20,
                            seeds=1, observe=sl.Observe(("w",), at=(20,))), progress=False)
        np.testing.assert_allclose(float(d["w"][0, 0, 0]), (1 - 0.1 * 1.25) ** 20, rtol=1e-12)
        assert sl.results.config(d)["hparams"]["l2"] == 0.25


def test_problem_hyperparameter_reaches_events():
    problem = gd_problem(target=0.01)
    fp = sl.FirstPassage(lambda o: jnp.abs(o.params[0]) < o.hp["target"])
    ds = sl.run(sl.Study(problem, sl.Optimizer("sgd"),
                         {"learning_rate": 0.4, "l2": 0.25, "target": [0.1, 0.01]},
                         steps=30, seeds=1, first_passage=fp), progress=False)
    # w_t = 0.5^t: below 0.1 first at t = 4, below 0.01 at t = 7
    assert ds.event_step.values.reshape(-1).tolist() == [4, 7]


def test_problem_hyperparameter_clash_and_unknown_key_refused():
    problem = gd_problem(momentum=0.5)
    with pytest.raises(ValueError, match=r"^problem\.hyperparams='momentum'") as e:
        sl.Study(problem, sl.Optimizer("momentum"), {"learning_rate": 0.1, "momentum": 0.9},
                 steps=5, seeds=1)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="^hparams='l3'.*l2"):
        sl.Study(gd_problem(), sl.Optimizer("sgd"), {"learning_rate": 0.1, "l3": 1.0},
                 steps=5, seeds=1)
    with pytest.raises(ValueError, match="^hyperparams.l2"):
        gd_problem(l2="big")


# --------------------------------------------------------------------------- first passage


def halving(thresholds, lrs=(0.5, 0.01), **kw):
    """GD on ½w² from 1 with λ = 0.5: w_t = 0.5^t."""
    problem = sl.problems.noisy_quadratic(1.0, 0.0, w0=1.0)
    fp = sl.FirstPassage(lambda o: jnp.abs(o.params[0]) < thresholds, **kw)
    return sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": list(lrs)}, steps=50,
                    seeds=2, first_passage=fp, observe=sl.Observe(("w",), at=tuple(range(51))))


@pytest.mark.parametrize("every,expected", [(1, 7), (3, 9), (4, 8)])
def test_first_passage_every_k_steps_is_the_first_checked_step(every, expected):
    ds = sl.run(halving(0.01, every=every), progress=False)
    assert ds.event_step.values.tolist() == [[expected] * 2, [-1] * 2]
    assert ds.event_censored.values.tolist() == [[False] * 2, [True] * 2]
    # frozen at the detection step (freeze=True by default)
    w = ds["w"].values[0, 0, :, 0]
    assert np.all(w[expected:] == w[expected]) and w[expected] == 0.5**expected


def test_first_passage_vector_of_events_labeled_censored_and_freezing_when_all_happened():
    th = jnp.array([0.1, 0.01, 1e-30])
    ds = sl.run(halving(th, names=("a", "b", "c"), dim="delta"), progress=False)
    assert ds.event_step.dims == ("learning_rate", "seed", "delta")
    assert ds.delta.values.tolist() == ["a", "b", "c"]
    assert ds.event_step.values[0].tolist() == [[4, 7, -1]] * 2
    assert ds.event_censored.values[0, 0].tolist() == [False, False, True]
    # not all events happened: the member keeps moving (w_50 = 0.5^50)
    assert ds["w"].values[0, 0, -1, 0] == 0.5**50
    # all happened: frozen at the last one (t = 7); default dim and coordinates
    ds = sl.run(halving(jnp.array([0.1, 0.01])), progress=False)
    assert ds.event_step.dims[-1] == "event" and ds.event.values.tolist() == [0, 1]
    w = ds["w"].values[0, 0, :, 0]
    assert np.all(w[7:] == 0.5**7)
    # freeze=False: keeps moving
    ds = sl.run(halving(jnp.array([0.1, 0.01]), freeze=False), progress=False)
    assert ds.event_step.values[0, 0].tolist() == [4, 7] and ds["w"].values[0, 0, -1, 0] == 0.5**50
    # every=k with a vector: the first checked step per component
    ds = sl.run(halving(th, every=3), progress=False)
    assert ds.event_step.values[0, 0].tolist() == [6, 9, -1]


@pytest.mark.parametrize("freeze", [True, False])
def test_scalar_first_passage_matches_the_trajectory_and_a_vector_of_one(freeze):
    """On a noisy problem the scalar path's step is the first recorded step below the level;
    a one-component vector predicate gives the same steps and bitwise the same members."""
    problem = sl.problems.noisy_quadratic(1.0, 1.0, w0=3.0)

    def study(pred):
        return sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": [0.01, 0.1]}, steps=60,
                        seeds=16, first_passage=sl.FirstPassage(pred, freeze=freeze),
                        observe=sl.Observe(("w",), at=tuple(range(61))))
    scalar = sl.run(study(lambda o: o.params[0] < 1.0), progress=False)
    vector = sl.run(study(lambda o: (o.params[0] < 1.0)[None]), progress=False)
    assert np.array_equal(scalar.event_step.values, vector.event_step.values[..., 0])
    assert np.array_equal(scalar["w"].values, vector["w"].values)
    w = sl.run(study(lambda o: o.params[0] < -1e9), progress=False)["w"].values[..., 0]
    below = w < 1.0
    first = np.where(below.any(-1), below.argmax(-1), -1)
    assert np.array_equal(scalar.event_step.values, first)
    assert (first > 0).any() and (first == -1).any()


def test_bad_predicates_get_one_line_errors():
    problem = sl.problems.noisy_quadratic(1.0, 1.0)
    base = dict(problem=problem, optimizer=sl.Optimizer("sgd"), hparams={"learning_rate": 0.1},
                steps=5, seeds=1)

    def float_pred(o):
        return o.params[0]

    def matrix_pred(o):
        return jnp.ones((2, 2), bool)
    for pred, what in ((float_pred, "float_pred"), (matrix_pred, "matrix_pred")):
        with pytest.raises(ValueError, match=f"^first_passage.predicate '{what}'") as e:
            sl.run(sl.Study(**base, first_passage=sl.FirstPassage(pred)), progress=False)
        assert "boolean" in str(e.value)
        assert_friendly(e)
    with pytest.raises(ValueError, match="^first_passage.names"):
        sl.run(sl.Study(**base, first_passage=sl.FirstPassage(
            lambda o: jnp.zeros(3, bool), names=("a", "b"))), progress=False)
    with pytest.raises(ValueError, match="^first_passage.every"):
        sl.Study(**base, first_passage=sl.FirstPassage(lambda o: o.step > 2, every=0))


def test_a_data_block_of_the_wrong_shape_gets_a_one_line_error():
    """A source's block must stack B batches: a wrong shape is named before compiling."""
    def sample(key, n):
        return jax.random.normal(key, (n, 2))
    good = sl.data.online(sample, 3, iid_rows=True)
    assert sl.data.block_steps(good) == 64  # 6 numbers a step
    problem = sl.Problem(name="lin", init=lambda k: jnp.zeros(2),
                         loss=lambda w, x, hp: jnp.mean((x @ w - 1.0) ** 2), data=good)
    base = dict(optimizer=sl.Optimizer("sgd"), hparams={"learning_rate": 0.1}, steps=5, seeds=2)
    sl.run(sl.Study(problem, **base), progress=False)
    for block in (lambda data, key, b, B: jax.random.normal(key, (B * 3, 2)),   # not stacked
                  lambda data, key, b, B: jax.random.normal(key, (B, 3, 2), jnp.int32)):
        bad = dataclasses.replace(problem, data=good._replace(block=block))
        with pytest.raises(ValueError, match=r"^problem.data.block\(data, key, b, B\) is "
                                             r"invalid: .*64 steps stacked") as e:
            sl.run(sl.Study(bad, **base), progress=False)
        assert_friendly(e)
    # a row (one step's batch computed alone) must have one batch's shape
    rowed = good._replace(block=lambda data, key, b, B: jax.random.normal(
        sl.data.block_key(key, b), (B, 3, 2)))
    sl.run(sl.Study(dataclasses.replace(problem, data=rowed._replace(
        row=lambda data, key, j, B: sl.data.normal_row(key, j, B, (3, 2)))), **base),
        progress=False)
    bad = dataclasses.replace(problem, data=rowed._replace(
        row=lambda data, key, j, B: sl.data.normal_row(key, j, B, (2,))))
    with pytest.raises(ValueError, match=r"^problem.data.row\(data, key, j, B\) is invalid: "
                                         r".*one step's batch") as e:
        sl.run(sl.Study(bad, **base), progress=False)
    assert_friendly(e)
    lone = dataclasses.replace(problem, data=rowed._replace(  # a row without a block
        block=None, row=lambda data, key, j, B: sl.data.normal_row(key, j, B, (3, 2))))
    with pytest.raises(ValueError, match=r"^problem.data.row\(data, key, j, B\) is invalid: "
                                         r".*give block") as e:
        sl.run(sl.Study(lone, **base), progress=False)
    assert_friendly(e)


# --------------------------------------------------------------------------- front door, counter


def test_front_door_attributes():
    import types
    for name in ("analysis", "plots", "theory", "experiments", "engine", "problems", "results"):
        assert isinstance(getattr(sl, name), types.ModuleType), name
    for name in ("Study", "run", "plan", "Observe", "Stationary", "FirstPassage", "Optimizer",
                 "load", "save", "Problem", "Observation"):
        assert hasattr(sl, name), name
    for cls in (sl.Observe, sl.Observation):
        assert "pre-update" in cls.__doc__


def quad_study(K, C, lrs=(0.1, 0.2), **kw):
    return sl.Study(sl.problems.noisy_quadratic(K, C), sl.Optimizer("sgd"),
                    {"learning_rate": list(lrs)}, steps=40, seeds=4,
                    observe=sl.Observe(("w",), at=(0, 40)), **kw)


def test_trace_count_moves_with_shapes_not_values():
    assert callable(engine.trace_count)
    sl.run(quad_study([1.0, 2.0], [1.0, 1.0]), progress=False)
    n = engine.trace_count()
    assert engine.TRACE_COUNT == n  # the old name reads the same counter
    sl.run(quad_study([1.0, 2.0], [1.0, 1.0], lrs=(0.3, 0.4)), progress=False)
    assert engine.trace_count() == n
    sl.run(quad_study([1.0, 2.0, 3.0], [1.0, 1.0, 1.0]), progress=False)  # a new shape
    assert engine.trace_count() == n + 1
    sl.run(quad_study([1.0, 2.0], [1.0, 1.0], lrs=(0.1, 0.2, 0.3)), progress=False)  # new grid
    assert engine.trace_count() == n + 2


def test_a_new_preconditioner_of_the_same_shape_reuses_the_program_and_acts():
    """The preconditioner is an argument of the program, like a pytree problem's arrays:
    a second matrix of the same shape compiles nothing, and its numbers reach the
    program (equal to the same matrix applied by a user's own optax chain, compiled
    apart), while a matrix of another shape compiles anew."""
    import optax

    def study(opt, A=None):
        A = np.diag([1.0, 0.5]) if A is None else A
        return sl.Study(sl.problems.linear_regression(A, 0.5, 2), opt,
                        {"learning_rate": [0.1, 0.3], "momentum": 0.5}, steps=25, seeds=3,
                        observe=sl.Observe(("w",), at=(25,)))

    P = np.array([[1.5, 0.25], [0.25, 0.75]])
    with jax.enable_x64(True):
        eye = sl.run(study(sl.Optimizer("momentum", preconditioner=np.eye(2))), progress=False)
        n = engine.trace_count()
        ds = sl.run(study(sl.Optimizer("momentum", preconditioner=P)), progress=False)
        assert engine.trace_count() == n

        def chain(hp):  # P applied by the user's own transformation: another program
            pre = optax.GradientTransformation(
                lambda params: optax.EmptyState(),
                lambda u, s, params=None: (jax.tree_util.tree_map(lambda g: P @ g, u), s))
            return optax.chain(pre, optax.sgd(hp["learning_rate"], momentum=hp["momentum"]))
        ref = sl.run(study(sl.Optimizer(chain)), progress=False)
        assert engine.trace_count() == n + 1
        np.testing.assert_allclose(ds["w"].values, ref["w"].values, rtol=1e-12, atol=1e-12)
        assert not np.allclose(ds["w"].values, eye["w"].values)  # the matrix acts
        sl.run(study(sl.Optimizer("momentum", preconditioner=np.eye(3)), np.eye(3)),
               progress=False)
        assert engine.trace_count() == n + 2  # another shape: another program


# --------------------------------------------------------------------------- pytree problems


def test_rebuilt_problem_with_new_arrays_of_same_shapes_gives_zero_new_traces():
    with jax.enable_x64(True):
        sl.run(quad_study([1.0, 2.0], [[1.0, 0.2], [0.2, 1.0]]), progress=False)
        n = engine.trace_count()
        new = quad_study([3.0, 0.5], [[2.0, 0.0], [0.0, 0.5]])
        ds = sl.run(new, progress=False)
        assert engine.trace_count() == n
        # the new arrays did reach the program: equal to the same problem compiled as closures
        loss = new.problem.loss
        closure = dataclasses.replace(new.problem, loss=lambda w, xi, hp: loss(w, xi, hp))
        assert new.problem.is_pytree and not closure.is_pytree
        ref = sl.run(dataclasses.replace(new, problem=closure), progress=False)
        assert engine.trace_count() == n + 1
        np.testing.assert_allclose(ds["w"].values, ref["w"].values, rtol=1e-12, atol=1e-12)
        assert np.abs(ds["w"].values[..., -1, :]).max() > 0
    # linear regression: new input covariance, noise and teacher, same shapes
    def lin(A, sigma, ws):
        return sl.Study(sl.problems.linear_regression(A, sigma, 4, w_star=ws),
                        sl.Optimizer("sgd"), {"learning_rate": 0.1}, steps=30, seeds=2,
                        observe=sl.Observe(("risk",), at=(30,)))
    sl.run(lin(np.eye(2), 0.5, [1.0, 0.0]), progress=False)
    n = engine.trace_count()
    sl.run(lin(np.diag([2.0, 0.1]), 1.5, [0.0, 3.0]), progress=False)
    assert engine.trace_count() == n


# --------------------------------------------------------------------------- optimizers


def clipped_sgd(hp):
    import optax
    return optax.chain(optax.clip_by_global_norm(hp["clip"]), optax.sgd(hp["learning_rate"]))


def test_user_optax_transformation_equals_plain_optax_loop_in_float64():
    import optax
    from jax.flatten_util import ravel_pytree

    with jax.enable_x64(True):
        problem = sl.problems.mlp_regression((3, 8, 1), activation="tanh", target="teacher",
                                             teacher_sizes=(3, 4, 1), inputs="gaussian",
                                             batch_size=5, reduction="half_mean", n_eval=16)
        lrs, clips = [0.05, 0.2], [0.05, 10.0]
        study = sl.Study(problem, sl.Optimizer(clipped_sgd), {"learning_rate": lrs,
                                                              "clip": clips},
                         steps=25, seeds=2,
                         observe=sl.Observe((("theta", lambda o: ravel_pytree(o.params)[0]),),
                                            at=(25,)))
        ds = sl.run(study, progress=False)
        data = problem.data.init(engine.shared_key(0))
        grad = jax.jit(jax.grad(problem.loss))
        for i, lr in enumerate(lrs):
            for j, c in enumerate(clips):
                for s in range(2):
                    init_k, data_k, _ = engine.member_keys(0, s)
                    params = problem.init(init_k)
                    tx = optax.chain(optax.clip_by_global_norm(c), optax.sgd(lr))
                    state = tx.init(params)
                    for t in range(1, 26):
                        g = grad(params, sl.data.step_batch(problem.data, data, data_k, t), {})
                        updates, state = tx.update(g, state, params)
                        params = optax.apply_updates(params, updates)
                    ref = np.asarray(ravel_pytree(params)[0])
                    got = ds["theta"].values[i, j, s, 0]
                    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
        # the clip was active: the two clip values differ
        assert not np.allclose(ds["theta"].values[:, 0], ds["theta"].values[:, 1])


def test_optimizer_keys_are_discovered_and_unread_keys_refused():
    opt = sl.Optimizer(clipped_sgd)
    assert set(opt.required) == {"clip", "learning_rate"}
    problem = sl.problems.noisy_quadratic(1.0, 1.0)
    with pytest.raises(ValueError, match="^hparams='momentum'.*do not read it") as e:
        sl.Study(problem, opt, {"learning_rate": 0.1, "clip": 1.0, "momentum": 0.9},
                 steps=5, seeds=1)
    assert_friendly(e)
    with pytest.raises(ValueError, match="^hparams='clip'.*missing"):
        sl.Study(problem, opt, {"learning_rate": 0.1}, steps=5, seeds=1)
    opt = sl.Optimizer(clipped_sgd, defaults={"clip": 1.0})
    assert sl.Study(problem, opt, {"learning_rate": 0.1}, steps=5, seeds=1).hparams["clip"] == 1.0
    # the named optimizers are such factories: their keys are found the same way
    assert sl.Optimizer("momentum").required == ("learning_rate", "momentum")
    assert sl.Optimizer("sgd", schedule="power").defaults == {"n0": 0.0}


def test_finding_an_optimizers_keys_compiles_nothing_and_a_broken_factory_is_named():
    """The keys a factory or schedule reads are found by tracing it on placeholders, not by
    running it: no program is compiled (run eagerly, each operation on the placeholders
    compiled a one-op program: a power schedule cost five). A factory that fails is named
    in one line."""
    from jax import monitoring
    compiled = []

    def listen(event, duration, **kw):
        if event.endswith("backend_compile_duration"):
            compiled.append(kw.get("fun_name"))

    def cube_root_schedule(hp):  # operations no other test runs eagerly on scalars
        return lambda count: jnp.cbrt(hp["gamma0"]) / jnp.log1p(count + hp["n0"])

    monitoring.register_event_duration_secs_listener(listen)
    try:
        opt = sl.Optimizer("sgd", schedule=cube_root_schedule)
        assert set(opt.required) == {"gamma0", "n0"}
        power = sl.Optimizer("sgd", schedule="power")
        assert set(power.required) == {"alpha", "gamma0"} and power.defaults == {"n0": 0.0}
    finally:
        monitoring.unregister_event_duration_listener(listen)
    assert compiled == []

    import optax

    def broken(hp):
        return optax.sgd(hp["learning_rate"] + "a string")

    with pytest.raises(ValueError, match=r"^optimizer='broken' is invalid: calling it with hp "
                                         r"failed \(TypeError: ") as e:
        sl.Optimizer(broken)
    assert_friendly(e)


# --------------------------------------------------------------------------- friendly errors


@jax.tree_util.register_pytree_node_class
class ModuleLike:
    """An Equinox-like module: arrays and a function, all leaves."""

    def __init__(self, w, act):
        self.w, self.act = w, act

    def tree_flatten(self):
        return (self.w, self.act), None

    @classmethod
    def tree_unflatten(cls, aux, leaves):
        return cls(*leaves)


def test_user_function_errors_are_one_line_without_jax_traceback():
    base = sl.problems.noisy_quadratic([1.0, 2.0], [1.0, 1.0])

    def study(**changes):
        return sl.Study(dataclasses.replace(base, **changes), sl.Optimizer("sgd"),
                        {"learning_rate": 0.1}, steps=5, seeds=1)

    cases = [
        (dict(loss=lambda w, xi, hp: w * w), r"^problem\.loss.*float32\[2\].*scalar"),
        (dict(init=lambda key: ModuleLike(jnp.zeros(2), jnp.tanh)),
         r"^problem\.init.*leaf of type .*pytree of arrays"),
        (dict(init=lambda key: jnp.zeros(2, jnp.int32)), r"^problem\.init.*int32.*float"),
        (dict(loss=lambda w, xi, hp: jnp.sum(w @ jnp.ones((3, 3)))),
         r"^problem\.loss.*failed on abstract inputs.*params are float32\[2\]"),
    ]
    for changes, pattern in cases:
        with pytest.raises(ValueError, match=pattern) as e:
            sl.run(study(**changes), progress=False)
        assert_friendly(e)


# --------------------------------------------------------------------------- static sweeps


def test_static_sweep_over_batch_size_equals_separate_runs_bitwise():
    A = np.diag([1.0, 0.5])
    kw = dict(optimizer=sl.Optimizer("sgd"), hparams={"learning_rate": [0.1, 0.2]}, steps=40,
              seeds=6, observe=sl.Observe(("w", "loss"), num=5))
    study = sl.Study(lambda batch_size: sl.problems.linear_regression(A, 0.5, batch_size),
                     static={"batch_size": [1, 4]}, **kw)
    p = sl.plan(study)
    assert p.compiles == 2 and "batch_size=4" in p.describe()
    ds = sl.run(study, progress=False)
    assert ds["w"].dims[:3] == ("batch_size", "learning_rate", "seed")
    assert ds.batch_size.values.tolist() == [1, 4]
    chunked = sl.run(study, chunk_size=2, progress=False)
    for b in (1, 4):
        ref = sl.run(sl.Study(sl.problems.linear_regression(A, 0.5, b), **kw), progress=False)
        for v in ref.data_vars:
            assert np.array_equal(ds[v].sel(batch_size=b).values, ref[v].values,
                                  equal_nan=True), v
            assert np.array_equal(chunked[v].sel(batch_size=b).values, ref[v].values,
                                  equal_nan=True), v
    assert not np.array_equal(ds["w"].sel(batch_size=1).values, ds["w"].sel(batch_size=4).values)
    assert sl.results.config(ds)["static"] == {"batch_size": [1, 4]}
    with pytest.raises(ValueError, match="^problem"):
        sl.Study(sl.problems.noisy_quadratic(1.0, 1.0), static={"batch_size": [1]}, **kw)


# --------------------------------------------------------------------------- compile cache


def test_second_run_in_a_fresh_process_reads_the_compiled_program_from_the_cache(tmp_path):
    """The cache is on by default (in $XDG_CACHE_HOME/sgdlab/jax); SGDLAB_COMPILE_CACHE moves
    it or (=0) turns it off."""
    import os
    import subprocess
    import sys

    script = (
        "import jax, sgdlab as sl\n"
        "hits = []\n"
        "jax.monitoring.register_event_listener(\n"
        "    lambda e, **k: hits.append(e) if e == '/jax/compilation_cache/cache_hits' else None)\n"
        "st = sl.Study(sl.problems.noisy_quadratic(1.0, 1.0), sl.Optimizer('sgd'),\n"
        "              {'learning_rate': [0.1, 0.2]}, steps=20, seeds=3)\n"
        "sl.run(st, progress=False)\n"
        "print('cache', jax.config.jax_compilation_cache_dir, 'hits', len(hits))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")
           and not k.startswith("JAX_PERSISTENT_CACHE") and k != "SGDLAB_COMPILE_CACHE"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")

    def run(**extra):
        o = subprocess.run([sys.executable, "-c", script], env={**env, **extra},
                           capture_output=True, text=True, timeout=600)
        assert o.returncode == 0, o.stderr[-2000:]
        return o.stdout.split()[-3], int(o.stdout.split()[-1])

    default = tmp_path / "xdg" / "sgdlab" / "jax"
    (d1, first), (d2, second) = run(), run()
    assert d1 == d2 == str(default)
    assert second >= first + 2  # the init and segment programs were read back
    assert any(default.glob("*-cache")) and not list(default.glob(".*.tmp"))
    moved = tmp_path / "moved"
    assert run(SGDLAB_COMPILE_CACHE=str(moved))[0] == str(moved)
    assert any(moved.glob("*-cache"))  # written at the new place
    assert run(SGDLAB_COMPILE_CACHE="0")[1] == 0


def test_a_run_compiles_its_two_programs_and_nothing_else(tmp_path):
    """In a fresh process ``sl.run`` compiles the study's init and segment programs and no
    small conversion program around them (each costs a few ms of every rerun, cache or
    not), and it leaves Python's collector as it found it: nothing frozen after the run,
    and a caller's own ``gc.freeze()`` kept."""
    import os
    import subprocess
    import sys

    script = (
        "import gc, jax, numpy as np, sgdlab as sl\n"
        "names = []\n"
        "pb = sl.problems.linear_regression(np.diag([1.0, 0.5]), 0.5, 4)\n"
        "st = sl.Study(pb, sl.Optimizer('momentum'), {'learning_rate': [0.1, 0.2],\n"
        "              'momentum': 0.5}, steps=20, seeds=3, observe=sl.Observe(('loss',), num=4))\n"
        "jax.monitoring.register_event_duration_secs_listener(\n"
        "    lambda e, s, fun_name='?', **k: names.append(fun_name)\n"
        "    if e == '/jax/core/compile/backend_compile_duration' else None)\n"
        "frozen = []\n"
        "sl.run(st, progress=False)\n"
        "frozen.append(gc.get_freeze_count())\n"
        "gc.freeze(); n = gc.get_freeze_count()\n"
        "sl.run(st, progress=False)\n"
        "frozen.append(gc.get_freeze_count() - n)\n"
        "print(sorted(names), frozen)\n")
    o = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "SGDLAB_COMPILE_CACHE": str(tmp_path)})
    assert o.returncode == 0, o.stderr[-2000:]
    assert o.stdout.strip().splitlines()[-1] == "['jit(_init)', 'jit(_segment)'] [0, 0]"


def test_programs_that_differ_only_in_how_their_state_nests_compile_once(tmp_path):
    """A preconditioned optimizer nests its state one level deeper; its init program
    computes what plain SGD's does, so the cache holds one init program for both studies
    (the compiled programs return flat leaves: no pytree paths in the cache key)."""
    import os
    import subprocess
    import sys

    script = (
        "import numpy as np, sgdlab as sl\n"
        "pb = sl.problems.linear_regression(np.diag([1.0, 0.5]), 0.5, 1)\n"
        "for pre in (None, np.diag([1.0, 2.0])):\n"
        "    st = sl.Study(pb, sl.Optimizer('momentum', preconditioner=pre),\n"
        "                  {'learning_rate': [0.1, 0.2], 'momentum': 0.5}, steps=20, seeds=3)\n"
        "    print(float(sl.run(st, progress=False)['loss_mean'].values[0, -1]))\n")
    cache = tmp_path / "cc"
    o = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "SGDLAB_COMPILE_CACHE": str(cache)})
    assert o.returncode == 0, o.stderr[-2000:]
    loss_a, loss_b = o.stdout.split()[-2:]
    assert loss_a != loss_b  # the segments differ: the preconditioner acts
    assert len(list(cache.glob("jit__init-*-cache"))) == 1
    assert len(list(cache.glob("jit__segment-*-cache"))) == 2


def test_turning_the_cache_off_in_a_process_stops_its_use():
    import jax
    import jax.numpy as jnp

    hits = []
    jax.monitoring.register_event_listener(
        lambda e, **k: hits.append(e) if e == "/jax/compilation_cache/cache_hits" else None)
    here = sl.engine.compile_cache()
    try:
        f = jax.jit(lambda x: jnp.cos(x) * 3.25 + x)
        f(jnp.ones(7)).block_until_ready()  # written (or read) here
        jax.clear_caches()
        sl.engine.compile_cache(False)
        n = len(hits)
        f(jnp.ones(7)).block_until_ready()  # compiled again, not read
        assert len(hits) == n
    finally:
        sl.engine.compile_cache(here)


def test_a_cache_entry_is_whole_or_absent_when_its_writer_is_killed(tmp_path):
    """SIGKILL while an entry is being written leaves no torn entry (JAX's own file cache
    writes in place: a later reader would get a truncated program)."""
    import signal
    import subprocess
    import sys
    import time

    size = 200_000_000
    script = (
        "import sgdlab as sl, jax\n"
        f"sl.engine.compile_cache({str(tmp_path)!r})\n"
        "from jax._src import compilation_cache as cc\n"
        "print('ready', flush=True)\n"
        f"cc._cache.put('k', b'x' * {size})\n")
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    t0 = time.time()
    while not any(f.stat().st_size > 0 for f in tmp_path.iterdir() if f.is_file()):
        assert time.time() - t0 < 60 and p.poll() is None, "the writer never started"
        time.sleep(0.001)
    p.send_signal(signal.SIGKILL)
    p.wait()
    entries = list(tmp_path.glob("*-cache"))
    assert all(f.stat().st_size == size for f in entries), [f.stat().st_size for f in entries]
    if not entries:  # killed mid-write: only the writer's temporary file is left
        assert list(tmp_path.glob(".k.*.tmp"))


def test_the_cache_is_bounded_by_dropping_its_oldest_entries(tmp_path):
    import os
    import time

    from sgdlab.engine import _cache

    now = time.time()
    for i in range(10):  # ten entries of 100 bytes, entry 0 written first
        f = tmp_path / f"k{i}-cache"
        f.write_bytes(b"x" * 100)
        os.utime(f, (now - 1000 + i, now - 1000 + i))
    dead, live = tmp_path / ".k.1.2.tmp", tmp_path / ".k.3.4.tmp"
    for f, age in ((dead, 7200), (live, 10)):
        f.write_bytes(b"y")
        os.utime(f, (now - age, now - age))
    assert _cache.prune(tmp_path, max_bytes=1000) == 0  # at the bound: nothing goes
    assert not dead.exists() and live.exists()  # a writer dead for an hour leaves nothing
    assert _cache.prune(tmp_path, max_bytes=800) == 4  # down to 3/4 of the bound
    assert sorted(f.name for f in tmp_path.glob("*-cache")) == [f"k{i}-cache" for i in range(4, 10)]


# --------------------------------------------------------------------------- user recorders


@dataclasses.dataclass(frozen=True)
class RunningMax:
    """A user recorder in a page: each member's running max of |w₀|, and the sum over live
    members of the final |w₀|, reduced on the device per block of seeds."""

    name: str = "running_max"

    @staticmethod
    def _value(ctx, members, hp, data, t):
        from jax.flatten_util import ravel_pytree
        return ctx.evaluate(lambda o: jnp.abs(ravel_pytree(o.params)[0][0]), members, hp, data, t)

    def init(self, ctx, members, hp, data, valid):
        v = self._value(ctx, members, hp, data, jnp.int32(0))
        s, g = v.shape
        return {"max": v, "block_sum": jnp.zeros((s // ctx.block, g), v.dtype)}

    def update(self, ctx, state, members, hp, data, valid, t):
        v = self._value(ctx, members, hp, data, t)
        live = ctx.live(members, valid)
        sums = jnp.where(live, v, 0).reshape((-1, ctx.block) + v.shape[1:]).sum(axis=1)
        last = t == ctx.study.steps
        return {"max": jnp.maximum(state["max"], v),
                "block_sum": jnp.where(last, sums, state["block_sum"])}

    def collect(self, ctx, state, members, valid):
        blocks = -(-int(valid.sum()) // ctx.block)
        return {"max": np.asarray(state["max"])[valid],
                "block_sum": np.asarray(state["block_sum"])[:blocks]}

    def merge(self, ctx, parts):
        total = None
        for b in np.concatenate([p["block_sum"] for p in parts]):  # blocks in seed order
            total = b if total is None else total + b
        return {"max": np.concatenate([p["max"] for p in parts]), "sum": total}

    def to_dataset(self, ctx, merged):
        return {}, {"max_abs_w": (ctx.gdims + ("seed",), ctx.grid_first(merged["max"])),
                    "sum_abs_w": (ctx.gdims, ctx.grid_unflat(merged["sum"]))}


def test_user_recorder_works_and_is_bitwise_invariant_to_chunking():
    problem = sl.problems.noisy_quadratic(1.0, 1.0, w0=2.0)

    def study(**kw):
        kw.setdefault("recorders", (RunningMax(),))
        return sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": [0.05, 0.2]}, steps=30,
                        seeds=12, block_seeds=4, observe=sl.Observe(("w",), at=tuple(range(31))),
                        **kw)
    ds = sl.run(study(), progress=False)
    w = np.abs(ds["w"].values[..., 0])                                 # (lr, seed, step)
    assert np.array_equal(ds.max_abs_w.values, w.max(-1))
    np.testing.assert_allclose(ds.sum_abs_w.values, w[..., -1].sum(-1), rtol=1e-5)
    chunked = sl.run(study(chunk_size=4), progress=False)
    assert "3 chunk(s)" in chunked.attrs["plan"]
    for v in ("max_abs_w", "sum_abs_w", "w"):
        assert np.array_equal(ds[v].values, chunked[v].values), v
    assert sl.results.config(ds)["recorders"] == [{"name": "running_max",
                                                   "type": "RunningMax"}]
    with pytest.raises(ValueError, match="^recorders"):
        study(recorders=(object(),))


@dataclasses.dataclass(frozen=True)
class StepLog:
    """A user recorder: how many times ``update`` saw each step t = 0..steps, per member."""

    name: str = "step_log"
    update_at_step_zero: bool = False

    def init(self, ctx, members, hp, data, valid):
        s, g = members.diverged_step.shape[:2]
        return jnp.zeros((s, g, ctx.study.steps + 1), jnp.int32)

    def update(self, ctx, state, members, hp, data, valid, t):
        return state + (jnp.arange(ctx.study.steps + 1) == t).astype(jnp.int32)

    def collect(self, ctx, state, members, valid):
        return np.asarray(state)[valid]

    def merge(self, ctx, parts):
        return np.concatenate(parts)

    def to_dataset(self, ctx, merged):
        return {}, {"calls": (ctx.gdims + ("seed", "t"), ctx.grid_first(merged))}


def test_update_sees_step_zero_once_only_when_every_recorder_takes_it():
    """A recorder with ``update_at_step_zero`` gets t = 0 once per member (the first
    segment's step that changes nothing), whatever the segments and chunks; one without
    it never does, and then the built-in recorders record step 0 in the init. The
    records are the same either way."""
    problem = sl.problems.noisy_quadratic([1.0, 3.0], [1.0, 0.5], w0=[2.0, -1.0])
    steps = 10

    def study(log, **kw):
        return sl.Study(problem, sl.Optimizer("momentum"),
                        {"learning_rate": [0.05, 0.2], "momentum": 0.5}, steps=steps, seeds=5,
                        block_seeds=1, observe=sl.Observe(("w", "risk"), at=(0, 3, steps)),
                        recorders=(log,), **kw)
    with jax.enable_x64(True):
        old = sl.run(study(StepLog(update_at_step_zero=False)), progress=False)
        assert (old["calls"].values[..., 0] == 0).all()
        assert (old["calls"].values[..., 1:] == 1).all()
        for kw in ({}, {"segment_steps": 3, "chunk_size": 2}):
            new = sl.run(study(StepLog(update_at_step_zero=True), **kw), progress=False)
            assert (new["calls"].values == 1).all(), kw
            for v in ("w", "risk", "risk_mean", "risk_var", "w_mean"):
                np.testing.assert_allclose(new[v].values, old[v].values, rtol=1e-13,
                                           atol=1e-15, err_msg=v)
        np.testing.assert_array_equal(new["w"].values[..., 0, :],
                                      np.broadcast_to([2.0, -1.0], new["w"].shape[:-2] + (2,)))


def test_functions_that_read_the_loss_or_gradient_norm_see_every_steps_value():
    """The engine updates the member state's loss and gradient norm only when a recorded
    function reads them (found from its traced program): a function of ``o.loss`` or
    ``o.grad_norm`` records what the built-in observables record, step by step, and an
    observable that reads neither leaves the parameters' trajectory bitwise as it was."""
    pb = sl.problems.linear_regression(np.diag([1.0, 0.5]), 0.5, 4)

    def study(observables):
        return sl.Study(pb, sl.Optimizer("momentum"), {"learning_rate": [0.1, 0.2],
                        "momentum": 0.5}, steps=30, seeds=3,
                        observe=sl.Observe(observables, num=5, stats=False))

    mine = sl.run(study((("half_loss", lambda o: 0.5 * o.loss),
                         ("gnorm", lambda o: o.grad_norm + 0.0))), progress=False)
    builtin = sl.run(study(("loss", "grad_norm")), progress=False)
    assert np.array_equal(mine["half_loss"].values, 0.5 * builtin["loss"].values)
    assert np.array_equal(mine["gnorm"].values, builtin["grad_norm"].values)
    assert np.unique(builtin["loss"].values[0, 0]).size == 5  # it moves from record to record
    assert builtin["loss"].dims[-1] == "step"  # and at step 0 (the init program) it is there
    assert np.all(builtin["loss"].values[..., 0] > 0) and np.all(
        builtin["grad_norm"].values[..., 0] > 0)
    w_only = sl.run(study(("param_norm",)), progress=False)
    with_loss = sl.run(study(("param_norm", "loss")), progress=False)
    assert np.array_equal(w_only["param_norm"].values, with_loss["param_norm"].values)
