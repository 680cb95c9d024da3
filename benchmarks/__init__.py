"""sgdlab benchmarks: ``python -m benchmarks`` or ``sgdlab bench`` (see :mod:`benchmarks.bench`)."""

from benchmarks.bench import main

__all__ = ["main"]
