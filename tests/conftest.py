"""Suite-wide hygiene: drop compiled programs after each test module.

Every compiled XLA program keeps about six memory mappings on CPU until it is freed.
The suite compiles thousands of distinct programs in one process, which crossed the
kernel's per-process limit (vm.max_map_count = 65530) and crashed XLA's compiler with
SIGSEGV late in a CI run. Clearing JAX's caches between modules keeps the count at a
few thousand; tests inside a module still share their programs.
"""

import jax
import pytest


@pytest.fixture(autouse=True, scope="module")
def _fresh_compile_caches():
    yield
    jax.clear_caches()


def _map_count() -> int:
    try:
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f)
    except OSError:  # not Linux
        return 0


def pytest_terminal_summary(terminalreporter):
    n = _map_count()
    if n:
        terminalreporter.write_line(f"memory mappings at the end of the run: {n}")
