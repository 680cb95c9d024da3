"""The escape chain of Study 5: its configuration cells, potential and exact mean escape time.

Shared by the brute-force analysis (:mod:`sgdlab.experiments.escape`) and the
splitting estimator (:mod:`sgdlab.experiments._escape_splitting`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sgdlab import analysis, theory
from sgdlab.problems import potential_1d, potential_fns
from sgdlab.theory.escape import double_well_left_bound

N_DATA = 1000
"""Per-example tilts of the minibatch-noise variant (``batch_size`` > 1)."""
MIN_EVENTS = 30
"""Fewest escapes for an ``mfpt`` measurement (fewer: the check fails, run longer)."""


def minimum(kind: str) -> float:
    return 0.0 if kind == "sharp-well" else -1.0


def problem(cfg, noise_var: float = 0.0, batch_size: int = 1):
    """The potential of ``cfg``: Gaussian (noise added by the engine) or minibatch noise."""
    kw = dict(curvature=cfg["curvature"], wall=cfg["wall"], threshold=cfg["threshold"],
              w0=minimum(cfg["potential"]) + cfg["start"])
    if batch_size == 1:
        return potential_1d(cfg["potential"], noise_var=0.0, **kw)
    return potential_1d(cfg["potential"], noise="minibatch", noise_var=noise_var,
                        batch_size=batch_size, n_data=N_DATA, **kw)


def barrier(cfg) -> float:
    return float(problem(cfg).config["barrier"])


def fixed_noise(cfg) -> bool:
    return cfg["noise_var"] > 0


@dataclass(frozen=True)
class Cell:
    """One (batch size, learning rate, barrier) point of the experiment."""

    S: int
    i: int            # index of the learning rate
    j: int            # index of the barrier value (0 with a fixed noise_var)
    lr: float
    x: float          # ΔL/T, T = λσ²/2
    s2: float         # variance σ² of the gradient noise

    @property
    def coords(self) -> dict:
        return {"learning_rate": self.lr, "barrier_over_temperature": round(self.x, 6),
                "batch_size": self.S}


def cells(cfg) -> list[Cell]:
    dL = barrier(cfg)
    out = []
    for S in cfg["batch_size"]:
        for i, lr in enumerate(cfg["learning_rate"]):
            if fixed_noise(cfg):
                s2 = cfg["noise_var"] / S
                out.append(Cell(S, i, 0, lr, 2 * dL / (lr * s2), s2))
            else:
                for j, x in enumerate(cfg["barrier_over_temperature"]):
                    out.append(Cell(S, i, j, lr, x, 2 * dL / (lr * x)))
    return out


def region(cfg, cell: Cell):
    """``(U', lo, hi, x0)``: the chain's drift, non-escaped region and start."""
    kind = cfg["potential"]
    _, dU = potential_fns(kind, cfg["curvature"])
    x0 = minimum(kind) + cfg["start"]
    if kind == "sharp-well":
        return dU, -cfg["wall"], cfg["wall"], x0
    hi = cfg["threshold"]
    return dU, double_well_left_bound(dU, cell.lr, cell.s2, hi, x0, -1.0), hi, x0


def tau_only(cfg, cell: Cell) -> float:
    dU, lo, hi, x0 = region(cfg, cell)
    return theory.mfpt_nystrom_converged(dU, cell.lr, cell.s2, lo, hi, x0=x0)[0]


def fit_slope(x, mean, se):
    """(slope, se, lo, hi, intercept) of ln mean = a + slope·x (95%), independent errors."""
    fit = analysis.fit_exponential_rate(x, mean, se)
    return -fit.estimate, fit.se, -fit.hi, -fit.lo, fit.intercept
