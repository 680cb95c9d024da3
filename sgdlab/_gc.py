"""Keep Python's garbage collector off the long-lived objects while a study compiles.

A full collection walks every live object: after ``import sgdlab`` (jax, numpy, optax,
xarray, zarr) about 180,000, and 225,000 with the experiments, scipy and matplotlib loaded,
so 0.08-0.12 s per full collection on a 2-core machine. Tracing and lowering a study's
programs allocates enough to start one, and it fell in the first study's compile
(benchmarks/RESULTS.md, "A rerun's compile"). :func:`frozen_during` wraps ``sl.run``:
on entry the objects alive then are moved to the permanent generation (``gc.freeze()``),
which collections skip, and on exit they are moved back (``gc.unfreeze()``), so nothing
outlives the call. It does nothing when something is frozen already (a caller's own
``gc.freeze()``, or an outer run), or when ``SGDLAB_GC_FREEZE`` is 0/off/false/no.
"""

from __future__ import annotations

import functools
import gc

from sgdlab._validate import env_off


def frozen_during(fn):
    """``fn`` with the objects alive at each call frozen until it returns (see the module)."""

    @functools.wraps(fn)
    def wrapper(*args, **kw):
        if env_off("SGDLAB_GC_FREEZE") or gc.get_freeze_count():
            return fn(*args, **kw)
        gc.freeze()
        try:
            return fn(*args, **kw)
        finally:
            gc.unfreeze()

    return wrapper
