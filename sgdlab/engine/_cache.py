"""JAX's persistent compilation cache: on by default, with entries written atomically.

Every compiled program is kept on disk, so rerunning a study (in this process or a
new one), or a test suite rerunning the same shapes, reads its programs instead of
compiling them. The cache is turned on when :mod:`sgdlab.engine` is imported, unless
``SGDLAB_COMPILE_CACHE=0`` (or ``off``) or the user configured JAX's own cache
directory (``JAX_COMPILATION_CACHE_DIR``), which is then kept.

Entries are written to a temporary file and renamed into place. JAX's own file cache
(jax 0.10) writes an entry in place without a lock, so a process that reads it while
another writes it, or after that writer was killed, reads a torn entry (JAX then warns
and recompiles, every time, because a present entry is never rewritten). Renaming
makes an entry appear whole or not at all. The cache is bounded (:data:`MAX_BYTES`,
2 GiB unless ``SGDLAB_COMPILE_CACHE_MAX_GB`` says otherwise): opening a cache above the
bound drops its oldest entries (:func:`prune`).
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from pathlib import Path

import jax

from sgdlab._validate import env_off

_SUFFIX = "-cache"  # the file name JAX's own cache uses, so either reads the other's entries


def _env() -> tuple[bool, str | None]:
    """``SGDLAB_COMPILE_CACHE`` read once: (wanted, the directory it names or None).
    Unset, 1/on/true/yes: wanted at the default place; 0/off/false/no: off; else a path."""
    env = os.environ.get("SGDLAB_COMPILE_CACHE", "").strip()
    if env_off("SGDLAB_COMPILE_CACHE"):
        return False, None
    if not env or env.lower() in ("1", "on", "true", "yes"):
        return True, None
    return True, env


def _default_dir() -> str:
    named = _env()[1]
    if named:
        return named
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "sgdlab", "jax")


def compile_cache(path: str | os.PathLike | None | bool = None) -> str | None:
    """Turn JAX's persistent compilation cache on (default) or off; return its directory.

    Every compiled program is cached on disk (minimum compile time and entry size
    0), so rerunning a study, in this process or a new one, reads the program
    instead of compiling it. Args: ``path`` a directory, ``None`` for the default
    (``$SGDLAB_COMPILE_CACHE`` if set to a path, else ``$XDG_CACHE_HOME/sgdlab/jax``
    or ``~/.cache/sgdlab/jax``; a directory already set through JAX is kept),
    ``False`` (or ``SGDLAB_COMPILE_CACHE=0`` with ``path=None``) to turn it off.
    Called when :mod:`sgdlab.engine` is imported.
    """
    if path is False or (path is None and not requested()):
        jax.config.update("jax_enable_compilation_cache", False)
        _reset()  # drop the opened store too (the config switch alone already stops its use)
        return None
    if path is None or path is True:
        current = jax.config.jax_compilation_cache_dir
        path = current if current and _env()[1] is None else _default_dir()
    path = os.fspath(path)
    if jax.config.jax_compilation_cache_dir != path:
        _reset()  # a cache already opened elsewhere is reopened at the new place
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:  # an unwritable place costs compiles, never the run
        warnings.warn(f"sgdlab: compile cache off ({path} cannot be created: {e.strerror}); "
                      "set SGDLAB_COMPILE_CACHE=PATH to move it", stacklevel=2)
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _install(path)
    return path


def requested() -> bool:
    """Whether the cache is wanted: yes unless ``SGDLAB_COMPILE_CACHE`` is 0/off/false/no."""
    return _env()[0]


def _jax_cache_module():
    """JAX's cache module, or None for a JAX whose internals differ (its own cache is used)."""
    try:
        from jax._src import compilation_cache as cc
        from jax._src.compilation_cache_interface import CacheInterface
    except ImportError:
        return None, None
    needed = ("_cache", "_cache_initialized", "_cache_initialized_mutex", "reset_cache")
    if not all(hasattr(cc, n) for n in needed):
        return None, None
    return cc, CacheInterface


def _reset() -> None:
    cc, _ = _jax_cache_module()
    if cc is not None:
        cc.reset_cache()


MAX_BYTES = 2 * 1024**3
"""The cache's size bound: when a process opens a cache above it, the entries written
longest ago go until it is under ¾ of it (``SGDLAB_COMPILE_CACHE_MAX_GB`` changes it)."""


def prune(path: str | os.PathLike, max_bytes: int | None = None) -> int:
    """Bound the cache at ``path``: drop the oldest entries (by write time) while it holds
    more than ``max_bytes``, down to ¾ of it, and temporary files of writers that died
    over an hour ago. Returns the number of entries dropped. A reader of a dropped entry
    sees a miss and compiles."""
    if max_bytes is None:
        env = os.environ.get("SGDLAB_COMPILE_CACHE_MAX_GB", "").strip()
        max_bytes = int(float(env) * 1024**3) if env else MAX_BYTES
    now, entries = time.time(), []
    try:
        for f in os.scandir(path):
            st = f.stat()
            if f.name.endswith(".tmp") and now - st.st_mtime > 3600:
                _unlink(f.path)
            elif f.name.endswith(_SUFFIX):
                entries.append((st.st_mtime, st.st_size, f.path))
    except OSError:
        return 0
    total = sum(e[1] for e in entries)
    if total <= max_bytes:
        return 0
    dropped = 0
    for _, size, f in sorted(entries):
        if total <= 0.75 * max_bytes:
            break
        _unlink(f)
        total -= size
        dropped += 1
    return dropped


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:  # gone already (another process pruned it)
        pass


def _install(path: str) -> None:
    """Make JAX read and write entries through :class:`_AtomicFiles` at ``path``."""
    prune(path)
    cc, interface = _jax_cache_module()
    if cc is None:
        return
    cache = _atomic_files_class(interface)(path)
    with cc._cache_initialized_mutex:
        cc._cache = cache
        cc._cache_initialized = True


_CLASS: dict = {}


def _atomic_files_class(interface):
    """The atomic file cache as a subclass of JAX's cache interface (built once)."""
    if "cls" in _CLASS:
        return _CLASS["cls"]

    class _AtomicFiles(interface):
        """One file per entry; a new entry is written under a unique name, then renamed."""

        def __init__(self, path: str):
            self._path = Path(path)
            self._lock = threading.Lock()

        def get(self, key: str) -> bytes | None:
            if not key:
                raise ValueError("key cannot be empty")
            try:
                return (self._path / f"{key}{_SUFFIX}").read_bytes()
            except FileNotFoundError:
                return None

        def put(self, key: str, value: bytes) -> None:
            if not key:
                raise ValueError("key cannot be empty")
            final = self._path / f"{key}{_SUFFIX}"
            if final.exists():
                return
            with self._lock:
                tmp = self._path / f".{key}.{os.getpid()}.{threading.get_ident()}.tmp"
                try:
                    tmp.write_bytes(value)
                    os.replace(tmp, final)  # atomic: readers see all of it or nothing
                except OSError:
                    tmp.unlink(missing_ok=True)  # a full disk costs a compile, not the run

        def clear(self) -> None:
            for f in self._path.glob(f"*{_SUFFIX}"):
                f.unlink(missing_ok=True)

    _CLASS["cls"] = _AtomicFiles
    return _AtomicFiles
