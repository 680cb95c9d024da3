"""The experiment record and the registry: experiments are discovered, not listed.

Every module of :mod:`sgdlab.experiments` whose name does not start with ``_`` is
imported on the first look-up and registers its :class:`Experiment`.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgdlab._validate import fail
from sgdlab.experiments._params import Param
from sgdlab.experiments._verdict import Outcome

PRESETS = ("quick", "paper")


@dataclass(frozen=True)
class Experiment:
    """A named, reproducible experiment (see the module docstring)."""

    name: str
    study: str
    title: str
    params: tuple[Param, ...]
    presets: Mapping[str, Mapping[str, Any]]
    studies: Callable[[dict, int], dict[str, Any]]      # (config, seed) -> {name: Study}
    # (config, {name: Dataset}) -> Outcome; may also accept seed= (the run's base seed)
    analyze: Callable[..., Outcome]
    figures: Callable[[dict, dict], dict]
    validate: Callable[[dict], None] | None = None

    @property
    def param_map(self) -> dict[str, Param]:
        return {p.name: p for p in self.params}

    def resolve(self, preset: str = "quick", overrides: Mapping[str, Any] | None = None,
                config_file: str | os.PathLike | None = None,
                set_strings: Sequence[str] = ()) -> dict:
        """Defaults ← preset ← TOML file ← overrides (Python values) ← ``--set`` strings."""
        if preset not in PRESETS:
            fail("preset", preset, "expected one of " + ", ".join(PRESETS))
        params = self.param_map
        cfg = {p.name: p.check(p.default) for p in self.params}

        def apply(items: Mapping[str, Any], source: str, parse: bool = False):
            for key, value in items.items():
                if key not in params:
                    fail(key, value, f"unknown parameter of {self.name} ({source}); valid keys: "
                         + ", ".join(params))
                cfg[key] = params[key].parse(value) if parse else params[key].check(value)

        apply(self.presets.get(preset, {}), f"preset {preset}")
        if config_file is not None:
            path = Path(config_file)
            try:
                with open(path, "rb") as f:
                    table = tomllib.load(f)
            except FileNotFoundError:
                fail("--config", str(path), "file not found")
            except tomllib.TOMLDecodeError as e:
                fail("--config", str(path), f"not valid TOML ({e})")
            table = table.get(self.name, table)
            apply(table, f"config file {path.name}")
        apply(overrides or {}, "overrides")
        parsed = {}
        for item in set_strings:
            if "=" not in item:
                fail("--set", item, "expected KEY=VALUE")
            key, _, value = item.partition("=")
            parsed[key.strip()] = value
        apply(parsed, "--set", parse=True)
        if self.validate is not None:
            self.validate(cfg)
        return cfg


REGISTRY: dict[str, Experiment] = {}


def register(exp: Experiment) -> Experiment:
    REGISTRY[exp.name] = exp
    return exp


def get(name: str) -> Experiment:
    _load_all()
    if name not in REGISTRY:
        fail("experiment", name, "expected one of " + ", ".join(sorted(REGISTRY)))
    return REGISTRY[name]


def names() -> list[str]:
    _load_all()
    return list(REGISTRY)


def _load_all():
    import sgdlab.experiments as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"sgdlab.experiments.{info.name}")
