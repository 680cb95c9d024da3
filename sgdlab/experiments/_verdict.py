"""Verdicts: one measured quantity against its prediction, and the policy of a whole run.

Every quantity of a summary carries

* ``criterion``: how it is judged, one of

  - ``"equal"``: |value − predicted| ≤ 4·se (the interval used is value ± 4·se);
  - ``"covers"``: the 95% interval ``[lo, hi]`` covers ``predicted``;
  - ``"greater"``: the 95% interval's lower end is above ``predicted``;
  - ``"less"``: the 95% interval's upper end is below ``predicted``;
  - ``None``: reported only (no prediction);

* ``lo``, ``hi``: the interval the criterion used; ``oracle``: where ``predicted``
  comes from (a closed form, another solver, an exact sampler...), or ``None``;
* ``pass``: the criterion's own verdict; ``p``: the two-sided normal p-value of
  ``(value − predicted)/se`` for ``equal``/``covers`` (``None`` for one-sided checks);
* ``fails_run``: whether this quantity makes the run fail (see below).

The run's policy (:func:`finalize`). A one-sided check (``greater``/``less``) is a
claim that must be *demonstrated*: when its interval does not clear the threshold,
the run fails. A two-sided check (``equal``/``covers``) is a test of "measured =
predicted": with hundreds of them a few 95% intervals miss by chance, so such a
miss fails the run only when Holm's step-down procedure at family-wise level
:data:`FAMILY_ALPHA` over the run's two-sided checks also rejects it (for the
4-SE ``equal`` checks the 4-SE rule is the binding one below ~800 checks). A check
that misses its interval without surviving Holm is shown as ``miss``. The summary
states the number of checks, the expected number of false misses at the
per-check thresholds and the family-wise bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

Z_PASS = 4.0
"""An ``equal`` check passes when |value − predicted| ≤ Z_PASS · se."""
FAMILY_ALPHA = 0.05
"""Family-wise error rate of the run's two-sided checks (Holm)."""
SUMMARY_FORMAT = 2
"""Version of ``summary.json``: 2 added criterion/lo/hi/oracle/p/fails_run and ``checks``."""
CRITERIA = ("equal", "covers", "greater", "less")
Z95 = float(stats.norm.ppf(0.975))

# per-check probability of a false miss when the claim holds exactly (for one-sided
# checks: when the truth sits at the threshold, the worst case)
_LEVEL = {"equal": 2 * float(stats.norm.sf(Z_PASS)), "covers": 0.05, "greater": 0.025,
          "less": 0.025}


def quantity(name: str, coords: Mapping[str, Any], value: float, se: float,
             predicted: float | None = None, *, ci: tuple[float, float] | None = None,
             criterion: str | None = None, oracle: str | None = None,
             note: str | None = None, dof: int | None = None) -> dict:
    """One summary entry, judged by ``criterion``.

    ``criterion`` defaults to ``"covers"`` when a 95% interval ``ci`` is given and to
    ``"equal"`` otherwise (when there is a prediction). For ``covers``, ``greater``
    and ``less`` without ``ci`` the interval is value ± 1.96·se. ``dof``: the degrees
    of freedom of a Student-t interval ``ci`` (a mean of ``dof + 1`` independent
    replicas); the p-value of ``covers`` then comes from the same t distribution
    (without it, from the normal).
    """
    value, se = float(value), float(se)
    q: dict[str, Any] = {"name": name, "coords": {k: plain(v) for k, v in coords.items()},
                         "value": _finite_or_none(value), "se": _finite_or_none(se),
                         "predicted": None, "z": None, "pass": None, "criterion": None,
                         "lo": None, "hi": None, "oracle": oracle, "p": None}
    if ci is not None:
        q["ci"] = [float(ci[0]), float(ci[1])]
    has_prediction = predicted is not None and math.isfinite(float(predicted))
    if criterion is not None and criterion not in CRITERIA:
        raise ValueError(f"criterion={criterion!r} is invalid: expected one of "
                         + ", ".join(CRITERIA))
    if has_prediction:
        p = float(predicted)
        crit = criterion or ("covers" if ci is not None else "equal")
        q["predicted"], q["criterion"] = p, crit
        finite = math.isfinite(value) and math.isfinite(se) and se > 0
        if crit == "equal":
            lo, hi = value - Z_PASS * se, value + Z_PASS * se
        elif ci is not None:
            lo, hi = float(ci[0]), float(ci[1])
            finite = finite or (math.isfinite(lo) and math.isfinite(hi))
        else:
            lo, hi = value - Z95 * se, value + Z95 * se
        if finite and math.isfinite(lo) and math.isfinite(hi):
            q["lo"], q["hi"] = lo, hi
            if math.isfinite(se) and se > 0:
                q["z"] = (value - p) / se
                if crit == "equal":
                    q["p"] = float(2 * stats.norm.sf(abs(q["z"])))
            if crit == "covers":
                # the p-value consistent with the (possibly asymmetric, t-based) interval:
                # the half-width on the prediction's side is 1.96 effective SEs
                half = (hi - value) if p > value else (value - lo)
                if half > 0 and math.isfinite(value):
                    r = abs(value - p) / half  # distance in units of the half-width
                    q["p"] = float(2 * stats.t.sf(stats.t.ppf(0.975, dof) * r, dof)) if dof \
                        else float(2 * stats.norm.sf(Z95 * r))
            q["pass"] = bool({"equal": lo <= p <= hi, "covers": lo <= p <= hi,
                              "greater": lo > p, "less": hi < p}[crit])
        else:
            q["pass"] = False
            note = note or "no finite measurement (all members diverged?)"
    elif criterion is not None:
        raise ValueError(f"{name}: criterion {criterion!r} needs a prediction")
    if note:
        q["note"] = note
    return q


def holm(pvalues: np.ndarray, alpha: float = FAMILY_ALPHA) -> np.ndarray:
    """Holm's step-down procedure: which hypotheses are rejected at family-wise ``alpha``."""
    p = np.asarray(pvalues, float)
    m = p.size
    reject = np.zeros(m, bool)
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        if p[i] > alpha / (m - rank):
            break
        reject[i] = True
    return reject


def finalize(quantities: list[dict]) -> dict:
    """Set each quantity's ``fails_run`` (the run's policy) and return the ``checks`` block."""
    checked = [q for q in quantities if q.get("criterion") is not None]
    two_sided = [q for q in checked if q["criterion"] in ("equal", "covers")
                 and q["p"] is not None]
    rejected = holm(np.array([q["p"] for q in two_sided])) if two_sided else []
    holm_ok = {id(q): bool(r) for q, r in zip(two_sided, rejected, strict=True)}
    for q in quantities:
        if q.get("criterion") is None:
            q["fails_run"] = None
        elif q["pass"]:
            q["fails_run"] = False
        elif q["criterion"] in ("greater", "less") or q["p"] is None:
            q["fails_run"] = True       # not demonstrated, or no finite measurement
        else:
            q["fails_run"] = holm_ok[id(q)]
    by_crit = {c: sum(q["criterion"] == c for q in checked) for c in CRITERIA}
    return {
        "n": len(checked), "by_criterion": by_crit,
        "expected_false_misses": float(sum(_LEVEL[c] * n for c, n in by_crit.items())),
        "per_check_level": dict(_LEVEL),
        "policy": (f"one-sided checks fail the run when not demonstrated at 95%; a two-sided "
                   f"miss fails it when Holm at family-wise {FAMILY_ALPHA} over the "
                   f"{len(two_sided)} two-sided checks rejects it"),
        "family_alpha": FAMILY_ALPHA,
        "n_missed": sum(q["pass"] is False for q in checked),
        "n_failed": sum(bool(q["fails_run"]) for q in checked),
    }


def exit_status(summary: dict) -> int:
    """0 when the run passes under the policy of :func:`finalize`, 1 when it fails."""
    qs = summary["quantities"]
    if any("fails_run" not in q for q in qs):   # a summary written before format 2
        return 1 if any(q["pass"] is False for q in qs) else 0
    return 1 if any(q["fails_run"] for q in qs) else 0


def verdict_word(q: dict) -> str:
    if q["pass"] is None:
        return "-"
    if q["pass"]:
        return "pass"
    return "FAIL" if q.get("fails_run", True) else "miss"


def summary_table(summary: dict) -> str:
    """The measured-vs-predicted table printed by ``sgdlab run`` and ``sgdlab report``."""
    rows = [("quantity", "coords", "measured", "± se", "predicted", "criterion", "interval",
             "z", "verdict")]
    for q in summary["quantities"]:
        coords = " ".join(f"{k}={_fmt(v)}" for k, v in q["coords"].items())
        crit = q.get("criterion") or "-"
        interval = "-" if q.get("lo") is None else f"[{_fmt(q['lo'])}, {_fmt(q['hi'])}]"
        rows.append((q["name"], coords, _fmt(q["value"]), _fmt(q["se"]), _fmt(q["predicted"]),
                     crit, interval, "-" if q["z"] is None else f"{q['z']:+.2f}",
                     verdict_word(q)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    qs = summary["quantities"]
    n_fail = sum(verdict_word(q) == "FAIL" for q in qs)
    n_miss = sum(verdict_word(q) == "miss" for q in qs)
    n_pass = sum(q["pass"] is True for q in qs)
    n_none = len(qs) - n_pass - n_fail - n_miss
    lines.append(f"{n_pass} passed, {n_fail} failed"
                 + (f", {n_miss} missed (not significant after Holm)" if n_miss else "")
                 + (f" ({n_none} without prediction)" if n_none else ""))
    checks = summary.get("checks")
    if checks:
        lines.append(f"checks: {checks['n']}, expected false misses "
                     f"{checks['expected_false_misses']:.3g}; {checks['policy']}")
    for note in summary.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


@dataclass
class Outcome:
    """What an experiment's ``analyze`` returns."""

    quantities: list[dict]
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-able, stored in the summary


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.5g}"
    if isinstance(v, list):
        return "[" + ",".join(_fmt(x) for x in v) + "]"
    return str(v)


def _finite_or_none(x: float):
    return x if math.isfinite(x) else None


def plain(v):
    """A JSON-able Python value for a NumPy scalar or array."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v
