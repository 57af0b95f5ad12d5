"""Schedules compared over seeds: quality under each metric, latency and ratios as per-seed lists,
and a paired t-test of the first two on the first metric (what ``lees eval`` writes)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import SchedulerMixin
from torch import nn

from ..sampling.lockstep import schedule_sampler
from ..schedules.schedule import Schedule
from .scoring import score_schedule
from .stats import mean_pm_std, paired_t

Scorer = tuple[Callable[[torch.Tensor], np.ndarray], np.ndarray]  # feature extractor, reference features


def compare_schedules(
    model: nn.Module,
    scheduler: SchedulerMixin,
    schedules: Mapping[str, Schedule],
    scorers: Mapping[str, Scorer],
    n: int,
    seeds: Sequence[int],
    device: str | torch.device = "cpu",
    sampler: str | None = None,
    work: Path | None = None,
    say: Callable[..., Any] = print,
    guidance_scale: float = 1.0,
) -> dict[str, Any]:
    """Score each schedule with ``n`` samples per seed under every metric of ``scorers`` (the first one
    is the t-test's); each on the sampler it was made for (``sampler`` where it names none), with
    classifier-free guidance at ``guidance_scale`` (class-conditional models; 1: none).

    With ``work`` each (schedule, seed) run keeps its progress there and an interrupted comparison
    picks up where it stopped. Returns the report: the metrics, ``n``, the seeds, each schedule's
    per-seed figures, and the paired t-test of the first two schedules when there are two seeds.
    """
    if n < 2 or not seeds:
        raise ValueError("need n >= 2 samples and at least one seed")
    metrics = list(scorers)
    (extractor, reference), also = scorers[metrics[0]], {m: scorers[m] for m in metrics[1:]}
    results = {}
    for k, (name, schedule) in enumerate(schedules.items()):
        own = schedule_sampler(schedule, sampler, scheduler)
        scores = [
            score_schedule(model, scheduler, schedule, extractor, reference, n, schedule.num_steps, seed,
                           device=device, sampler=own, progress=True,
                           state=None if work is None else work / f"schedule{k}-seed{seed}.npz", also=also,
                           guidance_scale=guidance_scale)
            for seed in seeds
        ]  # fmt: skip
        results[name] = _row(scores, schedule, also)
        quality = ", ".join(f"{m} FD {mean_pm_std(results[name]['fd' if m == metrics[0] else f'fd_{m}'])}"
                            for m in metrics)  # fmt: skip
        say(
            f"{name}: {quality}, {mean_pm_std(results[name]['seconds_per_100'], '.2f')} s/100 img, "
            f"blocks {schedule.executed_ratio:.1%}, FLOPs {schedule.flop_ratio:.1%}"
        )
    report: dict[str, Any] = {"metric": metrics[0], "metrics": metrics, "n": n, "seeds": list(seeds),
                              "results": results}  # fmt: skip
    names = list(results)
    if len(names) >= 2 and len(seeds) >= 2:
        t, p = paired_t(results[names[0]]["fd"], results[names[1]]["fd"])
        report["t_test"] = {"a": names[0], "b": names[1], "t": t, "p": p}
        say(f"paired t-test on {metrics[0]} FD, {names[0]} vs {names[1]}: t = {t:.3f}, p = {p:.4g}")
    return report


def _row(scores: list, schedule: Schedule, also: Mapping[str, Scorer]) -> dict[str, Any]:
    """One schedule's figures: per seed where they vary, once where they do not."""
    return {
        "fd": [s.fd for s in scores],
        **{f"fd_{m}": [s.also[m] for s in scores] for m in also},
        "kid": [s.kid for s in scores],
        "seconds_per_100": [s.seconds_per_100 for s in scores],
        "images_per_s": [s.n / s.seconds for s in scores],
        "executed_ratio": schedule.executed_ratio,
        "flop_ratio": schedule.flop_ratio,
    }
