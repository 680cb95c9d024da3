"""Small validation helpers: every configuration error is a one-line ValueError.

Each message names the field, the value given, and what is allowed, so that a
user (or the CLI, which prints it as one line) knows what to change.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

OFF_WORDS = ("0", "off", "false", "no")
"""What turns an sgdlab environment switch off (``SGDLAB_COMPILE_CACHE``, ``SGDLAB_GC_FREEZE``)."""


def env_off(name: str) -> bool:
    """Whether the environment variable ``name`` says off (0/off/false/no, any case)."""
    return os.environ.get(name, "").strip().lower() in OFF_WORDS


def fail(field: str, value: Any, allowed: str) -> None:
    """Raise the standard configuration error."""
    raise ValueError(f"{field}={value!r} is invalid: {allowed}")


def positive_int(field: str, value: Any, *, minimum: int = 1) -> int:
    """Return ``value`` as an int >= ``minimum`` or raise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or (
        isinstance(value, float) and not value.is_integer()
    ):
        fail(field, value, f"expected an integer >= {minimum}")
    value = int(value)
    if value < minimum:
        fail(field, value, f"expected an integer >= {minimum}")
    return value


def finite_float(field: str, value: Any, *, low: float = -math.inf, high: float = math.inf,
                 low_open: bool = False) -> float:
    """Return ``value`` as a finite float in [low, high] (or (low, high]) or raise."""
    if isinstance(value, bool):
        fail(field, value, "expected a number")
    try:
        x = float(value)
    except (TypeError, ValueError):
        fail(field, value, "expected a number")
    if not math.isfinite(x):
        fail(field, value, "expected a finite number")
    if (low_open and x <= low) or x < low or x > high:
        lo = "(" if low_open else "["
        fail(field, value, f"expected a number in {lo}{low}, {high}]")
    return x


def choice(field: str, value: Any, options: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``options`` or raise listing them."""
    options = tuple(options)
    if value not in options:
        fail(field, value, "expected one of " + ", ".join(map(str, options)))
    return value


def fmt(x: float) -> str:
    """Short, unambiguous rendering of a number for error messages (2.0, 2.5, 1e-07)."""
    s = f"{float(x):.6g}"
    if s.lstrip("-").isdigit():
        s += ".0"
    return s


def momentum_violation(momentum: Any) -> str | None:
    """Why heavy-ball momentum μ (a number or an array) is outside |μ| < 1, or None.

    |μ| < 1 is the one momentum bound: beyond it heavy ball is unstable on every
    quadratic and has no stationary law. The reason names the first offending entry,
    e.g. ``"|μ| = 1.0 ≥ 1"``; callers raise it with their own error type.
    """
    a = np.abs(np.asarray(momentum, dtype=np.float64))
    bad = a >= 1
    if np.any(bad):
        return f"|μ| = {fmt(a[bad].flat[0])} ≥ 1"
    return None
