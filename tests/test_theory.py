"""Tests for sgdlab.theory: every closed form against an independent computation.

References used here: the augmented Lyapunov equation of the (w_t, w_{t-1})
chain, exact second-moment recursions, exact enumeration of minibatches, Monte
Carlo averages with standard errors, plain NumPy simulations of the SGD chain,
and direct products. Monte Carlo comparisons use 4 standard errors with fixed
seeds; the seeds are not tuned.
"""

import itertools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from sgdlab import theory as T
from sgdlab.theory import lzu as TL

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _spd(rng, d, floor=0.3):
    Q = rng.standard_normal((d, d))
    return Q @ Q.T / d + floor * np.eye(d)


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.fixture
def kc3():
    """Random non-commuting SPD K and C in 3-D."""
    rng = np.random.default_rng(20240601)
    K, C = _spd(rng, 3), _spd(rng, 3)
    assert np.linalg.norm(K @ C - C @ K) > 0.1 * np.linalg.norm(K) * np.linalg.norm(C)
    return K, C


# ---------------------------------------------------------------------------
# Liu--Ziyin--Ueda stationary covariance
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("mu", [0.0, 0.5, -0.3])
@pytest.mark.parametrize("frac", [0.1, 0.6, 0.97])
def test_theorem1_matches_lyapunov_scalar_lr(kc3, mu, frac):
    K, C = kc3
    lr = frac * 2 * (1 + mu) / np.linalg.eigvalsh(K)[-1]
    got = T.lzu_covariance(lr, K, C, mu)
    ref = T.stationary_covariance_lyapunov(lr, K, C, mu)
    assert _rel(got, ref) < 1e-10
    np.testing.assert_array_equal(got, got.T)


@pytest.mark.parametrize("mu", [0.0, 0.5, -0.3])
def test_theorem1_matches_lyapunov_matrix_lr(kc3, mu):
    K, C = kc3
    rng = np.random.default_rng(7)
    # damped-Newton-like preconditioner, and a generic SPD one (not commuting with K)
    for Lam in (0.4 * (1 + mu) * np.linalg.inv(K), 0.2 * _spd(rng, 3)):
        assert T.is_stable(Lam, K, mu)
        got = T.lzu_covariance(Lam, K, C, mu)
        ref = T.stationary_covariance_lyapunov(Lam, K, C, mu)
        assert _rel(got, ref) < 1e-10


def test_lyapunov_reference_matches_simulated_recursion(kc3):
    """The reference itself: iterate the exact covariance recursion of z_t to convergence."""
    K, C = kc3
    mu, lr = 0.5, 0.5
    d = 3
    eye = np.eye(d)
    A = np.block([[(1 + mu) * eye - lr * K, -mu * eye], [eye, 0 * eye]])
    Q = np.zeros((2 * d, 2 * d))
    Q[:d, :d] = lr * lr * C
    S = np.zeros_like(Q)
    for _ in range(5000):
        S = A @ S @ A.T + Q
    assert _rel(S[:d, :d], T.stationary_covariance_lyapunov(lr, K, C, mu)) < 1e-10


@pytest.mark.parametrize("mu", [0.0, 0.5, -0.3])
def test_commuting_formula_equals_theorem1_when_commuting(mu):
    rng = np.random.default_rng(3)
    Q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    K = Q @ np.diag([0.5, 1.0, 2.0]) @ Q.T
    C = Q @ np.diag([1.0, 0.2, 3.0]) @ Q.T
    lr = 0.8 * (1 + mu)
    got = T.lzu_covariance_commuting(lr, K, C, mu)
    assert _rel(got, T.lzu_covariance(lr, K, C, mu)) < 1e-10
    # matrix learning rate commuting with K and C
    Lam = 0.3 * np.linalg.inv(K)
    got = T.lzu_covariance_commuting(Lam, K, C, mu)
    assert _rel(got, T.lzu_covariance(Lam, K, C, mu)) < 1e-10


def test_commuting_formula_is_badly_wrong_when_not_commuting():
    # stiff K, noise concentrated along a direction at 45 degrees to K's axes
    K = np.diag([0.05, 1.0])
    u = np.array([1.0, 1.0]) / math.sqrt(2)
    C = np.outer(u, u) + 1e-3 * np.eye(2)
    lr = 1.6
    exact = T.lzu_covariance(lr, K, C)
    assert _rel(exact, T.stationary_covariance_lyapunov(lr, K, C)) < 1e-10
    naive = T.lzu_covariance_commuting(lr, K, C)
    diff = _rel(naive, exact)
    print(f"relative Frobenius error of the commuting formula: {diff:.3f}")
    assert diff > 0.1


@pytest.mark.parametrize("mu", [0.0, 0.5, -0.3])
def test_1d_formula_equals_theorem1(mu):
    lr, k, s2 = 0.7, 1.3, 0.4
    v = T.lzu_variance_1d(lr, k, s2, mu)
    assert abs(v - T.lzu_covariance(lr, [[k]], [[s2]], mu)[0, 0]) < 1e-12 * v
    assert abs(v - T.stationary_covariance_lyapunov(lr, [[k]], [[s2]], mu)[0, 0]) < 1e-12 * v
    # the continuous-time answer is off by exactly 1 - λk/(2(1+μ))
    vc = T.continuous_time_variance_1d(lr, k, s2, mu)
    assert abs(vc / v - (1 - lr * k / (2 * (1 + mu)))) < 1e-14


def test_1d_formula_broadcasts():
    lrs = np.array([0.1, 0.5, 1.0])
    v = T.lzu_variance_1d(lrs, 1.0, 1.0)
    np.testing.assert_allclose(v, [T.lzu_variance_1d(x, 1.0, 1.0) for x in lrs], rtol=1e-15)


def test_excess_loss_sgd_matches_half_trace(kc3):
    K, C = kc3
    lr = 1.5 / np.linalg.eigvalsh(K)[-1]
    Sigma = T.stationary_covariance_lyapunov(lr, K, C)
    assert abs(T.excess_loss_sgd(lr, K, C) - T.excess_loss(K, Sigma)) < 1e-12


# ---------------------------------------------------------------------------
# any linear optimizer: the augmented Lyapunov solve for a user-given update matrix
# ---------------------------------------------------------------------------


def test_linear_recursion_matches_iterated_covariance_recursion():
    """A generic non-symmetric A, B of another width: iterate Σ ← AΣAᵀ + BCBᵀ to convergence."""
    rng = np.random.default_rng(21)
    A = rng.standard_normal((4, 4))
    A *= 0.9 / np.max(np.abs(np.linalg.eigvals(A)))
    B = rng.standard_normal((4, 2))
    C = _spd(rng, 2)
    S = np.zeros((4, 4))
    for _ in range(3000):
        S = A @ S @ A.T + B @ C @ B.T
    got = TL.stationary_covariance_linear(A, B, C)
    assert _rel(got, S) < 1e-10
    np.testing.assert_array_equal(got, got.T)


@pytest.mark.parametrize("mu", [0.0, 0.5, -0.3])
def test_heavy_ball_update_matrix_reproduces_theorem1(kc3, mu):
    K, C = kc3
    rng = np.random.default_rng(8)
    for lr in (0.7 * (1 + mu) / np.linalg.eigvalsh(K)[-1], 0.2 * _spd(rng, 3)):
        A, B = TL.heavy_ball_transition(lr, K, mu)
        got = TL.stationary_covariance_linear(A, B, C)[:3, :3]
        assert _rel(got, T.lzu_covariance(lr, K, C, mu)) < 1e-10


def _optax_step(tx, w, m, g):
    """One step of an optax transformation from momentum state m with gradient g."""
    state = tx.init(jnp.zeros_like(w))
    trace_state = state[0]._replace(trace=jnp.asarray(m))
    updates, new_state = tx.update(jnp.asarray(g), (trace_state,) + tuple(state[1:]))
    return np.asarray(w + updates), np.asarray(new_state[0].trace)


@pytest.mark.parametrize("name", ["heavy_ball", "nesterov"])
def test_update_matrices_are_one_optax_step(kc3, name):
    """(A, B) reproduce one step of optax.sgd(λ, μ, nesterov=...) exactly, state (w, m)."""
    import optax

    K, _ = kc3
    lr, mu = 0.37, 0.6
    rng = np.random.default_rng(4)
    w, m, xi = rng.standard_normal((3, 3))
    with jax.enable_x64(True):
        tx = optax.sgd(lr, momentum=mu, nesterov=name == "nesterov")
        w1, m1 = _optax_step(tx, jnp.asarray(w), m, K @ w + xi)
    A, B = getattr(TL, f"{name}_transition")(lr, K, mu)
    z1 = A @ np.concatenate([w, m]) + B @ xi
    np.testing.assert_allclose(z1, np.concatenate([w1, m1]), rtol=1e-13, atol=1e-13)


def test_nesterov_stability_range_and_zero_momentum(kc3):
    K, C = kc3
    lr = 0.9 / np.linalg.eigvalsh(K)[-1]
    A, B = TL.nesterov_transition(lr, K, 0.0)
    assert _rel(TL.stationary_covariance_linear(A, B, C)[:3, :3], T.lzu_covariance(lr, K, C)) \
        < 1e-10
    for mu in (0.0, 0.5, 0.9):
        bound = 2 * (1 + mu) / (1 + 2 * mu)   # p = λk, 1-D
        A, B = TL.nesterov_transition(bound * (1 - 1e-6), [[1.0]], mu)
        assert TL.stationary_covariance_linear(A, B, [[1.0]])[0, 0] > 0
        A, B = TL.nesterov_transition(bound * (1 + 1e-6), [[1.0]], mu)
        with pytest.raises(T.NoStationaryDistribution, match="spectral radius"):
            TL.stationary_covariance_linear(A, B, [[1.0]])
    # Nesterov is not heavy ball: at μ = 0.5, λk = 1 the variances differ by far
    hb = T.lzu_variance_1d(1.0, 1.0, 1.0, 0.5)
    A, B = TL.nesterov_transition(1.0, [[1.0]], 0.5)
    assert TL.stationary_covariance_linear(A, B, [[1.0]])[0, 0] / hb > 1.5


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.95])
@pytest.mark.parametrize("lr", [0.3, 1.2, 1.9])
def test_iterate_averaging_matches_the_1d_series(lr, beta):
    """EMA of SGD iterates: (1−β)² Σ_ij β^(i+j) ρ^|i−j| Var(w), summed in closed form."""
    k, s2 = 1.0, 0.7
    var_w = T.lzu_variance_1d(lr, k, s2)
    rho = 1 - lr * k
    want = var_w * (1 - beta) * (1 + beta * rho) / ((1 + beta) * (1 - beta * rho))
    A, B = TL.ema_transition(lr, [[k]], beta)
    S = TL.stationary_covariance_linear(A, B, [[s2]])
    assert S[0, 0] == pytest.approx(var_w, rel=1e-12)
    assert S[1, 1] == pytest.approx(want, rel=1e-10)
    # a direct truncated double sum, independent of the algebra above
    i = np.arange(1500)
    wts = (1 - beta) * beta ** i
    direct = var_w * wts @ (rho ** np.abs(i[:, None] - i[None, :])) @ wts
    assert S[1, 1] == pytest.approx(direct, rel=1e-9)


def test_periodic_solve_with_independent_noise_is_the_plain_solve(kc3):
    K, C = kc3
    A, B = TL.heavy_ball_transition(0.6, K, 0.3)
    for E in (1, 3):
        got = TL.stationary_covariance_periodic(A, B, np.kron(np.eye(E), C), E)
        assert _rel(got, TL.stationary_covariance_linear(A, B, C)) < 1e-10


def test_reshuffle_noise_exact_enumeration():
    """All 6! permutations of N = 6 centres cut into E = 3 batches of S = 2."""
    rng = np.random.default_rng(9)
    N, S, d = 6, 2, 2
    K = _spd(rng, d)
    c = rng.standard_normal((N, d))
    xi = []
    for perm in itertools.permutations(range(N)):
        means = c[list(perm)].reshape(N // S, S, d).mean(axis=1)
        xi.append(((means - c.mean(axis=0)) @ K).ravel())   # K symmetric
    xi = np.array(xi)
    exact = xi.T @ xi / len(xi)
    got = TL.reshuffle_noise_cov(K, np.cov(c.T, bias=True), S, N)
    np.testing.assert_allclose(got, exact, atol=1e-12 * np.abs(exact).max())
    # the per-batch block is the without-replacement noise of finite_data_noise_cov
    np.testing.assert_allclose(got[:d, :d], T.finite_data_noise_cov(
        K, np.cov(c.T, bias=True), S, N, replacement=False), atol=1e-13)


@pytest.mark.parametrize("lr", [0.1, 0.5, 1.5])
def test_reshuffled_sgd_variance_matches_a_step_by_step_1d_sum(lr):
    """1-D plain SGD, E = 4 batches per epoch: Var after r steps of an epoch, summed by hand."""
    N, S, k, v = 16, 4, 1.3, 0.8
    E = N // S
    cov = np.full((E, E), -v / (N - 1))
    np.fill_diagonal(cov, v * (N - S) / (S * (N - 1)))
    rho, a = 1 - lr * k, lr * k

    def q(r):
        c = a * rho ** (r - 1 - np.arange(r))
        return c @ cov[:r, :r] @ c

    v0 = q(E) / (1 - rho ** (2 * E))
    want = np.mean([rho ** (2 * r) * v0 + q(r) for r in range(E)])
    A, B = TL.heavy_ball_transition(lr, [[k]], 0.0)
    got = TL.stationary_covariance_periodic(A, B, TL.reshuffle_noise_cov([[k]], [[v]], S, N), E)
    assert got[0, 0] == pytest.approx(want, rel=1e-12)
    iid = T.lzu_covariance(lr, [[k]], T.finite_data_noise_cov([[k]], [[v]], S, N, False))[0, 0]
    assert abs(got[0, 0] / iid - 1) > 0.05 or abs(a - 1) < 1e-12


def test_linear_recursion_bad_input():
    with pytest.raises(ValueError, match="A must be a square"):
        TL.stationary_covariance_linear(np.ones((2, 3)), np.ones((2, 1)), [[1.0]])
    with pytest.raises(ValueError, match="B must have shape"):
        TL.stationary_covariance_linear(0.5 * np.eye(2), np.ones((3, 1)), [[1.0]])
    with pytest.raises(ValueError, match="noise_cov must be positive semi-definite"):
        TL.stationary_covariance_linear(0.5 * np.eye(2), np.eye(2), -np.eye(2))
    with pytest.raises(T.NoStationaryDistribution, match=re.escape("= 1.1 ≥ 1")):
        TL.stationary_covariance_linear(1.1 * np.eye(2), np.eye(2), np.eye(2))
    with pytest.raises(ValueError, match="decay"):
        TL.ema_transition(0.1, np.eye(2), 1.0)
    with pytest.raises(ValueError, match="period_noise_cov must have shape"):
        TL.stationary_covariance_periodic(0.5 * np.eye(2), np.eye(2), np.eye(2), 2)
    with pytest.raises(ValueError, match="batch_size"):
        TL.reshuffle_noise_cov(np.eye(2), np.eye(2), 5, 4)


# ---------------------------------------------------------------------------
# stability
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("mu", [0.0, 0.5, -0.3])
def test_unstable_raises_and_just_stable_does_not(kc3, mu):
    K, C = kc3
    kmax = np.linalg.eigvalsh(K)[-1]
    bound = 2 * (1 + mu) / kmax
    cases = [
        (T.lzu_covariance, K, C),
        (T.stationary_covariance_lyapunov, K, C),
        (T.lzu_covariance_commuting, K, K @ K),
    ]
    for f, KK, CC in cases:  # (the commuting formula is given commuting K, C = K²)
        with pytest.raises(T.NoStationaryDistribution, match="^no stationary distribution: λk"):
            f(bound * (1 + 1e-9), KK, CC, mu)
        Sigma = f(bound * (1 - 1e-6), KK, CC, mu)
        assert np.all(np.isfinite(Sigma)) and np.linalg.eigvalsh(Sigma)[0] > 0
    with pytest.raises(T.NoStationaryDistribution, match="no stationary distribution"):
        T.lzu_variance_1d(bound * (1 + 1e-9), kmax, 1.0, mu)
    assert T.lzu_variance_1d(bound * (1 - 1e-9), kmax, 1.0, mu) > 0


def test_stability_message_has_the_numbers():
    s = T.stability(1.0, [0.5, 2.5], 0.0)
    assert not s.stable and s.reason == "λk = 2.5 ≥ 2(1+μ) = 2.0" and s.spectral_radius > 1
    with pytest.raises(T.NoStationaryDistribution) as e:
        T.lzu_variance_1d(1.0, 2.5, 1.0)
    assert str(e.value) == "no stationary distribution: λk = 2.5 ≥ 2(1+μ) = 2.0"
    s = T.stability(0.1, [1.0, 3.0], 0.9)
    assert s.stable and s.reason == "" and s.spectral_radius < 1
    assert not T.is_stable(0.1, [1.0], 1.0)
    assert not T.is_stable(0.1, [-1.0, 1.0], 0.0)


def test_stability_agrees_with_transition_matrix_spectral_radius():
    rng = np.random.default_rng(11)
    for _ in range(200):
        mu = rng.uniform(-0.95, 0.95)
        k = rng.uniform(-0.5, 5.0, size=3)
        lr = rng.uniform(0.01, 2.0)
        A = np.block(
            [[(1 + mu) * np.eye(3) - lr * np.diag(k), -mu * np.eye(3)], [np.eye(3), 0 * np.eye(3)]]
        )
        rho = np.max(np.abs(np.linalg.eigvals(A)))
        s = T.stability(lr, k, mu)
        assert abs(s.spectral_radius - rho) < 1e-9
        if abs(rho - 1) > 1e-9:
            assert s.stable == (rho < 1)


def test_other_invalid_inputs():
    K = np.diag([1.0, -0.5])
    with pytest.raises(T.NoStationaryDistribution, match="≤ 0"):
        T.lzu_covariance(0.1, K, np.eye(2))
    with pytest.raises(T.NoStationaryDistribution, match=re.escape("|μ| = 1.0 ≥ 1")):
        T.lzu_covariance(0.1, np.eye(2), np.eye(2), 1.0)
    with pytest.raises(ValueError, match="finite"):
        T.lzu_covariance(np.nan, np.eye(2), np.eye(2))
    with pytest.raises(ValueError, match="finite"):
        T.lzu_variance_1d(0.1, np.inf, 1.0)
    with pytest.raises(ValueError, match="symmetric"):
        T.lzu_covariance(0.1, [[1.0, 0.5], [0.0, 1.0]], np.eye(2))
    # unstable matrix learning rate: the message names ΛK
    with pytest.raises(T.NoStationaryDistribution, match="eigenvalue of ΛK"):
        T.lzu_covariance(np.diag([0.1, 3.0]), np.eye(2), np.eye(2))
    with pytest.raises(T.NoStationaryDistribution):
        T.excess_loss_sgd(2.1, np.eye(2), np.eye(2))


# ---------------------------------------------------------------------------
# finite data set noise: exact enumeration of minibatches
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("replacement", [True, False])
def test_finite_data_noise_exact_enumeration(replacement):
    rng = np.random.default_rng(5)
    N, S, d = 6, 2, 2
    K = _spd(rng, d)
    c = rng.standard_normal((N, d))
    w = rng.standard_normal(d)
    if replacement:
        batches = list(itertools.product(range(N), repeat=S))  # equally likely ordered draws
    else:
        batches = list(itertools.combinations(range(N), S))  # equally likely subsets
    g = np.array([K @ (w - c[list(b)].mean(axis=0)) for b in batches])
    dev = g - g.mean(axis=0)
    exact = dev.T @ dev / len(batches)
    Cc = np.cov(c.T, bias=True)  # 1/N normalisation
    got = T.finite_data_noise_cov(K, Cc, S, n_data=N, replacement=replacement)
    np.testing.assert_allclose(got, exact, rtol=0, atol=1e-12 * np.abs(exact).max())
    # the mean of the minibatch gradient is the full gradient
    np.testing.assert_allclose(g.mean(axis=0), K @ (w - c.mean(axis=0)), atol=1e-13)


def test_finite_data_noise_full_batch_is_noiseless():
    C = T.finite_data_noise_cov(np.eye(2), np.eye(2), 5, n_data=5, replacement=False)
    np.testing.assert_array_equal(C, 0.0)
    with pytest.raises(ValueError, match="n_data"):
        T.finite_data_noise_cov(np.eye(2), np.eye(2), 2, replacement=False)


# ---------------------------------------------------------------------------
# online linear regression with minibatch noise
# ---------------------------------------------------------------------------


def _linreg_second_moment_exact(Lam, A, s2, S, mu):
    """Fixed point of the exact second-moment recursion of z_t = (w_t, w_{t-1}).

    w_{t+1} = (1+μ)w_t − μw_{t−1} − Λ ĝ_t, ĝ_t = Â_t w_t − (1/S)Σ x ε with
    Â_t = (1/S)Σ x xᵀ, x ~ N(0, A). For Gaussian x,
    E[Â Σ Â] = AΣA + (AΣA + Tr(AΣ)A)/S and the label noise adds σ²A/S, so
    Σ_z ← Ā Σ_z Āᵀ + E₁₁ ⊗ Λ[(AΣ₁₁A + Tr(AΣ₁₁)A + σ²A)/S]Λ is linear.
    """
    d = A.shape[0]
    eye = np.eye(d)
    Abar = np.block([[(1 + mu) * eye - Lam @ A, -mu * eye], [eye, 0 * eye]])

    def step(Z, with_noise):
        Z11 = Z[:d, :d]
        out = Abar @ Z @ Abar.T
        extra = A @ Z11 @ A + np.trace(A @ Z11) * A
        if with_noise:
            extra = extra + s2 * A
        out[:d, :d] += Lam @ extra @ Lam / S
        return out

    n = 2 * d
    basis = np.eye(n * n)
    Op = np.column_stack([step(b.reshape(n, n), False).ravel() for b in basis])
    rhs = step(np.zeros((n, n)), True).ravel()
    Z = np.linalg.solve(np.eye(n * n) - Op, rhs).reshape(n, n)
    return Z[:d, :d], step


def test_linreg_mu0_fixed_point_iteration_matches_closed_form():
    rng = np.random.default_rng(9)
    A = _spd(rng, 3)
    lr, s2, S = 0.4 / np.linalg.eigvalsh(A)[-1], 0.7, 4
    d = 3
    Sigma = np.zeros((d, d))
    for _ in range(4000):  # plain iteration of the μ = 0 recursion
        Sigma = (
            Sigma
            - lr * (A @ Sigma + Sigma @ A)
            + lr**2 * (A @ Sigma @ A + (A @ Sigma @ A + np.trace(A @ Sigma) * A + s2 * A) / S)
        )
    ref = T.linreg_covariance(lr, A, s2, S)
    assert _rel(Sigma, ref) < 1e-10


@pytest.mark.parametrize("mu", [0.0, 0.5, -0.3])
@pytest.mark.parametrize("S", [1, 3])
def test_linreg_closed_form_matches_exact_recursion(mu, S):
    rng = np.random.default_rng(13)
    A = _spd(rng, 3)
    s2 = 0.5
    lr = 0.3 / np.linalg.eigvalsh(A)[-1]
    exact, _ = _linreg_second_moment_exact(lr * np.eye(3), A, s2, S, mu)
    assert _rel(T.linreg_covariance(lr, A, s2, S, mu), exact) < 1e-10
    # damped Newton preconditioner Λ = λA⁻¹
    lr_n = 0.2
    P = np.linalg.inv(A)
    exact, _ = _linreg_second_moment_exact(lr_n * P, A, s2, S, mu)
    got = T.linreg_covariance(lr_n, A, s2, S, mu, precond=P)
    assert _rel(got, exact) < 1e-10
    dn = T.damped_newton_covariance(lr_n, A, s2, S, mu)
    assert _rel(dn, got) < 1e-12
    assert _rel(T.natural_gradient_covariance(lr_n, A, s2, S, mu), dn) == 0.0


def test_linreg_train_loss():
    A = np.diag([1.0, 2.0])
    Sigma = np.diag([0.1, 0.3])
    assert T.linreg_train_loss(A, Sigma, 0.5) == pytest.approx(0.5 * (0.1 + 0.6 + 0.5), rel=1e-15)


def test_linreg_no_second_moment_raises():
    A = np.eye(3)
    # G not positive definite: λa (1 + 1/S) ≥ 2 at μ = 0
    with pytest.raises(T.NoStationaryDistribution, match="not positive definite"):
        T.linreg_covariance(1.0, A, 1.0, 1)
    # G > 0 but 1 − Tr[ΛAG⁻¹]/S ≤ 0: λ = 0.6, S = 1, D = 3: G = 2 − 1.2, Tr = 3·0.6/0.8 > 1
    with pytest.raises(T.NoStationaryDistribution, match="Tr"):
        T.linreg_covariance(0.6, A, 1.0, 1)
    with pytest.raises(T.NoStationaryDistribution, match="gS − λD"):
        T.damped_newton_covariance(0.6, A, 1.0, 1)
    # the boundary agrees with where the exact recursion stops contracting
    for lr in (0.45, 0.55):
        _, step = _linreg_second_moment_exact(lr * np.eye(3), A, 1.0, 1, 0.0)
        n = 6
        Op = np.column_stack([step(b.reshape(n, n), False).ravel() for b in np.eye(n * n)])
        rho = np.max(np.abs(np.linalg.eigvals(Op)))
        try:
            T.linreg_covariance(lr, A, 1.0, 1)
            raised = False
        except T.NoStationaryDistribution:
            raised = True
        assert raised == (rho >= 1)


def test_linreg_rejects_non_commuting_precond():
    rng = np.random.default_rng(1)
    A, P = _spd(rng, 3), _spd(rng, 3)
    with pytest.raises(ValueError, match="commute"):
        T.linreg_covariance(0.1, A, 1.0, 2, precond=P)


# ---------------------------------------------------------------------------
# Du et al.: Gram matrices, kernel dynamics
# ---------------------------------------------------------------------------


def _unit_rows(rng, n, d):
    X = rng.standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_H_inf_and_G_inf_monte_carlo():
    rng = np.random.default_rng(21)
    X = _unit_rows(rng, 4, 5)
    X[3] = -0.9 * X[0] + 0.1 * X[1]
    X[3] /= np.linalg.norm(X[3])  # a nearly antiparallel pair
    M = 200_000
    W = rng.standard_normal((M, 5))
    proj = W @ X.T
    gram = X @ X.T
    act = (proj >= 0).astype(np.float64)
    p = act.T @ act / M
    H_mc = gram * p
    H_se = np.abs(gram) * np.sqrt(p * (1 - p) / (M - 1))
    H = T.du_H_inf(X)
    assert np.all(np.abs(H - H_mc) <= 4 * H_se + 1e-12)
    r = np.maximum(proj, 0.0)
    G_mc = r.T @ r / M
    G_var = (r * r).T @ (r * r) / M - G_mc**2
    G_se = np.sqrt(G_var / (M - 1))
    G = T.du_G_inf(X)
    assert np.all(np.abs(G - G_mc) <= 4 * G_se)
    np.testing.assert_allclose(np.diag(H), 0.5, rtol=1e-14)
    np.testing.assert_allclose(np.diag(G), 0.5, rtol=1e-14)


def test_gram_clipping_and_lambda0():
    x = np.array([0.6, 0.8])
    X = np.stack([x, x, -x, np.array([0.8, -0.6])])
    H = T.du_H_inf(X)
    assert np.all(np.isfinite(H)) and np.all(np.isfinite(T.du_G_inf(X)))
    assert H[0, 1] == pytest.approx(0.5) and H[0, 2] == pytest.approx(0.0, abs=1e-15)
    assert T.du_lambda0(X) == pytest.approx(0.0, abs=1e-12)  # parallel inputs
    rng = np.random.default_rng(2)
    assert T.du_lambda0(_unit_rows(rng, 10, 6)) > 0


def test_kernel_loss_matches_explicit_iteration():
    rng = np.random.default_rng(4)
    X = _unit_rows(rng, 8, 5)
    H = T.du_H_inf(X)
    y = rng.standard_normal(8)
    u0 = rng.standard_normal(8) / math.sqrt(2)
    eta = 0.5
    steps = np.array([0, 1, 7, 40])
    pred = T.du_kernel_loss(H, y, u0, eta, steps)
    r = u0 - y
    explicit = []
    for k in range(41):
        if k in steps:
            explicit.append(0.5 * r @ r)
        r = r - eta * H @ r
    np.testing.assert_allclose(pred, explicit, rtol=1e-12)
    assert isinstance(T.du_kernel_loss(H, y, u0, eta, 3), float)
    # the kernel prediction satisfies the paper's linear-rate bound
    lam0 = T.du_lambda0(X)
    bound = T.du_rate_bound(eta, lam0, steps, 0.5 * (u0 - y) @ (u0 - y))
    assert np.all(pred <= bound * (1 + 1e-12))


def test_distance_bound_constant():
    assert T.du_distance_bound(100, 400, 0.5, 3.0) == pytest.approx(4 * 10 * 3 / (20 * 0.5))


# ---------------------------------------------------------------------------
# Nystrom mean first-passage time vs simulation
# ---------------------------------------------------------------------------


def _simulate_escape(grad_U, lr, sigma, lo, hi, x0, n_walkers, cap, seed):
    """Vectorised SGD chain; escape = first step after which w ∉ [lo, hi]."""
    rng = np.random.default_rng(seed)
    w = np.full(n_walkers, float(x0))
    idx = np.arange(n_walkers)
    times = np.full(n_walkers, -1)
    for t in range(1, cap + 1):
        w = w - lr * (grad_U(w) + sigma * rng.standard_normal(w.size))
        out = (w < lo) | (w > hi)
        if out.any():
            times[idx[out]] = t
            idx, w = idx[~out], w[~out]
            if idx.size == 0:
                break
    return times


def _sharp(w):
    return w  # U = w²/2, a = 1


def _double_well(w):
    return w**3 - w  # U = (w² − 1)²/4, barrier ΔL = 1/4 at w = 0


SHARP = dict(grad_U=_sharp, lr=0.1, noise_var=2.5, lo=-1.0, hi=1.0, x0=0.0)  # ΔL/T = 4
# Escape over the barrier: absorbing only at w > 0. The left bound -2.5 lies
# 13 kernel widths beyond the minimum and U(-2.5) ≈ 6.9 ≫ T, so the kernel mass
# leaking there is negligible; the simulation has no left bound at all.
DOUBLE = dict(grad_U=_double_well, lr=0.1, noise_var=1.25, lo=-2.5, hi=0.0, x0=-1.0)


@pytest.mark.parametrize("case", [SHARP, DOUBLE], ids=["sharp", "double_well"])
def test_mfpt_converged_in_nodes(case):
    tau, n, rel = T.mfpt_nystrom_converged(**case)
    assert rel < 1e-6
    tau2 = T.mfpt_nystrom(**{**case, "n_nodes": 2 * n})
    assert abs(tau2 - tau) < 1e-6 * tau


def test_mfpt_far_bound_is_irrelevant_for_double_well():
    a = T.mfpt_nystrom(**DOUBLE)
    b = T.mfpt_nystrom(**{**DOUBLE, "lo": -3.0})
    assert abs(a - b) < 1e-9 * a


def test_mfpt_resolves_narrow_kernel():
    # λσ = 0.01 on an interval of width 2: the panel floor must kick in
    case = dict(grad_U=_sharp, lr=0.01, noise_var=1.0, lo=-0.25, hi=0.25, x0=0.0)
    tau, n, rel = T.mfpt_nystrom_converged(**{**case, "n_nodes": 10})
    assert n >= 10 * math.ceil(0.5 / 0.02) and rel < 1e-6


@pytest.mark.parametrize(
    "case,simlo", [(SHARP, SHARP["lo"]), (DOUBLE, -np.inf)], ids=["sharp", "double_well"]
)
def test_mfpt_matches_simulation(case, simlo):
    tau = T.mfpt_nystrom(**case)
    times = _simulate_escape(
        case["grad_U"],
        case["lr"],
        math.sqrt(case["noise_var"]),
        simlo,
        case["hi"],
        case["x0"],
        n_walkers=8000,
        cap=int(40 * tau),
        seed=123,
    )
    assert np.all(times > 0)  # nobody censored
    se = times.std(ddof=1) / math.sqrt(times.size)
    assert abs(times.mean() - tau) < 4 * se, (times.mean(), tau, se)


def test_mfpt_vector_x0_and_interpolation_at_nodes():
    xs = np.array([-0.5, 0.0, 0.5])
    taus = T.mfpt_nystrom(**{**SHARP, "x0": xs})
    assert taus.shape == (3,)
    assert abs(taus[0] - taus[2]) < 1e-9 * taus[0]  # symmetric well
    assert taus[1] > taus[0]


def test_arrhenius_helpers():
    lr, a, s2 = 0.5, 2.0, 0.3
    temps = T.arrhenius_sharp_well(lr, a, s2)
    # T_eff is the Boltzmann temperature of the exact stationary variance: Var = T_eff/a
    assert temps.effective / a == pytest.approx(T.lzu_variance_1d(lr, a, s2), rel=1e-14)
    assert temps.continuous == pytest.approx(lr * s2 / 2, rel=1e-15)
    slope = T.arrhenius_slope(lr, a)
    assert slope == pytest.approx(temps.continuous / temps.effective, rel=1e-14)
    assert T.arrhenius_slope(lr, a, discrete=False) == 1.0
    assert T.escape_rate_from_mfpt(4.0) == 0.25
    with pytest.raises(T.NoStationaryDistribution):
        T.arrhenius_sharp_well(1.0, 2.0, 1.0)


# ---------------------------------------------------------------------------
# dead network (constant target)
# ---------------------------------------------------------------------------


def test_dead_network_product_and_schedule_agree():
    gamma = 0.3 / np.arange(1, 51) ** 0.5
    c = 1.7
    direct = [c * c * np.prod((1 - 2 * gamma[:n]) ** 2) for n in range(51)]
    np.testing.assert_allclose(T.dead_network_risk(c, gamma), direct, rtol=1e-13)
    sched = T.dead_network_risk_schedule(c, 0.3, 0.5, 0, np.arange(51))
    np.testing.assert_allclose(sched, direct, rtol=1e-12)
    assert T.dead_network_risk(c, gamma, 0) == c * c


def test_dead_network_inverse_schedule_asymptotic():
    g, c = 0.2, 1.3
    ns = np.array([10**3, 10**4, 10**5, 10**6])
    exact = T.dead_network_risk_schedule(c, g, 1.0, 0, ns)
    asym = T.dead_risk_inv_asymptotic(g, ns, c)
    err = np.abs(exact / asym - 1)
    print("g/k relative errors:", err)
    assert np.all(np.diff(err) < 0) and err[-1] < 1e-5
    # Gamma-function identity at finite n: Π(1 − 2g/k) = Γ(n+1−2g)/(Γ(1−2g)Γ(n+1))
    from scipy.special import gammaln

    n = 1000
    log_prod = gammaln(n + 1 - 2 * g) - gammaln(1 - 2 * g) - gammaln(n + 1)
    assert exact[0] == pytest.approx(c * c * math.exp(2 * log_prod), rel=1e-11)


def test_dead_network_summable_schedule_stalls():
    g, c = 0.15, 0.8
    ns = np.array([10**2, 10**4, 10**6])
    exact = T.dead_network_risk_schedule(c, g, 2.0, 0, ns)
    limit = T.dead_risk_inv_sq_limit(g, c)
    err = np.abs(exact / limit - 1)
    assert np.all(np.diff(err) < 0) and err[-1] < 1e-5
    assert limit > 0.1 * c * c  # stalls far from zero


# ---------------------------------------------------------------------------
# Gibbs limit, Villani functions
# ---------------------------------------------------------------------------


def test_discrete_gap_matches_exact_quadratic_stationary_loss():
    rng = np.random.default_rng(17)
    H = _spd(rng, 4)
    hmax = np.linalg.eigvalsh(H)[-1]
    for s in (0.01, 0.5 / hmax, 1.9 / hmax):
        A = np.eye(4) - s * H
        Sigma = scipy.linalg.solve_discrete_lyapunov(A, s * s * np.eye(4))
        exact = 0.5 * np.trace(H @ Sigma)
        assert T.discrete_gap(np.linalg.eigvalsh(H), s) == pytest.approx(exact, rel=1e-12)
    # 1-D formula and the Laplace limit
    h, s = 3.0, 0.2
    assert T.discrete_gap([h], s) == pytest.approx(s / (2 * (2 - s * h)), rel=1e-15)
    assert T.discrete_gap(np.ones(5), 1e-8) / T.laplace_gap(5, 1e-8) == pytest.approx(1, abs=1e-8)
    with pytest.raises(T.NoStationaryDistribution):
        T.discrete_gap([1.0, 4.0], 0.5)


def _tiny_sigmoid_problem():
    rng = np.random.default_rng(31)
    n, d, p = 6, 2, 3
    X = rng.standard_normal((n, d))
    y = rng.uniform(-1, 1, n)
    a = rng.choice([-1.0, 1.0], p) * 0.8
    return X, y, a


def _data_loss(W, X, y, a):
    f = jax.nn.sigmoid(X @ W.T) @ a
    return 0.5 * jnp.mean((y - f) ** 2)


def test_villani_minimizer_gradient_and_hessian():
    X, y, a = _tiny_sigmoid_problem()
    lam = 1.5 * T.sigmoid_convexity_threshold(X, y, a)

    def loss(W):
        return _data_loss(W, X, y, a) + 0.5 * lam * jnp.sum(W**2)

    W0 = np.random.default_rng(0).standard_normal((3, 2))
    res = T.villani_minimizer_and_hessian(loss, W0)
    with jax.enable_x64(True):
        g = jax.grad(loss)(jnp.asarray(res.w_min))
        assert g.dtype == jnp.float64
        assert float(jnp.linalg.norm(g)) < 1e-8
        assert float(loss(jnp.asarray(res.w_min))) == pytest.approx(res.loss_min, rel=1e-14)
    assert res.w_min.shape == (3, 2) and res.hessian_eigs.shape == (6,)
    assert res.hessian_eigs[0] > 0 and np.all(np.diff(res.hessian_eigs) >= 0)


def test_sigmoid_threshold_bounds_data_hessian():
    """λ above the threshold must dominate the negative curvature of the data term."""
    X, y, a = _tiny_sigmoid_problem()
    thr = T.sigmoid_convexity_threshold(X, y, a)
    a_max, r2 = np.max(np.abs(a)), np.max(np.sum(X * X, axis=1))
    expected = r2 * (
        a @ a / 16 + a_max / (6 * math.sqrt(3)) * (np.max(np.abs(y)) + np.abs(a).sum())
    )
    assert thr == pytest.approx(expected, rel=1e-15)
    rng = np.random.default_rng(8)
    with jax.enable_x64(True):
        hess = jax.jit(jax.hessian(lambda v: _data_loss(v.reshape(3, 2), X, y, a)))
        for _ in range(20):
            v = jnp.asarray(3 * rng.standard_normal(6))
            assert np.linalg.eigvalsh(np.asarray(hess(v)))[0] >= -thr
