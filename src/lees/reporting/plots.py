"""Plots people would rather look at than read: gate heat-maps and schedules."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .engine import REUSE, RUN  # noqa: E402
from .files import atomic_write_bytes  # noqa: E402
from .gates import SigmoidTimeGate  # noqa: E402
from .schedules import Schedule  # noqa: E402


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
    """The K x T table of a schedule: which block runs (black), reuses its last residual (grey) or is
    skipped (white) at which sampling step."""
    fig, ax = plt.subplots(figsize=(7, 0.28 * schedule.num_blocks + 1.5))
    shade = np.select([schedule.actions == RUN, schedule.actions == REUSE], [1.0, 0.4], 0.0)
    ax.imshow(shade, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks(range(schedule.num_blocks), schedule.block_names, fontsize=7)
    ticks = range(0, schedule.num_steps, max(1, schedule.num_steps // 10))
    ax.set_xticks(list(ticks), [str(schedule.timesteps[i]) for i in ticks], fontsize=7)
    ax.set_xlabel("sampler timestep (sampling runs left to right): black run, grey reuse, white skip")
    ratios = f"executed {schedule.executed_ratio:.0%}"
    if schedule.block_shares is not None:
        ratios += f", FLOPs {schedule.flop_ratio:.0%}"
    ax.set_title(title or f"{schedule.source} schedule ({ratios})")
    return save_figure(fig, path)
