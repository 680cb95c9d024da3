"""JAX's persistent compilation cache, on by default."""

from __future__ import annotations

import os

import jax


def compile_cache(path: str | os.PathLike | None | bool = None) -> str | None:
    """Turn JAX's persistent compilation cache on (default) or off; return its directory.

    Every compiled program is cached on disk (minimum compile time and entry size
    0), so rerunning a study, in this process or a new one, reads the program
    instead of compiling it. Args: ``path`` a directory, ``None`` for the default
    (``$SGDLAB_COMPILE_CACHE`` if set to a path, else ``$XDG_CACHE_HOME/sgdlab/jax``
    or ``~/.cache/sgdlab/jax``), ``False`` (or ``SGDLAB_COMPILE_CACHE=0``) to turn
    it off. Called on import with ``None``; a directory already set through JAX
    (``JAX_COMPILATION_CACHE_DIR``) is kept.
    """
    env = os.environ.get("SGDLAB_COMPILE_CACHE", "").strip()
    if path is False or (path is None and env.lower() in ("0", "off", "false", "no")):
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    if path is None or path is True:
        current = jax.config.jax_compilation_cache_dir
        if current and not env:
            path = current
        else:
            base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
                os.path.expanduser("~"), ".cache")
            path = env or os.path.join(base, "sgdlab", "jax")
    path = os.fspath(path)
    if jax.config.jax_compilation_cache_dir != path:
        _reset()  # a cache already opened elsewhere is reopened at the new place
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def _reset() -> None:
    try:
        from jax._src import compilation_cache
        if compilation_cache.is_initialized():
            compilation_cache.reset_cache()
    except (ImportError, AttributeError):  # a JAX without these internals: keep its cache
        pass
