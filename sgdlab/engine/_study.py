"""The study (problem, optimizer, grid x seeds, recorders) and its validation."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab._validate import fail, finite_float, positive_int
from sgdlab.engine._recorders import FirstPassage, ObservableSpec, Observe, Stationary
from sgdlab.engine._state import STREAM_VERSION, _norm, abstract_key
from sgdlab.optim import RANGES, Optimizer
from sgdlab.problems import Observation, Problem

MEMBER_LAYOUTS = ("auto", "vmap", "map")
"""Values of :attr:`Study.member_layout`."""

MAP_MEMBER_BYTES = 4 * 2**20
"""Parameter bytes of one member from which ``member_layout="auto"`` runs the members of
a chunk one after another on CPU (4 MiB: 10⁶ float32 numbers). Measured crossover on 2
cores (benchmarks/RESULTS.md, "Members one after another"): a 64-w-w-1 ReLU net, batch
128, ran 1.1× faster vectorized at w = 768 (0.6·10⁶ parameters) and 1.1–1.6× faster one
after another from w = 1024 (1.1·10⁶) up."""


def float_dtype() -> str:
    """The floating dtype that programs traced now use (``float64`` under x64), without an
    array op (``jnp.zeros(()).dtype`` dispatches one: 0.2 ms, a small study's run calls it
    several times)."""
    return str(jax.dtypes.canonicalize_dtype(jnp.float64))


def _builtin_observables(problem: Problem) -> dict[str, Callable[[Observation], jnp.ndarray]]:
    def tree_norm(t):
        return _norm(t)

    obs = {
        "loss": lambda o: o.loss,
        "grad_norm": lambda o: o.grad_norm,
        "param_norm": lambda o: tree_norm(o.params),
        "distance": lambda o: tree_norm(jax.tree_util.tree_map(jnp.subtract, o.params, o.params0)),
    }
    if problem.risk is not None:
        obs["risk"] = lambda o: problem.risk(o.params, o.data, o.hp)
    obs.update(problem.observables)
    return obs


def _resolve(spec: ObservableSpec, available: Mapping[str, Callable], where: str):
    if isinstance(spec, tuple) and len(spec) == 2 and callable(spec[1]):
        return spec[0], spec[1]
    if isinstance(spec, str):
        if spec not in available:
            fail(where, spec, "expected one of " + ", ".join(sorted(available))
                 + " or a (name, function) pair")
        return spec, available[spec]
    fail(where, spec, "expected an observable name or a (name, function) pair")
    raise AssertionError


@dataclass(frozen=True, eq=False)
class Study:
    """A Monte Carlo study: a problem, an optimizer, a hyperparameter grid × seeds.

    Args:
      problem: a :class:`~sgdlab.problems.Problem`.
      optimizer: a :class:`~sgdlab.optim.Optimizer`.
      hparams: name -> scalar (fixed) or 1-D sequence (a swept grid dimension).
        Every value is a traced array at run time. Swept dimensions form a
        Cartesian product in the order given.
      steps: number of SGD updates per member.
      seeds: number of seeds (members per grid point).
      observe, stationary, first_passage: the recorders (any may be None).
      seed: the base seed of every key.
      divergence_bound: a member whose largest |parameter| exceeds it is frozen
        and flagged (non-finite values always are).
      segment_steps: steps per segment, the unit of checkpoints and stop requests
        (default: about 20 segments); a call of the compiled program runs several.
      chunk_size: seeds per chunk (default: from ``memory_budget``).
      memory_budget: bytes a chunk may use (default: a quarter of the RAM, at
        most 4 GiB, on CPU; half of the free memory on an accelerator).
      keep_init: keep each member's initial parameters (needed by ``distance``).
      block_seeds: seeds per statistics block (default ``min(32, seeds)``). Streamed
        statistics are reduced on the device over blocks of this many seeds and the
        blocks are merged on the host in seed order, so that statistics, like every
        member's values, are bitwise independent of chunking and device count.
        Chunks (and device shards) hold whole blocks.
      member_layout: how a step runs the members of a chunk: ``"vmap"`` (all of them
        in one vectorized step), ``"map"`` (one after another, each written in place into
        the carried state, inside the same compiled step: ``engine.member_by_member``)
        or ``"auto"`` (default: ``"map"`` on CPU when a member's parameters take at
        least :data:`MAP_MEMBER_BYTES`, where one member's matrices fit the cache and a
        batch of them does not; ``"vmap"`` otherwise).
        Either layout keeps every member's bits independent of the seed count, the
        chunking and the devices; the two differ from each other in rounding only.

    Raises:
      ValueError: at construction, naming the field, the value and what is allowed.
    """

    problem: Problem
    optimizer: Optimizer
    hparams: Mapping[str, Any]
    steps: int
    seeds: int
    observe: Observe | None = field(default_factory=Observe)
    stationary: Stationary | None = None
    first_passage: FirstPassage | None = None
    seed: int = 0
    divergence_bound: float = math.inf
    segment_steps: int | None = None
    chunk_size: int | None = None
    memory_budget: int | None = None
    keep_init: bool = False
    block_seeds: int | None = None
    static: Mapping[str, Any] | None = None
    recorders: tuple = ()
    member_layout: str = "auto"

    def __post_init__(self):
        if self.static is not None:
            self._init_static()
            return
        if not isinstance(self.problem, Problem):
            fail("problem", type(self.problem).__name__, "expected a sgdlab Problem")
        if not isinstance(self.optimizer, Optimizer):
            fail("optimizer", type(self.optimizer).__name__, "expected a sgdlab Optimizer")
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        set_("steps", positive_int("steps", self.steps))
        set_("seeds", positive_int("seeds", self.seeds))
        set_("seed", positive_int("seed", self.seed, minimum=0))
        if isinstance(self.divergence_bound, bool) or not (
                isinstance(self.divergence_bound, int | float) and self.divergence_bound > 0):
            fail("divergence_bound", self.divergence_bound, "expected a positive number (or inf)")
        if self.member_layout not in MEMBER_LAYOUTS:
            fail("member_layout", self.member_layout, "expected one of "
                 + ", ".join(MEMBER_LAYOUTS))
        for name in ("segment_steps", "chunk_size", "memory_budget", "block_seeds"):
            if getattr(self, name) is not None:
                set_(name, positive_int(name, getattr(self, name)))
        set_("hparams", self._check_hparams(self.hparams))
        set_("recorders", self._check_recorders(self.recorders))
        available = _builtin_observables(self.problem)
        if self.observe is not None:
            if not isinstance(self.observe, Observe):
                fail("observe", self.observe, "expected an Observe recorder or None")
            self.observe.steps_for(self.steps)
            names = [_resolve(spec, available, "observe.observables")[0]
                     for spec in self.observe.observables]
            for n in names:
                clash = [n + sfx for sfx in ("_mean", "_var", "_n") if n + sfx in names]
                if clash or names.count(n) > 1:
                    fail("observe.observables", n, "names must be distinct and not end like "
                         "another's statistics (" + ", ".join(clash or [n]) + ")")
        if self.stationary is not None:
            st = self.stationary
            if not isinstance(st, Stationary):
                fail("stationary", st, "expected a Stationary recorder or None")
            positive_int("stationary.burn_in", st.burn_in, minimum=0)
            if st.burn_in >= self.steps:
                fail("stationary.burn_in", st.burn_in, f"must be smaller than steps={self.steps}")
            positive_int("stationary.n_batches", st.n_batches)
            positive_int("stationary.thin", st.thin)
            if (self.steps - st.burn_in) // st.thin < st.n_batches:
                fail("stationary.n_batches", st.n_batches,
                     "need at least one recorded step per batch: lower n_batches or thin, "
                     "or run longer")
            if not st.observables:
                fail("stationary.observables", st.observables, "give at least one observable")
            for spec in st.observables:
                _resolve(spec, available, "stationary.observables")
        if self.first_passage is not None:
            fp = self.first_passage
            if not isinstance(fp, FirstPassage):
                fail("first_passage", fp, "expected a FirstPassage recorder or None")
            if isinstance(fp.predicate, str):
                if fp.predicate not in self.problem.events:
                    fail("first_passage.predicate", fp.predicate, "expected one of the problem's "
                         "events (" + ", ".join(sorted(self.problem.events)) + ") or a function")
            elif not callable(fp.predicate):
                fail("first_passage.predicate", fp.predicate,
                     "expected an event name or a function")
            positive_int("first_passage.every", fp.every)
            if not isinstance(fp.dim, str) or not fp.dim.isidentifier():
                fail("first_passage.dim", fp.dim, "expected a dimension name (identifier)")
            if fp.names is not None:
                names = tuple(fp.names) if isinstance(fp.names, list | tuple | np.ndarray) \
                    else None
                if not names or len(set(names)) != len(names):
                    fail("first_passage.names", fp.names,
                         "expected a non-empty sequence of distinct coordinate values")

    def _check_recorders(self, recorders) -> tuple:
        if not isinstance(recorders, list | tuple):
            recorders = (recorders,)
        names = {"observe", "stationary", "first_passage"}
        for r in recorders:
            missing = [m for m in ("init", "update", "collect", "merge", "to_dataset")
                       if not callable(getattr(r, m, None))]
            name = getattr(r, "name", None)
            if missing or not isinstance(name, str):
                fail("recorders", type(r).__name__, "a recorder needs a name (str) and the "
                     "methods init, update, collect, merge, to_dataset; missing "
                     + ", ".join(missing or ["name"]))
            if name in names:
                fail("recorders", name, "recorder names must be distinct and not observe, "
                     "stationary or first_passage")
            names.add(name)
            if callable(getattr(r, "validate", None)):
                r.validate(self)
        return tuple(recorders)

    def resolved_member_layout(self) -> str:
        """``"vmap"`` or ``"map"``: :attr:`member_layout` with ``"auto"`` decided (see
        the class docstring; benchmarks/RESULTS.md has the measured crossover)."""
        if self.member_layout != "auto":
            return self.member_layout
        if self.static is not None or jax.default_backend() != "cpu":
            return "vmap"
        if "_auto_layout" not in self.__dict__:  # decided once per study (it traces init)
            try:
                leaves = jax.tree_util.tree_leaves(
                    jax.eval_shape(self.problem.init, abstract_key()))
                size = sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in leaves)
            except Exception:  # a broken init: the study's checks name the mistake at run time
                size = 0
            object.__setattr__(self, "_auto_layout",
                               "map" if size >= MAP_MEMBER_BYTES else "vmap")
        return self.__dict__["_auto_layout"]

    def recorder_list(self) -> list:
        """The recorders whose states a program carries: Observe, Stationary, then the user's
        (FirstPassage keeps its steps in the member state)."""
        return [r for r in (self.observe, self.stationary) if r is not None] + \
            list(self.recorders)

    def _check_hparams(self, hparams) -> dict[str, np.ndarray]:
        if not isinstance(hparams, Mapping):
            fail("hparams", hparams, "expected a mapping name -> value or list of values")
        opt = self.optimizer
        problem_hp = dict(self.problem.hyperparams)
        clash = sorted(set(problem_hp) & set(opt.accepted))
        if clash:
            fail("problem.hyperparams", clash[0], f"problem {self.problem.name!r} declares a "
                 f"hyperparameter that optimizer {opt.name!r} also reads; rename it")
        accepted = set(opt.accepted) | set(problem_hp)
        out: dict[str, np.ndarray] = {}
        for name, value in hparams.items():
            if name not in accepted:
                fail("hparams", name, f"unknown hyperparameter: optimizer {opt.label} and "
                     f"problem {self.problem.name!r} do not read it; accepted: "
                     + ", ".join(sorted(accepted)))
            try:
                arr = np.asarray(value, dtype=float)
            except (TypeError, ValueError):
                fail(f"hparams.{name}", value, "expected a number or a list of numbers")
            if arr.ndim > 1 or arr.size == 0:
                fail(f"hparams.{name}", value, "expected a number or a non-empty 1-D list")
            if not np.all(np.isfinite(arr)):
                fail(f"hparams.{name}", value, "all values must be finite")
            lo, hi, open_lo = RANGES.get(name, (-math.inf, math.inf, False))
            for x in arr.reshape(-1):
                finite_float(f"hparams.{name}", x, low=lo, high=hi, low_open=open_lo)
            if arr.ndim == 1 and len(np.unique(arr)) != arr.size:
                fail(f"hparams.{name}", value, "grid values must be distinct")
            out[name] = arr
        for name in opt.required:
            if name not in out:
                fail("hparams", name, f"optimizer {opt.label} needs "
                     f"{', '.join(opt.required)}; missing {name}")
        for name, default in opt.defaults.items():
            out.setdefault(name, np.asarray(default, dtype=float))
        for name, default in problem_hp.items():
            out.setdefault(name, np.asarray(default, dtype=float))
        return out

    # -- derived static facts
    @property
    def grid(self) -> dict[str, np.ndarray]:
        """The swept hyperparameters (grid dimensions, in order)."""
        return {k: v for k, v in self.hparams.items() if v.ndim == 1}

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(v.size for v in self.grid.values())

    @property
    def n_grid(self) -> int:
        return int(np.prod(self.grid_shape, dtype=np.int64))

    @property
    def block(self) -> int:
        return self.block_seeds or min(32, self.seeds)

    @property
    def n_members(self) -> int:
        return self.n_grid * self.seeds * len(self.static_studies())

    def flat_hparams(self) -> dict[str, np.ndarray]:
        """Every hyperparameter as a ``[G]`` array over the flattened grid."""
        grid = self.grid
        mesh = np.meshgrid(*grid.values(), indexing="ij") if grid else []
        flat = {k: m.reshape(-1) for k, m in zip(grid, mesh, strict=True)}
        g = self.n_grid
        for k, v in self.hparams.items():
            if v.ndim == 0:
                flat[k] = np.full(g, float(v))
        return flat

    # -- static sweeps
    def _init_static(self):
        static = self.static
        if not isinstance(static, Mapping) or not static:
            fail("static", static, "expected a non-empty mapping name -> list of values")
        if isinstance(self.problem, Problem) or not callable(self.problem):
            fail("problem", type(self.problem).__name__, "with static=..., give a problem "
                 "factory called with the static values as keyword arguments "
                 "(problem=lambda " + ", ".join(map(str, static)) + ": ...)")
        values = {}
        for k, v in static.items():
            if not isinstance(k, str) or not k.isidentifier():
                fail("static", k, "names must be identifiers (keyword arguments of the factory)")
            vals = list(v) if isinstance(v, list | tuple | np.ndarray) else [v]
            if not vals:
                fail(f"static.{k}", v, "give at least one value")
            if len({repr(x) for x in vals}) != len(vals):
                fail(f"static.{k}", v, "values must be distinct")
            values[k] = tuple(x.item() if isinstance(x, np.generic) else x for x in vals)
        object.__setattr__(self, "static", values)
        import itertools

        subs = {}
        for combo in itertools.product(*values.values()):
            kw = dict(zip(values, combo, strict=True))
            try:
                problem = self.problem(**kw)
            except ValueError:
                raise
            except TypeError as e:
                fail("static", tuple(values), f"the problem factory does not take these keyword "
                     f"arguments ({e})")
            if not isinstance(problem, Problem):
                fail("problem", type(problem).__name__, "the factory must return a Problem")
            subs[combo] = dataclasses.replace(self, problem=problem, static=None)
        object.__setattr__(self, "_static_studies", subs)
        first = next(iter(subs.values()))
        object.__setattr__(self, "hparams", first.hparams)

    def static_studies(self) -> dict[tuple, Study]:
        """``{(static values...): Study}`` for a static sweep; ``{(): self}`` otherwise."""
        return dict(self.__dict__.get("_static_studies", {(): self}))

    def with_hparams(self, **hparams) -> Study:
        """A copy with some hyperparameter values replaced (same problem object)."""
        new = dict(self.hparams)
        new.update(hparams)
        return dataclasses.replace(self, hparams=new)

    def describe(self) -> dict[str, Any]:
        """A JSON-able description of the whole configuration."""
        def spec_name(s):
            return s if isinstance(s, str) else f"{s[0]} (function)"

        def rec(r):
            if r is None:
                return None
            d = dataclasses.asdict(r)
            if "observables" in d:
                d["observables"] = [spec_name(s) for s in r.observables]
            if isinstance(r, FirstPassage):
                if not isinstance(r.predicate, str):
                    d["predicate"] = getattr(r.predicate, "__name__", "function")
                # new fields at their defaults are left out: old descriptions stay valid
                for k, default in (("every", 1), ("names", None), ("dim", "event")):
                    if d[k] == default:
                        del d[k]
                if "names" in d:
                    d["names"] = _jsonable(list(r.names))
            if isinstance(r, Observe) and not isinstance(r.at, str):
                d["at"] = [int(x) for x in r.at]
            return d

        if self.static is not None:
            subs = self.static_studies()
            d = next(iter(subs.values())).describe()
            d["problem"] = {"factory": getattr(self.problem, "__qualname__", "factory"),
                            "static": [s.describe()["problem"] for s in subs.values()]}
            d["static"] = {k: _jsonable(list(v)) for k, v in self.static.items()}
            return d
        d = {
            "problem": {"name": self.problem.name, **_jsonable(dict(self.problem.config))},
            "optimizer": self.optimizer.describe(),
            "hparams": {k: v.tolist() for k, v in self.hparams.items()},
            "steps": self.steps, "seeds": self.seeds, "seed": self.seed,
            "observe": rec(self.observe), "stationary": rec(self.stationary),
            "first_passage": rec(self.first_passage),
            "divergence_bound": self.divergence_bound if math.isfinite(self.divergence_bound)
            else "inf",
            "keep_init": self.keep_init,
            "dtype": float_dtype(),
            "stream": STREAM_VERSION,  # how keys and normals are drawn (see _state)
        }
        if self.resolved_member_layout() == "map":  # left out at vmap: old identities hold
            d["member_layout"] = "map"
        if self.recorders:
            d["recorders"] = [r.describe() if callable(getattr(r, "describe", None))
                              else {"name": r.name, "type": type(r).__qualname__}
                              for r in self.recorders]
        return d


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x
