"""The Liu–Ziyin–Ueda experiments at smoke size: they pass, and they fail when broken.

Each break changes the *implementation* the experiment measures (the problem SGD
runs on, the hyperparameters it gets, the sampling scheme) while the analysis keeps
the claimed configuration; at least one verdict must then fail under the run's
policy (:func:`sgdlab.experiments.finalize`). The baseline at the same size passes,
so a failure is the break's doing, not the size's. All in float64.
"""

import dataclasses

import jax
import numpy as np
import pytest

from sgdlab import engine, experiments
from sgdlab.experiments import lzu as L
from sgdlab.problems import finite_quadratic, linear_regression, noisy_quadratic
from sgdlab.theory import lzu as TL

SMOKE = {
    "lzu-stationary": {"learning_rate": [0.5, 1.5], "momentum": [0.0, 0.5],
                       "nesterov_learning_rate": [0.5, 1.0], "nesterov_momentum": [0.5],
                       "finite_learning_rate": [0.5, 1.5], "seeds": 256, "finite_seeds": 256,
                       "steps": 1200, "burn_in": 200},
    "lzu-minibatch": {"batch_size": [2], "learning_rate": [0.3], "method": ["sgd", "newton"],
                      "seeds": 256, "steps": 1200, "burn_in": 200},
}


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _cfg(name, **overrides):
    return experiments.get(name).resolve("quick", {**SMOKE[name], **overrides})


def _run(name, cfg, studies):
    datasets = {k: engine.run(st, progress=False) for k, st in studies.items()}
    return _verdicts(name, cfg, datasets), datasets


def _verdicts(name, cfg, datasets):
    qs = experiments.get(name).analyze(cfg, datasets).quantities
    experiments.finalize(qs)
    return qs


def _failed(qs):
    return [(q["name"], q["coords"]) for q in qs if q["fails_run"]]


@pytest.fixture(scope="module")
def stationary_baseline():
    with jax.enable_x64(True):
        cfg = _cfg("lzu-stationary")
        studies = experiments.get("lzu-stationary").studies(cfg, 0)
        qs, datasets = _run("lzu-stationary", cfg, studies)
    return cfg, studies, qs, datasets


def test_stationary_smoke_passes_with_every_check(stationary_baseline):
    cfg, studies, qs, _ = stationary_baseline
    assert set(studies) == {"stationary", "nesterov", "finite_with", "finite_without",
                            "finite_reshuffle"}
    assert _failed(qs) == []
    names = {q["name"] for q in qs}
    assert names == {"variance", "excess_loss", "nesterov_variance", "nesterov_excess_loss",
                     "finite_data_variance", "finite_data_ratio", "reshuffle_variance"}
    assert all(q["oracle"] for q in qs if q["predicted"] is not None)
    ratio = [q for q in qs if q["name"] == "finite_data_ratio"]
    assert len(ratio) == 2 and all(q["predicted"] == pytest.approx(12 / 15) for q in ratio)
    repl = {q["coords"]["replacement"] for q in qs if q["name"] == "finite_data_variance"}
    assert repl == {True, False}


def _heavy_ball(cfg, problem=None, lr_factor=1.0):
    cfg = {**cfg, "extras": ["none"]}
    st = experiments.get("lzu-stationary").studies(cfg, 0)["stationary"]
    hp = dict(st.hparams)
    hp["learning_rate"] = np.asarray(cfg["learning_rate"]) * lr_factor
    return cfg, {"stationary": dataclasses.replace(st, problem=problem or st.problem,
                                                    hparams=hp)}


def _dropped_half(K, C):
    """½ wᵀKw written as wᵀKw: the gradient's curvature term doubles."""
    p = noisy_quadratic(K, C)
    Kj = jax.numpy.asarray(K)
    return dataclasses.replace(p, loss=lambda w, xi, hp: p.loss(w, xi, hp) + 0.5 * w @ (Kj @ w))


@pytest.mark.parametrize("brk", ["curvature", "noise_scale", "learning_rate", "dropped_half"])
def test_stationary_breaks_fail(brk):
    cfg = _cfg("lzu-stationary")
    K, C = L._matrices(cfg)
    problem = {"curvature": lambda: noisy_quadratic(1.1 * K, C),
               "noise_scale": lambda: noisy_quadratic(K, 1.1 * C),
               "learning_rate": lambda: None,
               "dropped_half": lambda: _dropped_half(K, C)}[brk]()
    cfg, studies = _heavy_ball(cfg, problem, 1.1 if brk == "learning_rate" else 1.0)
    qs, _ = _run("lzu-stationary", cfg, studies)
    assert _failed(qs), f"break {brk!r} went unnoticed"


def test_nesterov_check_distinguishes_the_convention(stationary_baseline, monkeypatch):
    """Nesterov measured by the engine (optax), predicted as heavy ball: the check fails."""
    cfg, _, _, datasets = stationary_baseline
    monkeypatch.setattr(L, "nesterov_transition", TL.heavy_ball_transition)
    qs = _verdicts("lzu-stationary", cfg, datasets)
    assert any(name.startswith("nesterov_") for name, _ in _failed(qs))


def test_nesterov_learning_rate_off_by_ten_percent_fails(stationary_baseline):
    cfg, studies, _, datasets = stationary_baseline
    st = studies["nesterov"]
    hp = {**st.hparams, "learning_rate": np.asarray(cfg["nesterov_learning_rate"]) * 1.1}
    broken = engine.run(dataclasses.replace(st, hparams=hp), progress=False)
    qs = _verdicts("lzu-stationary", cfg, {**datasets, "nesterov": broken})
    assert any(name.startswith("nesterov_") for name, _ in _failed(qs))


def test_reshuffling_is_not_the_independent_subsets_formula(stationary_baseline, monkeypatch):
    """Epoch reshuffling judged by the i.i.d. without-replacement formula: the check fails."""
    cfg, _, _, datasets = stationary_baseline
    monkeypatch.setattr(L, "reshuffle_prediction", lambda c, lr: L._finite_prediction(c, lr, False))
    qs = _verdicts("lzu-stationary", cfg, datasets)
    assert {n for n, _ in _failed(qs)} == {"reshuffle_variance"}


@pytest.mark.parametrize("brk", ["factor_dropped", "noise_scale"])
def test_finite_data_breaks_fail(brk):
    cfg = _cfg("lzu-stationary", extras=["finite_data"])
    K, Cc = L._matrices(cfg)
    studies = experiments.get("lzu-stationary").studies(cfg, 0)
    if brk == "factor_dropped":      # "without replacement" secretly drawn with replacement
        fq = finite_quadratic(K, n_data=cfg["n_data"], centers_cov=Cc,
                              batch_size=cfg["finite_batch_size"], mode="with_replacement")
        name = "finite_without"
    else:                            # centres 10% too spread out
        fq = finite_quadratic(K, n_data=cfg["n_data"], centers_cov=1.21 * Cc,
                              batch_size=cfg["finite_batch_size"], mode="with_replacement")
        name = "finite_with"
    studies[name] = dataclasses.replace(studies[name], problem=fq)
    studies["stationary"] = _heavy_ball(cfg)[1]["stationary"]
    qs, _ = _run("lzu-stationary", cfg, studies)
    failed = [n for n, _ in _failed(qs)]
    assert "finite_data_variance" in failed
    if brk == "factor_dropped":
        assert "finite_data_ratio" in failed


def test_random_subset_is_uniform():
    """Floyd's algorithm: all C(5, 2) = 10 subsets equally likely (chi-square at 0.1%)."""
    from scipy import stats

    from sgdlab.problems.quadratic import random_subset

    n = 20000
    draw = jax.jit(jax.vmap(lambda k: random_subset(k, 5, 2)))
    out = np.sort(np.asarray(draw(jax.random.split(jax.random.key(0), n))), axis=1)
    assert np.all(out[:, 0] < out[:, 1])
    codes = out[:, 0] * 5 + out[:, 1]
    counts = np.array([np.sum(codes == i * 5 + j) for i in range(5) for j in range(i + 1, 5)])
    assert counts.sum() == n
    chi2 = np.sum((counts - n / 10) ** 2 / (n / 10))
    assert chi2 < stats.chi2.ppf(0.999, 9)


def test_independent_subsets_sampling():
    """Every batch holds S distinct centres; batches of different steps differ."""
    N, S = 10, 4
    fq = finite_quadratic(1.0, centers=np.arange(N, dtype=float)[:, None], batch_size=S,
                          mode="independent_subsets")
    data = fq.data.init(jax.random.key(0))
    key = jax.random.key(1)
    batches = [np.asarray(fq.data.batch(data, key, t)).ravel() for t in range(1, 40)]
    assert all(len(set(b)) == S for b in batches)
    assert len({tuple(sorted(b)) for b in batches}) > 20
    # the noise covariance is the without-replacement one (population variance of 0..9)
    c_c = np.var(np.arange(N))
    assert fq.config["noise_cov"][0][0] == pytest.approx(c_c / S * (N - S) / (N - 1))


@pytest.fixture(scope="module")
def minibatch_baseline():
    with jax.enable_x64(True):
        cfg = _cfg("lzu-minibatch")
        studies = experiments.get("lzu-minibatch").studies(cfg, 0)
        qs, _ = _run("lzu-minibatch", cfg, studies)
    return cfg, studies, qs


def test_minibatch_smoke_passes(minibatch_baseline):
    _, _, qs = minibatch_baseline
    assert _failed(qs) == []
    assert all(q["oracle"] for q in qs if q["predicted"] is not None)


@pytest.mark.parametrize("brk", ["learning_rate", "dropped_half"])
def test_minibatch_breaks_fail(minibatch_baseline, brk):
    cfg, studies, _ = minibatch_baseline
    studies = dict(studies)
    st = studies["S2_sgd"]
    if brk == "learning_rate":
        st = dataclasses.replace(st, hparams={**st.hparams, "learning_rate":
                                              np.asarray(cfg["learning_rate"]) * 1.1})
    else:
        A = np.diag(cfg["input_cov"])
        st = dataclasses.replace(st, problem=linear_regression(
            A, np.sqrt(cfg["label_noise"]), 2, reduction="mean"))
    qs, _ = _run("lzu-minibatch", cfg, {**studies, "S2_sgd": st})
    assert any(c["method"] == "sgd" for _, c in _failed(qs))


def test_ngd_is_named_as_damped_newton():
    cfg = _cfg("lzu-minibatch", method=["ngd"])
    assert "ngd" not in experiments.get("lzu-minibatch").presets["paper"]["method"]
    assert L._MINIBATCH_ORACLE["ngd"].startswith("damped Newton")
    s_ngd = L._minibatch_prediction("ngd", 0.3, np.diag(cfg["input_cov"]), 1.0, 2, 0.0)[0]
    s_dn = L._minibatch_prediction("newton", 0.3, np.diag(cfg["input_cov"]), 1.0, 2, 0.0)[0]
    np.testing.assert_array_equal(s_ngd, s_dn)


@pytest.mark.parametrize("overrides,needle", [
    ({"extras": ["none", "nesterov"]}, "extras="),
    ({"n_data": 1}, "n_data=1"),
    ({"finite_batch_size": 20}, "finite_batch_size=20"),
    ({"replacement": [True, True]}, "replacement="),
    ({"extras": ["adam"]}, "extras="),
])
def test_new_keys_refuse_bad_values(overrides, needle):
    with pytest.raises(ValueError, match=needle):
        experiments.get("lzu-stationary").resolve("quick", overrides)
