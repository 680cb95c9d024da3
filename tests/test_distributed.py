"""Multi-process runs that survive preemption: chunk-level checkpoints under jax.distributed
(two local CPU processes, gloo), resumed with two processes or one, bitwise equal to an
uninterrupted single-process run; SIGTERM on one process stops both with a checkpoint."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from sgdlab.engine import STREAM_VERSION
from tests._ports import coordinator_port

ROOT = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent("""
    import faulthandler, json, signal, sys, time
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks where a hang is
    import jax
    pid, n, port, ckpt, out, cfg = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4],
                                    sys.argv[5], json.loads(sys.argv[6]))
    if n > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=n,
                                   process_id=pid)
    import sgdlab as sl
    tick = sl.engine.Progress.tick
    def slow_tick(self, *a, **k):  # a slow segment, so that the test can kill mid-run
        time.sleep(cfg.get("delay", 0.0))
        if pid == cfg.get("fail_pid"):  # a process that dies of an error mid-run
            raise OSError("planted failure: disk full")
        return tick(self, *a, **k)
    sl.engine.Progress.tick = slow_tick
    signal.signal(signal.SIGTERM, sl.engine.request_stop)
    study = sl.Study(sl.problems.noisy_quadratic([1.0, 0.5], [0.5, 0.2], w0=1.0),
                     sl.Optimizer("sgd"), {"learning_rate": [0.1, cfg.get("lr", 0.2)]},
                     steps=400, seeds=60, block_seeds=4, chunk_size=8, segment_steps=40,
                     observe=sl.Observe(("loss", "risk"), num=4),
                     stationary=sl.Stationary(("loss",), burn_in=100))
    try:
        ds = sl.run(study, progress=False, checkpoint=None if ckpt == "-" else
                    sl.engine.Checkpoint(ckpt, every_steps=1))
    except sl.engine.Interrupted as e:
        print("interrupted", pid, e, flush=True)
        sys.exit(130)
    except ValueError as e:
        print("error", pid, e, flush=True)
        sys.exit(2)
    except (OSError, RuntimeError) as e:
        print("failed", pid, e, flush=True)
        sys.exit(3)
    if pid == 0:
        sl.save(ds, out)
    print("done", pid, ds.attrs["processes"], flush=True)
""")


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env.pop("JAX_NUM_CPU_DEVICES", None)
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(k, None)
    return env


class _Job:
    """n worker processes of one distributed job; output to files (no pipe can block)."""

    def __init__(self, script, n, ckpt, out, **cfg):
        port = str(coordinator_port())
        ckpts = ckpt if isinstance(ckpt, list) else [ckpt] * n
        self.files = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+"))
                      for _ in range(n)]
        self.procs = [subprocess.Popen(
            [sys.executable, str(script), str(i), str(n), port, str(ckpts[i]), str(out),
             json.dumps(cfg)], env=_env(), stdout=o, stderr=e, text=True)
            for i, (o, e) in enumerate(self.files)]

    def wait(self, timeout=180):
        t0 = time.monotonic()
        try:
            for p in self.procs:
                p.wait(timeout=max(1.0, timeout - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            # a hang: every worker still running prints its Python stacks, then the test
            # fails with what each worker printed
            for p in self.procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGUSR1)
            time.sleep(2.0)
            self.kill()
            pytest.fail(f"the job did not finish in {timeout} s:\n" + "\n".join(
                f"--- worker {i} (rc {rc}) stdout:\n{o[-2000:]}\n--- stderr:\n{e[-6000:]}"
                for i, (rc, o, e) in enumerate(self._read())))
        return self._read()

    def _read(self):
        outs = []
        for p, (o, e) in zip(self.procs, self.files, strict=True):
            o.seek(0)
            e.seek(0)
            outs.append((p.returncode, o.read(), e.read()))
        return outs

    def kill(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _wait_for(cond, timeout=120):
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout:
            raise TimeoutError("no checkpoint appeared")
        time.sleep(0.02)


def _load(path):
    return xr.open_zarr(path, consolidated=False).load()


def _assert_same(a, b):
    assert a.data_vars.keys() == b.data_vars.keys()
    for v in a.data_vars:
        assert np.array_equal(a[v].values, b[v].values, equal_nan=True), v


def _assert_whole(state: Path):
    """Every checkpoint file loads completely: nothing half-written."""
    files = [state.with_name(state.name + ".d") / f
             for f in os.listdir(state.with_name(state.name + ".d"))] + [state]
    for f in files:
        if ".tmp-" in f.name or f.name == "token":
            continue
        with np.load(f, allow_pickle=False) as z:
            for k in z.files:
                z[k]  # noqa: B018 (reads and checks the member)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    script = tmp / "worker.py"
    script.write_text(WORKER)
    ref = _Job(script, 1, "-", tmp / "ref.zarr")
    try:
        (rc, out, err), = ref.wait()
    finally:
        ref.kill()
    assert rc == 0, err[-3000:]
    assert "done 0 1" in out
    return script, _load(tmp / "ref.zarr")


def _finish(script, n, state, out):
    """Run (or resume) the job with ``n`` processes to the end; its results."""
    job = _Job(script, n, state, out)
    try:
        res = job.wait()
    finally:
        job.kill()
    for i, (rc, o, e) in enumerate(res):
        assert rc == 0, e[-3000:]
        assert f"done {i} {n}" in o
    return _load(out)


def _files(state: Path, prefix: str):
    d = state.with_name(state.name + ".d")
    return [f for f in os.listdir(d) if f.startswith(prefix)] if d.is_dir() else []


def test_sigkill_then_resume_with_two_and_one_process(setup, tmp_path):
    script, ref = setup
    ckpt = tmp_path / "c.npz"
    job = _Job(script, 2, ckpt, tmp_path / "x.zarr", delay=0.05)
    try:
        # mid-run: a finished chunk, and a carry of process 1 (odd chunks) are on disk
        odd = [f"carry{c}.npz" for c in (1, 3, 5, 7)]
        _wait_for(lambda: _files(ckpt, "chunk") and set(_files(ckpt, "carry")) & set(odd))
        job.procs[1].send_signal(signal.SIGKILL)
        job.procs[1].wait()
        job.procs[0].send_signal(signal.SIGKILL)  # the job dies, as under JAX
    finally:
        job.kill()
    _assert_whole(ckpt)
    assert ckpt.exists() and len(_files(ckpt, "chunk")) < 8
    assert set(_files(ckpt, "carry")) & set(odd)  # the resume continues a carried chunk
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(ckpt, copy / "c.npz")
    shutil.copytree(tmp_path / "c.npz.d", copy / "c.npz.d")
    # what a write cut by SIGKILL leaves behind (whether or not this kill hit one)
    for d in (tmp_path / "c.npz.d", copy / "c.npz.d"):
        (d / ".carry1.npz.tmp-killed").write_bytes(b"PK\x03\x04 half a zip")
    for n, state in ((2, ckpt), (1, copy / "c.npz")):
        ds = _finish(script, n, state, tmp_path / f"resumed{n}.zarr")
        _assert_same(ref, ds)
        assert int(ds.attrs["processes"]) == n
        d = state.with_name(state.name + ".d")
        assert not (d.is_dir() and [f for f in os.listdir(d) if ".tmp-" in f])


def test_a_process_that_fails_stops_the_others_and_the_run_resumes(setup, tmp_path):
    """Process 2 dies of an error in its first chunk: process 1 finishes its own chunks,
    sees the failure in the key-value store and stops with a one-line message naming it
    (no wait for chunks that will never come); rerunning resumes bitwise."""
    script, ref = setup
    ckpt = tmp_path / "c.npz"
    job = _Job(script, 2, ckpt, tmp_path / "x.zarr", fail_pid=1)
    try:
        (rc0, out0, err0), (rc1, out1, err1) = job.wait(timeout=150)
    finally:
        job.kill()
    assert rc1 == 3 and "failed 1 planted failure" in out1, err1[-3000:]
    assert rc0 == 3, err0[-3000:]
    assert "failed 0 process 2/2 failed (OSError: planted failure: disk full)" in out0
    assert "rerun the same command to resume" in out0
    _assert_same(ref, _finish(script, 2, ckpt, tmp_path / "resumed.zarr"))


def test_sigterm_stops_both_with_checkpoint_and_changed_config_refused(setup, tmp_path):
    script, ref = setup
    ckpt = tmp_path / "c.npz"
    # slow ticks (0.3 s; process 0's four chunks take 12 s), and the signal only once process 1
    # is in its run loop: a process that reads its programs from the compile cache may start
    # its chunks well before the other
    job = _Job(script, 2, ckpt, tmp_path / "x.zarr", delay=0.3)
    try:
        _wait_for(lambda: {f"carry{c}.npz" for c in (1, 3, 5, 7)} & set(_files(ckpt, "carry")))
        job.procs[1].send_signal(signal.SIGTERM)
        res = job.wait()
    finally:
        job.kill()
    for i, (rc, o, e) in enumerate(res):
        assert rc == 130, (o, e[-3000:])
        assert f"interrupted {i}" in o
    _assert_whole(ckpt)
    meta = json.loads(str(np.load(ckpt)["meta"]))
    assert meta["processes"] == 2 and meta["stream"] == STREAM_VERSION and meta["chunks"] == 8
    assert sorted(meta["done"]) == sorted(int(f[5:-4]) for f in _files(ckpt, "chunk"))
    assert len(meta["done"]) + len(_files(ckpt, "carry")) >= 2  # each process checkpointed
    # process 0 (even chunks) stopped at a segment boundary soon after, not at its end
    assert sum(c % 2 == 0 for c in meta["done"]) < 4
    # a changed configuration is refused by both processes, naming the key
    job = _Job(script, 2, ckpt, tmp_path / "x.zarr", lr=0.3)
    try:
        res = job.wait()
    finally:
        job.kill()
    for rc, o, e in res:
        assert rc == 2 and "different configuration" in o and "learning_rate" in o, (o, e)
    # the unchanged configuration resumes, bitwise
    job = _Job(script, 2, ckpt, tmp_path / "r.zarr")
    try:
        res = job.wait()
    finally:
        job.kill()
    assert all(rc == 0 for rc, _, _ in res), res[0][2][-3000:]
    _assert_same(ref, _load(tmp_path / "r.zarr"))


@contextlib.contextmanager
def _two_cli_processes(args):
    """``sgdlab ARGS`` as processes 0 and 1 of one job; yields ``(procs, [(stdout, stderr)])``
    (temporary files) and kills whatever still runs on exit."""
    port = str(coordinator_port())
    files = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")) for _ in range(2)]
    procs = []
    try:
        for i, (o, e) in enumerate(files):
            env = dict(_env(), JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                       JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))
            procs.append(subprocess.Popen([sys.executable, "-m", "sgdlab.cli", *args], cwd=ROOT,
                                          env=env, stdout=o, stderr=e, text=True))
        yield procs, files
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_cli_sigterm_stops_every_process_and_prints_the_resume_command(tmp_path):
    out = tmp_path / "run"
    args = ["run", "lzu-stationary", "--quiet", "--distributed", "--out", str(out),
            "--set", "seeds=400", "--set", "steps=40000", "--set", "burn_in=500",
            "--set", "learning_rate=0.5", "--set", "momentum=0", "--checkpoint-steps", "400"]
    with _two_cli_processes(args) as (procs, files):
        _wait_for(lambda: list(out.glob(".sgdlab-state/*.d/carry*.npz")), timeout=300)
        procs[1].send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=120)
    errs = []
    for p, (_, e) in zip(procs, files, strict=True):
        e.seek(0)
        errs.append(e.read())
        assert p.returncode == 130, errs[-1][-3000:]
        assert "sgdlab: interrupted (stopped" in errs[-1]
    assert "resume with: sgdlab run lzu-stationary" in errs[0] and "--distributed" in errs[0]
    for ckpt in out.glob(".sgdlab-state/*.ckpt.npz"):
        _assert_whole(ckpt)
        assert json.loads(str(np.load(ckpt)["meta"]))["processes"] == 2
    assert not (out / "summary.json").exists()


def test_state_directory_not_shared_is_refused(setup, tmp_path):
    script, _ = setup
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()  # process 1 "sees" another directory: not a shared filesystem
    job = _Job(script, 2, [tmp_path / "a" / "c.npz", tmp_path / "b" / "c.npz"],
               tmp_path / "x.zarr")
    try:
        res = job.wait()
    finally:
        job.kill()
    for rc, o, e in res:
        assert rc == 2 and "filesystem every process sees" in o, (o, e[-3000:])
    assert "process 1 does not see" in res[1][1] and "process(es) [1]" in res[0][1]


def test_what_makes_the_cli_join_a_distributed_job():
    from sgdlab.engine import distributed_requested, initialize_distributed

    slurm = {"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_JOB_ID": "1"}
    assert not distributed_requested(False, slurm)  # SLURM's variables alone do not
    assert distributed_requested(True, slurm)
    env = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
    assert distributed_requested(False, env)
    assert not distributed_requested(False, {**env, "JAX_PROCESS_ID": ""})
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='two' is invalid"):
        initialize_distributed({**env, "JAX_NUM_PROCESSES": "two"})


def test_cli_two_processes_write_one_run_equal_to_one_process(tmp_path):
    """Both processes run the same command line; process 0 alone writes the outputs, and
    they are those of a one-process run (summary.json says processes: 2)."""
    sets = ["--set", "seeds=200", "--set", "steps=2000", "--set", "burn_in=500",
            "--set", "learning_rate=0.5", "--set", "momentum=0"]
    two, one = tmp_path / "two", tmp_path / "one"
    with _two_cli_processes(["run", "lzu-stationary", "--quiet", "--out", str(two), *sets]) \
            as (procs, files):
        for p in procs:
            p.wait(timeout=300)
    for p, (_, e) in zip(procs, files, strict=True):
        e.seek(0)
        assert p.returncode == 0, e.read()[-3000:]
    files[1][0].seek(0)
    assert "checks:" not in files[1][0].read()  # only process 0 prints the table
    r = subprocess.run([sys.executable, "-m", "sgdlab.cli", "run", "lzu-stationary", "--quiet",
                        "--out", str(one), *sets], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = (json.loads((d / "summary.json").read_text()) for d in (two, one))
    assert a["processes"] == 2 and b["processes"] == 1
    assert [q["value"] for q in a["quantities"]] == [q["value"] for q in b["quantities"]]
    assert not (two / ".sgdlab-state").exists()
