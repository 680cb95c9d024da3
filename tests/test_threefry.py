"""sgdlab's CPU lowering of JAX's Threefry hash computes JAX's hash, bit for bit."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.random import threefry_2x32

import sgdlab as sl
from sgdlab.engine._threefry import host_threefry2x32  # white-box: the host's hash

# Random123's known-answer vectors for Threefry-2x32, 20 rounds: (key, counter, output)
KAT = [((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
       ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
       ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0))]


def numpy_threefry(k1, k2, x1, x2):
    """The hash written out round by round from the specification, in NumPy (uint32
    arithmetic wraps around by design: NumPy's overflow warning for scalars is off)."""
    with np.errstate(over="ignore"):
        return _numpy_threefry(k1, k2, x1, x2)


def _numpy_threefry(k1, k2, x1, x2):
    k1, k2, x1, x2 = (np.asarray(v, np.uint32) for v in (k1, k2, x1, x2))
    ks = (k1, k2, k1 ^ k2 ^ np.uint32(0x1BD11BDA))
    rot = (13, 15, 26, 6, 17, 29, 16, 24)
    a, b = x1 + ks[0], x2 + ks[1]
    for r in range(20):
        a = a + b
        b = ((b << np.uint32(rot[r % 8])) | (b >> np.uint32(32 - rot[r % 8]))) ^ a
        if r % 4 == 3:
            s = r // 4 + 1
            a = a + ks[s % 3]
            b = b + ks[(s + 1) % 3] + np.uint32(s)
    return a, b


@pytest.mark.parametrize("key, count, out", KAT)
def test_known_answers(key, count, out):
    k = jnp.asarray(key, jnp.uint32)
    got = jax.jit(threefry_2x32)(k, jnp.asarray(count, jnp.uint32))  # through JAX's primitive
    assert [int(v) for v in got] == list(out)
    direct = jax.jit(sl.engine.threefry2x32)(k[0], k[1], *jnp.asarray(count, jnp.uint32))
    assert [int(v) for v in direct] == list(out)
    assert [int(v) for v in numpy_threefry(*key, *count)] == list(out)
    host = host_threefry2x32(*key, *count)  # the engine's host copy (member keys)
    assert [int(v) for v in host] == list(out)


def test_equals_an_independent_numpy_hash_with_shared_and_per_element_keys():
    rng = np.random.default_rng(7)
    k = rng.integers(0, 2**32, size=(2, 513), dtype=np.uint32)
    x = rng.integers(0, 2**32, size=(2, 513), dtype=np.uint32)
    want = numpy_threefry(k[0], k[1], x[0], x[1])
    got = jax.jit(jax.vmap(lambda a, b, c, d: jax.extend.random.threefry2x32_p.bind(a, b, c, d)))(
        *(jnp.asarray(v) for v in (k[0], k[1], x[0], x[1])))
    np.testing.assert_array_equal(np.asarray(got[0]), want[0])
    np.testing.assert_array_equal(np.asarray(got[1]), want[1])
    shared = jax.jit(lambda c: threefry_2x32(jnp.asarray(k[:, 0]), c))(jnp.asarray(x.ravel()))
    np.testing.assert_array_equal(np.asarray(shared).reshape(2, -1),
                                  np.stack(numpy_threefry(k[0, 0], k[1, 0], x[0], x[1])))


_DRAWS = """
import json, sys, hashlib
import numpy as np
import sgdlab as sl
import jax, jax.numpy as jnp
keys = jax.random.split(jax.random.key(3), 40)
out = {
    "normal": jax.jit(jax.vmap(lambda k: jax.random.normal(k, (5, 3))))(keys),
    "fold_in": jax.random.key_data(jax.jit(jax.vmap(jax.random.fold_in))(keys, jnp.arange(40))),
    "split": jax.random.key_data(jax.jit(lambda k: jax.random.split(k, 9))(keys[0])),
    "bits": jax.jit(lambda k: jax.random.bits(k, (1001,)))(keys[1]),
    "uniform": jax.jit(lambda k: jax.random.uniform(k, (257,)))(keys[2]),
}
with jax.enable_x64(True):  # 64-bit draws hash two counter words per number
    out["normal64"] = jax.jit(lambda k: jax.random.normal(k, (33,), jnp.float64))(keys[3])
    out["bits64"] = jax.jit(lambda k: jax.random.bits(k, (33,), jnp.uint64))(keys[4])
problem = sl.problems.noisy_quadratic(curvature=1.0, noise_cov=1.0)
study = sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": [0.1, 0.5],
                 "noise_std": [0.0, 0.3]}, steps=40, seeds=6, observe=sl.Observe(("loss",),
                 members=True))
ds = sl.run(study, progress=False)
out["study"] = ds["loss"].values
text = jax.jit(lambda k: jax.random.bits(k, (8,))).lower(keys[0]).as_text()
print(json.dumps({"hashes": {k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()
                             for k, v in out.items()}, "hlo": text}))
"""


def _draws(threefry):
    env = dict(os.environ, SGDLAB_THREEFRY=threefry)
    done = subprocess.run([sys.executable, "-c", _DRAWS], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_random_numbers_and_a_study_keep_the_bits_of_jaxs_own_lowering():
    ours, theirs = _draws("sgdlab"), _draws("jax")
    assert ours["hlo"] != theirs["hlo"]  # two different programs ...
    assert ours["hashes"] == theirs["hashes"]  # ... with the same bits
