"""The independent Gibbs oracle (sgdlab.theory.gibbs) and the Villani closed forms.

Every reference here is computed another way: finite differences for the
derivatives, 1-D quadrature for the Gibbs mean, the Nyström stationary law of
the 1-D chain for the discretization bias, a dense Hessian for the threshold.
"""

import math

import numpy as np
import pytest
from scipy import integrate

from sgdlab.theory import gibbs
from sgdlab.theory import villani as tv


def _objective(activation="sigmoid", p=3, d=2, n=5, reg=0.3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return gibbs.TwoLayerObjective(X, rng.standard_normal(n), rng.choice([-1.0, 1.0], p),
                                   reg, activation)


def _loop_loss(obj, W):
    """L̃ written as a plain loop over samples and units (a third implementation)."""
    act = {"sigmoid": lambda z: 1 / (1 + math.exp(-z)), "tanh": math.tanh,
           "softplus": lambda z: math.log1p(math.exp(z))}[obj.activation]
    total = 0.0
    for x, y in zip(obj.X, obj.y, strict=True):
        f = sum(obj.a[j] * act(float(W[j] @ x)) for j in range(obj.p))
        total += (y - f) ** 2
    return total / (2 * obj.n) + 0.5 * obj.reg * float(np.sum(W * W))


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "softplus"])
def test_loss_gradient_and_hessian_against_a_loop_and_finite_differences(activation):
    obj = _objective(activation)
    rng = np.random.default_rng(1)
    W = rng.standard_normal(obj.shape)
    assert obj.value(W) == pytest.approx(_loop_loss(obj, W), rel=1e-12)
    _, g = obj.value_and_grad(W)
    H = obj.hessian(W)
    eps = 1e-6
    for k in range(obj.n_params):
        e = np.zeros(obj.n_params)
        e[k] = eps
        e = e.reshape(obj.shape)
        fd = (_loop_loss(obj, W + e) - _loop_loss(obj, W - e)) / (2 * eps)
        assert g.reshape(-1)[k] == pytest.approx(fd, rel=1e-6, abs=1e-9)
        gp = obj.value_and_grad(W + e)[1].reshape(-1)
        gm = obj.value_and_grad(W - e)[1].reshape(-1)
        np.testing.assert_allclose(H[:, k], (gp - gm) / (2 * eps), rtol=1e-5, atol=1e-8)
    # batched chains give the same numbers as single evaluations
    Ws = rng.standard_normal((4,) + obj.shape)
    u, gs = obj.value_and_grad(Ws)
    for i in range(4):
        assert u[i] == pytest.approx(obj.value(Ws[i]), rel=1e-13)
        np.testing.assert_allclose(gs[i], obj.value_and_grad(Ws[i])[1], rtol=1e-12)


def test_minimize_finds_a_stationary_minimum_with_positive_hessian():
    obj = _objective("tanh", p=2, d=3, n=8, reg=0.05)
    m = gibbs.minimize(obj)
    assert np.linalg.norm(obj.value_and_grad(m.w_min)[1]) < 1e-9
    assert m.hessian_eigs[0] > 0
    rng = np.random.default_rng(3)
    for _ in range(200):      # no nearby random point is lower
        assert obj.value(m.w_min + 0.3 * rng.standard_normal(obj.shape)) >= m.loss_min


def _one_neuron(activation="sigmoid", x=1.5, y=0.8, a=1.0, reg=0.2):
    return gibbs.TwoLayerObjective([[x]], [y], [a], reg, activation)


@pytest.mark.parametrize("activation,s", [("sigmoid", 0.4), ("tanh", 0.6)])
def test_mala_matches_the_gibbs_mean_by_quadrature_within_its_mcse(activation, s):
    # one neuron, one point: μ ∝ exp(−2L̃/s) on the line, strongly non-Gaussian at this s
    obj = _one_neuron(activation)
    m = gibbs.minimize(obj)

    def u(w):
        return float(obj.value(np.array([[w]])))

    T = s / 2
    Z = integrate.quad(lambda w: math.exp(-(u(w) - m.loss_min) / T), -30, 30, limit=200)[0]
    EU = integrate.quad(lambda w: (u(w) - m.loss_min) * math.exp(-(u(w) - m.loss_min) / T),
                        -30, 30, limit=200)[0] / Z
    # eight independent runs in one call: their spread calibrates the MCSE
    samples = gibbs.mala(obj, [T] * 8, m.w_min, m.hessian, chains=128, steps=800, warmup=200,
                         seed=5)
    z = np.array([(smp.mean_loss - m.loss_min - EU) / smp.mcse for smp in samples])
    assert np.all(np.abs(z) < 4.5), z
    assert 8 * 0.1 < np.sum(z ** 2) < 26.1            # χ²_8 between its 0.1 % quantiles
    assert abs(EU - s / 4) > 5 * samples[0].mcse       # far from Laplace: the test has teeth
    for smp in samples:
        assert 0.45 < smp.acceptance < 0.75


def test_gibbs_gap_searches_again_when_the_chains_find_a_lower_basin():
    obj = gibbs.TwoLayerObjective([[2.0]], [0.9], [1.0], 0.05, "tanh")
    m = gibbs.minimize(obj, n_random=0)
    w = np.linspace(-6, 6, 24001)
    grid_min = float(np.min(obj.value(w[:, None, None])))
    assert grid_min - 1e-6 < m.loss_min <= grid_min
    # hand it a wrong "minimum" on the saturated plateau: the chains find the real basin
    fake = m._replace(w_min=np.array([[-1.5]]), loss_min=m.loss_min + 0.05,
                          hessian=np.eye(1), hessian_eigs=np.ones(1))
    out = gibbs.gibbs_gap(obj, [0.4], fake, chains=32, steps=200, warmup=50)
    assert out[0].minimum.loss_min == pytest.approx(m.loss_min, abs=1e-12)


def test_discretization_bias_is_exact_on_a_quadratic_against_nystrom():
    # U = h w²/2: the chain w' = w − s(hw + ξ) has Var = s/(h(2 − sh)); Gibbs has s/(2h)
    h, s = 1.3, 0.4
    law = tv.sgd_stationary_law_1d(lambda w: h * w, s, -4, 4, 600)
    assert law.leak < 1e-8
    sgd_gap = law.expect(lambda w: 0.5 * h * w * w)
    assert sgd_gap == pytest.approx(s / (2 * (2 - s * h)), rel=1e-9)
    assert sgd_gap - s / 4 == pytest.approx(gibbs.discretization_bias([h], s), rel=1e-9)
    assert tv.discrete_gap([h], s) == pytest.approx(sgd_gap, rel=1e-9)
    with pytest.raises(ValueError, match="0 < s·h_i < 2"):
        gibbs.discretization_bias([h], 2 / h)


def test_convexity_threshold_bounds_the_data_hessian_and_scales_with_width():
    rng = np.random.default_rng(0)
    for activation in ("sigmoid", "tanh"):
        obj = _objective(activation, p=4, d=3, n=10, reg=0.0)
        thr = tv.convexity_threshold(obj.X, obj.y, obj.a, activation)
        for _ in range(50):
            eig = np.linalg.eigvalsh(obj.hessian(2 * rng.standard_normal(obj.shape)))
            assert np.max(np.abs(eig)) <= thr
    obj = _objective("sigmoid")
    assert tv.convexity_threshold(obj.X, obj.y, obj.a, "sigmoid") == pytest.approx(
        tv.sigmoid_convexity_threshold(obj.X, obj.y, obj.a), rel=1e-14)
    assert math.isinf(tv.convexity_threshold(obj.X, obj.y, obj.a, "softplus"))
    # a = ±c at width p, fixed labels on the unit sphere: ∝ p, → const, ∝ 1/p
    X = np.eye(3)
    y = np.array([0.5, -0.5, 0.2])

    def thr(p, c):
        return tv.convexity_threshold(X, y, np.full(p, c), "sigmoid")

    assert thr(400, 1) / thr(100, 1) == pytest.approx(4, rel=0.01)
    assert thr(400, 1 / 400) / thr(100, 1 / 100) == pytest.approx(1 / 4, rel=0.01)
    assert thr(400, 1 / 20) / thr(100, 1 / 10) == pytest.approx(1, rel=0.1)


def test_bad_input_is_refused_with_one_line():
    with pytest.raises(ValueError, match="activation='relu' is invalid"):
        gibbs.TwoLayerObjective([[1.0]], [0.0], [1.0], 0.1, "relu")
    with pytest.raises(ValueError, match="reg=-1.0 is invalid"):
        gibbs.TwoLayerObjective([[1.0]], [0.0], [1.0], -1.0, "tanh")
    obj = _one_neuron()
    with pytest.raises(ValueError, match="temperatures"):
        gibbs.mala(obj, [0.0], np.zeros((1, 1)), np.eye(1))
