"""The constant-target experiment (study 1): quick preset end to end, its statistics, bad input."""

import json
import math

import numpy as np
import pytest

from sgdlab import cli, theory
from sgdlab.experiments import constant_target as ct

NAME = "constant-target"


def test_quick_preset_end_to_end(tmp_path, capsys):
    out = tmp_path / "o"
    code = cli.main(["run", NAME, "--out", str(out), "--quiet"])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    assert (out / "results.zarr").is_dir()
    assert list((out / "figures").glob("*.png"))
    summary = json.loads((out / "summary.json").read_text())
    qs = summary["quantities"]
    assert all(q["pass"] for q in qs if q["pass"] is not None)
    names = {q["name"] for q in qs}
    assert {"risk", "risk_final", "dead_risk"} <= names
    assert all(q["predicted"] is None for q in qs if q["name"] in ("risk", "risk_final"))
    # every schedule is checked against the dead-network closed form, from step 0 on
    cfg = summary["config"]
    for sched in cfg["schedule"]:
        steps = [q["coords"]["step"] for q in qs
                 if q["name"] == "dead_risk" and q["coords"]["schedule"] == sched]
        assert steps and steps[0] == 0
    # the non-summable schedules meet the stated decay criterion, the summable one stalls
    for q in qs:
        if q["name"] == "risk_final" and q["coords"]["schedule"] != "inv_sq":
            assert q["note"].endswith("-> met"), q["note"]
    final = {q["coords"]["schedule"]: q["value"] for q in qs if q["name"] == "risk_final"}
    assert final["inv_sq"] > 10 * max(final["constant"], final["inv_sqrt"])


def test_dead_factor_is_the_product_of_the_schedule():
    g0, alpha, n0 = 0.1, 1.0, 0.0
    steps = np.array([0, 1, 2, 5, 50])
    gam = g0 / (np.arange(1, 51) + n0) ** alpha
    direct = np.concatenate([[1.0], np.cumprod((1 - 2 * gam) ** 2)])[steps]
    assert np.allclose(ct.dead_factor(g0, alpha, n0, steps), direct, rtol=1e-12)
    # summable schedule: the product tends to Euler's sin(πz)/(πz) squared, z² = 2 g0
    far = ct.dead_factor(g0, 2.0, 0.0, [10**6])
    assert far == pytest.approx(theory.dead_risk_inv_sq_limit(g0, 1.0), rel=1e-5)


def test_last_decade_exponent_recovers_a_power_law_with_calibrated_error():
    """Members L_i(n) = c_i n^p: the exponent is exact; with noise its SE covers the truth."""
    rng = np.random.default_rng(0)
    steps = np.array([0, 1, 10, 100, 1000])
    c = rng.exponential(size=4000)
    exact = c[:, None] * np.maximum(steps, 1) ** -0.5
    p, se, a, n = ct.last_decade_exponent(exact, steps)
    assert (a, n) == (100, 1000) and p == pytest.approx(-0.5, abs=1e-12) and se < 1e-12
    z = []
    for _ in range(40):
        noisy = exact * rng.exponential(size=exact.shape)
        p, se, _, _ = ct.last_decade_exponent(noisy, steps)
        z.append((p + 0.5) / se)
    assert abs(np.mean(z)) < 4 / math.sqrt(40) and 0.6 < np.std(z) < 1.5


def test_bad_input_exits_2_with_one_line(capsys):
    code = cli.main(["run", NAME, "--set", "schedule=inv,inv"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "schedule" in err
    code = cli.main(["run", NAME, "--set", "gamma0=0.7"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "gamma0=0.7" in err
