"""Provenance of a result: package versions, the device, the configuration JSON and diffs.

Kept apart from the engine and the result store so that both can use it without
importing each other.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import optax


def config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """The differing keys of two nested configurations, as ``key: old -> new`` lines."""
    keys = sorted(set(a) | set(b))
    diff = []
    for k in keys:
        va, vb = a.get(k, "<missing>"), b.get(k, "<missing>")
        if isinstance(va, dict) and isinstance(vb, dict):
            diff += config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            diff.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return diff


def versions() -> dict[str, str]:
    """Versions of the packages a result depends on."""
    import platform

    import jaxlib
    import xarray

    from sgdlab import __version__

    return {"sgdlab": __version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "optax": optax.__version__, "numpy": np.__version__, "xarray": xarray.__version__,
            "python": platform.python_version()}


def device_description() -> str:
    """``platform:kind xN`` of the default devices."""
    devs = jax.devices()
    d = devs[0]
    return f"{d.platform}:{getattr(d, 'device_kind', d.platform)} x{len(devs)}"


def config_json(study) -> str:
    """The JSON of ``study.describe()`` (sorted keys), as stored with every result."""
    return json.dumps(study.describe(), sort_keys=True)
