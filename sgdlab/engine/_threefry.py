"""A CPU lowering of JAX's Threefry-2x32 hash that XLA compiles in about half the time.

Every ``jax.random`` call (``key``, ``fold_in``, ``split``, ``normal``, ...) hashes with
Threefry-2x32 (20 rounds). On CPU JAX lowers each call to a five-iteration loop whose
carry also holds the three key words and the rotation constants, rotated every
iteration. XLA:CPU compiles every call site of that loop into about ten kernels, and
those kernels were most of sgdlab's compile time: about 1.8 s of the 2.6 s W1 init
program and 1.1 s of its 2.2 s segment (measured by swapping in a trivial hash;
benchmarks/RESULTS.md).

The lowering here computes the same function, so every random number keeps its bits:
the loop carries only the two state words (packed in one 64-bit word), and each
iteration picks its rotation amounts and key words with selects on the iteration
number, so its body is one elementwise kernel, updated in place. It is registered for
the CPU platform when :mod:`sgdlab.engine` is imported (``SGDLAB_THREEFRY=jax`` keeps
JAX's own); other platforms keep theirs. Registration is process-wide: it changes how
every later ``jax.random`` program on the CPU is compiled, never what it computes
(``tests/test_threefry.py`` checks the published test vectors, an independent NumPy
hash, and JAX's own lowering).

:func:`host_threefry2x32` is the same hash in NumPy, for the few keys the host derives
before a program runs (every member's keys, :func:`sgdlab.engine.seed_key_data`), so that
no program compiles the hashing of its keys.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.interpreters import mlir

try:  # jax.extend.random exports the primitive; without it JAX's own lowering stays
    from jax.extend.random import threefry2x32_p
except ImportError:  # pragma: no cover
    threefry2x32_p = None

_ROTATIONS = ((13, 17), (15, 29), (26, 16), (6, 24))  # (even, odd) iteration, per round
_PARITY = 0x1BD11BDA


def _rotate_left(x, d):
    return jax.lax.shift_left(x, d) | jax.lax.shift_right_logical(x, jnp.uint32(32) - d)


def threefry2x32(k1, k2, x1, x2):
    """Threefry-2x32 with 20 rounds (Salmon et al. 2011): ``(k1, k2)`` the key words,
    ``(x1, x2)`` the counter words (uint32, broadcast together); returns the two output
    words. Iteration ``i`` of the loop is four rounds followed by key injection ``i + 1``.

    The loop carries both words packed in one uint64 (low word first), so its body reads
    and writes one element per element: one kernel that XLA updates in place. Stacked as
    a ``[2, ...]`` array (the version before), each element of the result read two
    elements of the carry, and XLA copied the carry every iteration (W1: 11% less XLA
    time packed, benchmarks/RESULTS.md). The 64-bit type is enabled inside the lowering
    alone; the words are 32-bit arithmetic either way.
    """
    u, w = jnp.uint32, jnp.uint64
    shape = jnp.broadcast_shapes(*(jnp.shape(v) for v in (k1, k2, x1, x2)))
    with jax.enable_x64(True):
        def pack(a, b):
            return a.astype(w) | (b.astype(w) << w(32))

        def unpack(y):
            return y.astype(u), (y >> w(32)).astype(u)

        k3 = k1 ^ k2 ^ u(_PARITY)
        y = pack(jnp.broadcast_to(x1 + k1, shape), jnp.broadcast_to(x2 + k2, shape))

        def four_rounds(i, y):
            a, b = unpack(y)
            odd = (i & 1) == 1  # bit operations and compares: no integer division to fuse
            for r_even, r_odd in _ROTATIONS:
                a = a + b
                b = a ^ _rotate_left(b, jnp.where(odd, u(r_odd), u(r_even)))
            n = i + 1  # key injection n adds words (j, j + 1) of (k1, k2, k3), j = n mod 3
            j = n - jnp.where(n >= 3, 3, 0)
            ka = jnp.where(j == 0, k1, jnp.where(j == 1, k2, k3))
            kb = jnp.where(j == 0, k2, jnp.where(j == 1, k3, k1))
            return pack(a + ka, b + kb + n.astype(u))

        return unpack(jax.lax.fori_loop(jnp.int32(0), jnp.int32(5), four_rounds, y))


def host_threefry2x32(k1, k2, x1, x2):
    """:func:`threefry2x32` in NumPy (uint32 words, broadcast together), on the host.

    The same loop: five iterations of four rounds, each followed by a key injection.
    The words are held as 1-d arrays, whose uint32 arithmetic wraps around silently (no
    ``np.errstate``: entering one replaces NumPy's error state, which would free objects
    a caller's ``gc.freeze()`` holds).
    """
    u = np.uint32
    k1, k2, x1, x2 = np.broadcast_arrays(*(np.asarray(v, u) for v in (k1, k2, x1, x2)))
    shape = k1.shape
    k1, k2, x1, x2 = (v.reshape(-1) for v in (k1, k2, x1, x2))
    ks = (k1, k2, k1 ^ k2 ^ u(_PARITY))
    a, b = x1 + ks[0], x2 + ks[1]
    for i in range(5):
        for rotation in _ROTATIONS:
            d = u(rotation[i & 1])
            a = a + b
            b = a ^ ((b << d) | (b >> (u(32) - d)))
        n = i + 1
        a, b = a + ks[n % 3], b + ks[(n + 1) % 3] + u(n)
    return a.reshape(shape), b.reshape(shape)


_INSTALLED = False


def requested() -> bool:
    """Whether ``SGDLAB_THREEFRY`` leaves this lowering on (unset or ``sgdlab``)."""
    return os.environ.get("SGDLAB_THREEFRY", "sgdlab").strip().lower() != "jax"


def install_threefry_lowering() -> None:
    """Register :func:`threefry2x32` as the CPU lowering of JAX's Threefry primitive
    (idempotent; programs compiled before keep the lowering they were compiled with)."""
    global _INSTALLED
    if not _INSTALLED and threefry2x32_p is not None:
        mlir.register_lowering(threefry2x32_p,
                               mlir.lower_fun(threefry2x32, multiple_results=True),
                               platform="cpu")
        _INSTALLED = True
