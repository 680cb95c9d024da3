"""Multi-process runs (``jax.distributed``): start-up and host-side coordination.

Everything here talks to the distributed runtime's key-value store (the
coordination service of ``jax.distributed``) from the host, between segments:
no device collective, no filesystem timing. With one process (no runtime) the
same calls work locally.
"""

from __future__ import annotations

import itertools
import os
import time

import jax

ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
"""The variables that make ``sgdlab run`` join a distributed job (SLURM's alone do not)."""

WAIT_S = 3600.0
"""How long a process waits for the others at a handshake before giving up."""


def requested(flag: bool, environ=None) -> bool:
    """Whether to join a distributed job: ``--distributed`` or all of :data:`ENV` set."""
    environ = os.environ if environ is None else environ
    return bool(flag) or all(environ.get(k) for k in ENV)


def initialize(environ=None) -> None:
    """``jax.distributed.initialize()``, with gloo collectives on CPU.

    The coordinator, process count and process id come from :data:`ENV` when set,
    otherwise from jax's cluster detection (SLURM, ...).
    """
    environ = os.environ if environ is None else environ
    kw: dict = {}
    for var, key in zip(ENV, ("coordinator_address", "num_processes", "process_id"),
                        strict=True):
        value = environ.get(var)
        if not value:
            continue
        if key != "coordinator_address":
            try:
                value = int(value)
            except ValueError:
                raise ValueError(f"{var}={value!r} is invalid: expected an integer") from None
        kw[key] = value
    # only the CPU client reads it; on accelerators it is inert
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(**kw)
    except (RuntimeError, ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"--distributed: could not join the distributed job ({first})") from None


def _client():
    from jax._src import distributed
    return distributed.global_state.client


def is_writer() -> bool:
    """Whether this process writes the outputs (process 0, or a single process)."""
    return jax.process_index() == 0


def barrier(name: str, timeout_s: float = WAIT_S) -> None:
    """Wait until every process reaches ``barrier(name)`` (host-side; no-op alone)."""
    client = _client()
    if client is not None and jax.process_count() > 1:
        client.wait_at_barrier(f"sgdlab/{name}", int(timeout_s * 1000))


_RUNS = itertools.count()


class Coordination:
    """One run's namespace in the key-value store (``sgdlab/run<n>/...``).

    Every process calls the engine for the same studies in the same order, so the
    n-th distributed run of each process shares the namespace of the others'.
    """

    def __init__(self):
        self.client = _client() if jax.process_count() > 1 else None
        self.nproc, self.pid = jax.process_count(), jax.process_index()
        self.prefix = f"sgdlab/run{next(_RUNS)}/"
        self.local: dict[str, str] = {}

    def set(self, key: str, value: str = "1") -> bool:
        """Set ``key`` once; False if it was already set (by any process)."""
        if self.client is None:
            if key in self.local:
                return False
            self.local[key] = value
            return True
        try:
            self.client.key_value_set(self.prefix + key, value)
            return True
        except Exception:  # ALREADY_EXISTS
            return False

    def try_get(self, key: str) -> str | None:
        if self.client is None:
            return self.local.get(key)
        try:
            return self.client.key_value_try_get(self.prefix + key)
        except Exception:  # NOT_FOUND
            return None

    def get(self, key: str, timeout_s: float = WAIT_S) -> str:
        if self.client is None:
            return self.local[key]
        return self.client.blocking_key_value_get(self.prefix + key, int(timeout_s * 1000))

    def count(self, directory: str) -> int:
        """How many keys are set under ``directory/``."""
        if self.client is None:
            return sum(k.startswith(directory + "/") for k in self.local)
        return len(self.client.key_value_dir_get(self.prefix + directory + "/"))

    def entries(self, directory: str) -> dict[str, str]:
        """The keys set under ``directory/`` (without the prefix) and their values."""
        if self.client is None:
            return {k[len(directory) + 1:]: v for k, v in self.local.items()
                    if k.startswith(directory + "/")}
        n = len(self.prefix + directory) + 1
        return {k[n:]: v for k, v in
                self.client.key_value_dir_get(self.prefix + directory + "/")}

    def wait_count(self, directory: str, n: int, timeout_s: float = WAIT_S) -> None:
        t0 = time.monotonic()
        while self.count(directory) < n:
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"gave up after {timeout_s:.0f} s waiting for the other "
                                   f"processes ({directory})")
            time.sleep(0.05)

    def barrier(self, name: str, timeout_s: float = WAIT_S) -> None:
        if self.client is not None:
            self.client.wait_at_barrier(self.prefix + name, int(timeout_s * 1000))
