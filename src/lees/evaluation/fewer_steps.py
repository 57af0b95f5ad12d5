"""The bar every method must clear, and the verdicts against it: the full model run for fewer sampling
steps, at equal latency.

Running the full model for fewer steps is the simplest way to sample faster. A method that skips
or reuses blocks is worth using only if its quality beats that curve at the latency it measures.
:func:`versus_fewer_steps` reads the full model's quality at a method's latency ratio off the
curve through the measured full-model points (linear between neighbours), and says whether the
method lies above (better), on, or below it. A latency outside the measured range is not
extrapolated. Quality values are distances: lower is better.

The full model with another solver at fewer steps is a curve of its own (a point's ``solver``; None:
the run's own sampler); :func:`versus_best_solver` judges a method against the best of the curves at
its latency, the bar a user who may also change the solver faces.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..sampling.lockstep import TimedSamples
from ..schedules.schedule import Schedule
from .metrics import fd, features

TOLERANCE = 0.05  # within 5 % of the curve's quality counts as "on" the curve


@dataclass
class Point:
    """One measured method: its name, sampler steps, cost ratios against the full model's longest run,
    and quality under each metric (e.g. ``{"fd_clf": 7.1, "fid": 60.8}``)."""

    method: str
    steps: int
    flop_ratio: float
    latency_ratio: float
    quality: dict[str, float] = field(default_factory=dict)
    solver: str | None = None  # the full model's rows: the solver whose curve they lie on (None: the run's)

    @property
    def is_full(self) -> bool:
        return self.method == "full"


def step_curve(
    points: Sequence[Point], metric: str, solver: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The full model's (latency ratio, quality) points with ``solver`` (None: the run's) by latency."""
    full = sorted(
        (p.latency_ratio, p.quality[metric])
        for p in points
        if p.is_full and p.solver == solver and metric in p.quality
    )
    if len(full) < 2:
        raise ValueError("the fewer-steps curve needs the full model at two or more step counts")
    latency, quality = zip(*full, strict=True)
    return np.array(latency), np.array(quality)


def versus_fewer_steps(
    point: Point, points: Sequence[Point], metric: str, solver: str | None = None
) -> dict[str, object]:
    """Where ``point`` lies against the fewer-steps curve of ``solver`` (None: the run's sampler) under
    ``metric``: the curve's quality at its latency, the relative margin (positive = better than fewer
    steps) and a verdict."""
    latency, quality = step_curve(points, metric, solver)
    if not latency[0] <= point.latency_ratio <= latency[-1]:
        return {"metric": metric, "curve": None, "margin": None, "verdict": "outside the measured range"}
    return _judged(point, metric, float(np.interp(point.latency_ratio, latency, quality)))


def versus_best_solver(point: Point, points: Sequence[Point], metric: str) -> dict[str, object]:
    """Where ``point`` lies against the best of every solver's fewer-steps curve at its latency (the
    curves whose measured range holds it); ``solver`` says whose (None: the run's sampler)."""
    best = None
    for solver in dict.fromkeys(p.solver for p in points if p.is_full and metric in p.quality):
        judged = versus_fewer_steps(point, points, metric, solver)
        if judged["curve"] is not None and (best is None or judged["curve"] < best["curve"]):
            best = {**judged, "solver": solver}
    return best or {"metric": metric, "curve": None, "margin": None, "verdict": "outside the measured range"}


def _judged(point: Point, metric: str, expected: float) -> dict[str, object]:
    margin = (expected - point.quality[metric]) / expected
    verdict = "above" if margin > TOLERANCE else "below" if margin < -TOLERANCE else "on"
    return {"metric": metric, "curve": expected, "margin": margin, "verdict": verdict}


def describe(point: Point, judged: dict[str, object]) -> str:
    """One line a report prints for a method against the curve."""
    at = f"latency {point.latency_ratio:.2f}"
    if judged["curve"] is None:
        return f"{point.method}: {at} lies outside the measured fewer-steps range"
    metric = judged["metric"]
    sign = "better" if judged["margin"] > 0 else "worse"
    curve = "the fewer-steps curve" if "solver" not in judged else f"the best solver's ({judged['solver']})"
    return (
        f"{point.method}: {judged['verdict']} {curve} under {metric} "
        f"({point.quality[metric]:.2f} vs {judged['curve']:.2f} at {at}: {abs(judged['margin']):.0%} {sign})"
    )


Scorers = dict[str, tuple[Callable[[torch.Tensor], np.ndarray], int, np.ndarray]]
"""Per metric name: its feature extractor, how many samples it scores, and the reference features."""


def measure(
    runs: Mapping[str, TimedSamples],
    schedules: Mapping[str, Schedule],
    scorers: Scorers,
    steps: int,
    only: Mapping[str, Sequence[str]] | None = None,
    curves: Mapping[str, str] | None = None,
) -> dict[str, Point]:
    """Each sampled method as a :class:`Point`: its quality under each scorer (``only[metric]``: the
    methods that metric scores, all by default), its FLOP ratio against the full model at ``steps`` and
    its latency against the full model's (the method ``full``, sampled in the same run). ``curves``:
    the rows that are the full model with another solver, and the solver."""
    curves = curves or {}
    base = runs["full"].seconds
    points = {}
    for name, schedule in schedules.items():
        images = runs[name].images
        quality = {
            metric: fd(features(extractor, images[:count]), reference)
            for metric, (extractor, count, reference) in scorers.items()
            if only is None or metric not in only or name in only[metric]
        }
        full = name.partition("@")[0] == "full" or name in curves
        method = "full" if full else name  # every full row is a curve's
        latency = runs[name].seconds / base
        points[name] = Point(method, schedule.num_steps, schedule.flop_ratio_vs(steps), latency, quality,
                             curves.get(name))  # fmt: skip
    return points
