"""sgdlab benchmarks: ``python -m benchmarks`` or ``sgdlab bench`` (see :mod:`benchmarks.bench`)."""

# sgdlab first: it quiets jaxlib's spurious per-program error on reading the compile cache
# (jax-ml/jax#38445), which only works before jax is imported.
import sgdlab  # noqa: F401, I001

from benchmarks.bench import main

__all__ = ["main"]
