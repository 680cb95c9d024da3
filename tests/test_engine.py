"""The engine's contract: equivalence with a plain optax loop, invariance, compile once,
statistics against closed forms, divergence as data, bounded memory, clear errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import sgdlab as sl
from sgdlab import engine
from sgdlab.engine._compiled import _program as compiled_program  # white-box: the program itself
from sgdlab.engine._compiled import chunk_seeds, program_inputs


def flat_params(o):
    return ravel_pytree(o.params)[0]


def mlp_study(seeds=3, lrs=(0.05, 0.2), steps=30, momentum=0.9, **kw):
    problem = sl.problems.mlp_regression((3, 8, 8, 1), activation="tanh", target="teacher",
                                         teacher_sizes=(3, 4, 1), inputs="gaussian",
                                         batch_size=5, reduction="half_mean", n_eval=64)
    return sl.Study(problem, sl.Optimizer("momentum"),
                    {"learning_rate": list(lrs), "momentum": momentum}, steps=steps, seeds=seeds,
                    observe=sl.Observe((("theta", flat_params), "loss"), at=(0, steps)), **kw)


def reference_loop(problem, lr, momentum, steps, seed_index, base_seed=0):
    """One member, trained with a plain Python loop of optax updates."""
    init_k, data_k, _ = engine.member_keys(base_seed, seed_index)
    data = problem.data.init(engine.shared_key(base_seed))
    params = problem.init(init_k)
    tx = optax.sgd(lr, momentum=momentum)
    state = tx.init(params)
    grad = jax.jit(jax.grad(problem.loss))
    for t in range(1, steps + 1):
        batch = sl.data.step_batch(problem.data, data, data_k, t)
        g = grad(params, batch, {})
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return ravel_pytree(params)[0]


@pytest.mark.parametrize("x64,rtol", [(True, 1e-12), (False, 1e-5)])
def test_vmapped_member_equals_plain_optax_loop(x64, rtol):
    with jax.enable_x64(x64):
        study = mlp_study()
        ds = sl.run(study, progress=False)
        for i, lr in enumerate(study.grid["learning_rate"]):
            for s in range(study.seeds):
                ref = np.asarray(reference_loop(study.problem, lr, 0.9, study.steps, s))
                got = ds["theta"].isel(learning_rate=i, seed=s, step=-1).values
                assert got.dtype == (np.float64 if x64 else np.float32)
                np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * np.abs(ref).max())
                # the members really moved
                assert np.abs(got - ds["theta"].isel(learning_rate=i, seed=s, step=0).values
                              ).max() > 1e-3


def test_members_bitwise_invariant_to_ensemble_size_and_chunking():
    small = sl.run(mlp_study(seeds=16, chunk_size=7, block_seeds=1), progress=False)
    big = sl.run(mlp_study(seeds=64, chunk_size=64), progress=False)
    other = sl.run(mlp_study(seeds=64, chunk_size=7, block_seeds=1), progress=False)
    a = small["theta"].values
    b = big["theta"].isel(seed=slice(0, 16)).values
    c = other["theta"].values
    assert np.array_equal(a, b)
    assert np.array_equal(big["theta"].values, c)
    # a different seed index really is a different member
    assert not np.array_equal(b[:, 0], b[:, 1])
    for v in small.data_vars:  # every recorded value, the step-0 loss of init included
        if "seed" in small[v].dims:
            assert np.array_equal(small[v].values, big[v].isel(seed=slice(0, 16)).values,
                                  equal_nan=True), v


@pytest.mark.parametrize("x64,rtol", [(True, 1e-12), (False, 1e-5)])
def test_members_one_after_another_equal_the_plain_loop_and_keep_invariance(x64, rtol):
    """``member_layout="map"`` (members one after another inside each step) trains every
    member as the plain optax loop does, and its bits do not depend on the seed count or
    the chunking; it differs from the vectorized layout in rounding only."""
    with jax.enable_x64(x64):
        small = sl.run(mlp_study(seeds=5, steps=12, chunk_size=2, block_seeds=1,
                                 member_layout="map"), progress=False)
        big = sl.run(mlp_study(seeds=8, steps=12, member_layout="map"), progress=False)
        vec = sl.run(mlp_study(seeds=5, steps=12, chunk_size=2, block_seeds=1,
                               member_layout="vmap"), progress=False)
        assert np.array_equal(small["theta"].values, big["theta"].isel(seed=slice(0, 5)).values)
        assert np.array_equal(small["loss"].values, big["loss"].isel(seed=slice(0, 5)).values)
        assert "member_layout" in small.attrs["sgdlab_config"]  # the layout is in the identity
        assert "member_layout" not in vec.attrs["sgdlab_config"]
        assert "one after another" in small.attrs["plan"]
        np.testing.assert_allclose(small["theta"].values, vec["theta"].values, rtol=rtol,
                                   atol=rtol)
        study = mlp_study(seeds=2, steps=12, member_layout="map")
        for i, lr in enumerate(study.grid["learning_rate"]):
            ref = np.asarray(reference_loop(study.problem, lr, 0.9, study.steps, 1))
            got = big["theta"].isel(learning_rate=i, seed=1, step=-1).values
            np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * np.abs(ref).max())


def test_member_layout_auto_maps_large_members_on_cpu_only_and_refuses_others():
    def wide(w):
        problem = sl.problems.mlp_regression((8, w, w, 1), activation="relu", target="teacher",
                                             teacher_sizes=(8, 4, 1), inputs="gaussian",
                                             batch_size=4, reduction="half_mean", n_eval=8)
        return sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": 0.01}, steps=2, seeds=2)
    from sgdlab.engine._study import MAP_MEMBER_BYTES
    item = jnp.zeros(()).dtype.itemsize
    n = lambda w: 8 * w + w + w * w + w + w + 1  # noqa: E731
    assert n(1024) * item >= MAP_MEMBER_BYTES > n(512) * item
    assert wide(1024).resolved_member_layout() == ("map" if jax.default_backend() == "cpu"
                                                   else "vmap")
    assert wide(512).resolved_member_layout() == "vmap"
    assert "member_layout" not in wide(512).describe()  # the old identity where unchanged
    with pytest.raises(ValueError, match="member_layout"):
        mlp_study(member_layout="loop")


def test_step0_loss_bitwise_invariant_to_chunking():
    """The step-0 loss comes from the init program, where XLA once merged the seeds'
    products into one whose rounding changed with the chunk size (seed 5 of 8 moved by
    one ulp between chunks of 8 and 2)."""
    problem = sl.problems.mlp_regression((4, 8, 1), activation="relu", target="teacher",
                                         inputs="gaussian", batch_size=8,
                                         reduction="half_mean", n_eval=16)
    study = sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": [0.01, 0.05]}, steps=10,
                     seeds=8, observe=sl.Observe(("loss",), num=3), block_seeds=2)
    a, b = (sl.run(study, chunk_size=c, progress=False) for c in (8, 2))
    for v in ("loss", "loss_mean", "loss_var"):
        assert np.array_equal(a[v].values, b[v].values, equal_nan=True), v


def test_statistics_bitwise_invariant_to_chunking():
    """Streamed statistics are reduced per block of seeds and merged in seed order."""
    runs = [sl.run(mlp_study(seeds=40, chunk_size=c, block_seeds=4), progress=False)
            for c in (7, 64)]
    assert runs[0].attrs["plan"] != runs[1].attrs["plan"]
    for v in ("loss_mean", "loss_var", "loss_n", "theta_mean"):
        assert np.array_equal(runs[0][v].values, runs[1][v].values, equal_nan=True), v


def test_common_random_numbers_same_init_across_grid():
    ds = sl.run(mlp_study(seeds=4), progress=False)
    th0 = ds["theta"].isel(step=0).values  # (lr, seed, p)
    assert np.array_equal(th0[0], th0[1])
    assert not np.array_equal(th0[0, 0], th0[0, 1])


def test_calls_sized_by_time_change_no_bit_and_compile_once(monkeypatch):
    """The run loop sizes each call of the segment program by time (several segments per
    call): one segment per call and many per call give the same bits, from one compile."""
    from sgdlab.engine import _loop  # white-box: the pacer's target time

    study = sl.Study(sl.problems.noisy_quadratic([1.0, 0.5], [0.5, 0.2], w0=1.0),
                     sl.Optimizer("momentum"), {"learning_rate": [0.1, 0.3], "momentum": 0.5},
                     steps=400, seeds=12, segment_steps=10, block_seeds=4,
                     observe=sl.Observe(("loss", "w"), num=9),
                     stationary=sl.Stationary(("loss",), burn_in=50),
                     first_passage=sl.FirstPassage(lambda o: o.loss < 0.01))
    counts = []
    call = _loop._Pacer.call

    def spy(self, prog, carry, t0, k, *a):
        counts.append((t0, k))
        return call(self, prog, carry, t0, k, *a)

    monkeypatch.setattr(_loop._Pacer, "call", spy)
    runs = []
    for pace in (0.0, 1e9):  # one segment per call; as many as allowed (x16 per call)
        monkeypatch.setattr(_loop, "PACE_S", pace)
        counts.clear()
        before = engine.TRACE_COUNT
        runs.append(sl.run(study, progress=False))
        traces = engine.TRACE_COUNT - before
        if pace == 0.0:
            assert [k for _, k in counts] == [1] * 40 and traces == 1
        else:  # the first call runs one segment, then 16, then the remaining 23
            assert counts == [(0, 1), (10, 16), (170, 23)] and traces == 0
    for v in runs[0].data_vars:
        assert np.array_equal(runs[0][v].values, runs[1][v].values, equal_nan=True), v


def test_new_grid_of_same_shape_does_not_retrace():
    study = mlp_study(lrs=(0.01, 0.02))
    sl.run(study, progress=False)
    before = engine.TRACE_COUNT
    ds = sl.run(study.with_hparams(learning_rate=[0.3, 0.4], momentum=0.5), progress=False)
    assert engine.TRACE_COUNT == before
    assert list(ds.learning_rate.values) == [0.3, 0.4]
    # ... and the new values did reach the compiled program
    ds2 = sl.run(study.with_hparams(learning_rate=[0.3, 0.5], momentum=0.5), progress=False)
    assert engine.TRACE_COUNT == before
    assert np.array_equal(ds["theta"].isel(learning_rate=0).values,
                          ds2["theta"].isel(learning_rate=0).values)
    assert not np.array_equal(ds["theta"].isel(learning_rate=1, step=-1).values,
                              ds2["theta"].isel(learning_rate=1, step=-1).values)


def quadratic_study(lrs, seeds=4000, steps=3000, burn_in=300, **kw):
    problem = sl.problems.noisy_quadratic(curvature=1.0, noise_cov=1.0)
    at = tuple(sorted({0, min(100, steps), min(200, steps), steps // 2, steps}))
    return sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": list(lrs)}, steps=steps,
                    seeds=seeds, observe=sl.Observe(("w",), at=at),
                    stationary=sl.Stationary(("w2",), burn_in=burn_in, n_batches=10), **kw)


def test_stationary_variance_matches_exact_formula():
    """Var(w) = λσ²/(k(2 − λk)) (Liu, Ziyin & Ueda 2021) within 4 standard errors."""
    lrs = [0.1, 1.0, 1.9]
    with jax.enable_x64(True):
        ds = sl.run(quadratic_study(lrs), progress=False)
    for i, lr in enumerate(lrs):
        theory = lr / (2 - lr)
        est = float(ds.stationary_w2_mean[i, 0])
        se = float(ds.stationary_w2_se[i, 0])
        assert abs(est - theory) <= 4 * se, (lr, est, theory, se)
        assert se < 0.01 * theory  # the test resolves the effect to ~1%
    # the continuous-time answer λσ²/(2k) is rejected at λk = 1.9
    est, se = float(ds.stationary_w2_mean[2, 0]), float(ds.stationary_w2_se[2, 0])
    assert abs(est - 1.9 / 2) > 100 * se


def test_stationary_batch_means_are_sequential_sums_of_the_recorded_steps():
    """Each member's batch means are the sums, in step order, of w² at the recorded steps
    (every ``thin``-th after ``burn_in``, in ``n_batches`` batches, the last one shorter),
    divided by their counts: recomputed in NumPy from every step's w, in float64, to the
    rounding of a 10-term sum (XLA may fuse w·w + sum into one multiply-add: 1 ulp). The
    engine keeps the open batch's running sum apart and writes it at the batch's last step,
    so a batch closed one step early or late (a 10% change), or a sum not restarted, shows
    here."""
    with jax.enable_x64(True):
        st = sl.Study(sl.problems.noisy_quadratic(1.0, 1.0), sl.Optimizer("sgd"),
                      {"learning_rate": [0.3, 0.9]}, steps=61, seeds=3,
                      observe=sl.Observe(("w",), at=tuple(range(62)), stats=False),
                      stationary=sl.Stationary(("w2",), burn_in=5, n_batches=3, thin=2))
        ds = sl.run(st, progress=False)
    w = ds["w"].values[..., 0]                                      # [lr, seed, step]
    recorded = np.arange(5 + 2, 62, 2)                              # 28 steps: batches 10, 10, 8
    want = np.zeros(w.shape[:2] + (3,))
    for i, t in enumerate(recorded):
        want[:, :, i // 10] = want[:, :, i // 10] + w[:, :, t] * w[:, :, t]
    want /= np.array([10.0, 10.0, 8.0])
    np.testing.assert_allclose(ds["stationary_w2"].values[..., 0], want, rtol=1e-14, atol=0)


def test_divergent_grid_point_is_flagged_frozen_and_isolated():
    lrs = [0.1, 1.0, 1.9, 2.5]
    ds = sl.run(quadratic_study(lrs, seeds=64, steps=2000), progress=False)
    ref = sl.run(quadratic_study(lrs[:3], seeds=64, steps=2000), progress=False)
    div = ds.diverged_step.values
    assert np.all(div[3] > 0) and np.all(div[:3] == -1)
    assert ds.n_diverged.values.tolist() == [0, 0, 0, 64]
    # frozen: the last two records (steps 1000 and 2000, after divergence) are equal and finite
    w = ds["w"].isel(learning_rate=3).values[..., 0]
    assert np.all(div[3] < 1000)
    assert np.array_equal(w[:, 3], w[:, 4]) and np.all(np.isfinite(w[:, 4]))
    # statistics use live members only
    assert int(ds.stationary_w2_n[3]) == 0 and np.isnan(ds.stationary_w2_mean[3, 0])
    assert int(ds.w_n.isel(learning_rate=3, step=-1)) == 0
    assert int(ds.w_n.isel(learning_rate=3, step=0)) == 64
    # neighbours are bitwise unchanged by the diverging grid point
    for name in ("w", "stationary_w2", "stationary_w2_mean"):
        assert np.array_equal(ds[name].isel(learning_rate=slice(0, 3)).values, ref[name].values)


def test_divergence_bound_flags_large_parameters():
    study = quadratic_study([1.5], seeds=8, steps=200, burn_in=10, divergence_bound=1e-3)
    ds = sl.run(study, progress=False)
    assert np.all(ds.diverged_step.values > 0)


@pytest.mark.parametrize("bad,bound,dtype", [
    ("nan", math.inf, jnp.float32), ("inf", math.inf, jnp.float32),
    ("nan", 1e6, jnp.float32), ("inf", 1e6, jnp.float32), ("inf", 1e6, jnp.float16)])
def test_one_non_finite_element_of_a_large_leaf_is_divergence_with_or_without_a_bound(
        bound, bad, dtype):
    """A member whose update puts NaN (or −inf) into a single element of a 4096-element
    leaf is flagged at that step (its loss there is finite) and keeps its last finite
    parameters, with or without a bound. The check is elementwise (``|x| <= bound``, or
    ``isfinite`` without a bound) and never a max-reduction: XLA:CPU's max over 2^15 or
    more elements, compiled alone, drops a NaN (``jnp.max(jnp.abs(x)) <= 1e6`` is True for
    an x of shape [16, 2, 4096] holding NaNs; benchmarks/RESULTS.md). Without the check the
    unbounded cases fail (the member flagged a step late, by its loss, non-finite
    parameters kept); with ``|x| <= inf`` as the unbounded check, the −inf case fails; with
    ``|x| <= bound`` for a bound that float16 cannot hold (1e6 is inf there), the float16
    case fails."""
    n = 4096

    def init(key):  # the first element is 0 for about half of the seeds, 1 for the others
        w = jnp.full((n,), 0.5, dtype)
        return w.at[0].set(jnp.where(jax.random.bernoulli(key), 0.0, 1.0).astype(dtype))

    def loss(w, batch, hp):  # at w0 = 0 the loss is finite and its w0-derivative is
        # inf · 0 = NaN (|w0|^½) or +inf (√w0, so the update sends w0 to −inf)
        kink = jnp.abs(w[0]) ** 0.5 if bad == "nan" else jnp.sqrt(w[0])
        return jnp.mean(w * w) + kink

    source = sl.data.DataSource(init=lambda key: None, batch=lambda d, k, t: None,
                                shared=True, batch_size=1)
    problem = sl.Problem(name="kink_at_zero", init=init, loss=loss, data=source)
    study = sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": [0.01, 0.02]}, steps=3,
                     seeds=16, divergence_bound=bound,
                     observe=sl.Observe((("w0", lambda o: o.params[0]), "loss"), at=(0, 3)))
    ds = sl.run(study, progress=False)
    at_zero = ds["w0"].isel(step=0).values == 0.0                   # [lr, seed]
    assert 0 < at_zero[0].sum() < 16                                # both kinds of seeds
    div = ds.diverged_step.values
    np.testing.assert_array_equal(div, np.where(at_zero, 1, -1))
    # flagged members keep their last finite parameters; the others moved
    w0 = ds["w0"].isel(step=-1).values
    assert np.all(w0[at_zero] == 0.0) and np.all((w0[~at_zero] > 0) & (w0[~at_zero] < 1))


def test_step_zero_is_recorded_by_the_segments_code_not_by_a_copy_in_the_init():
    """With the built-in recorders the first segment records step 0 (its step at t = 0
    changes no member), so the init program holds no copy of a recorded observable: one
    copy fewer to compile. The optimized programs show it (an arctangent no other code
    uses), and a user recorder without ``update_at_step_zero`` brings the copy back."""
    problem = sl.problems.noisy_quadratic([1.0, 2.0], [1.0, 0.5], w0=1.0)
    marker = ("marker", lambda o: jnp.sum(jnp.arctan2(o.params, 3.0)))

    def texts(recorders=()):
        study = sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": [0.1, 0.2]},
                         steps=20, seeds=4, observe=sl.Observe((marker,), at=(0, 20)),
                         recorders=recorders)
        p = sl.plan(study)
        prog = compiled_program(study, p.chunk_seeds, p.segment_steps)
        hp, _, shared = program_inputs(study)
        keys, valid = chunk_seeds(study, 0, p.chunk_seeds)
        init = prog.init.lower(hp, keys, valid, shared).compile().as_text()
        carry = prog.init(hp, keys, valid, shared)
        seg = prog.segment.lower(carry, jnp.int32(0), hp, keys, valid, shared) \
            .compile().as_text()
        return "atan2" in init, "atan2" in seg

    assert texts() == (False, True)
    from tests.test_open_engine import StepLog
    assert texts((StepLog(),)) == (True, True)


def test_member_keys_are_derived_on_the_host_and_no_program_hashes_them(monkeypatch):
    """Every member's keys come from the host (``seed_key_data``, NumPy, in blocks of seeds):
    the same bits as ``member_keys`` and ``shared_key`` derived by JAX, for seeds and
    indices up to 2³² − 1 and 2³¹ − 1; and the init program hashes only for the problem's
    own draw (its optimized HLO has as many Threefry rotations as ``vmap(problem.init)``
    alone)."""
    from sgdlab.engine import _state
    from sgdlab.engine._state import shared_key_data

    rng = np.random.default_rng(3)
    monkeypatch.setattr(_state, "_HOST_BLOCK", 3)  # blocks of 3, 3 and 2 seeds
    for seed in (0, 1, 2**32 - 1, *rng.integers(0, 2**32, 3)):
        idx = np.concatenate([[0, 1, 2**31 - 1], rng.integers(0, 2**31, 5)]).astype(np.int32)
        want = jax.vmap(lambda i, s: jnp.stack(engine.member_keys(s, i)), (0, None))(
            idx, np.uint32(seed))
        got = engine.seed_key_data(seed, idx)
        assert got.dtype == np.uint32 and got.shape == (idx.size, 3, 2)
        np.testing.assert_array_equal(got, jax.random.key_data(want))
        np.testing.assert_array_equal(
            shared_key_data(seed), jax.random.key_data(engine.shared_key(np.uint32(seed))))
        for size in (5, 5000):  # a kept chunk and one hashed anew
            chunk = _state.chunk_key_data(seed, 7, size)
            assert not chunk.flags.writeable
            np.testing.assert_array_equal(chunk, engine.seed_key_data(seed, np.arange(7, 7 + size)))

    problem = sl.problems.noisy_quadratic([1.0, 2.0], [1.0, 0.5], w0=1.0)
    study = sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": [0.1, 0.2]}, steps=20,
                     seeds=4, observe=sl.Observe(("risk",), at=(0, 20)))
    p = sl.plan(study)
    prog = compiled_program(study, p.chunk_seeds, p.segment_steps)
    hp, _, shared = program_inputs(study)
    keys, valid = chunk_seeds(study, 0, p.chunk_seeds)
    init = prog.init.lower(hp, keys, valid, shared).compile().as_text()
    draw = jax.jit(jax.vmap(problem.init)).lower(
        jax.random.wrap_key_data(keys[:, 0])).compile().as_text()
    assert draw.count("shift-left") > 0
    assert init.count("shift-left") == draw.count("shift-left")


def test_observe_writes_one_buffer_per_dtype_whatever_the_number_of_observables():
    """``Observe`` packs the observables of one dtype into one buffer per kind (member
    values, block means, block M2): the segment program's in-place writes do not grow with
    the number of observables (XLA:CPU compiles each write into its own kernel), and each
    observable comes back with its own shape and values."""
    problem = sl.problems.noisy_quadratic([1.0, 2.0], [1.0, 0.5], w0=1.0)

    def study(observables):
        return sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": [0.1, 0.2]}, steps=12,
                        seeds=4, observe=sl.Observe(observables, at=(0, 3, 12)))

    def writes(st):
        p = sl.plan(st)
        prog = compiled_program(st, p.chunk_seeds, p.segment_steps)
        hp, _, shared = program_inputs(st)
        keys, valid = chunk_seeds(st, 0, p.chunk_seeds)
        carry = jax.eval_shape(prog._init, hp, keys, valid, shared)
        text = prog.segment.lower(carry, jnp.int32(0), hp, keys, valid, shared) \
            .compile().as_text()
        return text.count("dynamic-update-slice(")

    many = ("risk", "loss", "distance", "param_norm", "w", ("w_outer", lambda o: jnp.outer(
        o.params, o.params)))
    assert writes(study(many)) == writes(study(("risk",))) > 0
    ds = sl.run(study(many), progress=False)
    assert ds["w"].shape[-1] == 2 and ds["w_outer"].shape[-2:] == (2, 2)
    np.testing.assert_allclose(ds["w_outer"].values,
                               ds["w"].values[..., :, None] * ds["w"].values[..., None, :],
                               rtol=1e-6)
    np.testing.assert_allclose(ds["param_norm"].values,
                               np.linalg.norm(ds["w"].values, axis=-1), rtol=1e-6)
    np.testing.assert_allclose(ds["w_mean"].values, ds["w"].mean("seed").values, rtol=1e-5)
    np.testing.assert_allclose(ds["risk_var"].values, ds["risk"].var("seed", ddof=1).values,
                               rtol=1e-4)


def test_memory_does_not_grow_with_steps():
    """With statistics only, the compiled program's buffers are the same for 10^3 and 10^5 steps."""
    def footprint(steps):
        problem = sl.problems.noisy_quadratic(1.0, 1.0)
        study = sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": [0.5, 1.0]},
                         steps=steps, seeds=256, segment_steps=100,
                         observe=sl.Observe(("risk",), num=20, members=False),
                         stationary=sl.Stationary(("w2",), burn_in=10, members=False))
        p = sl.plan(study)
        prog = compiled_program(study, p.chunk_seeds, p.segment_steps)
        hp, _, shared = program_inputs(study)
        keys, valid = chunk_seeds(study, 0, p.chunk_seeds)
        carry = prog.init(hp, keys, valid, shared)
        m = prog.segment.lower(carry, jnp.int32(0), hp, keys, valid, shared) \
            .compile().memory_analysis()
        ds = sl.run(study, progress=False)
        return (m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes,
                ds.nbytes)
    small, large = footprint(1_000), footprint(100_000)
    assert small == large


def test_first_passage_step_is_exact_and_censoring_marked():
    # noise-free GD on ½w² from w0 = 1 with λ = 0.5: w_t = 0.5^t, so |w| < 0.01 first at t = 7
    problem = sl.problems.noisy_quadratic(1.0, 0.0, w0=1.0)
    fp = sl.FirstPassage(lambda o: jnp.abs(o.params[0]) < 0.01)
    ds = sl.run(sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": [0.5, 0.01]},
                         steps=50, seeds=3, first_passage=fp), progress=False)
    assert ds.event_step.values.tolist() == [[7, 7, 7], [-1, -1, -1]]
    assert ds.event_censored.values.tolist() == [[False] * 3, [True] * 3]


def test_noise_injection_is_traced_and_shared_across_grid():
    problem = sl.problems.noisy_quadratic(1.0, 0.0)
    study = sl.Study(problem, sl.Optimizer("sgd"),
                     {"learning_rate": 0.5, "noise_std": [1.0, 2.0]}, steps=400, seeds=2000,
                     observe=None, stationary=sl.Stationary(("w2",), burn_in=50))
    ds = sl.run(study, progress=False)
    # injected noise has variance noise_std², so Var(w) = λσ²/(2 − λ) = σ²/3
    for i, s in enumerate((1.0, 2.0)):
        est, se = float(ds.stationary_w2_mean[i, 0]), float(ds.stationary_w2_se[i, 0])
        assert abs(est - s**2 / 3) <= 4 * se
    # common random numbers: the 2σ member is exactly twice the σ member
    bm = ds.stationary_w2.values[..., 0]
    np.testing.assert_allclose(bm[1], 4 * bm[0], rtol=1e-4)


def test_noise_stream_is_the_documented_block_stream_whatever_the_segments():
    """Stream version 2: the noise of step t is row (t-1) % B of block (t-1) // B, drawn
    from fold_in(noise_key, block); segment length and chunking change no bit."""
    with jax.enable_x64(True):
        d, steps = 3, 150  # B = 64 for 3 parameters: three blocks, the last one partial
        B = engine.noise_block(d)
        assert B == 64 and engine.noise_block(1000) == 4 and engine.noise_block(10**6) == 1
        problem = sl.problems.noisy_quadratic([0.0] * d, [0.0] * d)

        def run(**kw):
            study = sl.Study(problem, sl.Optimizer("sgd"),
                             {"learning_rate": 1.0, "noise_std": [1.0, 3.0]}, steps=steps,
                             seeds=3, observe=sl.Observe(("w",), at=tuple(range(steps + 1))),
                             **kw)
            return sl.run(study, progress=False).w.values

        w = run(segment_steps=7)
        np.testing.assert_array_equal(w, run(segment_steps=steps))
        np.testing.assert_array_equal(w, run(segment_steps=64, chunk_size=2))
        # with zero curvature, w_t - w_(t-1) = -noise_std * z_t
        z = -np.diff(w[0], axis=-2)  # [seed, step, d]
        np.testing.assert_allclose(-np.diff(w[1], axis=-2), 3.0 * z, atol=1e-12)  # common
        for i in range(3):
            key = engine.member_keys(0, i)[2]
            blocks = [jax.random.normal(jax.random.split(jax.random.fold_in(key, b), 1)[0],
                                        (B, d)) for b in range(-(-steps // B))]
            expected = np.concatenate(blocks)[:steps]
            np.testing.assert_allclose(z[i], expected, rtol=0, atol=1e-12)


def test_data_stream_is_the_documented_block_stream_whatever_the_segments():
    """Stream version 4: an online source with blocks gives step t row (t-1) % B of
    block (t-1) // B, drawn from block_key(data_key, b); step_batch says the same;
    segment length, chunking and ensemble size change no bit; the grid shares it."""
    with jax.enable_x64(True):
        d, steps = 3, 150
        problem = sl.problems.noisy_quadratic([0.0] * d, [1.0] * d)  # grad = ξ_t
        B = sl.data.block_steps(problem.data)
        assert B == 64

        def run(seeds=3, **kw):
            study = sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": [1.0, 0.5]},
                             steps=steps, seeds=seeds,
                             observe=sl.Observe(("w",), at=tuple(range(steps + 1))), **kw)
            return sl.run(study, progress=False).w.values

        w = run(segment_steps=7)
        np.testing.assert_array_equal(w, run(segment_steps=steps))
        np.testing.assert_array_equal(w, run(segment_steps=64, chunk_size=2))
        np.testing.assert_array_equal(w, run(seeds=5, segment_steps=32)[:, :3])
        xi = -np.diff(w[0], axis=-2)  # [seed, step, d]
        np.testing.assert_allclose(-np.diff(w[1], axis=-2), 0.5 * xi, atol=1e-12)  # common
        for i in range(3):
            key = engine.member_keys(0, i)[1]
            blocks = [jax.random.normal(sl.data.block_key(key, b), (B, d))
                      for b in range(-(-steps // B))]
            expected = np.concatenate(blocks)[:steps]
            np.testing.assert_allclose(xi[i], expected, rtol=0, atol=1e-12)
            rows = jax.jit(jax.vmap(lambda t, k=key: sl.data.step_batch(
                problem.data, None, k, t)))(jnp.arange(1, steps + 1))
            np.testing.assert_allclose(np.asarray(rows), expected, rtol=0, atol=1e-12)
        # the rows are N(0, 1) and uncorrelated from step to step (within and across blocks)
        z = xi.reshape(-1, d)
        n = z.shape[0]
        assert abs(z.mean()) < 4 / math.sqrt(z.size)
        assert abs(z.var() - 1) < 4 * math.sqrt(2 / z.size)
        lag = np.mean(xi[:, 1:] * xi[:, :-1])
        assert abs(lag) < 4 / math.sqrt(n * d)


def test_default_segments_hold_whole_tiles_of_the_blocked_streams():
    """A segment draws whole tiles of blocks: the default length is a multiple of the
    tile (or the whole run where tiles would overrun it by more than a sixteenth)."""
    quad = sl.problems.noisy_quadratic(1.0, 1.0)  # data blocks of 64 steps
    assert engine.tile_steps(sl.Study(quad, sl.Optimizer("sgd"), {"learning_rate": 0.1},
                                      steps=500, seeds=2)) == 64
    for steps, seg in [(500, 64), (10_000, 512), (150, 150), (40, 40)]:
        study = sl.Study(quad, sl.Optimizer("sgd"), {"learning_rate": 0.1}, steps=steps, seeds=2)
        assert sl.plan(study).segment_steps == seg
    # a source without blocks and no gradient noise: a twentieth of the run, as before
    fixed = sl.problems.finite_quadratic([1.0], n_data=8, centers_cov=[1.0], batch_size=2,
                                         mode="with_replacement")
    study = sl.Study(fixed, sl.Optimizer("sgd"), {"learning_rate": 0.1}, steps=500, seeds=2)
    assert engine.tile_steps(study) == 1 and sl.plan(study).segment_steps == 25


def test_power_schedule_matches_closed_form_product():
    # deterministic GD on ½w² with γ_n = γ0/(n+n0)^α: w_n = Π(1 − γ_k) w_0
    problem = sl.problems.noisy_quadratic(1.0, 0.0, w0=1.0)
    study = sl.Study(problem, sl.Optimizer("sgd", schedule="power"),
                     {"gamma0": 0.5, "alpha": [0.0, 0.5, 1.0, 2.0], "n0": 1.0}, steps=100, seeds=1,
                     observe=sl.Observe(("w",), at=(100,)))
    with jax.enable_x64(True):
        ds = sl.run(study, progress=False)
    k = np.arange(1, 101)
    for i, a in enumerate([0.0, 0.5, 1.0, 2.0]):
        expected = np.prod(1 - 0.5 / (k + 1.0) ** a)
        np.testing.assert_allclose(float(ds.w[i, 0, 0, 0]), expected, rtol=1e-12)


def test_results_roundtrip_through_zarr_and_refuse_overwrite(tmp_path):
    ds = sl.run(quadratic_study([0.5], seeds=8, steps=200, burn_in=10), progress=False)
    path = sl.save(ds, tmp_path / "r.zarr")
    back = sl.load(path)
    assert back.equals(ds) or all(np.array_equal(back[v].values, ds[v].values, equal_nan=True)
                                  for v in ds.data_vars)
    assert sl.results.config(back)["steps"] == 200
    with pytest.raises(FileExistsError, match="--force"):
        sl.save(ds, path)
    sl.save(ds, path, overwrite=True)
    assert not list(tmp_path.glob(".r.zarr*"))


def test_plan_chunks_from_budget():
    study = quadratic_study([0.5, 1.0], seeds=1000, steps=100, burn_in=10, block_seeds=8)
    p = sl.plan(study, memory_budget=200 * sl.plan(study).bytes_per_seed, measure=False)
    assert p.chunks == 5 and p.chunk_seeds == 200 and p.padded_seeds == 0
    # 300 seeds -> 37 whole blocks of 8; 125 blocks in 4 balanced chunks of 32 blocks
    p = sl.plan(study, chunk_size=300)
    assert p.chunks == 4 and p.chunk_seeds == 256 and p.padded_seeds == 24


@pytest.mark.parametrize("kwargs,field", [
    (dict(hparams={"learning_rate": -0.1}), "hparams.learning_rate"),
    (dict(hparams={"learning_rate": math.nan}), "hparams.learning_rate"),
    (dict(hparams={"learning_rate": [0.1, 0.1]}), "hparams.learning_rate"),
    (dict(hparams={"learning_rate": [[0.1]]}), "hparams.learning_rate"),
    (dict(hparams={"learning_rate": "fast"}), "hparams.learning_rate"),
    (dict(hparams={"momentum": 0.9}), "hparams"),
    (dict(hparams={"learning_rate": 0.1, "lr": 0.1}), "hparams"),
    (dict(seeds=0), "seeds"),
    (dict(steps=-5), "steps"),
    (dict(steps=2.5), "steps"),
    (dict(divergence_bound=0), "divergence_bound"),
    (dict(observe=sl.Observe(("nope",))), "observe.observables"),
    (dict(observe=sl.Observe(("loss",), at=(0, 10_000))), "observe.at"),
    (dict(stationary=sl.Stationary(("w2",), burn_in=100)), "stationary.burn_in"),
    (dict(first_passage=sl.FirstPassage("escaped")), "first_passage.predicate"),
])
def test_bad_study_configuration_raises_naming_the_field(kwargs, field):
    base = dict(problem=sl.problems.noisy_quadratic(1.0, 1.0), optimizer=sl.Optimizer("sgd"),
                hparams={"learning_rate": 0.1}, steps=100, seeds=4)
    base.update(kwargs)
    with pytest.raises(ValueError, match=f"^{field}"):
        sl.Study(**base)


@pytest.mark.parametrize("make,field", [
    (lambda: sl.Optimizer("adamw"), "optimizer"),
    (lambda: sl.Optimizer("sgd", schedule="cosine"), "schedule"),
    (lambda: sl.problems.mlp_regression((2, 4, 1), activation="gelu"), "activation"),
    (lambda: sl.problems.mlp_regression((2, 0, 1)), r"sizes\[1\]"),
    (lambda: sl.problems.noisy_quadratic([1.0, 2.0], [[1.0, 0], [0, 1], [0, 0]]), "noise_cov"),
    (lambda: sl.problems.noisy_quadratic([1.0, 2.0], [1.0, 1.0, 1.0]), "noise_cov"),
    (lambda: sl.problems.noisy_quadratic(1.0, -1.0), "noise_cov"),
    (lambda: sl.problems.linear_regression([1.0, 1.0], 0.1, 4, w_star=[1.0]), "w_star"),
    (lambda: sl.problems.linear_regression(1.0, 0.1, 4, reduction="avg"), "reduction"),
    (lambda: sl.data.fixed(lambda k: (jnp.zeros((5, 1)),), 5, 8, "without_replacement"),
     "batch_size"),
    (lambda: sl.data.fixed(lambda k: (jnp.zeros((5, 1)),), 5, 2, "shuffle"), "mode"),
])
def test_bad_building_blocks_raise_naming_the_field(make, field):
    with pytest.raises(ValueError, match=f"^{field}") as e:
        make()
    assert "=" in str(e.value) and "\n" not in str(e.value)


def test_without_replacement_visits_every_example_once_per_epoch():
    n, s = 12, 4
    source = sl.data.fixed(lambda k: (jnp.arange(n),), n, s, "without_replacement")
    data = source.init(jax.random.key(0))
    key = jax.random.key(1)
    epochs = []
    for e in range(3):
        seen = np.concatenate([np.asarray(source.batch(data, key, jnp.int32(t))[0])
                               for t in range(1 + e * 3, 4 + e * 3)])
        assert sorted(seen.tolist()) == list(range(n))
        epochs.append(seen)
    assert not np.array_equal(epochs[0], epochs[1])


def test_relu_derivative_at_zero_is_zero_in_trained_network():
    assert float(jax.grad(sl.models.relu)(0.0)) == 0.0
    # a network whose hidden pre-activations are exactly 0: no gradient flows to layer 1
    params = [(jnp.zeros((2, 3)), jnp.zeros(3)), (jnp.ones((3, 1)), jnp.zeros(1))]
    g = jax.grad(lambda p: jnp.sum(sl.models.mlp_apply(p, jnp.ones((4, 2)), "relu")))(params)
    assert float(jnp.abs(g[0][0]).max()) == 0.0 and float(jnp.abs(g[0][1]).max()) == 0.0


def test_jax_cpu_vmapped_matvec_reduction_is_correct():
    """Guards against the jax 0.10.2 CPU miscompile (jax-ml/jax#39103) that pyproject excludes."""
    n = 32_769
    i = jnp.arange(n, dtype=jnp.float32)
    x = jnp.stack((i, jnp.zeros_like(i), jnp.zeros_like(i)), axis=1)
    m = jnp.eye(3, dtype=jnp.float32)

    def f(x):
        return jax.vmap(lambda r: jnp.sum((m @ r) ** 2))(x)

    assert float(jax.jit(f)(x)[-1]) == float(f(x)[-1]) == (n - 1) ** 2


def test_dry_run_memory_estimate_within_2x_of_the_program_buffers():
    """The plan's estimate (a probe of two blocks, scaled) against XLA's buffer assignment of
    the real chunk program (arguments + outputs + temporaries), for a mid-sized run whose
    risk observable (an evaluation sample through every member) dominates the memory."""
    problem = sl.problems.mlp_regression((10, 64, 1), target="teacher", inputs="gaussian",
                                         batch_size=32, reduction="half_mean", n_eval=256)
    study = sl.Study(problem, sl.Optimizer("momentum"),
                     {"learning_rate": [0.01, 0.02, 0.03, 0.04], "momentum": 0.9}, steps=200,
                     seeds=512, observe=sl.Observe(("loss", "risk"), num=10))
    quick = sl.plan(study)
    p = sl.plan(study, measure=True)
    prog = compiled_program(study, p.chunk_seeds, p.segment_steps)
    hp, _, shared = program_inputs(study)
    keys, valid = chunk_seeds(study, 0, p.chunk_seeds)
    carry = prog.init(hp, keys, valid, shared)
    m = prog.segment.lower(carry, jnp.int32(0), hp, keys, valid, shared) \
        .compile().memory_analysis()
    actual = m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
    assert actual / 2 <= p.estimated_bytes <= 2 * actual
    assert quick.estimated_bytes < p.estimated_bytes  # the quick estimate misses the risk
    # a budget below the need splits the run into chunks
    small = sl.plan(study, memory_budget=actual // 3)
    assert small.chunks >= 3 and small.estimated_bytes <= actual // 3


def test_member_by_member_gives_each_member_the_bits_of_a_map_over_members():
    """``sl.engine.member_by_member`` (the ``member_layout="map"`` loop, writing each member
    into the carried state) computes every member as a ``lax.map`` over seeds and grid points
    does, with per-seed and per-point arguments taken at the member's indices."""
    S, G = 3, 4
    members = {"w": jax.random.normal(jax.random.key(0), (S, G, 5, 7)),
               "n": jnp.arange(S * G, dtype=jnp.int32).reshape(S, G), "none": None}
    per_seed = jax.random.normal(jax.random.key(1), (S, 7, 2))
    per_point = {"h": jnp.linspace(0.1, 1.0, G)}

    def fn(m, x, p):
        return {"w": jnp.tanh(m["w"] @ x @ x.T * p["h"]), "n": m["n"] * 3 + 1, "none": None}

    got = jax.jit(lambda m: sl.engine.member_by_member(fn, m, per_seed, per_point))(members)
    ref = jax.jit(lambda m: jax.lax.map(lambda a: jax.lax.map(
        lambda b: fn(b[0], a[1], b[1]), (a[0], per_point)), (m, per_seed)))(members)
    assert got["none"] is None
    assert np.array_equal(got["n"], ref["n"]) and np.array_equal(got["w"], ref["w"])
    assert not np.array_equal(got["w"][0, 1], got["w"][1, 0])  # members differ


def _per_seed_shift_source():
    """An online source with per-seed data (a shift drawn for each seed), blocks and rows."""
    def init(key):
        return {"shift": jax.random.normal(key, (2,))}

    def batch(data, key, t):
        return jax.random.normal(jax.random.fold_in(key, t), (2,)) + data["shift"]

    def block(data, key, b, B):
        return jax.random.normal(sl.data.block_key(key, b), (B, 2)) + data["shift"]

    def row(data, key, j, B):
        return sl.data.normal_row(key, j, B, (2,)) + data["shift"]

    return sl.data.DataSource(init=init, batch=batch, batch_size=1, block=block, row=row)


@pytest.mark.parametrize("x64", [False, True])
def test_a_normal_row_alone_is_that_row_of_the_whole_draw(x64):
    """``sl.data.normal_row(key, j, B, shape)`` is bitwise row ``j`` of
    ``jax.random.normal(key, (B,) + shape)``, in float32 and float64."""
    with jax.enable_x64(x64):
        dt = jnp.float64 if x64 else jnp.float32
        assert sl.data.rows_alone(dt)
        key = jax.random.key(11)
        for B, shape in [(1, ()), (64, ()), (64, (1,)), (8, (3,)), (4, (2, 5))]:
            whole = np.asarray(jax.random.normal(key, (B,) + shape, dt))
            rows = jax.jit(jax.vmap(lambda j, B=B, shape=shape: sl.data.normal_row(
                key, j, B, shape, dt)))(jnp.arange(B))
            assert rows.dtype == whole.dtype
            np.testing.assert_array_equal(np.asarray(rows), whole)


def test_without_partitionable_keys_rows_come_from_whole_blocks(monkeypatch):
    """With ``jax_threefry_partitionable`` off a number is not the hash of its own position:
    ``normal_row`` then draws the block and indexes it, the engine draws whole blocks (a
    source's ``row`` unused), and the run still reads the documented block stream."""
    import collections

    from sgdlab.engine import _compiled

    monkeypatch.setattr(_compiled, "_PROGRAMS", collections.OrderedDict())
    with jax.threefry_partitionable(False), jax.enable_x64(True):
        assert not sl.data.rows_alone() and not sl.data.rows_alone(jnp.float32)
        key = jax.random.key(5)
        whole = np.asarray(jax.random.normal(key, (8, 3), jnp.float32))
        rows = jax.jit(jax.vmap(lambda j: sl.data.normal_row(key, j, 8, (3,), jnp.float32)))(
            jnp.arange(8))
        np.testing.assert_array_equal(np.asarray(rows), whole)
        d, steps = 2, 70
        problem = sl.problems.noisy_quadratic([0.0] * d, [1.0] * d)  # grad = ξ_t
        B = sl.data.block_steps(problem.data)
        study = sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": 1.0}, steps=steps,
                         seeds=2, observe=sl.Observe(("w",), at=tuple(range(steps + 1))))
        w = sl.run(study, progress=False).w.values  # [seed, step, d]: one grid point
        xi = -np.diff(w, axis=-2)
        key = engine.member_keys(0, 1)[1]
        blocks = [jax.random.normal(sl.data.block_key(key, b), (B, d))
                  for b in range(-(-steps // B))]
        np.testing.assert_allclose(xi[1], np.concatenate(blocks)[:steps], rtol=0, atol=1e-12)


@pytest.mark.parametrize("source", ["shared", "per_seed"])
def test_rows_computed_alone_give_the_bits_of_whole_blocks(monkeypatch, source):
    """Gradient noise, and a data source with ``row``, are computed a step's row at a time
    from each block's keys (no tile of every seed's block in memory); every result is
    bitwise that of whole blocks drawn and indexed (float32, where a fused step could
    round differently)."""
    import collections
    import dataclasses

    from sgdlab.engine import _compiled

    problem = sl.problems.noisy_quadratic([1.0, 0.5], [0.5, 0.2], init_scale=0.3)
    if source == "per_seed":
        problem = dataclasses.replace(problem, data=_per_seed_shift_source())
    assert problem.data.row is not None
    study = sl.Study(problem, sl.Optimizer("sgd"),
                     {"learning_rate": [0.1, 0.3], "noise_std": [0.0, 0.5]}, steps=150,
                     seeds=24, observe=sl.Observe(("w", "loss"), num=5),
                     stationary=sl.Stationary(("w2",), burn_in=20))

    def run(study, alone):
        monkeypatch.setattr(sl.data, "rows_alone", lambda dtype=None: alone)
        monkeypatch.setattr(_compiled, "_PROGRAMS", collections.OrderedDict())
        return sl.run(study, progress=False)

    rows = run(study, True)
    tiles = run(dataclasses.replace(study, problem=dataclasses.replace(
        problem, data=problem.data._replace(row=None))), False)
    assert rows.data_vars.keys() == tiles.data_vars.keys()
    for v in rows.data_vars:
        assert np.array_equal(rows[v].values, tiles[v].values, equal_nan=True), v
    assert len(np.unique(rows["w"].values[..., -1, :])) > 10  # seeds differ


@pytest.mark.parametrize("source", ["shared", "per_seed"])
def test_tiles_drawn_for_groups_of_seeds_give_the_bits_of_one_draw(monkeypatch, source):
    """On CPU a tile's data and gradient noise are drawn for groups of seeds one after
    another (``GROUP_NUMBERS``); every seed's numbers, hence every result, are bitwise those
    of one draw for the whole chunk, with shared and with per-seed data."""
    import collections
    import dataclasses

    from sgdlab.engine import _compiled

    problem = sl.problems.noisy_quadratic([1.0, 0.5], [0.5, 0.2], init_scale=0.3)
    if source == "per_seed":
        problem = dataclasses.replace(problem, data=_per_seed_shift_source())
    assert problem.data.shared == (source == "shared")
    study = sl.Study(problem, sl.Optimizer("sgd"),
                     {"learning_rate": [0.1, 0.3], "noise_std": [0.0, 0.5]}, steps=150,
                     seeds=24, observe=sl.Observe(("w", "loss"), num=5),
                     stationary=sl.Stationary(("w2",), burn_in=20))

    problem = dataclasses.replace(problem, data=problem.data._replace(row=None))
    monkeypatch.setattr(sl.data, "rows_alone", lambda dtype=None: False)  # whole blocks (tiles)
    study = dataclasses.replace(study, problem=problem)

    def run(limit):
        monkeypatch.setattr(_compiled, "GROUP_NUMBERS", limit)
        monkeypatch.setattr(_compiled, "_PROGRAMS", collections.OrderedDict())
        return sl.run(study, progress=False)

    whole = run(2**30)
    grouped = run(1024)
    S = sl.plan(study).chunk_seeds
    # a tile of 64 steps: 64 × 2 numbers of data and 64 × 2 of noise per seed
    assert _compiled.seed_group(S, 128) < S and S % _compiled.seed_group(S, 128) == 0
    assert whole.data_vars.keys() == grouped.data_vars.keys()
    for v in whole.data_vars:
        assert np.array_equal(whole[v].values, grouped[v].values, equal_nan=True), v
    assert len(np.unique(whole["w"].values[..., -1, :])) > 10  # seeds differ
