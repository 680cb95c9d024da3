"""The villani experiment (study 2): quick preset end to end, the minimiser, bad input."""

import json

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab import cli, theory
from sgdlab.experiments import get
from sgdlab.experiments import villani as vl

NAME = "villani"


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
    cfg = summary["config"]
    gaps = [q for q in qs if q["name"] == "stationary_gap"]
    assert len(gaps) == 2 * len(cfg["activation"]) * len(cfg["width"]) * len(cfg["step_size"])
    assert all(q["pass"] is True for q in gaps)
    diffs = [q for q in qs if q["name"] == "start_gap_difference"]
    assert diffs and all(q["predicted"] == 0 and q["pass"] is True for q in diffs)
    # the discrete-time correction is resolved: at the largest s the Laplace value is
    # many standard errors away while the discrete-time one is within 4
    s_max = max(cfg["step_size"])
    for q in gaps:
        if q["coords"]["step_size"] == s_max:
            lap = summary["villani"][0]["laplace_gap"][str(s_max)]
            assert abs(q["value"] - lap) > 8 * q["se"]


def test_minimum_is_a_nondegenerate_minimiser_above_the_threshold():
    cfg = get(NAME).resolve("quick")
    vm, facts = vl.minimum(cfg, "sigmoid", 8)
    problem = vl._problem(cfg, "sigmoid", 8, "near")
    data = problem.data.init(jax.random.key(0))
    with jax.enable_x64(True):
        X = jnp.asarray(np.asarray(data["X"], np.float64))
        y = jnp.asarray(np.asarray(data["y"], np.float64))
        g = jax.grad(lambda W: problem.loss(W, (X, y), {}))(jnp.asarray(vm.w_min))
        assert float(jnp.max(jnp.abs(g))) < 1e-8
    assert cfg["reg"] > facts["threshold"]
    # above the threshold the Hessian is at least reg minus the data term's bound
    assert vm.hessian_eigs.size == 8 * cfg["input_dim"]
    assert vm.hessian_eigs[0] > 0.5 * cfg["reg"]
    # the discrete-time gap reduces to the Laplace value D s/4 as s -> 0
    s = 1e-4
    assert np.isclose(theory.discrete_gap(vm.hessian_eigs, s),
                      theory.laplace_gap(vm.hessian_eigs.size, s), rtol=1e-4)


def test_bad_input_exits_2_with_one_line(capsys):
    code = cli.main(["run", NAME, "--set", "burn_in=5000", "--set", "steps=4000"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "burn_in=5000" in err
    code = cli.main(["run", NAME, "--set", "activation=relu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "activation" in err
