"""ASE tuned by grid search (baseline B3): every candidate within a FLOP budget sampled, scored and
ranked under one metric.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler
from torch import nn

from ..engine.blocks import Blocks
from ..evaluation.metrics import InceptionFeatures, reference_features, scorer
from ..evaluation.scoring import metric_name, score_schedule, score_under
from ..schedules.baselines import ase_schedule
from ..schedules.schedule import Schedule
from ..utils.files import atomic_write_text


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
    candidates = grid_candidates(blocks, timesteps, budget, drop_lengths, starts, drop_steps)
    started = time.perf_counter()
    rows = []
    for i, s in enumerate(candidates):
        score = score_schedule(
            model, scheduler, s, extractor, reference, n, len(timesteps), seed, device=device, sampler=sampler
        )
        ratios = {"flop_ratio": s.flop_ratio, "executed_ratio": s.executed_ratio}
        rows.append(s.settings | ratios | {"fd": score.fd, "metric": metric})
        if progress:
            print(
                f"ase-grid {i + 1}/{len(candidates)}: {s.settings} FLOPs {s.flop_ratio:.1%} "
                f"{metric} {score.fd:.3f}"
            )
    best = candidates[int(np.argmin([r["fd"] for r in rows]))]
    best.settings |= {"grid_budget": budget, "grid_n": n, "grid_candidates": len(candidates),
                      "grid_metric": metric, "sampler": sampler}  # fmt: skip
    return GridResult(best, rows, time.perf_counter() - started, metric)


def grid_candidates(
    blocks: Blocks,
    timesteps: Sequence[int],
    budget: float,
    drop_lengths: Sequence[int],
    starts: Sequence[int],
    drop_steps: Sequence[int] | None = None,
) -> list[Schedule]:
    """The distinct ASE schedules of the grid within the FLOP ``budget`` (drop steps: K/10, K/7, K/5)."""
    k = len(blocks)
    drop_steps = drop_steps or sorted({max(1, round(k / 10)), max(1, round(k / 7)), max(1, round(k / 5))})
    candidates: list[Schedule] = []
    for length, start, step in itertools.product(drop_lengths, starts, drop_steps):
        s = ase_schedule(blocks, timesteps, length, step, start)
        if s.flop_ratio <= budget and all(s.table.tolist() != c.table.tolist() for c in candidates):
            candidates.append(s)
    if not candidates:
        raise ValueError(f"no ASE schedule of the grid fits a FLOP budget of {budget}")
    return candidates


def tune_ase(
    model: nn.Module,
    scheduler: DDPMScheduler,
    blocks: Blocks,
    timesteps: Sequence[int],
    out: Path,
    data: str = "fashion-mnist",
    budget: float | None = None,
    n: int = 256,
    seed: int = 0,
    device: str | torch.device = "cpu",
    sampler: str = "ddpm",
    check: bool = True,
) -> Schedule:
    """Baseline B3 as ``lees schedule ase-grid`` makes it: the grid ranked by fd_clf within ``budget``
    (default: ASE's default schedule's FLOPs); ``out/grid.json`` names the metric and every candidate,
    and, with ``check``, holds the best and the default scored under fd_clf and Inception FID too
    (:func:`check_choice`). Returns the best schedule."""
    default = ase_schedule(blocks, timesteps)
    budget = budget or default.flop_ratio
    extractor, reference = scorer("clf", data, device)  # fd_clf
    grid = ase_grid(model, scheduler, blocks, timesteps, extractor, reference, budget, n=n, seed=seed,
                    device=device, sampler=sampler)  # fmt: skip
    report = {
        "budget": budget,
        "n": n,
        "metric": grid.metric,
        "seconds": grid.seconds,
        "candidates": grid.rows,
    }
    path = atomic_write_text(out / "grid.json", json.dumps(report, indent=1) + "\n")
    print(f"grid search: {len(grid.rows)} candidates by {grid.metric} in {grid.seconds:.0f} s; wrote {path}")
    report["check"] = (
        check_choice(model, scheduler, grid, (extractor, reference), default, data, n, seed, device, sampler)
        if check
        else "skipped (--no-check)"
    )
    atomic_write_text(path, json.dumps(report, indent=1) + "\n")  # the grid is kept should the check fail
    return grid.best


def check_choice(model, scheduler, grid: GridResult, ranked_by, default: Schedule, data: str, n: int,
                 seed: int, device, sampler: str) -> dict | str:  # fmt: skip
    """The grid's best and ASE's default, each under the grid's metric and Inception FID (same seeds),
    printed side by side; a note instead when the Inception weights are not installed."""
    try:
        inception = InceptionFeatures(device)
    except FileNotFoundError as err:
        print(f"not checked under Inception FID: {err}")
        return f"skipped: {err}"
    scorers = {grid.metric: ranked_by, "fid": (inception, reference_features(inception, data, "train", 2000))}
    schedules = {"best": grid.best, "ase default": default}
    scores = score_under(model, scheduler, schedules, scorers, n, seed, device, sampler)
    print(f"{'':<12} {'FLOPs':>6} " + " ".join(f"{m:>8}" for m in scorers))
    for name, schedule in schedules.items():
        values = " ".join(f"{scores[name][m]:>8.3f}" for m in scorers)
        print(f"{name:<12} {schedule.flop_ratio:>6.1%} {values}")
    return {"n": n, "seed": seed, "fid_reference": 2000, "scores": scores}
