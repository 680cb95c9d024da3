"""Two processes on localhost (jax.distributed, CPU, gloo collectives) give bitwise the
results of one process."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import xarray as xr

from tests._ports import coordinator_port

ROOT = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent("""
    import sys, jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    pid, n, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if n > 1:
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=n,
                                   process_id=pid)
    import sgdlab as sl
    problem = sl.problems.mlp_regression((3, 8, 1), target="teacher", inputs="gaussian",
                                         batch_size=4, reduction="half_mean", n_eval=32)
    study = sl.Study(problem, sl.Optimizer("momentum"),
                     {"learning_rate": [0.05, 0.1], "momentum": 0.9}, steps=50, seeds=40,
                     block_seeds=4, chunk_size=8, observe=sl.Observe(("loss", "risk"), num=4),
                     stationary=sl.Stationary(("loss",), burn_in=10))
    ds = sl.run(study, progress=False)
    if pid == 0:
        sl.save(ds, out)
    print("done", pid, jax.process_count())
""")


def test_two_processes_bitwise_equal_one(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("JAX_NUM_CPU_DEVICES", None)
    port = str(coordinator_port())
    procs = [subprocess.Popen([sys.executable, str(script), str(i), "2", port,
                               str(tmp_path / "two.zarr")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, e) in zip(procs, outs, strict=True):
        assert p.returncode == 0, e[-3000:]
    assert "done 0 2" in outs[0][0] and "done 1 2" in outs[1][0]
    one = subprocess.run([sys.executable, str(script), "0", "1", "0", str(tmp_path / "one.zarr")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    a = xr.open_zarr(tmp_path / "one.zarr", consolidated=False).load()
    b = xr.open_zarr(tmp_path / "two.zarr", consolidated=False).load()
    assert "5 chunk(s)" in a.attrs["plan"]
    for v in a.data_vars:
        assert np.array_equal(a[v].values, b[v].values, equal_nan=True), v
