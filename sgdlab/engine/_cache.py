"""JAX's persistent compilation cache: on by default on accelerators, opt-in on CPU.

On CPU, jaxlib 0.10's loader of cached executables is unreliable: on x86 CPUs whose
LLVM tuning flags it takes for ISA features it logs a long error per program
(jax-ml/jax#38445), and in this project's CI it crashed (SIGSEGV inside
``compilation_cache.get_executable_and_time``) reading an entry written by an earlier
process. So on CPU the cache is used only when asked for (``SGDLAB_COMPILE_CACHE=PATH``
or ``=1``, or :func:`compile_cache`); on a GPU or TPU it is on by default.
"""

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
    it off. Called on import when ``SGDLAB_COMPILE_CACHE`` asks for it, and by
    :func:`auto_enable` on the first run on an accelerator; a directory already set
    through JAX (``JAX_COMPILATION_CACHE_DIR``) is kept.
    """
    env = os.environ.get("SGDLAB_COMPILE_CACHE", "").strip()
    if env.lower() in ("1", "on", "true", "yes"):
        env = ""
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


def requested() -> bool:
    """Whether ``SGDLAB_COMPILE_CACHE`` asks for the cache (a path, or 1/on/true/yes)."""
    env = os.environ.get("SGDLAB_COMPILE_CACHE", "").strip().lower()
    return bool(env) and env not in ("0", "off", "false", "no")


_AUTO = {"done": False}


def auto_enable() -> None:
    """Before the first run: turn the cache on at its default place on a GPU or TPU.

    Does nothing when the user chose (``SGDLAB_COMPILE_CACHE`` set, or a JAX cache
    directory configured) or the backend is the CPU (see the module docstring).
    """
    if _AUTO["done"]:
        return
    _AUTO["done"] = True
    if os.environ.get("SGDLAB_COMPILE_CACHE", "").strip() or jax.config.jax_compilation_cache_dir:
        return
    if jax.default_backend() != "cpu":
        compile_cache(None)
