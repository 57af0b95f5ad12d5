"""The bar every method must clear, and the verdicts against it: the full model run for fewer sampling
steps, at equal latency.

Running the full model for fewer steps is the simplest way to sample faster. A method that skips
or reuses blocks is worth using only if its quality beats that curve at the latency it measures.
:func:`versus_fewer_steps` reads the full model's quality at a method's latency ratio off the
curve through the measured full-model points (linear between neighbours), and says whether the
method lies above (better), on, or below it: above or below only where the margin's paired bootstrap
interval over samples (:mod:`lees.evaluation.bootstrap`: every method and the two curve points around
it recomputed on the same resamples of the sample indices) excludes a tie. A latency outside the
measured range is not extrapolated. Quality values are distances: lower is better.

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
from .bootstrap import (
    LEVEL,
    RESAMPLES,
    FixedReference,
    fd_replicates,
    percentile_interval,
    resample_indices,
    tie_verdict,
)
from .metrics import fd, features

TOLERANCE = 0.05  # without replicates (means over seeds): within 5 % of the curve's quality counts as "on"


@dataclass
class Point:
    """One measured method: its name, sampler steps, cost ratios against the full model's longest run,
    and quality under each metric (e.g. ``{"fd_clf": 7.1, "fid": 60.8}``); ``replicates``: each metric
    on every bootstrap resample of the sample indices, the same resamples for every point of a run;
    ``intervals``: each metric's 95 % interval as a stored row gives it (a plot's error bars)."""

    method: str
    steps: int
    flop_ratio: float
    latency_ratio: float
    quality: dict[str, float] = field(default_factory=dict)
    solver: str | None = None  # the full model's rows: the solver whose curve they lie on (None: the run's)
    replicates: dict[str, np.ndarray] = field(default_factory=dict)
    intervals: dict[str, list[float]] = field(default_factory=dict)  # a stored row's: plots' error bars

    @property
    def is_full(self) -> bool:
        return self.method == "full"


def _curve_points(points: Sequence[Point], metric: str, solver: str | None) -> list[Point]:
    """The full model's points with ``solver`` (None: the run's) under ``metric``, by latency."""
    full = sorted(
        (p for p in points if p.is_full and p.solver == solver and metric in p.quality),
        key=lambda p: p.latency_ratio,
    )
    if len(full) < 2:
        raise ValueError("the fewer-steps curve needs the full model at two or more step counts")
    return full


def step_curve(
    points: Sequence[Point], metric: str, solver: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The full model's (latency ratio, quality) points with ``solver`` (None: the run's) by latency."""
    full = _curve_points(points, metric, solver)
    return np.array([p.latency_ratio for p in full]), np.array([p.quality[metric] for p in full])


def versus_fewer_steps(
    point: Point, points: Sequence[Point], metric: str, solver: str | None = None
) -> dict[str, object]:
    """Where ``point`` lies against the fewer-steps curve of ``solver`` (None: the run's sampler) under
    ``metric``: the curve's quality at its latency (linear between the two neighbouring runs), the
    relative margin (positive = better than fewer steps), its paired bootstrap interval (the difference
    on every resample, the curve interpolated on the same resample, over the curve's value on all
    samples: a resampled Fréchet distance is biased upwards, and the bias cancels in the difference,
    not in a ratio of resampled values) and the verdict: above or below only where the interval
    excludes 0. Points without replicates are judged on the margin alone (within
    ``TOLERANCE``: on), and say so."""
    full = _curve_points(points, metric, solver)
    latency = np.array([p.latency_ratio for p in full])
    if not latency[0] <= point.latency_ratio <= latency[-1]:
        return {"metric": metric, "curve": None, "margin": None, "verdict": "outside the measured range"}
    weights = np.array([np.interp(point.latency_ratio, latency, row) for row in np.eye(len(full))])
    expected = float(weights @ [p.quality[metric] for p in full])
    margin = (expected - point.quality[metric]) / expected
    if all(metric in p.replicates for p in [point, *full]):
        curve = weights @ np.stack([p.replicates[metric] for p in full])
        interval = percentile_interval((curve - point.replicates[metric]) / expected)
        resamples = len(curve)
        return {"metric": metric, "curve": expected, "margin": margin, "interval": list(interval),
                "level": LEVEL, "resamples": resamples, "verdict": tie_verdict(interval)}  # fmt: skip
    verdict = "above" if margin > TOLERANCE else "below" if margin < -TOLERANCE else "on"
    return {"metric": metric, "curve": expected, "margin": margin, "verdict": verdict}


def versus_best_solver(point: Point, points: Sequence[Point], metric: str) -> dict[str, object]:
    """Where ``point`` lies against the best of every solver's fewer-steps curve at its latency (the
    curves whose measured range holds it, the best by the curves' values on all samples); ``solver``
    says whose (None: the run's sampler)."""
    best = None
    for solver in dict.fromkeys(p.solver for p in points if p.is_full and metric in p.quality):
        judged = versus_fewer_steps(point, points, metric, solver)
        if judged["curve"] is not None and (best is None or judged["curve"] < best["curve"]):
            best = {**judged, "solver": solver}
    return best or {"metric": metric, "curve": None, "margin": None, "verdict": "outside the measured range"}


def describe(point: Point, judged: dict[str, object]) -> str:
    """One line a report prints for a method against the curve, with the margin's interval."""
    at = f"latency {point.latency_ratio:.2f}"
    if judged["curve"] is None:
        return f"{point.method}: {at} lies outside the measured fewer-steps range (under {judged['metric']})"
    metric = judged["metric"]
    sign = "better" if judged["margin"] > 0 else "worse"
    curve = "the fewer-steps curve" if "solver" not in judged else f"the best solver's ({judged['solver']})"
    if "interval" in judged:
        low, high = judged["interval"]
        bars = f"; {judged['level']:.0%} interval {low:+.0%} to {high:+.0%}"
    else:
        bars = f"; no interval: within {TOLERANCE:.0%} counts as on"
    return (
        f"{point.method}: {judged['verdict']} {curve} under {metric} ({point.quality[metric]:.3g} vs "
        f"{judged['curve']:.3g} at {at}: {abs(judged['margin']):.0%} {sign}{bars})"
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
    resamples: int | Mapping[str, int] = RESAMPLES,
    seed: int = 0,
) -> dict[str, Point]:
    """Each sampled method as a :class:`Point`: its quality under each scorer (``only[metric]``: the
    methods that metric scores, all by default) and on each of ``resamples`` paired bootstrap resamples
    of the sample indices (drawn from ``seed``, one set per metric for every method; per metric where a
    mapping, 0: none), its FLOP
    ratio against the full model at ``steps`` and its latency against the full model's (the method
    ``full``, sampled in the same run). ``curves``: the rows that are the full model with another
    solver, and the solver."""
    curves = curves or {}
    base = runs["full"].seconds
    scored = {metric: min(count, len(runs["full"].images)) for metric, (_, count, _) in scorers.items()}
    counts = resamples if isinstance(resamples, Mapping) else dict.fromkeys(scorers, resamples)
    indices = {m: resample_indices(k, counts[m], seed) for m, k in scored.items() if counts.get(m)}
    fixed = {m: FixedReference.of(scorers[m][2]) for m in indices}
    points = {}
    for name, schedule in schedules.items():
        quality, replicates = {}, {}
        for metric, (extractor, count, reference) in scorers.items():
            if only is None or metric not in only or name in only[metric]:
                feats = features(extractor, runs[name].images[:count])
                quality[metric] = fd(feats, reference)
                if metric in indices:
                    replicates[metric] = fd_replicates(feats, fixed[metric], indices[metric])
        full = name.partition("@")[0] == "full" or name in curves
        method = "full" if full else name  # every full row is a curve's
        latency = runs[name].seconds / base
        points[name] = Point(method, schedule.num_steps, schedule.flop_ratio_vs(steps), latency, quality,
                             curves.get(name), replicates)  # fmt: skip
    return points
