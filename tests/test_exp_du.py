"""Experiment `du-overparam` (study 4): quick preset end to end, its observables, bad input."""

import json
import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdlab import cli, models, theory
from sgdlab.experiments import du


def test_quick_preset_end_to_end(tmp_path, capsys):
    out = tmp_path / "o"
    code = cli.main(["run", "du-overparam", "--out", str(out), "--quiet"])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "results.zarr").is_dir()
    assert list((out / "figures").glob("*.png"))
    qs = summary["quantities"]
    assert all(q["pass"] is not False for q in qs)
    checked = {q["name"] for q in qs if q["pass"] is True}
    assert {"lambda0", "flip_slope", "distance_slope"} <= checked
    widths = summary["config"]["width"]
    for name in ("flip_fraction", "max_distance"):
        final = [q["value"] for q in qs if q["name"] == name]
        assert len(final) == len(widths) and all(np.diff(final) < 0)
    # the kernel prediction is stored for the figure, one curve per width
    assert set(summary["du"]["kernel_loss"]) == {str(m) for m in widths}


def test_spectral_observable_matches_numpy():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 6))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    W = rng.standard_normal((40, 6))
    H_inf = theory.du_H_inf(X)
    o = SimpleNamespace(params={"W": jnp.asarray(W)},
                        data={"X": jnp.asarray(X), "H_inf": jnp.asarray(H_inf)})
    lam_min, dev, rayleigh = np.asarray(du._spectral_observable(H_inf)(o), float)
    H = np.asarray(models.du_gram(jnp.asarray(W), jnp.asarray(X)), float)
    v0 = np.linalg.eigh(H_inf)[1][:, 0]
    assert lam_min == pytest.approx(np.linalg.eigvalsh(H)[0], abs=1e-5)
    assert dev == pytest.approx(np.linalg.norm(H - H_inf, 2), abs=1e-5)
    assert rayleigh == pytest.approx(v0 @ H @ v0, abs=1e-5)


def test_rayleigh_quotient_is_unbiased_for_lambda0():
    """E[v0ᵀH(0)v0] = λ0 at any width (the basis of the lambda0 check), by direct sampling."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((10, 5))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    H_inf = theory.du_H_inf(X)
    lam, V = np.linalg.eigh(H_inf)
    v0 = V[:, 0]
    vals = []
    for _ in range(4000):
        W = rng.standard_normal((8, 5))
        s = (W @ X.T >= 0).astype(float)
        H = (X @ X.T) * (s.T @ s) / 8
        vals.append(v0 @ H @ v0)
    vals = np.asarray(vals)
    assert abs(vals.mean() - lam[0]) <= 4 * vals.std() / math.sqrt(vals.size)


def test_rms_distance_observable():
    W0 = jnp.zeros((3, 2))
    W = jnp.asarray([[3.0, 4.0], [0.0, 0.0], [0.0, 1.0]])
    o = SimpleNamespace(params={"W": W}, params0={"W": W0})
    assert float(du._rms_distance(o)) == pytest.approx(math.sqrt((25 + 0 + 1) / 3))


def test_studies_use_independent_seeds_per_width():
    cfg = du.EXPERIMENT.resolve("quick", {"width": [8, 16, 32], "seeds": 2, "steps": 2})
    studies = du._studies(cfg, seed=5)
    assert [s.seed for s in studies.values()] == [5, 5 + du.SEED_STRIDE, 5 + 2 * du.SEED_STRIDE]
    assert all(s.keep_init for s in studies.values())
    p = studies["m8"].problem
    k = jax.random.key(0)
    assert p.init(k)["W"].shape == (8, cfg["input_dim"])


@pytest.mark.parametrize("argv,needle", [
    (["--set", "learning_rate=5"], "learning_rate=5.0"),
    (["--set", "width=64,64,256"], "width=[64, 64, 256]"),
    (["--set", "width=64,256"], "width=[64, 256]"),
    (["--set", "labels=uniform"], "labels='uniform'"),
    (["--set", "n_samples=1"], "n_samples=1"),
])
def test_bad_input_exits_2_with_one_line(argv, needle, tmp_path, capsys):
    code = cli.main(["run", "du-overparam", "--out", str(tmp_path / "o")] + argv)
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "o").exists()
