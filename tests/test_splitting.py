"""Splitting estimator of escape times (sgdlab.splitting) against exact and brute-force references.

Every check compares with an independent reference: the Nyström oracle of the
same discrete chain (sgdlab.theory), a closed form (λa = 1: the next position
ignores the current one, so τ = 1/P(|N(0, s²)| > wall)), or a brute-force engine
ensemble, with standard errors from independent replicas.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from sgdlab import analysis, engine, theory
from sgdlab import splitting as SP
from sgdlab.experiments.escape import measure_mfpt
from sgdlab.optim import Optimizer
from sgdlab.problems import potential_1d, potential_fns


def abs_w(o):
    return jnp.abs(o.params)


def w(o):
    return o.params


def never(o):
    return o.params > 100.0


SGD = Optimizer("sgd")
TINY = SP.Budget(replicas=4, walkers=16, flux_steps=60, burn_in=20, particles=16, levels=10,
                 substeps=2)


def _hp(lr, dL, x):
    return {"learning_rate": lr, "noise_std": math.sqrt(2 * dL / (lr * x))}


def test_oracle_reaches_tau_1e10_for_both_potentials():
    """Refined Nyström: converged under node doubling at τ ≈ 10¹⁰, exact where it is known."""
    _, dU = potential_fns("sharp-well", 1.0)
    # λa = 1: τ = 1/P(|N(0, s²)| > 1) in closed form; here τ ≈ 1.7·10¹⁰
    s2 = 1 / 42.0
    tau, n, rel = theory.mfpt_nystrom_converged(dU, 1.0, s2, -1.0, 1.0, x0=0.0)
    exact = 1 / (2 * norm.sf(1 / math.sqrt(s2)))
    assert exact > 1e10 and rel < 1e-6
    assert tau == pytest.approx(exact, rel=1e-9)
    # double well, λ = 0.1, ΔL/T = 20: τ ≈ 1.3·10¹⁰; doubling the nodes changes nothing
    _, dU = potential_fns("double-well", 1.0)
    s2 = 2 * 0.25 / (0.1 * 20)
    tau, n, rel = theory.mfpt_nystrom_converged(dU, 0.1, s2, -3.0, 0.0, x0=-1.0)
    assert tau > 1e10 and rel < 1e-6
    assert theory.mfpt_nystrom(dU, 0.1, s2, -3.0, 0.0, x0=-1.0, n_nodes=2 * n) == \
        pytest.approx(tau, rel=1e-8)


def test_agrees_with_the_oracle_at_mfpt_1e6():
    """Double well, λ = 0.3, ΔL/T = 12: τ = 1.28·10⁶ steps, 4 SE of independent replicas."""
    with jax.enable_x64(True):
        lr, x = 0.3, 12.0
        hp = _hp(lr, 0.25, x)
        _, dU = potential_fns("double-well", 1.0)
        tau = theory.mfpt_nystrom_converged(dU, lr, hp["noise_std"] ** 2, -3.0, 0.0,
                                            x0=-1.0)[0]
        assert 1e6 < tau < 2e6
        b = SP.Budget(replicas=8, walkers=128, flux_steps=300, burn_in=100, particles=256,
                      levels=60, substeps=1)
        r = SP.estimate(potential_1d("double-well"), SGD, hp, score=w, basin=-0.75,
                        target=0.0, budget=b)
        assert abs(r.mfpt.value - tau) < 4 * r.mfpt.se
        assert r.mfpt.se < 0.35 * tau  # an estimate, not a shrug
        assert r.inverse_mfpt.lo < r.inverse_mfpt.value < r.inverse_mfpt.hi
        assert r.mfpt.lo == pytest.approx(1 / r.inverse_mfpt.hi)
        # a learning rate off by 10% is caught: τ moves by far more than the error bar
        wrong = theory.mfpt_nystrom_converged(dU, 1.1 * lr, hp["noise_std"] ** 2, -3.0, 0.0,
                                              x0=-1.0)[0]
        assert abs(r.mfpt.value - wrong) > 4 * r.mfpt.se


def test_one_kick_escapes_from_the_basin_are_split():
    """Sharp well at λa = 1: SGD forgets its position in one step (w' = λσξ), so τ is
    1/P(|λσξ| ≥ 1) in closed form, and most escapes are one kick from inside the
    basin. Here τ ≈ 10⁶ and the flux walkers almost never see such a kick: the
    estimate must come from splitting that kick, within 4 SE of the closed form."""
    with jax.enable_x64(True):
        lr, x = 1.0, 24.0
        hp = _hp(lr, 0.5, x)
        tau = 1 / (2 * norm.sf(1 / (lr * hp["noise_std"])))
        assert 9e5 < tau < 1.2e6
        b = SP.Budget(replicas=8, walkers=128, flux_steps=300, burn_in=100, particles=256,
                      levels=60, substeps=8)
        r = SP.estimate(potential_1d("sharp-well"), SGD, hp, score=abs_w, basin=0.25,
                        target=1.0, budget=b, seed=5)
        walker_steps = b.replicas * r.walker_steps
        assert walker_steps / tau < 0.5  # brute force: expected escapes below one
        assert abs(r.mfpt.value - tau) < 4 * r.mfpt.se
        assert r.mfpt.se < 0.25 * tau
        # escapes by one kick from the basin, per step: P(|w| < 1/4) P(|λσξ| ≥ 1),
        # ≈ 0.78 of the rate here
        s = lr * hp["noise_std"]
        p_in, p_out = 2 * norm.cdf(0.25 / s) - 1, 2 * norm.sf(1 / s)
        assert abs(r.direct.value - p_in * p_out) < 4 * r.direct.se


def test_an_escape_by_one_large_kick_is_split_from_the_basin():
    """Double well at λ = 0.6 (λU'' = 1.2: the minimum oscillates): the escape is one
    large kick to the far left, w ≤ w_L = −√((1 + λ)/λ), which the drift throws past
    the barrier. Trials from the basin states split that kick over sub-kicks; with
    the nearer-escape-point score the estimate is within 4 SE of the oracle."""
    from sgdlab.experiments import _escape_splitting as S

    with jax.enable_x64(True):
        lr, x = 0.6, 12.0
        # the far-left point in closed form: w − λ(w³ − w) = 0, at any learning rate
        for a in (0.01, 0.1, lr, 2.0):
            assert float(S.far_left_point(a)) == pytest.approx(-math.sqrt((1 + a) / a),
                                                               rel=1e-12)
        hp = _hp(lr, 0.25, x)
        _, dU = potential_fns("double-well", 1.0)
        tau = theory.mfpt_nystrom_converged(dU, lr, hp["noise_std"] ** 2, -3.0, 0.0,
                                            x0=-1.0)[0]
        cfg = {"potential": "double-well", "score": "auto", "threshold": 0.0, "basin": 0.25,
               "trials_from": "auto"}
        zA, zB = S.levels(cfg, lr)
        assert S.trials_from(cfg, lr) == "basin"
        b = SP.Budget(replicas=8, walkers=64, flux_steps=200, burn_in=50, particles=128,
                      levels=40, substeps=8, trials_from="basin")
        r = SP.estimate(potential_1d("double-well"), SGD, hp, score=S.score_fn(
            "double-well", "auto", lr), basin=zA, target=zB, budget=b, seed=1)
        assert abs(r.mfpt.value - tau) < 4 * r.mfpt.se
        assert r.mfpt.se < 0.3 * tau


def test_agrees_with_brute_force_at_a_low_barrier():
    """Sharp well, λ = 0.5, ΔL/T = 4 (τ ≈ 80): splitting vs an engine ensemble, 4 SE."""
    lr, x = 0.5, 4.0
    hp = _hp(lr, 0.5, x)
    problem = potential_1d("sharp-well")
    ds = engine.run(engine.Study(problem, SGD, hp, steps=2000, seeds=4000, observe=None,
                                 first_passage=engine.FirstPassage("escaped")), progress=False)
    t = ds.event_step.values.ravel().astype(float)
    assert not ds.event_censored.values.any()
    brute, brute_se = t.mean(), t.std(ddof=1) / math.sqrt(t.size)
    b = SP.Budget(replicas=8, walkers=64, flux_steps=300, burn_in=100, particles=128,
                  levels=40, substeps=4)
    r = SP.estimate(problem, SGD, hp, score=abs_w, basin=0.25, target=1.0, budget=b, seed=3)
    assert abs(r.mfpt.value - brute) < 4 * math.hypot(r.mfpt.se, brute_se)
    # the flux walkers are brute force too (recycled at the start): same rate
    assert abs(r.brute_rate.value - 1 / brute) < 4 * math.hypot(r.brute_rate.se,
                                                                 brute_se / brute**2)
    # and the closed-form-free oracle of the same chain agrees with both
    _, dU = potential_fns("sharp-well", 1.0)
    tau = theory.mfpt_nystrom(dU, lr, hp["noise_std"] ** 2, -1.0, 1.0, x0=0.0)
    assert abs(brute - tau) < 4 * brute_se


def test_bitwise_equal_across_chunkings(tmp_path):
    """Replicas are the unit of chunking: any chunk size (with padding) gives the same bits,
    and a run resumed from a checkpoint of finished chunks too."""
    problem = potential_1d("sharp-well")
    hp = _hp(0.7, 0.5, 3.0)
    kw = dict(score=abs_w, basin=0.25, target=1.0, budget=TINY, seed=5)
    whole = SP.estimate(problem, SGD, hp, **kw)
    split = SP.estimate(problem, SGD, hp, chunk=3, **kw)  # chunks of 3 and 1 (+2 padding)
    for name in ("rate", "prob", "crossings", "escapes", "iterations"):
        np.testing.assert_array_equal(getattr(whole, name), getattr(split, name))
    assert whole.inverse_mfpt == split.inverse_mfpt
    # replicas are independent: not all equal
    assert len(set(whole.rate.tolist())) > 1
    # checkpointed chunks are reused bitwise (a killed run resumes where it stopped)
    ck = tmp_path / "split.npz"
    first = SP.estimate(problem, SGD, hp, chunk=3, checkpoint=ck, **kw)
    np.testing.assert_array_equal(first.rate, whole.rate)
    with np.load(ck) as z:
        kept = {k: z[k] for k in z.files if not k.startswith("c1_")}
    np.savez(ck, **kept)  # as if killed during the second chunk
    resumed = SP.estimate(problem, SGD, hp, chunk=3, checkpoint=ck, **kw)
    np.testing.assert_array_equal(resumed.rate, whole.rate)


def test_calibration_of_the_95_percent_intervals():
    """250 independent repetitions (8 replicas each) in one program: the 95% intervals
    of 1/τ cover the oracle at a rate within [0.91, 0.98]."""
    with jax.enable_x64(True):
        lr, x = 0.5, 4.0
        hp = _hp(lr, 0.5, x)
        _, dU = potential_fns("sharp-well", 1.0)
        tau = theory.mfpt_nystrom_converged(dU, lr, hp["noise_std"] ** 2, -1.0, 1.0,
                                            x0=0.0)[0]
        reps, R = 250, 8
        b = SP.Budget(replicas=reps * R, walkers=16, flux_steps=120, burn_in=40, particles=32,
                      levels=20, substeps=2)
        r = SP.estimate(potential_1d("sharp-well"), SGD, hp, score=abs_w, basin=0.25,
                        target=1.0, budget=b)
        groups = [SP.interval(g) for g in r.rate.reshape(reps, R)]
        coverage = np.mean([g.lo <= 1 / tau <= g.hi for g in groups])
        assert 0.91 <= coverage <= 0.98, coverage
        # the same intervals miss a learning rate off by 10% far more often
        wrong = theory.mfpt_nystrom_converged(dU, 1.1 * lr, hp["noise_std"] ** 2, -1.0, 1.0,
                                              x0=0.0)[0]
        assert np.mean([g.lo <= 1 / wrong <= g.hi for g in groups]) < 0.8


def test_a_second_stage_of_replicas_is_sized_from_the_first():
    """target_rel_se: the first stage's spread sets the total (capped by max_replicas);
    the first-stage replicas are those of a plain run, and the program is not rebuilt."""
    problem, hp = potential_1d("sharp-well"), _hp(0.7, 0.5, 4.0)
    kw = dict(score=abs_w, basin=0.25, target=1.0, seed=2)
    first = SP.estimate(problem, SGD, hp, budget=TINY, **kw)
    traces = SP.TRACE_COUNT
    rel = first.inverse_mfpt.se / first.inverse_mfpt.value
    two = SP.estimate(problem, SGD, hp, budget=dataclasses.replace(
        TINY, target_rel_se=rel / 2, max_replicas=64), **kw)
    assert two.rate.size == 4 * TINY.replicas  # (rel / (rel / 2))² = 4 exactly
    np.testing.assert_array_equal(two.rate[:TINY.replicas], first.rate)
    assert two.inverse_mfpt.value == pytest.approx(two.rate.mean())
    capped = SP.estimate(problem, SGD, hp, budget=dataclasses.replace(
        TINY, target_rel_se=rel / 100, max_replicas=10), **kw)
    assert capped.rate.size == 10
    np.testing.assert_array_equal(capped.rate, two.rate[:10])
    assert SP.TRACE_COUNT == traces


def test_bad_settings_give_a_clear_message():
    problem = potential_1d("sharp-well")
    hp = _hp(0.7, 0.5, 3.0)
    kw = dict(score=abs_w, target=1.0, budget=TINY)
    with pytest.raises(ValueError, match=r"^basin=0\.0 is invalid: .*start"):
        SP.estimate(problem, SGD, hp, basin=0.0, **kw)
    with pytest.raises(ValueError, match=r"^basin=0\.999 is invalid: no walker left the basin"):
        SP.estimate(problem, SGD, _hp(0.7, 0.5, 30.0), basin=0.999, **kw)
    with pytest.raises(ValueError, match=r"^target=0\.1 is invalid: expected a level above"):
        SP.estimate(problem, SGD, hp, score=abs_w, basin=0.25, target=0.1, budget=TINY)
    # an escape set the chain never reaches: every population dies out at the top level
    with pytest.raises(ValueError, match=r"^target=1\.0 is invalid: the score reached the"):
        SP.estimate(problem, SGD, hp, basin=0.25, event=never, **kw)
    # two particles cannot carry a rare escape across the levels
    two = SP.Budget(replicas=4, walkers=16, flux_steps=60, burn_in=20, particles=2,
                    levels=10, substeps=2)
    with pytest.raises(ValueError, match=r"^particles=2 is invalid: the population died out"):
        SP.estimate(problem, SGD, _hp(0.7, 0.5, 14.0), score=abs_w, basin=0.25, target=1.0,
                    budget=two)
    with pytest.raises(ValueError, match=r"^substeps=2 is invalid"):
        SP.estimate(problem, SGD, {"learning_rate": 0.5}, basin=0.25, **kw)
    with pytest.raises(ValueError, match=r"^burn_in=60 is invalid"):
        SP.Budget(flux_steps=60, burn_in=60)


def _saddle_2d():
    """U = (x² − 1)²/4 + k(y − c·x²)²/2: two wells joined by a curved valley, saddle at 0."""
    from sgdlab import data as data_lib
    from sgdlab.problems import Problem

    k, c = 2.0, 0.4

    def U(v):
        return 0.25 * (v[0] ** 2 - 1) ** 2 + 0.5 * k * (v[1] - c * v[0] ** 2) ** 2

    return Problem(name="saddle_2d", init=lambda key: jnp.array([-1.0, c]),
                   loss=lambda v, b, hp: U(v),
                   data=data_lib.online(lambda key, n: jnp.zeros((n,)), 1, "none"),
                   events={"escaped": lambda o: o.params[0] > 0.0})


def first(o):
    return o.params[0]


def test_two_dimensional_saddle_agrees_with_brute_force():
    """A 2-D potential with a curved valley over a saddle (ΔL = 1/4, ΔL/T = 4.5):
    splitting on the score x and a brute-force engine ensemble agree within 4 SE."""
    problem = _saddle_2d()
    lr = 0.2
    hp = {"learning_rate": lr, "noise_std": math.sqrt(2 * 0.25 / (lr * 4.5))}
    ds = engine.run(engine.Study(problem, SGD, hp, steps=4000, seeds=3000, observe=None,
                                 first_passage=engine.FirstPassage("escaped")), progress=False)
    cens = ds.event_censored.values.ravel()
    t = analysis.escape_times(ds.event_step.values.ravel(), cens, 4000)
    brute, brute_se, n_esc = measure_mfpt(t, cens)  # censored MLE (exponential tail)
    assert n_esc > 0.9 * t.size
    b = SP.Budget(replicas=8, walkers=64, flux_steps=300, burn_in=100, particles=256,
                  levels=40, substeps=2)
    r = SP.estimate(problem, SGD, hp, score=first, basin=-0.75, target=0.0, budget=b)
    assert abs(r.mfpt.value - brute) < 4 * math.hypot(r.mfpt.se, brute_se)
    assert r.mfpt.se < 0.25 * brute


_SUBPROCESS = """
import sys, json, numpy as np, jax
sys.path.insert(0, "tests")
from test_splitting import SGD, TINY, _hp, abs_w
from sgdlab import splitting as SP
from sgdlab.problems import potential_1d
import dataclasses
if sys.argv[5] == "slow":  # a pause after each checkpoint write, so that the test kills mid-run
    from _slow import slow_checkpoint_writes
    slow_checkpoint_writes()
budget = dataclasses.replace(TINY, replicas=int(sys.argv[1]))
kw = dict(score=abs_w, basin=0.25, target=1.0, budget=budget, seed=11)
ckpt = sys.argv[2] if sys.argv[2] != "-" else None
rates = [SP.estimate(potential_1d("sharp-well"), SGD, _hp(0.7, 0.5, 3.0), chunk=int(sys.argv[3]),
                     checkpoint=ckpt, devices=int(d), **kw).rate.tolist()
         for d in sys.argv[4].split(",")]
print(json.dumps(rates))
"""


def _split_run(tmp_path, replicas, ckpt, chunk, devices, env_devices=1, wait=True, slow=False):
    import os
    import subprocess
    import sys

    env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(env_devices), PYTHONUNBUFFERED="1")
    args = [sys.executable, "-c", _SUBPROCESS, str(replicas), str(ckpt or "-"), str(chunk),
            str(devices), "slow" if slow else "-"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not wait:
        return subprocess.Popen(args, env=env, cwd=root, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    r = subprocess.run(args, env=env, cwd=root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    import json
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_bitwise_equal_across_device_counts_and_after_sigkill(tmp_path):
    """Replicas split over 4 devices give the bits of 1 device; a run killed with SIGKILL
    after some chunks resumes from its checkpoint to the same bits."""
    import signal
    import time

    one, four = _split_run(tmp_path, 8, None, 8, "1,4", env_devices=4)  # one process
    assert one == four and len(set(one)) > 1
    # SIGKILL once the first of 8 chunks is on disk, then rerun the same call
    ckpt = tmp_path / "split.npz"
    p = _split_run(tmp_path, 8, ckpt, 1, 1, wait=False, slow=True)
    try:
        deadline = time.time() + 300
        while not ckpt.exists() and p.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert p.poll() is None, "the run ended before the test could kill it"
        p.send_signal(signal.SIGKILL)
        p.wait(60)
    finally:
        if p.poll() is None:
            p.kill()
    with np.load(ckpt) as z:
        kept = sum(k.endswith("_prob") for k in z.files)
    assert 1 <= kept < 8, kept  # killed mid-run, the checkpoint whole
    (resumed,) = _split_run(tmp_path, 8, ckpt, 1, 1)
    assert resumed == one  # chunks of one replica, resumed: the bits of one chunk of 8
