"""ASE tuned by grid search (baseline B3): every candidate within a FLOP budget sampled, scored and
ranked under one metric.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDPMScheduler
from torch import nn

from ..engine.blocks import Blocks
from ..evaluation.scoring import metric_name, score_schedule
from ..schedules.baselines import ase_schedule
from ..schedules.schedule import Schedule


@dataclass
class GridResult:
    """ASE's grid search: the best schedule within the budget, every candidate tried, the cost, and
    the metric (``metric_name``) the candidates were ranked by."""

    best: Schedule
    rows: list[dict]
    seconds: float
    metric: str


def ase_grid(
    model: nn.Module,
    scheduler: DDPMScheduler,
    blocks: Blocks,
    timesteps: Sequence[int],
    extractor: Callable[[torch.Tensor], np.ndarray],
    reference: np.ndarray,
    budget: float,
    drop_lengths: Sequence[int] = (100, 200, 300, 400, 500),
    starts: Sequence[int] = (0, 100, 200, 300),
    drop_steps: Sequence[int] | None = None,
    n: int = 256,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    sampler: str = "ddpm",
) -> GridResult:
    """Tune ASE (baseline B3): best offline quality over drop length, start and step, at FLOPs <= budget.

    Every candidate with a FLOP ratio within ``budget`` is sampled (``n`` images, same seed) and
    scored; the one with the lowest Fréchet distance in ``extractor``'s features wins. Rows, the
    printed lines and the best schedule's settings name that metric (a choice tuned on one metric can
    be tuned to its blind spots: see ``score_under``). The search's wall time is reported.
    """
    metric = metric_name(extractor)
    k = len(blocks)
    drop_steps = drop_steps or sorted({max(1, round(k / 10)), max(1, round(k / 7)), max(1, round(k / 5))})
    candidates = []
    for length, start, step in itertools.product(drop_lengths, starts, drop_steps):
        s = ase_schedule(blocks, timesteps, length, step, start)
        if s.flop_ratio <= budget and all(s.table.tolist() != c.table.tolist() for c in candidates):
            candidates.append(s)
    if not candidates:
        raise ValueError(f"no ASE schedule of the grid fits a FLOP budget of {budget}")
    started = time.perf_counter()
    rows = []
    for i, s in enumerate(candidates):
        score = score_schedule(
            model, scheduler, s, extractor, reference, n, len(timesteps), seed, device=device, sampler=sampler
        )
        rows.append(
            s.settings
            | {
                "flop_ratio": s.flop_ratio,
                "executed_ratio": s.executed_ratio,
                "fd": score.fd,
                "metric": metric,
            }
        )
        if progress:
            print(
                f"ase-grid {i + 1}/{len(candidates)}: {s.settings} FLOPs {s.flop_ratio:.1%} "
                f"{metric} {score.fd:.3f}"
            )
    best = candidates[int(np.argmin([r["fd"] for r in rows]))]
    best.settings |= {
        "grid_budget": budget,
        "grid_n": n,
        "grid_candidates": len(candidates),
        "grid_metric": metric,
        "sampler": sampler,
    }
    return GridResult(best, rows, time.perf_counter() - started, metric)
