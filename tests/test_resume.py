"""Nothing lost: checkpoints, resume after SIGKILL/SIGINT, refusal of changed configurations,
atomic outputs, and sharding over devices bitwise equal to one device."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import sgdlab as sl
from sgdlab import experiments

ROOT = Path(__file__).resolve().parents[1]
# five studies of ten checkpoints each: the kill lands at the first checkpoint, with most of
# the run still to go (about 8 s of work on an idle 2-core machine, besides compiling)
RUN = ["run", "lzu-stationary", "--quiet", "--set", "seeds=300", "--set", "steps=6000",
       "--set", "burn_in=500", "--set", "learning_rate=0.5,1.0", "--set", "momentum=0,0.5",
       "--set", "finite_seeds=200", "--checkpoint-steps", "600"]


class _Run:
    """A CLI process whose output goes to files, so that it never blocks on a full pipe while
    the test polls for its checkpoint (a warm compile cache can log a lot on stderr)."""

    def __init__(self, args):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.out, self.err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self.p = subprocess.Popen([sys.executable, "-m", "sgdlab.cli", *args], cwd=ROOT,
                                  env=env, stdout=self.out, stderr=self.err, text=True)

    def send_signal(self, sig):
        self.p.send_signal(sig)

    @property
    def returncode(self):
        return self.p.returncode

    def communicate(self, timeout=None):
        self.p.wait(timeout=timeout)
        self.out.seek(0)
        self.err.seek(0)
        return self.out.read(), self.err.read()


def sgdlab(args):
    return _Run(args)


def wait_for(pattern: str, root: Path, timeout=300):
    t0 = time.time()
    while not list(root.glob(pattern)):
        if time.time() - t0 > timeout:
            raise TimeoutError(f"{root}/{pattern}")
        time.sleep(0.05)


def assert_same_results(a: Path, b: Path):
    sa, ra = experiments.load_run(a)
    sb, rb = experiments.load_run(b)
    assert ra.keys() == rb.keys()
    for g in ra:
        for v in ra[g].data_vars:
            assert np.array_equal(ra[g][v].values, rb[g][v].values, equal_nan=True), (g, v)
    assert [q["value"] for q in sa["quantities"]] == [q["value"] for q in sb["quantities"]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    p = sgdlab([*RUN, "--out", str(out)])
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    return out


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_resumes_bitwise_identically(tmp_path, reference, sig):
    out = tmp_path / "run"
    p = sgdlab([*RUN, "--out", str(out)])
    wait_for(".sgdlab-state/*.ckpt.npz", out)
    p.send_signal(sig)
    _, err = p.communicate(timeout=300)
    if sig == signal.SIGINT:
        assert p.returncode == 130
        assert "resume with: sgdlab run lzu-stationary" in err
    else:
        assert p.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists()
    p = sgdlab([*RUN, "--out", str(out)])
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    assert "resuming the unfinished run" in err
    assert "resuming from its checkpoint" in err
    assert_same_results(reference, out)
    assert not (out / ".sgdlab-state").exists()


def test_resume_with_changed_configuration_is_refused(tmp_path):
    out = tmp_path / "run"
    state = out / experiments.STATE
    state.mkdir(parents=True)
    cfg = experiments.get("lzu-stationary").resolve("quick")
    (state / "run.json").write_text(json.dumps(
        {"experiment": "lzu-stationary", "preset": "quick", "config": cfg, "seed": 0,
         "x64": False}))
    p = sgdlab(["run", "lzu-stationary", "--out", str(out), "--set", "momentum=0.9",
                "--set", "seeds=100"])
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2
    assert len(err.strip().splitlines()) == 1
    assert "config.momentum" in err and "config.seeds" in err and "Traceback" not in err


def test_finished_run_is_not_recomputed_without_force(tmp_path, reference):
    # same configuration: reported as stored
    summary, _, _ = experiments.run(
        "lzu-stationary", set_strings=[RUN[i + 1] for i, a in enumerate(RUN) if a == "--set"],
        out=reference,
        progress=False, log=lambda m: None)
    assert json.loads((reference / "summary.json").read_text())["runtime_s"] == \
        summary["runtime_s"]


def test_summary_json_is_never_partial(tmp_path):
    """Kill the writer while summary.json is being written: it is absent or complete."""
    out = tmp_path / "run"
    script = textwrap.dedent(f"""
        import os, time, sys
        from pathlib import Path
        from sgdlab._files import atomic_text
        real = os.fsync
        def slow(fd):
            time.sleep(30)
            real(fd)
        summary = {{"experiment": "x", "quantities": [], "blob": "z" * 1_000_000}}
        os.fsync = slow
        print("writing", flush=True)
        text = __import__("json").dumps(summary)
        atomic_text(Path({str(out)!r}) / "summary.json", text)
    """)
    out.mkdir()
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                         cwd=ROOT)
    assert p.stdout.readline().strip() == "writing"
    time.sleep(1.0)
    p.kill()
    p.wait()
    assert not (out / "summary.json").exists()
    # the leftover carries the mark a resume uses to drop it
    assert [f.name for f in out.iterdir()] and all(".tmp-" in f.name for f in out.iterdir())
    # the temporary file is the only trace; a later write replaces nothing partial
    from sgdlab._files import atomic_text
    atomic_text(out / "summary.json", '{"ok": true}')
    assert json.loads((out / "summary.json").read_text()) == {"ok": True}


def interrupt_at(study, ckpt, tick_number, pace=0.0):
    """Run ``study`` with a stop request at the ``tick_number``-th progress tick.

    A tick follows each call of the segment program; the run loop sizes calls to about
    ``pace`` seconds of work: with 0, every call (and tick) is one segment.
    """
    from sgdlab.engine import _loop  # white-box: the pacer's target time

    calls = {"n": 0}
    real, real_pace = sl.engine.Progress.tick, _loop.PACE_S
    _loop.PACE_S = pace

    def tick(self, n=1, note=""):
        calls["n"] += 1
        if calls["n"] == tick_number:
            sl.engine.request_stop()
        real(self, n, note)

    sl.engine.Progress.tick = tick
    try:
        with pytest.raises(sl.engine.Interrupted):
            sl.run(study, progress=False, checkpoint=ckpt)
    finally:
        sl.engine.Progress.tick, _loop.PACE_S = real, real_pace
        sl.engine.clear_stop()


def running_max():
    """The user recorder of tests/test_open_engine.py (loaded by path: tests is no package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_open_engine",
                                                  ROOT / "tests" / "test_open_engine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RunningMax()


@pytest.mark.parametrize("pace", [0.0, 1e9])
def test_engine_checkpoint_resume_in_process(tmp_path, pace):
    RunningMax = running_max

    problem = sl.problems.noisy_quadratic(1.0, 1.0)
    study = sl.Study(problem, sl.Optimizer("momentum"),
                     {"learning_rate": [0.5, 1.0], "momentum": 0.3}, steps=400, seeds=40,
                     segment_steps=20, block_seeds=8, chunk_size=16,
                     observe=sl.Observe(("w", "risk"), num=6),
                     stationary=sl.Stationary(("w2",), burn_in=50), recorders=(RunningMax(),))
    ref = sl.run(study, progress=False)
    ckpt = sl.engine.Checkpoint(tmp_path / "c.npz", every_seconds=1e9, every_steps=60)
    # in the middle of the second chunk: one segment per call, or many per call (stopping
    # where the step-based checkpoint falls due)
    interrupt_at(study, ckpt, 33 if pace == 0 else 10, pace=pace)
    meta = ckpt.read()[0]
    if pace == 0:
        assert (meta["chunk"], meta["segment"]) == (1, 13)
    else:
        assert meta["chunk"] == 1 and 0 < meta["segment"] < 20
    assert meta["stream"] == sl.engine.STREAM_VERSION
    resumed = sl.run(study, progress=False, checkpoint=ckpt)
    assert "max_abs_w" in resumed and "sum_abs_w" in resumed  # the user recorder resumed too
    for v in ref.data_vars:
        assert np.array_equal(ref[v].values, resumed[v].values, equal_nan=True), v
    with pytest.raises(ValueError, match="hparams.momentum"):
        sl.run(study.with_hparams(momentum=0.4), progress=False, checkpoint=ckpt)


@pytest.mark.parametrize("key, message", [("stream", "random-stream version"),
                                          ("layout", "carried state stored in another layout")])
def test_checkpoint_of_another_random_stream_version_or_layout_is_refused(tmp_path, key,
                                                                          message):
    """A checkpoint of another stream version would mix two streams; one of another
    layout (version 2: no running sum of Stationary's open batch) would not load."""
    problem = sl.problems.noisy_quadratic(1.0, 1.0)
    study = sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": [0.5]}, steps=100,
                     seeds=8, segment_steps=10)
    ckpt = sl.engine.Checkpoint(tmp_path / "c.npz", every_seconds=1e9, every_steps=10)
    interrupt_at(study, ckpt, 3)
    with np.load(ckpt.path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    meta[key] = meta[key] + 1 if key == "stream" else meta[key] - 1
    arrays["meta"] = np.asarray(json.dumps(meta))
    with open(ckpt.path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ValueError, match=f"^checkpoint=.*{message}") as e:
        sl.run(study, progress=False, checkpoint=ckpt)
    assert "\n" not in str(e.value)


def test_static_sweep_resumes_bitwise(tmp_path):
    A = np.diag([1.0, 0.5])
    study = sl.Study(lambda batch_size: sl.problems.linear_regression(A, 0.5, batch_size),
                     sl.Optimizer("sgd"), {"learning_rate": [0.1, 0.2]}, steps=200, seeds=24,
                     segment_steps=20, block_seeds=8, chunk_size=8,
                     static={"batch_size": [2, 8]}, observe=sl.Observe(("w",), num=5),
                     stationary=sl.Stationary(("w2",), burn_in=50))
    ref = sl.run(study, progress=False)
    ckpt = tmp_path / "s.npz"
    interrupt_at(study, sl.engine.Checkpoint(ckpt, every_seconds=1e9, every_steps=40), 45)
    assert (tmp_path / "s.static1.npz").exists()  # stopped in the second combination
    resumed = sl.run(study, progress=False, checkpoint=ckpt)
    for v in ref.data_vars:
        assert np.array_equal(ref[v].values, resumed[v].values, equal_nan=True), v


def test_sharded_over_four_devices_is_bitwise_single_device():
    script = textwrap.dedent("""
        import sys; sys.path.insert(0, "tests")
        import numpy as np, jax, sgdlab as sl
        from test_open_engine import RunningMax
        assert len(jax.devices()) == 4
        problem = sl.problems.mlp_regression((3, 16, 1), target="teacher", inputs="gaussian",
                                             batch_size=4, reduction="half_mean", n_eval=32)
        study = sl.Study(problem, sl.Optimizer("momentum"),
                         {"learning_rate": [0.05, 0.1], "momentum": 0.9}, steps=60, seeds=50,
                         block_seeds=4, observe=sl.Observe(("loss", "risk"), num=4),
                         stationary=sl.Stationary(("loss",), burn_in=20),
                         recorders=(RunningMax(),))
        def differing(a, b):
            return [v for v in a.data_vars
                    if not np.array_equal(a[v].values, b[v].values, equal_nan=True)]

        one = sl.run(study, progress=False, devices=1)
        four = sl.run(study, progress=False, devices=4)
        assert "4 device(s)" in four.attrs["plan"]
        assert not differing(one, four), differing(one, four)
        # streamed statistics of the step-0 record (computed by the init program) when a
        # device holds only padding: 6 and 7 seeds in one default block, on 1 and 2 devices
        tanh = sl.problems.mlp_regression((3, 8, 8, 1), activation="tanh", target="teacher",
                                          teacher_sizes=(3, 4, 1), inputs="gaussian",
                                          batch_size=5, reduction="half_mean", n_eval=64)
        for seeds in (6, 7):
            study = sl.Study(tanh, sl.Optimizer("momentum"),
                             {"learning_rate": [0.05, 0.2], "momentum": 0.9,
                              "noise_std": [0.0, 0.3]}, steps=20, seeds=seeds,
                             observe=sl.Observe(("loss", "risk"), num=4))
            one, two = (sl.run(study, progress=False, devices=d) for d in (1, 2))
            assert not differing(one, two), (seeds, differing(one, two))
        print("ok")
    """)
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="4")
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                       cwd=ROOT, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
