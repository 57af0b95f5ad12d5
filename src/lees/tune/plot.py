"""The tune's frontier: fidelity to the full model against measured latency, one curve per solver."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt

from ..reporting.plots import error_bars, save_figure
from .verdict import Row

LABELS = {
    "fd_full": "FD to the full model (lower is better)",
    "psnr": "PSNR to the full model (dB)",
    "fd_clf": "fd_clf to the real data (lower is better)",
    "fid": "Inception FID to the real data (lower is better)",
    "psnr_ode": "PSNR to the converged ODE solution (dB)",
    "fd_ode": "FD to the converged ODE solution (lower is better)",
}

MARKERS = "sD^vPX<>p"  # the other rows' shapes: 9, cycled with tab10's 10 colours, repeat only after 90 rows
WIDE = 20.0  # a distance's largest value over its median beyond which its axis is log-like


def _y_scale(ax, metric: str, values: Sequence[float]) -> None:
    """A distance (FD, FID) whose largest value is more than ``WIDE`` times its median (a broken cache can
    sit 100x above the rest) gets a log axis, or a symmetric-log one, linear up to the median, where a row
    is at 0 (the full model's FD to itself); else a linear axis from 0, which labels its ticks (a log
    axis within one decade labels one or none)."""
    tiny = 1e-9 * max(values, default=0.0)  # the full model's FD to itself: 0 up to rounding (1e-13)
    positive = sorted(v for v in values if v > tiny)
    if metric.startswith("psnr") or not positive:
        return
    median = positive[len(positive) // 2]
    if positive[-1] <= WIDE * median:
        ax.set_ylim(bottom=0)
    elif len(positive) == len(values):
        ax.set_yscale("log")
    else:
        ax.set_yscale("symlog", linthresh=median)
        ax.set_ylim(bottom=0)


def frontier(
    rows: Sequence[Row],
    budgets: Sequence[float],
    path: str | Path,
    title: str = "",
    metric: str | None = None,
) -> Path:
    """x: latency ratio to the full model (same rounds); y: ``metric``, by default FD to the full model's
    samples (PSNR where no feature space was available; ``fd_clf``: to the real data). Each solver's
    fewer-steps points are a curve, every other run a point, the full model a star; the budgets are
    dashed lines; each point's 95 % paired-bootstrap interval, where the row has one, is its error bar.
    A distance spread over orders of magnitude is drawn on a log-like axis (:func:`_y_scale`)."""
    metric = metric or ("fd_full" if all(r.get("fd_full") is not None for r in rows) else "psnr")
    fig, ax = plt.subplots(figsize=(9, 5))
    steps = [r for r in rows if r["kind"] == "steps" and r["name"] != "full"]
    for solver in dict.fromkeys(r["solver"] for r in steps):
        curve = sorted((r for r in steps if r["solver"] == solver), key=lambda r: r["latency_ratio"])
        xs, ys = [r["latency_ratio"] for r in curve], [r[metric] for r in curve]
        bars = error_bars(ys, [r.get(f"{metric}_interval") for r in curve])
        ax.errorbar(xs, ys, yerr=bars, fmt="-o", capsize=2, label=f"{solver}, fewer steps")
        for x, y, r in zip(xs, ys, curve, strict=True):
            ax.annotate(str(r["steps"]), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    if metric != "psnr":  # where every solver's curve heads (PSNR would put it at 100 dB)
        full = next(r for r in rows if r["name"] == "full")  # to the ODE solution: an error of its own
        bars = error_bars([full[metric]], [full.get(f"{metric}_interval")])
        ax.errorbar(1.0, full[metric], yerr=bars, fmt="k*", markersize=10, capsize=2, label="full model")
    colours, curves = plt.get_cmap("tab10"), len({r["solver"] for r in steps})  # the curves took the first
    for i, r in enumerate(r for r in rows if r["kind"] != "steps"):  # colour and shape: told apart when near
        bars = error_bars([r[metric]], [r.get(f"{metric}_interval")])
        ax.errorbar(r["latency_ratio"], r[metric], yerr=bars, fmt=MARKERS[i % len(MARKERS)], capsize=2,
                    color=colours((curves + i) % 10), alpha=0.85, label=r["name"])  # fmt: skip
    for b in budgets:
        ax.axvline(b, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("measured latency / full model's (same rounds)")
    ax.set_ylabel(LABELS[metric])
    _y_scale(ax, metric, [r[metric] for r in rows])
    ax.set_title(title or "lees tune: fidelity to the full model against latency")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
