"""Experiment parameters: the keys of ``--set``, with type, range and choices.

Configuration is resolved as defaults ← preset ← TOML file ← ``--set`` values, and
every value is validated when the configuration is built (one-line ValueError
naming the key, the value and what is allowed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sgdlab._validate import fail


@dataclass(frozen=True)
class Param:
    """One experiment parameter (a key of ``--set``)."""

    name: str
    kind: type  # float, int, str or bool
    default: Any
    help: str
    list: bool = False
    choices: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def parse(self, text: str) -> Any:
        """Parse a ``--set`` string (lists are comma separated)."""
        if not self.list and "," in text:
            fail(self.name, text, "takes one value, not a list")
        parts = [p.strip() for p in text.split(",")] if self.list else [text.strip()]
        if self.list and any(p == "" for p in parts):
            fail(self.name, text, "expected a comma-separated list without empty items")
        values = [self._parse_one(p) for p in parts]
        return self.check(values if self.list else values[0])

    def _parse_one(self, s: str) -> Any:
        if self.kind is bool:
            if s.lower() in ("true", "1", "yes"):
                return True
            if s.lower() in ("false", "0", "no"):
                return False
            fail(self.name, s, "expected true or false")
        if self.kind is str:
            return s
        try:
            x = float(s) if self.kind is float else int(s)
        except ValueError:
            fail(self.name, s, f"expected {'a number' if self.kind is float else 'an integer'}")
        return x

    def check(self, value: Any) -> Any:
        """Validate a value (from a preset, a TOML file or the API)."""
        if self.list:
            if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
                value = [value]
            value = list(value)
            if not value:
                fail(self.name, value, "expected at least one value")
            return [self._check_one(v) for v in value]
        if isinstance(value, list | tuple | np.ndarray):
            fail(self.name, value, "takes one value, not a list")
        return self._check_one(value)

    def _check_one(self, v: Any) -> Any:
        k = self.kind
        if k is bool:
            if not isinstance(v, bool | np.bool_):
                fail(self.name, v, "expected true or false")
            return bool(v)
        if k is str:
            if not isinstance(v, str):
                fail(self.name, v, "expected a string")
            if self.choices is not None and v not in self.choices:
                fail(self.name, v, "expected one of " + ", ".join(self.choices))
            return v
        numeric = isinstance(v, int | float | np.integer | np.floating)
        if isinstance(v, bool | np.bool_) or not numeric:
            fail(self.name, v, f"expected {'a number' if k is float else 'an integer'}")
        if k is int:
            if isinstance(v, float | np.floating) and not float(v).is_integer():
                fail(self.name, v, "expected an integer")
            v = int(v)
        else:
            v = float(v)
            if not math.isfinite(v):
                fail(self.name, v, "expected a finite number")
        lo = self.low if self.low is not None else -math.inf
        hi = self.high if self.high is not None else math.inf
        if v < lo or v > hi or (self.low_open and v == lo):
            bracket = "(" if self.low_open else "["
            fail(self.name, v, f"expected a value in {bracket}{lo:g}, {hi:g}]")
        return v

    def kind_text(self) -> str:
        """``float``, ``int[,...]``, ``str one of a/b`` ..."""
        extra = f" one of {'/'.join(self.choices)}" if self.choices else ""
        return self.kind.__name__ + ("[,...]" if self.list else "") + extra

    def describe(self, value: Any = None, source: str | None = None) -> str:
        """One line: name, kind, help and default; with ``value``, the value that will run.

        ``source`` says where a value that differs from the default comes from (e.g.
        ``preset paper``, ``--set``).
        """
        if value is None:
            return f"{self.name} ({self.kind_text()}): {self.help} [default {self.default!r}]"
        origin = "default" if source is None else f"{source}; default {self.default!r}"
        return f"{self.name} = {value!r}  [{origin}]  ({self.kind_text()}): {self.help}"
