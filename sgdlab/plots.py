"""Small matplotlib helpers for ensemble results, and inline display in Jupyter.

Nothing here touches pyplot: each helper draws on the Axes it is given, or on
a fresh ``matplotlib.figure.Figure`` when ``ax`` is None, and returns the
Figure, so they are safe under the Agg backend and leave no global state.

A bare ``Figure`` (not made by pyplot) shows in Jupyter as ``<Figure size ...>``
text unless IPython knows how to render it: IPython's inline backend registers
its PNG formatter only once pyplot is imported. :func:`enable_inline` (run when
this module is imported) registers it directly, so the Figures that sgdlab's
experiments return display inline, whatever backend is selected.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sgdlab.analysis import KaplanMeier

__all__ = ["enable_inline", "plot_mean_band", "plot_measured_vs_predicted", "plot_survival"]


def _png(fig: Figure) -> bytes:
    from IPython.core.pylabtools import print_figure

    return print_figure(fig, "png", bbox_inches="tight")


def enable_inline() -> bool:
    """Let IPython/Jupyter display ``matplotlib.figure.Figure`` objects as PNG images.

    Registers a PNG formatter for ``Figure`` with the running IPython shell (by
    type name, so nothing is imported that is not already). Outside IPython it
    does nothing. Safe to call more than once.

    Returns:
        True when a shell was found and the formatter registered.
    """
    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return False
    formatter = shell.display_formatter.formatters["image/png"]
    formatter.for_type_by_name("matplotlib.figure", "Figure", _png)
    return True


enable_inline()


def _axes(ax: Axes | None) -> tuple[Axes, Figure]:
    if ax is None:
        fig = Figure(figsize=(5.0, 3.5), layout="constrained")
        ax = fig.add_subplot()
    fig = ax.figure
    while not isinstance(fig, Figure):  # an Axes in a SubFigure: climb to the root
        fig = fig.figure
    return ax, fig


def _scales(ax: Axes, logx: bool, logy: bool) -> None:
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")


def plot_mean_band(
    ax: Axes | None,
    x: Any,
    mean: Any,
    lo: Any,
    hi: Any,
    label: str | None = None,
    logx: bool = False,
    logy: bool = False,
    **line_kw: Any,
) -> Figure:
    """Draw a mean curve with a shaded confidence band.

    Args:
        ax: Axes to draw on, or None for a new Figure.
        x: abscissae (e.g. record steps).
        mean: ensemble mean at ``x``.
        lo, hi: band edges at ``x`` (e.g. from :func:`sgdlab.analysis.mean_ci`).
        label: legend label of the curve.
        logx, logy: logarithmic axes.
        **line_kw: passed to ``Axes.plot`` (e.g. ``color``).

    Returns:
        The Figure.
    """
    ax, fig = _axes(ax)
    (line,) = ax.plot(np.asarray(x), np.asarray(mean), label=label, **line_kw)
    ax.fill_between(
        np.asarray(x), np.asarray(lo), np.asarray(hi), color=line.get_color(), alpha=0.25,
        linewidth=0,
    )
    _scales(ax, logx, logy)
    if label is not None:
        ax.legend()
    return fig


def plot_survival(ax: Axes | None, km: KaplanMeier, label: str | None = None) -> Figure:
    """Draw a Kaplan–Meier survival curve as a step function with its band.

    The curve starts at S = 1 at t = 0 and is drawn flat to ``km.t_max``.

    Args:
        ax: Axes to draw on, or None for a new Figure.
        km: result of :func:`sgdlab.analysis.kaplan_meier`.
        label: legend label.

    Returns:
        The Figure.
    """
    ax, fig = _axes(ax)
    t = np.concatenate([[0.0], km.time, [max(km.t_max, km.time[-1] if km.time.size else 0.0)]])
    s = np.concatenate([[1.0], km.survival, km.survival[-1:] if km.survival.size else [1.0]])
    lo = np.concatenate([[1.0], km.lo, km.lo[-1:] if km.lo.size else [1.0]])
    hi = np.concatenate([[1.0], km.hi, km.hi[-1:] if km.hi.size else [1.0]])
    (line,) = ax.step(t, s, where="post", label=label)
    ax.fill_between(t, lo, hi, step="post", color=line.get_color(), alpha=0.25, linewidth=0)
    ax.set_xlabel("step")
    ax.set_ylabel("survival S(t)")
    ax.set_ylim(0.0, 1.02)
    if label is not None:
        ax.legend()
    return fig


def plot_measured_vs_predicted(
    ax: Axes | None,
    x: Any,
    measured: Any,
    se: Any,
    predicted: Any,
    label: str = "measured",
    predicted_label: str = "predicted",
    x_predicted: Any = None,
    logx: bool = False,
    logy: bool = False,
) -> Figure:
    """Measured values with ±2 SE error bars against a predicted curve.

    Args:
        ax: Axes to draw on, or None for a new Figure.
        x: abscissae of the measurements.
        measured: measured values.
        se: their standard errors (bars are ±2 SE).
        predicted: prediction at ``x`` (or at ``x_predicted`` if given).
        label, predicted_label: legend labels.
        x_predicted: abscissae of a finer prediction curve.
        logx, logy: logarithmic axes.

    Returns:
        The Figure.
    """
    ax, fig = _axes(ax)
    xp = np.asarray(x if x_predicted is None else x_predicted)
    ax.plot(xp, np.asarray(predicted), "-", color="0.3", label=predicted_label, zorder=1)
    ax.errorbar(
        np.asarray(x), np.asarray(measured), yerr=2.0 * np.asarray(se), fmt="o", ms=4,
        capsize=2, label=f"{label} (±2 SE)", zorder=2,
    )
    _scales(ax, logx, logy)
    ax.legend()
    return fig
