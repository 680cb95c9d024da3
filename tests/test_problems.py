"""The problems of issue 3: exact gradients, exact or sampled risks against independent
Monte Carlo, the papers' conventions, minibatch noise, and one engine run per factory."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import sgdlab as sl
from sgdlab import data as data_lib
from sgdlab import engine, models, theory
from sgdlab import problems as P

KEY = jax.random.key(0)


# The problems' functions are called through jax.jit: run op by op, JAX compiles every
# primitive separately, which costs more than compiling the whole function once.


def first_batch(problem, t=1, seed=0):
    """The data and the step-``t`` batch of seed index ``seed`` (study seed 0)."""
    def draw():
        _, data_k, _ = engine.member_keys(0, seed)
        data = problem.data.init(engine.shared_key(0))
        return data, sl.data.step_batch(problem.data, data, data_k, t)
    return jax.jit(draw)()


def init(problem, key):
    return jax.jit(problem.init)(key)


def evaluate(problem, params, data=None, names=()):
    """The risk and the named observables at ``params`` (step 0), in one compiled call."""
    def f(p, d):
        o = P.Observation(p, None, 0.0, 0.0, None, 0, {}, d)
        return [problem.risk(p, d, {})] + [problem.observables[n](o) for n in names]
    return [float(v) for v in jax.jit(f)(params, data)]


# --------------------------------------------------------------------------- gradients

GRADIENT_CASES = {
    "constant_target_deep_1d": lambda: P.constant_target(
        (1, 6, 5, 1), target_value=0.7, bias_scale=0.5, batch_size=8),
    "constant_target_gaussian_3d": lambda: P.constant_target(
        (3, 6, 1), inputs="gaussian", reduction="half_mean", batch_size=8),
    "regularized_sigmoid": lambda: P.regularized_two_layer(4, reg=0.3, activation="sigmoid"),
    "regularized_tanh": lambda: P.regularized_two_layer(4, reg=0.3, activation="tanh",
                                                        labels="gaussian"),
    "regularized_softplus_minibatch": lambda: P.regularized_two_layer(
        4, reg=0.3, activation="softplus", mode="with_replacement", batch_size=8),
    "indicator_ramp": lambda: P.indicator_target("ramp", a0=2.0, batch_size=64, n_eval=8),
    "indicator_mlp": lambda: P.indicator_target("mlp", sizes=(2, 6, 4, 1), bias_scale=0.3,
                                                n_data=40, mode="without_replacement",
                                                batch_size=8, n_eval=8),
    "du_W": lambda: P.du_two_layer(16, n_data=6, dim=4),
    "du_both": lambda: P.du_two_layer(16, n_data=6, dim=4, train="both", labels="teacher"),
    "finite_quadratic": lambda: P.finite_quadratic([[2.0, 0.5], [0.5, 1.0]], n_data=10,
                                                   centers_cov=[1.0, 2.0], batch_size=3),
    "sharp_well": lambda: P.potential_1d("sharp-well", curvature=3.0, noise_var=1.0,
                                         w0=0.3),
    "double_well_minibatch": lambda: P.potential_1d("double-well", noise="minibatch",
                                                    noise_var=2.0, n_data=20, batch_size=4,
                                                    w0=-0.7),
    "callable_potential": lambda: P.potential_1d(lambda w: jnp.cos(3 * w) + w**4,
                                                 bounds=(-2.0, 2.0), w0=0.4, noise_var=0.5),
    "linear_regression": lambda: P.linear_regression([1.0, 3.0], 0.5, 8, w_star=[1.0, -1.0],
                                                     init_scale=1.0),
    "noisy_quadratic": lambda: P.noisy_quadratic([[2.0, 0.3], [0.3, 1.0]], [1.0, 1.0],
                                                 init_scale=1.0),
}


@pytest.mark.parametrize("name", sorted(GRADIENT_CASES))
def test_gradient_matches_central_differences_in_float64(name):
    with jax.enable_x64(True):
        problem = GRADIENT_CASES[name]()
        params, (_, batch) = jax.jit(lambda k: (problem.init(k), first_batch(problem)))(
            jax.random.key(3))
        if name.startswith("du"):
            # a generic point, not the initial one (where every ReLU is clearly on/off anyway)
            params = {**params, "W": params["W"] + 0.1}
        flat, unravel = ravel_pytree(params)
        assert flat.dtype == jnp.float64
        rng = np.random.default_rng(1)
        v = rng.standard_normal((3,) + flat.shape)
        if name == "du_W":  # a is not trained: probe W only
            v[:, -params["a"].size:] = 0.0
        v = jnp.asarray(v / np.linalg.norm(v, axis=1, keepdims=True))
        h = 1e-6

        @jax.jit
        def check(flat, v, batch):
            def f(u):
                return problem.loss(unravel(u), batch, {})
            g = jax.grad(f)(flat)
            fd = jax.vmap(lambda d: (f(flat + h * d) - f(flat - h * d)) / (2 * h))(v)
            return g, fd, v @ g

        grad, fd, ad = (np.asarray(x) for x in check(flat, v, batch))
        assert np.abs(grad).max() > 0
        if name == "du_W":  # a is in the parameters but its gradient is exactly zero
            assert np.all(grad[-params["a"].size:] == 0.0)
        assert np.all(np.abs(fd - ad) <= 1e-6 * np.maximum(np.abs(ad), np.abs(grad).max())), \
            (fd, ad)


# --------------------------------------------------------------------------- population risks


def forward_np(params, x):
    """An independent NumPy forward pass of an mlp (ReLU), x of shape (n, d)."""
    h = x
    for i, (w, b) in enumerate(params):
        h = h @ np.asarray(w) + np.asarray(b)
        if i < len(params) - 1:
            h = np.maximum(h, 0.0)
    return h[:, 0]


def within(estimate, reference, se, k=4.0):
    assert abs(estimate - reference) <= k * se, (estimate, reference, se)


@pytest.mark.parametrize("inputs", ["uniform", "gaussian"])
def test_exact_piecewise_linear_risk_matches_monte_carlo(inputs):
    """Exact 1-D risk of a deep ReLU net vs 10⁶ independent samples, within 4 SE."""
    with jax.enable_x64(True):
        problem = P.constant_target((1, 7, 6, 1), target_value=0.4, inputs=inputs,
                                    box=(-1.0, 2.0), bias_scale=0.7, reduction="mean")
        params = init(problem, jax.random.key(5))
        risk, n_kinks = evaluate(problem, params, names=("n_kinks",))
    assert n_kinks >= 3  # the pieces really matter
    rng = np.random.default_rng(7)
    x = rng.uniform(-1.0, 2.0, 10**6) if inputs == "uniform" else rng.standard_normal(10**6)
    err = (forward_np(params, x[:, None]) - 0.4) ** 2
    within(risk, err.mean(), err.std() / math.sqrt(err.size))
    if inputs == "uniform":  # and, deterministically, a fine midpoint rule
        xm = -1.0 + 3.0 * (np.arange(2 * 10**6) + 0.5) / (2 * 10**6)
        np.testing.assert_allclose(risk, np.mean((forward_np(params, xm[:, None]) - 0.4) ** 2),
                                   rtol=1e-9)


def test_exact_risk_is_nan_not_wrong_when_kinks_overflow():
    problem = P.constant_target((1, 8, 8, 1), bias_scale=0.7, max_kinks=1)
    params = init(problem, jax.random.key(5))
    assert math.isnan(evaluate(problem, params)[0])


def test_evaluation_sample_risk_and_its_standard_error():
    with jax.enable_x64(True):
        problem = P.constant_target((3, 8, 1), target_value=0.5, bias_scale=0.5, n_eval=20_000)
        params = init(problem, jax.random.key(1))
        data = jax.jit(problem.data.init)(jax.random.key(2))
        risk, se = evaluate(problem, params, data, ("risk_se",))
    x = np.random.default_rng(3).uniform(0.0, 1.0, (10**6, 3))
    err = (forward_np(params, x) - 0.5) ** 2
    se_mc = err.std() / 1e3
    within(risk, err.mean(), math.hypot(se, se_mc))
    assert 0 < se < 0.02 * risk


def test_linear_regression_closed_form_risk_matches_sampling():
    A = np.array([[1.0, 0.4], [0.4, 2.0]])
    with jax.enable_x64(True):
        problem = P.linear_regression(A, 0.7, 1, w_star=[0.5, -1.0], reduction="half_mean")
        w = jnp.asarray([1.2, 0.3])
        risk = evaluate(problem, w)[0]
        x, y = jax.jit(jax.vmap(lambda t: problem.data.batch(None, jax.random.key(4), t)))(
            jnp.arange(1, 200_001))
    per = 0.5 * (np.asarray(x)[:, 0] @ np.asarray(w) - np.asarray(y)[:, 0]) ** 2
    within(risk, per.mean(), per.std() / math.sqrt(per.size))


@pytest.mark.parametrize("dim", [2, 3])
def test_ramp_exact_risk_and_l1_error_match_monte_carlo(dim):
    r, a = 0.5, 2.5
    with jax.enable_x64(True):
        problem = P.indicator_target("ramp", dim=dim, radius=r, n_eval=8)
        data = jax.jit(problem.data.init)(jax.random.key(0))
        params = {"a": jnp.asarray(a)}
        risk, l1 = evaluate(problem, params, data, ("l1_error",))
    if dim == 2:  # ½E(f_a − f°)² = π/(24a) in d = 2
        np.testing.assert_allclose(risk, math.pi / (24 * a), rtol=1e-12)
    x = np.random.default_rng(dim).uniform(-1.0, 1.0, (10**6, dim))
    s = np.sum(x * x, axis=1)
    f = np.maximum(1.0 - np.maximum(a * (s - r * r), 0.0), 0.0)
    e = f - (s <= r * r)
    sq = 0.5 * e**2
    within(risk, sq.mean(), sq.std() / 1e3)
    within(l1, np.abs(e).mean(), np.abs(e).std() / 1e3)


def test_ramp_risk_falls_back_to_the_sample_outside_the_unit_ball():
    with jax.enable_x64(True):
        problem = P.indicator_target("ramp", dim=2, radius=0.5, n_eval=200_000)
        data = jax.jit(problem.data.init)(jax.random.key(0))
        params = {"a": jnp.asarray(0.8)}  # r² + 1/a > 1: the ramp leaves the unit ball
        risk, se = evaluate(problem, params, data, ("risk_se",))
    x = np.random.default_rng(9).uniform(-1.0, 1.0, (10**6, 2))
    s = np.sum(x * x, axis=1)
    sq = 0.5 * (np.maximum(1.0 - np.maximum(0.8 * (s - 0.25), 0.0), 0.0) - (s <= 0.25)) ** 2
    assert se > 0
    within(risk, sq.mean(), math.hypot(se, sq.std() / 1e3))


# --------------------------------------------------------------------------- conventions


def test_relu_derivative_at_zero_is_zero_in_du_network():
    X = np.eye(3)[:2]  # e_1, e_2: unit norm
    problem = P.du_two_layer(2, X=X, y=[1.0, -1.0])
    params = {"W": jnp.asarray([[1.0, 0.0, 0.0], [0.0, 1.0, 0.5]]), "a": jnp.ones(2)}
    # example 1 (x = e_2) is exactly orthogonal to w_0 = e_1: ReLU'(0) = 0, no gradient
    g = jax.grad(problem.loss)(params, (jnp.asarray(X[1:]), jnp.asarray([-1.0])), {})
    assert float(jnp.abs(g["W"][0]).max()) == 0.0
    assert float(jnp.abs(g["W"][1]).max()) > 0.0
    # and w_0 does get a gradient through example 0, where it is active
    g = jax.grad(problem.loss)(params, (jnp.asarray(X[:1]), jnp.asarray([1.0])), {})
    assert float(jnp.abs(g["W"][0]).max()) > 0.0


def test_du_layer_choice_is_an_array_one_program_gradient_to_a_only_when_both():
    """train="W" and train="both" of one width run one compiled program (the choice is a
    flag among the problem's arrays), and each follows full-batch GD written out in NumPy
    from the recorded initialization: under W the outer layer a gets no gradient at all."""
    m, n, d, lr, T = 6, 5, 3, 0.3, 4
    observe = sl.Observe((("W", lambda o: o.params["W"]), ("a", lambda o: o.params["a"])),
                         at=(0, T))

    def study(train):
        return sl.Study(P.du_two_layer(m, n_data=n, dim=d, train=train, labels="teacher"),
                        sl.Optimizer("sgd"), {"learning_rate": lr}, steps=T, seeds=2,
                        observe=observe)

    with jax.enable_x64(True):
        sl.run(study("W"), progress=False)
        n_traces = engine.trace_count()
        runs = {"W": sl.run(study("W"), progress=False), "both": sl.run(study("both"),
                                                                        progress=False)}
        assert engine.trace_count() == n_traces  # both choices: the one program
        data = study("W").problem.data.init(KEY)
        X, y = np.asarray(data["X"]), np.asarray(data["y"])
        for train, ds in runs.items():
            Ws = ds["W"].values.reshape(2, 2, m, d)
            As = ds["a"].values.reshape(2, 2, m)
            for s in range(2):
                W, a = Ws[s, 0].copy(), As[s, 0].copy()
                for _ in range(T):  # L = ½ Σ_i (u_i - y_i)², u = m^-½ Σ_r a_r ReLU(w_r·x)
                    pre = X @ W.T
                    r = np.maximum(pre, 0) @ a / math.sqrt(m) - y
                    gW = ((r[:, None] * (pre > 0)) * a[None, :]).T @ X / math.sqrt(m)
                    ga = np.maximum(pre, 0).T @ r / math.sqrt(m)
                    W = W - lr * gW
                    a = a - lr * ga if train == "both" else a
                np.testing.assert_allclose(Ws[s, 1], W, rtol=1e-10, atol=1e-12)
                np.testing.assert_allclose(As[s, 1], a, rtol=1e-10, atol=1e-12)
            moved = np.abs(As[:, 1] - As[:, 0]).max()
            assert (moved > 1e-3) if train == "both" else (moved == 0.0)


def test_loss_scalings_follow_each_paper():
    # Du et al.: ½ Σ_i (a sum); Hutzenthaler et al.: mean without ½; Gopalani: (1/2n) Σ + λ/2‖W‖²
    du = P.du_two_layer(8, n_data=5, dim=3)
    p = init(du, KEY)
    data, batch = first_batch(du)
    W, a, X, y = (np.asarray(v) for v in (p["W"], p["a"], data["X"], data["y"]))
    u = np.maximum(X @ W.T, 0) @ a / math.sqrt(8)
    np.testing.assert_allclose(jax.jit(du.loss)(p, batch, {}), 0.5 * np.sum((u - y) ** 2),
                               rtol=1e-5)
    ct = P.constant_target((2, 4, 1), target_value=2.0, batch_size=5)
    p = init(ct, KEY)
    x = first_batch(ct)[1]
    np.testing.assert_allclose(jax.jit(ct.loss)(p, x, {}),
                               np.mean((forward_np(p, np.asarray(x)) - 2.0) ** 2), rtol=1e-5)
    reg = P.regularized_two_layer(3, reg=0.7)
    W = np.asarray(init(reg, KEY))
    data, (x, y) = first_batch(reg)
    f = (1 / (1 + np.exp(-np.asarray(x) @ W.T))) @ np.asarray(data["a"])
    expect = np.mean((np.asarray(y) - f) ** 2) / 2 + 0.35 * np.sum(W**2)
    np.testing.assert_allclose(jax.jit(reg.loss)(W, (x, y), {}), expect, rtol=1e-5)
    assert x.shape[0] == reg.config["n_data"]  # full batch


# --------------------------------------------------------------------------- minibatch noise


def test_without_replacement_visits_every_example_once_per_epoch():
    n, s = 12, 4
    problem = P.finite_quadratic(1.0, centers=np.arange(n, dtype=float)[:, None], batch_size=s,
                                 mode="without_replacement")
    data = problem.data.init(KEY)
    batches = np.asarray(jax.jit(jax.vmap(
        lambda t: problem.data.batch(data, jax.random.key(1), t)))(jnp.arange(1, 10)))[..., 0]
    epochs = []
    for e in range(3):
        seen = batches[3 * e: 3 * e + 3].ravel()
        assert sorted(seen.tolist()) == list(range(n))
        epochs.append(seen)
    assert not np.array_equal(epochs[0], epochs[1])


@pytest.mark.parametrize("mode", ["with_replacement", "without_replacement"])
def test_minibatch_noise_covariance_matches_theory(mode):
    """Cov K(c̄ − c̄_B) = K C_c K / S, times (N − S)/(N − 1) without replacement."""
    K = np.array([[2.0, 0.5], [0.5, 1.0]])
    n, s, T = 10, 4, 40_000
    with jax.enable_x64(True):
        problem = P.finite_quadratic(K, n_data=n, centers_cov=[[1.0, 0.3], [0.3, 0.5]],
                                     batch_size=s, mode=mode)
        data = problem.data.init(KEY)
        per_epoch = n // s
        # one batch per epoch without replacement, so the draws are independent
        ts = 1 + jnp.arange(T) * (per_epoch if mode == "without_replacement" else 1)
        cb = jax.jit(jax.vmap(lambda t: problem.data.batch(data, jax.random.key(2), t)))(ts)
    c = np.asarray(data)
    noise = (c.mean(axis=0) - np.asarray(cb).mean(axis=1)) @ K  # K symmetric
    Cc = np.cov(c.T, bias=True)
    expect = theory.finite_data_noise_cov(K, Cc, s, n, replacement=mode == "with_replacement")
    np.testing.assert_allclose(problem.config["noise_cov"], expect, rtol=1e-12)
    np.testing.assert_allclose(problem.config["centers_cov_empirical"], [[1.0, 0.3], [0.3, 0.5]],
                               atol=1e-12)
    prod = noise[:, :, None] * noise[:, None, :]
    emp = prod.mean(axis=0)  # the noise has mean exactly 0
    se = prod.std(axis=0) / math.sqrt(T)
    assert np.all(np.abs(emp - expect) <= 4 * se), (emp, expect, se)
    if mode == "without_replacement":  # and the finite-population factor is resolved
        wr = expect * (n - 1) / (n - s)
        assert np.abs(emp - wr).max() > 4 * se.max()


def test_minibatch_potential_noise_has_the_stated_variance():
    problem = P.potential_1d("double-well", noise="minibatch", noise_var=3.0, n_data=8,
                             batch_size=2, mode="with_replacement")
    z = np.asarray(problem.data.init(KEY), dtype=float)
    np.testing.assert_allclose([z.mean(), np.mean(z**2)], [0.0, 3.0], atol=1e-5)
    assert problem.config["gradient_noise_var"] == pytest.approx(1.5)
    # the empirical loss over the whole data set is the potential itself
    with jax.enable_x64(True):
        zz = jnp.asarray(problem.data.init(KEY))
        w = np.array([-1.3, 0.2])
        np.testing.assert_allclose(jax.jit(jax.vmap(lambda w: problem.loss(w, zz, {})))(w),
                                   (w * w - 1) ** 2 / 4, atol=1e-12)


def test_minibatch_potential_noise_scale_is_a_traced_hyperparameter():
    """``noise_scale`` multiplies every tilt: a problem with noise_var v swept at scale c
    is the problem with noise_var v·c², in one compiled program; the exact stationary
    variance of w in the quadratic well, λσ²/(a(2 − λa)) with σ² = v·c²/S, holds at
    each scale."""
    kw = dict(n_data=40, batch_size=4, w0=0.0, wall=50.0)
    problem = P.potential_1d("sharp-well", noise="minibatch", noise_var=1.0, **kw)
    assert problem.hyperparams == {"noise_scale": 1.0}
    assert P.potential_1d("sharp-well", noise_var=1.0).hyperparams == {}  # Gaussian: none
    with jax.enable_x64(True):
        w = jnp.asarray([-0.7, 0.3, 1.9])
        for c in (0.5, 3.0):
            other = P.potential_1d("sharp-well", noise="minibatch", noise_var=c * c, **kw)
            z, z2 = (jnp.asarray(p.data.init(KEY)) for p in (problem, other))
            mine = jax.vmap(lambda w, c=c, z=z: problem.loss(w, z[:4], {"noise_scale": c}))(w)
            ref = jax.vmap(lambda w, z2=z2, o=other: o.loss(w, z2[:4], {}))(w)
            np.testing.assert_allclose(mine, ref, rtol=1e-12, atol=1e-12)
    lr, a, S, scales = 0.2, 1.0, 4, [0.5, 2.0]
    traces = engine.trace_count()
    ds = sl.run(sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": lr,
                                                         "noise_scale": scales},
                         steps=150, seeds=4000, observe=sl.Observe(("w",), num=2)),
                progress=False)
    assert engine.trace_count() - traces == 1
    for c in scales:
        wT = ds["w"].sel(noise_scale=c).isel(step=-1).values.astype(float)
        exact = lr * (c * c / S) / (a * (2 - lr * a))
        within(np.mean(wT * wT), exact, np.std(wT * wT, ddof=1) / math.sqrt(wT.size))


# --------------------------------------------------------------------------- Du et al.


def test_du_gram_deviation_shrinks_like_inverse_sqrt_width():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 10))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    H_inf = theory.du_H_inf(X)
    widths = np.array([16, 64, 256, 1024, 4096])
    gram = jax.jit(models.du_gram)
    dev = []
    with jax.enable_x64(True):
        for m in widths:
            W = np.random.default_rng(int(m)).standard_normal((8, m, 10))
            dev.append(np.mean([np.linalg.norm(np.asarray(gram(w, X)) - H_inf, 2) for w in W]))
    slope = np.polyfit(np.log(widths), np.log(dev), 1)[0]
    assert abs(slope + 0.5) <= 0.15, (slope, dev)


# --------------------------------------------------------------------------- engine runs


def test_dead_network_follows_its_closed_form_through_the_engine():
    problem = P.constant_target((1, 4, 3, 1), target_value=1.0, output_bias=-0.5, dead=True,
                                batch_size=3, box=(-1.0, 2.0))
    steps = (0, 1, 2, 7, 40)
    study = sl.Study(problem, sl.Optimizer("sgd", schedule="power"),
                     {"gamma0": 0.3, "alpha": [0.0, 1.0, 2.0]}, steps=40, seeds=2,
                     observe=sl.Observe(("risk", "output_bias", "n_kinks"), at=steps))
    with jax.enable_x64(True):
        ds = sl.run(study, progress=False)
    for i, alpha in enumerate((0.0, 1.0, 2.0)):
        expect = theory.dead_network_risk_schedule(-1.5, 0.3, alpha, 0.0, np.array(steps))
        k = np.arange(1, 41)
        gap = -1.5 * np.concatenate([[1.0], np.cumprod(1 - 2 * 0.3 / k**alpha)])[list(steps)]
        for s in range(2):
            # c_n − ξ = Π(1 − 2γ_k)(c_0 − ξ); c is O(1), so its rounding is ~1e-16 absolute
            np.testing.assert_allclose(ds["output_bias"].isel(alpha=i, seed=s).values - 1.0,
                                       gap, rtol=1e-10, atol=1e-15)
            np.testing.assert_allclose(ds["risk"].isel(alpha=i, seed=s).values, expect,
                                       rtol=1e-10, atol=1e-29)
    assert np.all(ds["n_kinks"].values == 0)
    # the summable schedule stalls, the others do not
    assert float(ds["risk"].isel(alpha=2, step=-1, seed=0)) > 0.1
    assert float(ds["risk"].isel(alpha=1, step=-1, seed=0)) < 0.01


def test_regularized_two_layer_engine_run_noise_free_member_is_plain_gd():
    problem = P.regularized_two_layer(3, reg=0.5, dim=2, n_data=16, init="far", init_scale=2.0)
    steps = 15
    study = sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": 0.2,
                                                    "noise_std": [0.0, 1.0]},
                     steps=steps, seeds=2,
                     observe=sl.Observe(("empirical_loss", ("W", lambda o: o.params)),
                                        at=(0, steps)))
    with jax.enable_x64(True):
        ds = sl.run(study, progress=False)
        data = problem.data.init(KEY)
        W = init(problem, KEY)
        loss, grad = jax.jit(problem.loss), jax.jit(jax.grad(problem.loss))
        L0 = float(loss(W, (data["X"], data["y"]), {}))
        for _ in range(steps):
            W = W - 0.2 * grad(W, (data["X"], data["y"]), {})
        L = float(loss(W, (data["X"], data["y"]), {}))
    np.testing.assert_allclose(ds["empirical_loss"].isel(noise_std=0, step=0).values, L0,
                               rtol=1e-12)
    np.testing.assert_allclose(ds["W"].isel(noise_std=0, step=-1).values,
                               np.broadcast_to(np.asarray(W), (2,) + W.shape), rtol=1e-10)
    np.testing.assert_allclose(ds["empirical_loss"].isel(noise_std=0, step=-1).values, L,
                               rtol=1e-10)
    assert L < L0
    noisy = ds["W"].isel(noise_std=1, step=-1).values
    assert not np.allclose(noisy[0], noisy[1])  # the noise differs between seeds


def test_indicator_ramp_engine_run():
    problem = P.indicator_target("ramp", dim=2, radius=0.5, a0=2.0, batch_size=32)
    ds = sl.run(sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": [0.5, 2.0]},
                         steps=30, seeds=3,
                         observe=sl.Observe(("risk", "a", "pointwise_error",
                                             "pointwise_mean_error"), at=(0, 10, 30))),
                progress=False)
    np.testing.assert_allclose(ds["risk"].isel(step=0).values, math.pi / 48, rtol=1e-5)
    a = ds["a"].values
    assert np.all(np.diff(a, axis=-1) >= 0) and np.all(a[..., -1] > 2.0)  # a only grows
    # the pointwise error on the grid is that of the ramp: 1 − a(|x|² − r²) just outside
    grid = np.stack(np.meshgrid(*(2 * [(2 * np.arange(64) + 1) / 64 - 1]), indexing="ij"),
                    -1).reshape(-1, 2)
    grid = grid[np.abs(np.linalg.norm(grid, axis=1) - 0.5) > 0.05]
    s = np.sum(grid**2, axis=1)
    err = np.abs(np.maximum(1 - np.maximum(2.0 * (s - 0.25), 0), 0) - (s <= 0.25))
    np.testing.assert_allclose(ds["pointwise_error"].isel(step=0).values, err.max(), rtol=1e-5)
    np.testing.assert_allclose(ds["pointwise_mean_error"].isel(step=0).values, err.mean(),
                               rtol=1e-4)
    assert np.all(ds["pointwise_error"].isel(step=-1).values < err.max())


def test_du_engine_run_observables():
    problem = P.du_two_layer(64, n_data=8, dim=6, labels="teacher")
    study = sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": 0.05}, steps=20, seeds=2,
                     keep_init=True,
                     observe=sl.Observe(("flip_fraction", "max_distance", "lambda_min_H",
                                         "kernel_deviation", "train_loss",
                                         ("W", lambda o: o.params["W"]),
                                         ("a", lambda o: o.params["a"])), at=(0, 20)))
    with jax.enable_x64(True):
        ds = sl.run(study, progress=False)
        X = np.asarray(problem.data.init(KEY)["X"])
    H_inf = theory.du_H_inf(X)
    W0 = ds["W"].isel(step=0).values
    for s in range(2):
        S = (W0[s] @ X.T >= 0).astype(float)
        H = (X @ X.T) * (S.T @ S) / 64
        np.testing.assert_allclose(ds["kernel_deviation"].isel(seed=s, step=0),
                                   np.linalg.norm(H - H_inf, 2), rtol=1e-10)
        np.testing.assert_allclose(ds["lambda_min_H"].isel(seed=s, step=0),
                                   np.linalg.eigvalsh(H)[0], rtol=1e-8, atol=1e-12)
        W = ds["W"].isel(seed=s, step=-1).values
        np.testing.assert_allclose(ds["max_distance"].isel(seed=s, step=-1),
                                   np.linalg.norm(W - W0[s], axis=1).max(), rtol=1e-10)
        np.testing.assert_allclose(ds["flip_fraction"].isel(seed=s, step=-1),
                                   np.mean((W @ X.T >= 0) != (W0[s] @ X.T >= 0)), atol=1e-12)
    assert np.all(ds["flip_fraction"].isel(step=0).values == 0)
    assert np.all(ds["max_distance"].isel(step=0).values == 0)
    assert np.all(ds["train_loss"].isel(step=-1).values < ds["train_loss"].isel(step=0).values)
    # a_r is ±1, differs between seeds, and is not trained
    a = ds["a"].values
    assert np.all(np.abs(a) == 1) and np.array_equal(a[..., 0, :], a[..., 1, :])
    assert not np.array_equal(a[0], a[1])
    # without keep_init the observables that need W(0) say so
    with pytest.raises(ValueError, match="^keep_init"):
        sl.run(sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": 0.05}, steps=2,
                        seeds=1, observe=sl.Observe(("flip_fraction",))), progress=False)


def test_finite_quadratic_engine_member_equals_plain_loop():
    problem = P.finite_quadratic([2.0, 0.5], n_data=12, centers_cov=[1.0, 1.0], batch_size=3,
                                 mode="without_replacement", w0=[1.0, -1.0])
    study = sl.Study(problem, sl.Optimizer("momentum"),
                     {"learning_rate": 0.3, "momentum": 0.5}, steps=9, seeds=2,
                     observe=sl.Observe(("w", "excess_loss", "risk"), at=(0, 9)))
    with jax.enable_x64(True):
        ds = sl.run(study, progress=False)
        data = problem.data.init(KEY)
        batch = jax.jit(jax.vmap(problem.data.batch, in_axes=(None, None, 0)))
        K = np.diag([2.0, 0.5])
        for s in range(2):
            _, data_k, _ = engine.member_keys(0, s)
            batches = np.asarray(batch(data, data_k, jnp.arange(1, 10)))
            w, m = np.array([1.0, -1.0]), np.zeros(2)
            for t in range(1, 10):
                cb = batches[t - 1]
                m = 0.5 * m + K @ (w - cb.mean(axis=0))  # heavy ball, the optax form
                w = w - 0.3 * m
            np.testing.assert_allclose(ds["w"].isel(seed=s, step=-1).values, w, rtol=1e-12)
    c = np.asarray(data)
    w0 = np.array([1.0, -1.0])
    risk0 = np.mean([0.5 * (w0 - ci) @ K @ (w0 - ci) for ci in c])
    np.testing.assert_allclose(ds["risk"].isel(step=0).values, risk0, rtol=1e-12)
    np.testing.assert_allclose(ds["excess_loss"].isel(step=0).values, 0.5 * w0 @ K @ w0,
                               atol=1e-12)


def test_sharp_well_escape_time_matches_nystrom_oracle():
    lr, s2 = 0.2, 4.0
    problem = P.potential_1d("sharp-well", curvature=1.0, wall=1.0, noise_var=s2)
    ds = sl.run(sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": lr}, steps=300,
                         seeds=2000, observe=None, first_passage=sl.FirstPassage("escaped")),
                progress=False)
    t = ds.event_step.values.ravel()
    assert np.all(t >= 1)  # nobody censored, nobody at the start
    _, dU = P.potential_fns("sharp-well", 1.0)
    tau = theory.mfpt_nystrom(dU, lr, s2, *problem.config["bounds"], x0=0.0)
    within(t.mean(), tau, t.std() / math.sqrt(t.size))


def test_escape_predicates_and_barriers():
    def escaped(problem, ws):
        fn = problem.events["escaped"]
        return np.asarray(jax.vmap(lambda w: fn(P.Observation(w, None, 0.0, 0.0, None, 0, {},
                                                              None)))(jnp.asarray(ws))).tolist()

    ws = [-1.2, -0.9, 0.0, 0.4, 0.6, 1.1]
    dw = P.potential_1d("double-well", noise="minibatch", noise_var=8.0, n_data=50,
                        batch_size=2, threshold=0.5)
    assert escaped(dw, ws) == [False, False, False, False, True, True]
    assert dw.config["barrier"] == pytest.approx(0.25)  # U(0) − U(−1)
    sw = P.potential_1d("sharp-well", curvature=2.0, wall=1.0)
    assert escaped(sw, ws) == [True, False, False, False, False, True]
    assert sw.config["barrier"] == pytest.approx(1.0)
    cp = P.potential_1d(lambda w: jnp.cos(w), bounds=(-math.inf, 0.5), w0=0.0)
    assert escaped(cp, ws) == [False, False, False, False, True, True]


# --------------------------------------------------------------------------- helpers, errors


def test_newton_preconditioner_inverts_the_hessian():
    A = np.array([[2.0, 0.5], [0.5, 1.0]])
    Pm = P.newton_preconditioner(A)
    np.testing.assert_allclose(np.asarray(Pm) @ A, np.eye(2), atol=1e-12)
    assert sl.Optimizer("sgd", preconditioner=Pm).preconditioner == Pm


@pytest.mark.parametrize("make,field", [
    (lambda: P.regularized_two_layer(3, reg=0.1, activation="gelu"), "activation"),
    (lambda: P.regularized_two_layer(3, reg=0.1, activation="relu"), "activation"),
    (lambda: P.regularized_two_layer(3, reg=0.1, init="uniform"), "init"),
    (lambda: P.potential_1d("triple-well"), "kind"),
    (lambda: P.potential_1d("double-well", noise="levy"), "noise"),
    (lambda: P.potential_1d(lambda w: w**2, w0=0.0), "bounds"),
    (lambda: P.potential_1d("double-well", threshold=-1.5), "w0"),
    (lambda: P.constant_target((1, 0, 1)), r"sizes\[1\]"),
    (lambda: P.constant_target((1, 4, -2, 1)), r"sizes\[2\]"),
    (lambda: P.constant_target((2, 4, 1), inputs="gaussian", dead=True), "dead"),
    (lambda: P.regularized_two_layer(0, reg=0.1), "width"),
    (lambda: P.du_two_layer(0), "width"),
    (lambda: P.indicator_target(radius=1.0), "radius"),
    (lambda: P.indicator_target(radius=0.0), "radius"),
    (lambda: P.indicator_target(radius=-0.3), "radius"),
    (lambda: P.indicator_target(model="cnn"), "model"),
    (lambda: P.indicator_target("mlp", sizes=(3, 4, 1)), "sizes"),
    (lambda: P.finite_quadratic(1.0, n_data=5, centers_cov=1.0, batch_size=8,
                                mode="without_replacement"), "batch_size"),
    (lambda: P.potential_1d(noise="minibatch", n_data=5, batch_size=8,
                            mode="without_replacement"), "batch_size"),
    (lambda: P.du_two_layer(4, X=np.ones((3, 2))), "X"),
    (lambda: P.du_two_layer(4, X=np.eye(3) * 1.001), "X"),
    (lambda: P.newton_preconditioner([[1.0, 0.0], [0.0, -1.0]]), "A"),
])
def test_bad_input_raises_naming_the_field(make, field):
    with pytest.raises(ValueError, match=f"^{field}") as e:
        make()
    assert "=" in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------------- pytree problems


def rebuild_reuses_the_program(make, old, new, observe=("risk",), hp=None, keep_init=False):
    """A problem rebuilt with new arrays of the same shapes: zero new traces, new numbers."""
    def run(kw):
        problem = make(**kw)
        assert problem.is_pytree
        study = sl.Study(problem, sl.Optimizer("sgd"), hp or {"learning_rate": [0.05, 0.1]},
                         steps=4, seeds=2, observe=sl.Observe(observe, at=(0, 4)),
                         keep_init=keep_init)
        return sl.run(study, progress=False)
    before = run(old)
    n = engine.trace_count()
    after = run(new)
    assert engine.trace_count() == n, "rebuilding with same-shaped arrays retraced"
    for name in observe:
        a, b = before[name].values, after[name].values
        assert np.all(np.isfinite(a)) and np.all(np.isfinite(b)), name
    assert any(not np.array_equal(before[k].values, after[k].values) for k in observe), \
        "the new arrays did not reach the compiled program"


def test_mlp_regression_rebuilt_with_a_new_teacher_or_target_does_not_retrace():
    def teacher(teacher_seed):
        return P.mlp_regression((2, 6, 1), target="teacher", teacher_sizes=(2, 4, 1),
                                n_eval=32, batch_size=2, teacher_seed=teacher_seed)
    rebuild_reuses_the_program(teacher, {"teacher_seed": 0}, {"teacher_seed": 1},
                               observe=("risk", "loss"))

    def constant(target_value):
        return P.mlp_regression((2, 6, 1), target_value=target_value, n_eval=32, batch_size=2)
    rebuild_reuses_the_program(constant, {"target_value": 0.0}, {"target_value": 0.5})
    assert constant(0.5).config["target_value"] == 0.5


def test_du_two_layer_rebuilt_with_a_new_data_set_does_not_retrace():
    def make(data_seed):
        return P.du_two_layer(8, n_data=5, dim=3, labels="teacher", data_seed=data_seed)
    rebuild_reuses_the_program(make, {"data_seed": 0}, {"data_seed": 1},
                               observe=("risk", "flip_fraction", "kernel_deviation"),
                               keep_init=True)
    p0, p1 = make(0), make(1)
    assert p0.config["lambda0"] != p1.config["lambda0"]
    d1 = p1.data.init(jax.random.key(0))
    assert d1["X"].dtype == jnp.result_type(float)
    np.testing.assert_allclose(d1["H_inf"], theory.du_H_inf(np.asarray(d1["X"], float)),
                               rtol=1e-5, atol=1e-6)


def test_regularized_two_layer_rebuilt_with_new_data_does_not_retrace():
    def make(data_seed, reg=0.3):
        return P.regularized_two_layer(3, reg=reg, n_data=8, dim=2, data_seed=data_seed)
    hp = {"learning_rate": 0.1, "noise_std": 0.0, "reg": [0.1, 0.3]}
    rebuild_reuses_the_program(make, {"data_seed": 0}, {"data_seed": 1},
                               observe=("risk", "empirical_loss"), hp=hp)
    # a new default λ is an array too: unswept, it reaches the program without a retrace
    rebuild_reuses_the_program(make, {"data_seed": 0, "reg": 0.1}, {"data_seed": 0, "reg": 2.0},
                               hp={"learning_rate": 0.1})
    assert make(0, reg=2.0).hyperparams == {"reg": 2.0}


def test_regularized_two_layer_near_and_far_starts_share_a_program():
    """W₀ = 0 and the Dirac start W₀ = c·1 differ only in an array: one compiled program."""
    def make(init, init_scale=1.0):
        return P.regularized_two_layer(3, reg=0.3, n_data=8, dim=2, data_seed=0, init=init,
                                       init_scale=init_scale)
    rebuild_reuses_the_program(make, {"init": "zeros"}, {"init": "far", "init_scale": 2.5},
                               observe=("empirical_loss",), hp={"learning_rate": 0.1})
    np.testing.assert_array_equal(make("zeros").init(jax.random.key(0)), np.zeros((3, 2)))
    np.testing.assert_array_equal(make("far", 2.5).init(jax.random.key(0)), np.full((3, 2), 2.5))
    w = make("normal", 2.0).init(jax.random.key(0))
    np.testing.assert_array_equal(w, 2.0 * jax.random.normal(jax.random.key(0), (3, 2)))


def test_indicator_target_rebuilt_with_a_new_start_does_not_retrace():
    def make(a0):
        return P.indicator_target("ramp", a0=a0, n_eval=64, batch_size=4)
    rebuild_reuses_the_program(make, {"a0": 1.0}, {"a0": 2.0}, observe=("risk", "a"))

    # the same arguments again: a new object, the same program (it used to retrace)
    def mlp_study():
        problem = P.indicator_target("mlp", sizes=(2, 4, 1), n_eval=64, n_data=16, batch_size=4)
        return sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": 0.1}, steps=4, seeds=2,
                        observe=sl.Observe(("pointwise_error",), at=(4,)))
    first = sl.run(mlp_study(), progress=False)
    n = engine.trace_count()
    again = sl.run(mlp_study(), progress=False)
    assert engine.trace_count() == n
    np.testing.assert_array_equal(first["pointwise_error"].values,
                                  again["pointwise_error"].values)



def test_constant_target_value_is_a_swept_hyperparameter():
    """ξ in the grid: one compiled program, each grid point the run of a problem built with
    that ξ (float64), and the exact 1-D risk moves with it."""
    def study(problem, hp):
        return sl.Study(problem, sl.Optimizer("sgd"), hp, steps=30, seeds=4,
                        observe=sl.Observe(("risk", "loss"), at=(0, 10, 30)))
    with jax.enable_x64(True):
        sizes = (1, 4, 1)
        problem = P.constant_target(sizes)
        swept = sl.run(study(problem, {"learning_rate": 0.05, "target_value": [0.0, 0.7]}),
                       progress=False)
        n = engine.trace_count()
        again = sl.run(study(problem,
                             {"learning_rate": 0.05, "target_value": [0.3, 1.2]}),
                       progress=False)
        assert engine.trace_count() == n  # a new ξ grid: no new trace
        for i, xi in enumerate((0.0, 0.7)):
            one = sl.run(study(P.constant_target(sizes, target_value=xi),
                               {"learning_rate": 0.05}), progress=False)
            for name in ("risk", "loss"):
                got = swept[name].isel(target_value=i).values
                np.testing.assert_allclose(got, one[name].values.reshape(got.shape),
                                           rtol=1e-12, atol=1e-14)
        # the risk at step 0 is E[(N(X) − ξ)²] of the same initial nets: it depends on ξ
        r0 = again["risk"].isel(step=0).values
        assert not np.allclose(r0[..., 0, :], r0[..., 1, :])


@pytest.mark.parametrize("init", ["he", "lecun", "normal"])
def test_mlp_init_is_one_draw_with_the_stated_variances(init):
    """Random-stream version 3: a network is one normal draw (weights, then biases).
    Every array has its stated variance (within 4 SE over 4000 seeds), arrays are
    uncorrelated, the weights do not depend on bias_scale, and the lowered init holds
    a single normal draw (one inverse error function)."""
    sizes, n = (3, 5, 4, 1), 4000
    keys = jax.vmap(jax.random.key)(jnp.arange(n))
    nets = jax.jit(jax.vmap(lambda k: models.mlp_init(k, sizes, init, 0.7)))(keys)
    bare = jax.jit(jax.vmap(lambda k: models.mlp_init(k, sizes, init)))(keys)
    firsts = []
    for (w, b), (w0, b0), fan_in in zip(nets, bare, sizes[:-1], strict=True):
        want = {"he": 2.0 / fan_in, "lecun": 1.0 / fan_in, "normal": 1.0}[init]
        for x, var in ((w, want), (b, 0.49)):
            x = np.asarray(x, np.float64).reshape(n, -1)
            got = np.mean(x ** 2)  # mean zero; SE of the mean square over n·k independent draws
            assert abs(got - var) < 4 * var * math.sqrt(2 / x.size), (init, x.shape, got, var)
            firsts.append(x[:, 0])
        np.testing.assert_array_equal(w, w0)
        assert not np.any(np.asarray(b0))
    corr = np.corrcoef(np.stack(firsts))[np.triu_indices(len(firsts), 1)]
    assert np.max(np.abs(corr)) < 4 / math.sqrt(n)
    text = jax.jit(lambda k: models.mlp_init(k, sizes, init, 0.7)).lower(
        jax.random.key(0)).as_text()
    assert text.count("erf_inv") == 1


def test_linear_regression_and_du_draw_once_per_call():
    """Random-stream version 5: a block's key is one ``fold_in(key, 2³¹ + b)`` (one hash,
    never a step's ``fold_in(key, t)``); a ``linear_regression`` block is one normal draw
    of ``(n, d + 1)`` (the inputs' normals, then the label noise) and a ``du_two_layer``
    network one draw of ``(width, dim + 1)`` (``W``, then ``a`` = the signs of the last
    column), compared with those formulas written out; each lowered program holds one
    inverse error function. The signs are a fair ±1, independent of ``W`` (4 SE over
    4000 seeds × 16 units)."""
    key = jax.random.key(5)
    for b in (0, 3, 2**31 - 1):
        np.testing.assert_array_equal(
            jax.random.key_data(data_lib.block_key(key, b)),
            jax.random.key_data(jax.random.fold_in(key, np.uint32(2**31 + b))))

    def rotations(f):
        return jax.jit(f).lower(key).compile().as_text().count("shift-left")
    assert rotations(lambda k: data_lib.block_key(k, 7)) == \
        rotations(lambda k: jax.random.fold_in(k, 7)) > 0
    A = np.array([[2.0, 0.5], [0.5, 1.0]])
    pb = P.linear_regression(A, 0.3, 3, w_star=[1.0, -2.0])
    n = 24
    x, y = pb.data.block(None, key, 0, 8)
    z = np.asarray(jax.random.normal(data_lib.block_key(key, 0), (n, 3)))
    LA = pb.arrays["LA"]
    np.testing.assert_allclose(LA @ LA.T, A, atol=1e-12)
    x_want = z[:, :2] @ LA.T
    np.testing.assert_allclose(np.asarray(x).reshape(n, 2), x_want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(y).reshape(n), x_want @ [1.0, -2.0] + 0.3 * z[:, 2],
                               rtol=1e-5, atol=1e-6)
    text = jax.jit(lambda k: pb.data.block(None, k, 0, 8)).lower(key).as_text()
    assert text.count("erf_inv") == 1

    du = P.du_two_layer(16, n_data=8, dim=5)
    keys = jax.vmap(jax.random.key)(jnp.arange(4000))
    nets = jax.jit(jax.vmap(du.init))(keys)
    z = np.asarray(jax.vmap(lambda k: jax.random.normal(k, (16, 6)))(keys))
    np.testing.assert_array_equal(nets["W"], z[..., :5])
    np.testing.assert_array_equal(nets["a"], np.where(z[..., 5] >= 0, 1.0, -1.0))
    a = np.asarray(nets["a"], np.float64).ravel()
    assert set(np.unique(a)) == {-1.0, 1.0}
    assert abs(a.mean()) < 4 / math.sqrt(a.size)
    w_norm = np.linalg.norm(np.asarray(nets["W"], np.float64), axis=-1).ravel()
    assert abs(np.corrcoef(a, w_norm)[0, 1]) < 4 / math.sqrt(a.size)
    assert jax.jit(du.init).lower(jax.random.key(0)).as_text().count("erf_inv") == 1


@pytest.mark.parametrize("make", [
    lambda s: P.potential_1d("double-well", init_scale=s),
    lambda s: P.finite_quadratic(2.0, n_data=16, centers_cov=1.0, init_scale=s),
])
def test_a_zero_scale_start_draws_nothing(make):
    """init_scale = 0 (the default) starts at w0 with no random draw in the init program;
    init_scale > 0 draws a start of that spread (4 SE over 4000 seeds)."""
    text = jax.jit(make(0.0).init).lower(jax.random.key(0)).as_text()
    assert "erf_inv" not in text and "threefry" not in text
    keys = jax.vmap(jax.random.key)(jnp.arange(4000))
    p0, p = make(0.0), make(0.5)
    w0 = np.asarray(p0.init(keys[0]), np.float64)
    starts = np.asarray(jax.vmap(p.init)(keys), np.float64).reshape(4000, -1) - w0.ravel()
    got = np.mean(starts ** 2)
    assert abs(got - 0.25) < 4 * 0.25 * math.sqrt(2 / starts.size)
