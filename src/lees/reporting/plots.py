"""Plots people would rather look at than read: gate heat-maps and schedules."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np
import torch  # noqa: E402

from ..engine.actions import FORECAST, REUSE, RUN
from ..evaluation.fewer_steps import Point, step_curve
from ..evaluation.stats import mean_std
from ..schedules.gates import SigmoidTimeGate
from ..schedules.schedule import Schedule
from ..utils.files import atomic_write_bytes
from .protocol import METHODS


def frontier_plot(
    points: Sequence[Point], metric: str, path: str | Path, title: str = "", sampler: str = ""
) -> Path:
    """Quality against measured latency: the full model's fewer-steps curve with the run's ``sampler``
    (and one per further solver) and every other method as a point, each with its interval as an error
    bar where the point has one (``Point.intervals``). A log axis unless a value is 0 or below (fidelity
    to the full model: its own is 0)."""
    fig, ax = plt.subplots(figsize=(9, 5))
    for i, solver in enumerate(dict.fromkeys(p.solver for p in points if p.is_full and metric in p.quality)):
        curve = sorted((p for p in points if p.is_full and p.solver == solver and metric in p.quality),
                       key=lambda p: p.latency_ratio)  # fmt: skip
        latency, quality = step_curve(curve, metric, solver)
        label = f"full model, fewer steps ({solver or sampler or 'its sampler'})"
        bars = error_bars(quality, [p.intervals.get(metric) for p in curve])
        ax.errorbar(latency, quality, yerr=bars, fmt=("k-o", "b--^", "g--v", "m--D")[i % 4], capsize=2,
                    label=label)  # fmt: skip
        for p, y in zip(curve, quality, strict=True):
            ax.annotate(
                f"{p.steps}", (p.latency_ratio, y), textcoords="offset points", xytext=(4, 4), fontsize=7
            )
    colours = plt.get_cmap("tab20")
    others = [p for p in points if not p.is_full and metric in p.quality]
    for i, p in enumerate(others):
        bars = error_bars([p.quality[metric]], [p.intervals.get(metric)])
        ax.errorbar(p.latency_ratio, p.quality[metric], yerr=bars, fmt="s", capsize=2, color=colours(i % 20),
                    label=p.method)  # fmt: skip
    if all(p.quality[metric] > 0 for p in points if metric in p.quality):
        ax.set_yscale("log")
    ax.set_xlabel("measured latency / full model's (paired, same run)")
    ax.set_ylabel(f"{metric} (lower is better)")
    ax.set_title(title or f"Quality vs latency: every method against fewer steps ({metric})")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3, which="both")
    return save_figure(fig, path)


def error_bars(
    values: Sequence[float], intervals: Sequence[Sequence[float] | None]
) -> list[list[float]] | None:
    """Matplotlib's (below, above) distances of each value from its interval's ends; None where a value
    has no interval (a metric without one, or an old table)."""
    if not intervals or any(i is None for i in intervals):
        return None
    below = [max(v - low, 0.0) for v, (low, _) in zip(values, intervals, strict=True)]
    above = [max(high - v, 0.0) for v, (_, high) in zip(values, intervals, strict=True)]
    return [below, above]


matplotlib.use("Agg")


def save_figure(fig, path: str | Path) -> Path:
    """Write a matplotlib figure as PNG (atomically) and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def gate_heatmap(
    gate: SigmoidTimeGate, block_names: Sequence[str], path: str | Path, title: str = "learned gates"
) -> Path:
    """g_k(t) for every block over t in (0, 1], with the 0.5 line where blocks switch on or off."""
    t = torch.linspace(0.001, 1.0, 200)
    with torch.no_grad():
        g = gate(t).T.cpu().numpy()
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(block_names) + 1.5))
    im = ax.imshow(
        g, aspect="auto", cmap="viridis", vmin=0, vmax=1, extent=(0.001, 1, len(block_names) - 0.5, -0.5)
    )
    ax.contour(t.numpy(), range(len(block_names)), g, levels=[0.5], colors="white", linewidths=1)
    ax.set_yticks(range(len(block_names)), block_names, fontsize=7)
    ax.set_xlabel("normalised time t (0 = clean, 1 = pure noise)")
    ax.set_title(f"{title} (white line: g = 0.5; the block runs where g >= 0.5)")
    fig.colorbar(im, ax=ax, label="g_k(t)")
    return save_figure(fig, path)


def schedule_map(schedule: Schedule, path: str | Path, title: str | None = None) -> Path:
    """The K x T table of a schedule: which block runs (black), forecasts its residual (dark grey),
    reuses its last one (grey) or is skipped (white) at which sampling step; an adaptive schedule's cells
    with a threshold dotted."""
    fig, ax = plt.subplots(figsize=(7, 0.28 * schedule.num_blocks + 1.5))
    actions = schedule.actions
    shade = np.select([actions == RUN, actions == FORECAST, actions == REUSE], [1.0, 0.65, 0.4], 0.0)
    ax.imshow(shade, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks(range(schedule.num_blocks), schedule.block_names, fontsize=7)
    ticks = range(0, schedule.num_steps, max(1, schedule.num_steps // 10))
    ax.set_xticks(list(ticks), [f"{schedule.timesteps[i]:.0f}" for i in ticks], fontsize=7)  # flow t: floats
    key = "black run, dark grey forecast, grey reuse" if schedule.forecasts else "black run, grey reuse"
    ax.set_xlabel(f"sampler timestep (sampling runs left to right): {key}, white skip")
    ratios = f"executed {schedule.executed_ratio:.0%}"
    if schedule.block_shares is not None:
        ratios += f", FLOPs {schedule.flop_ratio:.0%}"
    if schedule.adaptive:  # the table is the floor; dotted cells run where the probe's change passes
        rows, columns = np.nonzero(np.isfinite(schedule.thresholds))
        ax.scatter(columns, rows, s=4, c="white", marker=".")
        ratios += f"; adaptive: {len(rows)} dotted cells may run"
    ax.set_title(title or f"{schedule.source} schedule ({ratios})")
    return save_figure(fig, path)


def pareto_plot(rows: dict[str, dict], path: Path, metric: str) -> Path:
    """Quality (lower is better) against latency per 100 images, with error bars over seeds."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for i, (method, row) in enumerate(rows.items()):  # tab20: a distinct colour for each of the 11 rows
        (x, xe), (y, ye) = mean_std(row["seconds_per_100"]), mean_std(row["fd"])
        style = "o-" if method.startswith("lees") else "s"
        ax.errorbar(
            x, y, xerr=xe, yerr=ye, fmt=style, capsize=3, label=METHODS[method], color=plt.cm.tab20(i)
        )
    lees = sorted(
        (mean_std(rows[m]["seconds_per_100"])[0], mean_std(rows[m]["fd"])[0])
        for m in ("lees-0.01", "lees-0.05", "lees-0.1")
    )
    ax.plot(*zip(*lees, strict=True), "k--", lw=0.8, label="LEES lambda sweep")
    ax.set_xlabel("latency per 100 images, whole sampling run (s)")
    ax.set_yscale("log")  # the methods span two orders of magnitude in quality
    ax.set_ylabel(f"{metric} (lower is better, log scale)")
    ax.set_title("quality vs latency, mean ± std over seeds")
    ax.legend(fontsize=7)
    return save_figure(fig, path)
