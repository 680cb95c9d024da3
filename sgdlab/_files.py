"""Files that appear whole or not at all (checkpoints, manifests, summaries)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import IO

import numpy as np

TMP_MARK = ".tmp-"


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], binary: bool) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file in the same directory,
    fsync it, then ``os.replace`` it into place; on any error nothing is left behind."""
    path = os.fspath(path)
    # the ".tmp-" marker lets a resume recognize and drop the leftovers of a killed write
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}{TMP_MARK}",
                               dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write an ``.npz`` of ``arrays`` atomically."""
    atomic_write(path, lambda f: np.savez(f, **arrays), binary=True)
