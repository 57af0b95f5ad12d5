"""The bar every method must clear: the full model run for fewer sampling steps, at equal latency.

Running the full model for fewer steps is the simplest way to sample faster. A method that skips
or reuses blocks is worth using only if its quality beats that curve at the latency it measures.
:func:`versus_fewer_steps` reads the full model's quality at a method's latency ratio off the
curve through the measured full-model points (linear between neighbours), and says whether the
method lies above (better), on, or below it. A latency outside the measured range is not
extrapolated. Quality values are distances: lower is better.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

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

    @property
    def is_full(self) -> bool:
        return self.method == "full"


def step_curve(points: Sequence[Point], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The full model's (latency ratio, quality) points sorted by latency."""
    full = sorted((p.latency_ratio, p.quality[metric]) for p in points if p.is_full and metric in p.quality)
    if len(full) < 2:
        raise ValueError("the fewer-steps curve needs the full model at two or more step counts")
    latency, quality = zip(*full, strict=True)
    return np.array(latency), np.array(quality)


def versus_fewer_steps(point: Point, points: Sequence[Point], metric: str) -> dict[str, object]:
    """Where ``point`` lies against the fewer-steps curve under ``metric``: the curve's quality at its
    latency, the relative margin (positive = better than fewer steps) and a verdict."""
    latency, quality = step_curve(points, metric)
    if not latency[0] <= point.latency_ratio <= latency[-1]:
        return {"metric": metric, "curve": None, "margin": None, "verdict": "outside the measured range"}
    expected = float(np.interp(point.latency_ratio, latency, quality))
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
    return (
        f"{point.method}: {judged['verdict']} the fewer-steps curve under {metric} "
        f"({point.quality[metric]:.2f} vs {judged['curve']:.2f} at {at}: {abs(judged['margin']):.0%} {sign})"
    )
