"""Monte Carlo through the engine against the closed forms, in float64, within 4 standard errors.

Each estimate is the ensemble mean of member time averages after a burn-in; its standard
error is the across-member standard deviation / √M (members are independent), so no
autocorrelation model is assumed. |est − theory| ≤ 4·SE per entry.
"""

import jax
import numpy as np
import pytest

import sgdlab as sl
from sgdlab import theory

Z = 4.0


def stationary_cov(problem, optimizer, hparams, steps=5000, burn_in=1200, seeds=2000):
    study = sl.Study(problem, optimizer, hparams, steps=steps, seeds=seeds, observe=None,
                     stationary=sl.Stationary(("w_outer",), burn_in=burn_in))
    ds = sl.run(study, progress=False)
    assert int(ds.n_diverged.sum()) == 0
    return ds.stationary_w_outer_mean.values, ds.stationary_w_outer_se.values


def assert_within(est, se, expected, label):
    z = (est - expected) / se
    assert np.all(np.abs(z) <= Z), f"{label}: z = {np.round(z, 2)}"


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def test_1d_variance_with_momentum_at_three_points():
    problem = sl.problems.noisy_quadratic(1.0, 1.0)
    points = [(0.1, 0.3), (0.5, 0.5), (1.0, 0.9)]
    for lr, mu in points:
        est, se = stationary_cov(problem, sl.Optimizer("momentum"),
                                 {"learning_rate": lr, "momentum": mu})
        assert_within(est[0, 0], se[0, 0], theory.lzu_variance_1d(lr, 1.0, 1.0, mu),
                      f"λ={lr}, μ={mu}")


K3 = np.diag([1.0, 0.5, 2.0])


def test_3d_commuting():
    C = np.diag([1.0, 2.0, 0.5])
    est, se = stationary_cov(sl.problems.noisy_quadratic(K3, C), sl.Optimizer("momentum"),
                             {"learning_rate": [0.3, 0.8], "momentum": 0.4})
    for i, lr in enumerate([0.3, 0.8]):
        pred = theory.lzu_covariance_commuting(lr, K3, C, momentum=0.4)
        assert_within(np.diag(est[i]), np.diag(se[i]), np.diag(pred), f"commuting λ={lr}")
        off = ~np.eye(3, dtype=bool)
        assert_within(est[i][off], se[i][off], 0.0, "commuting off-diagonal")


def test_3d_non_commuting():
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    C = q @ np.diag([2.0, 0.5, 1.0]) @ q.T
    est, se = stationary_cov(sl.problems.noisy_quadratic(K3, C), sl.Optimizer("momentum"),
                             {"learning_rate": [0.3, 0.8], "momentum": 0.0})
    for i, lr in enumerate([0.3, 0.8]):
        pred = theory.lzu_covariance(lr, K3, C)
        assert_within(est[i], se[i], pred, f"non-commuting λ={lr}")
        # the commuting formula is measurably wrong here
        wrong = theory.lzu_covariance_commuting(lr, K3, C)
        assert np.max(np.abs(est[i] - wrong) / se[i]) > 10


@pytest.mark.parametrize("batch_size", [1, 8])
def test_minibatch_linear_regression(batch_size):
    A = np.diag([1.0, 0.5])
    problem = sl.problems.linear_regression(A, 1.0, batch_size)
    lrs = [0.1, 0.4]
    est, se = stationary_cov(problem, sl.Optimizer("sgd"), {"learning_rate": lrs}, steps=4000,
                             burn_in=1000)
    for i, lr in enumerate(lrs):
        assert_within(est[i], se[i], theory.linreg_covariance(lr, A, 1.0, batch_size),
                      f"S={batch_size}, λ={lr}")


def test_damped_newton():
    A = np.diag([1.0, 0.25, 4.0])
    problem = sl.problems.linear_regression(A, np.sqrt(0.5), 4)  # label noise std; σ² = 0.5
    opt = sl.Optimizer("sgd", preconditioner=np.linalg.inv(A))
    est, se = stationary_cov(problem, opt, {"learning_rate": [0.2, 0.6]}, steps=3000,
                             burn_in=600)
    for i, lr in enumerate([0.2, 0.6]):
        assert_within(est[i], se[i], theory.damped_newton_covariance(lr, A, 0.5, 4),
                      f"newton λ={lr}")
