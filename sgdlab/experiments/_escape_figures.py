"""The escape experiment's figure: escape times against learning rate and barrier, the
Arrhenius fits, and measured against exact survival curves."""

from __future__ import annotations

import numpy as np

from sgdlab.experiments import _escape_splitting as _splitting
from sgdlab.experiments._escape_chain import fixed_noise


def figures(summary, survival):
    """The escape figure of a finished run, from ``summary.json`` and the measured
    Kaplan–Meier curves (``analysis.kaplan_meier``, one per entry of
    ``summary["survival"]``). Splitting runs have their own figure
    (:mod:`sgdlab.experiments._escape_splitting`)."""
    from matplotlib.figure import Figure

    if summary["config"].get("estimator", "brute") == "splitting":
        return _splitting.figures(summary)
    from sgdlab.plots import plot_survival

    cfg = summary["config"]
    rows = summary["cells"]
    fig = Figure(figsize=(12.5, 9.5), layout="constrained")
    (ax1, ax2), (ax3, ax4) = fig.subplots(2, 2)
    fixed = fixed_noise(cfg)
    sizes = cfg["batch_size"]
    markers = "osD^v<>"

    # (a) mean escape time vs learning rate
    key = "noise_var" if fixed else "barrier_over_temperature"
    levels = [cfg["noise_var"]] if fixed else cfg["barrier_over_temperature"]
    for k, level in enumerate(levels):
        for s_idx, S in enumerate(sizes):
            color = f"C{k}" if len(levels) > 1 else f"C{s_idx}"
            pts = [r for r in rows if r["batch_size"] == S and
                   (fixed or r["barrier_over_temperature"] == round(level, 6))]
            lr = np.array([r["learning_rate"] for r in pts])
            y = np.array([np.nan if r["mfpt"] is None else r["mfpt"] for r in pts], float)
            e = np.array([np.nan if r["mfpt_se"] is None else r["mfpt_se"] for r in pts], float)
            lab = f"ΔL/T = {level:g}" if not fixed else f"noise_var = {level:g}"
            if len(sizes) > 1:
                lab += f", S = {S}"
            ax1.errorbar(lr, y, yerr=2 * e, fmt=markers[s_idx % len(markers)], color=color,
                         capsize=3, ms=4, label=f"measured, {lab} (±2 SE)")
            if S != 1:
                ax1.plot(lr, [r["tau_censored"] for r in pts], ":", color=color, alpha=0.8,
                         label=f"exact minibatch oracle, {lab}")
        for cur in summary["curves"]["mfpt_vs_lr"]:
            if cur[key] == level:
                lab = "Nyström τ (S = 1)" if fixed else f"Nyström τ, ΔL/T = {level:g}"
                ax1.plot(cur["learning_rate"], cur["tau"], "-", color=f"C{k}", alpha=0.7,
                         label=lab)
    ax1.set_yscale("log")
    ax1.set_xlabel("learning rate λ")
    ax1.set_ylabel("mean escape time (SGD steps)")
    if cfg["potential"] == "sharp-well":
        where = f"sharp well, a = {cfg['curvature']:g}, wall = {cfg['wall']:g}"
    else:
        where = f"double well, threshold = {cfg['threshold']:g}"
    ax1.set_title(f"{where} (ΔL = {summary['barrier']:.3g}): mean escape time vs λ")
    ax1.legend(fontsize=7)

    # (b) Arrhenius plot: ln mfpt vs ΔL/T
    arr = summary.get("arrhenius", [])
    S0 = sizes[0]
    if arr:
        for i, lr in enumerate(cfg["learning_rate"]):
            color = f"C{i}"
            pts = [r for r in rows if r["batch_size"] == S0 and r["learning_rate"] == lr]
            x = np.array([r["barrier_over_temperature"] for r in pts])
            m = np.array([np.nan if r["mfpt"] is None else r["mfpt"] for r in pts], float)
            e = np.array([np.nan if r["mfpt_se"] is None else r["mfpt_se"] for r in pts], float)
            ax2.errorbar(x, np.log(m), yerr=2 * e / m, fmt="o", color=color, capsize=3, ms=4,
                         label=f"λ = {lr:g} (±2 SE)")
            fit = next((a for a in arr if a["learning_rate"] == lr and a["batch_size"] == S0
                        and "slope" in a), None)
            if fit is not None:
                xx = np.array([x.min(), x.max()])
                ax2.plot(xx, fit["intercept"] + fit["slope"] * xx, "--", color=color, lw=1)
            cur = next((c for c in summary["curves"]["mfpt_vs_x"] if c["learning_rate"] == lr),
                       None)
            if cur is not None and S0 == 1:
                ax2.plot(cur["barrier_over_temperature"], np.log(cur["tau"]), "-", color=color,
                         alpha=0.5, lw=2.5)
        ax2.plot([], [], "k--", lw=1, label="weighted fit")
        if S0 == 1:
            ax2.plot([], [], "k-", alpha=0.5, lw=2.5, label="Nyström ln τ")
        ax2.set_xlabel("ΔL/T  (T = λσ²/2)")
        ax2.set_ylabel("ln(mean escape time / steps)")
        ax2.set_title("Arrhenius plot" + (f" (S = {S0})" if len(sizes) > 1 else ""))
        ax2.legend(fontsize=7)

        # (c) fitted slope vs learning rate
        for s_idx, S in enumerate(sizes):
            fits = [a for a in arr if a["batch_size"] == S and "slope" in a]
            lr = np.array([a["learning_rate"] for a in fits])
            sl = np.array([a["slope"] for a in fits])
            lo = np.array([a["lo"] for a in fits])
            hi = np.array([a["hi"] for a in fits])
            lab = "" if len(sizes) == 1 else f", S = {S}"
            ax3.errorbar(lr, sl, yerr=[sl - lo, hi - sl], fmt=markers[s_idx % len(markers)],
                         color=f"C{s_idx}", capsize=3, ms=5, label=f"fitted slope (95% CI){lab}")
            ax3.plot(lr, [a["predicted"] for a in fits], "x", color="k", ms=8,
                     label="exact: the same fit through the oracle's ln τ" if s_idx == 0
                     else None)
        lr_all = np.array(cfg["learning_rate"])
        ax3.axhline(1.0, color="0.5", ls=":", label="continuous time: 1")
        if cfg["potential"] == "sharp-well":
            a = cfg["curvature"]
            g = np.linspace(0, min(2 / a, lr_all.max() * 1.1), 100)
            ax3.plot(g, (2 - g * a) / 2, "--", color="0.3",
                     label="sharp-well T_eff: (2 − λa)/2")
        ax3.set_xlabel("learning rate λ")
        ax3.set_ylabel("d ln τ / d(ΔL/T)")
        ax3.set_title("Arrhenius slope vs learning rate")
        ax3.legend(fontsize=7)
    else:
        for ax in (ax2, ax3):
            ax.axis("off")
            ax.text(0.5, 0.5, "no Arrhenius fit\n(needs ≥ 3 barrier_over_temperature values\n"
                    "and noise_var = 0)", ha="center", va="center", transform=ax.transAxes)

    # (d) Kaplan–Meier survival in units of τ
    for k, (sv, km) in enumerate(zip(summary["survival"], survival, strict=True)):
        tau = sv["tau"]
        km = km._replace(time=km.time / tau, t_max=km.t_max / tau)
        plot_survival(ax4, km, label=f"Kaplan–Meier, λ = {sv['learning_rate']:g}, "
                      f"ΔL/T = {sv['barrier_over_temperature']:.3g} (τ = {tau:.3g})")
        ts = np.asarray(sv["t"])
        if np.all(np.diff(ts) == 1):  # every step: the exact survival is a step function too
            ax4.step(ts / tau, sv["survival"], ":", where="post", color=f"C{k}", lw=1.5)
        else:
            ax4.plot(ts / tau, sv["survival"], ":", color=f"C{k}", lw=1.5)
    u = np.linspace(0, 5, 100)
    ax4.plot(u, np.exp(-u), "--", color="k", lw=1, label="exp(−t/τ)")
    ax4.plot([], [], ":", color="0.3", label="exact survival of the chain")
    ax4.set_yscale("log")
    ax4.set_ylim(3e-3, 1.1)
    ax4.set_xlim(0, 5)
    ax4.set_xlabel("t / τ  (τ: exact mean escape time)")
    ax4.set_ylabel("fraction not yet escaped S(t)")
    ax4.set_title("escape times are exponential (after a short transient)")
    ax4.legend(fontsize=7)
    fig.suptitle("SGD escape from a minimum vs exact discrete-time theory "
                 "(Liu, Ziyin & Ueda 2021)")
    return {"escape": fig}
