"""Experiment `indicator` (study 3): quick preset end to end, its closed forms, bad input."""

import json
import math

import numpy as np
import pytest

from sgdlab import cli
from sgdlab.experiments import indicator


def test_quick_preset_end_to_end(tmp_path, capsys):
    out = tmp_path / "o"
    code = cli.main(["run", "indicator", "--out", str(out), "--quiet"])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "results.zarr").is_dir()
    assert list((out / "figures").glob("*.png"))
    assert all(q["pass"] is not False for q in summary["quantities"])
    names = {q["name"] for q in summary["quantities"]}
    assert {"pointwise_error", "l1_error", "error_slope"} <= names
    ramp = [q for q in summary["quantities"] if q["name"] == "error_slope"
            and q["coords"]["model"] == "ramp"]
    assert len(ramp) == 1 and ramp[0]["pass"] is True and ramp[0]["predicted"] == -1 / 3
    deep = [q for q in summary["quantities"] if q["coords"]["model"] == "deep"]
    assert deep and all(q["predicted"] is None for q in deep)
    # the ramp's grid error vanishes after a finite time, as the population-GD recursion says
    pw = [q for q in summary["quantities"] if q["name"] == "pointwise_error"
          and q["coords"]["model"] == "ramp"]
    assert pw[-1]["value"] == 0.0 and pw[0]["value"] > 0.5
    det = summary["indicator"]["population_gd"]["ramp@10"]
    zero_det = min(k for k, e in zip(det["step"], det["pointwise_error"], strict=True) if e == 0)
    zero_mc = min(q["coords"]["step"] for q in pw if q["value"] == 0.0)
    assert 0.5 * zero_det <= zero_mc <= 2.0 * zero_det


@pytest.mark.parametrize("dim", [2, 3])
def test_shell_moments_match_monte_carlo(dim):
    """M_p(a) = E|f_a - f°|^p for X uniform on [-1, 1)^d, against direct sampling."""
    rng = np.random.default_rng(1)
    a, r = 3.0, 0.5
    x = rng.uniform(-1, 1, (400_000, dim))
    s = np.sum(x * x, axis=1)
    f = np.clip(1 - np.clip(a * (s - r * r), 0, None), 0, None)
    err = np.abs(f - (s <= r * r))
    for p in (1, 2):
        e = err**p
        exact = float(indicator._shell_moment(a, r, dim, p))
        assert abs(e.mean() - exact) <= 4 * e.std() / math.sqrt(e.size)
    if dim == 2:
        assert float(indicator._shell_moment(a, r, 2, 1)) == pytest.approx(math.pi / (8 * a))
        assert float(indicator._shell_moment(a, r, 2, 2)) == pytest.approx(math.pi / (12 * a))


def test_moment_derivative_and_population_gd():
    h = 1e-5
    for dim in (2, 3):
        fd = (indicator._shell_moment(2.0 + h, 0.5, dim, 2)
              - indicator._shell_moment(2.0 - h, 0.5, dim, 2)) / (2 * h)
        assert float(indicator._shell_moment(2.0, 0.5, dim, 2, derivative=True)) == \
            pytest.approx(float(fd), rel=1e-6)
    # d = 2: a_t³ = a_0³ + 3cηt + O(ln t)
    a = indicator.population_gd(1.5, 10.0, 0.5, 2, 20000)
    c = math.pi / 24
    assert a[-1] ** 3 == pytest.approx(1.5**3 + 3 * c * 10.0 * 20000, rel=1e-3)
    # the interpolated general-d path reproduces the exact d = 2 one
    a3 = indicator.population_gd(2.0, 1.0, 0.5, 3, 2000)
    b3 = [2.0]
    for _ in range(2000):
        cur = b3[-1]
        b3.append(cur - 0.5 * float(indicator._shell_moment(cur, 0.5, 3, 2, derivative=True)))
    assert a3[-1] == pytest.approx(b3[-1], rel=1e-6)


def test_grid_gap_matches_brute_force():
    g, r, band = 16, 0.5, 0.05
    axis = -1 + (2 * np.arange(g) + 1) / g
    xx, yy = np.meshgrid(axis, axis)
    s = (xx**2 + yy**2).ravel()
    keep = np.sqrt(s) - r > band
    assert indicator._grid_gap(r, 2, g, band) == pytest.approx(s[keep].min() - r * r)


def test_slope_fit_recovers_a_power_law_and_its_error():
    """Members C_i·t^(-1/3): the fit finds -1/3; the bootstrap se is finite and small."""
    rng = np.random.default_rng(0)
    t = np.unique(np.geomspace(1, 1e4, 20).astype(int))
    members = (1 + 0.05 * rng.standard_normal((200, 1))) * t ** (-1 / 3) \
        * (1 + 0.01 * rng.standard_normal((200, t.size)))
    fit, se = indicator._slope_fit(t, members, 100, 1e4, np.random.default_rng(1))
    assert abs(fit.estimate + 1 / 3) <= 4 * se and 0 < se < 0.01


@pytest.mark.parametrize("argv,needle", [
    (["--set", "a0=1.2"], "a0=1.2"),
    (["--set", "fit_start=200000"], "fit_start=200000"),
    (["--set", "model=ramp,wide"], "model='wide'"),
    (["--set", "radius=1"], "radius=1.0"),
    (["--set", "band=2"], "band=2.0"),
])
def test_bad_input_exits_2_with_one_line(argv, needle, tmp_path, capsys):
    code = cli.main(["run", "indicator", "--out", str(tmp_path / "o")] + argv)
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "o").exists()
