"""Paired bootstrap intervals: against hand computations, and the verdicts they allow."""

import itertools
import re

import numpy as np
import pytest

from lees.evaluation.bootstrap import (
    FixedReference,
    fd_replicates,
    mean_replicates,
    percentile_interval,
    resample_indices,
    tie_verdict,
)
from lees.evaluation.metrics import fd
from lees.tune.verdict import verdict


def test_interval_of_every_resample_of_two_samples_is_the_hand_computed_one():
    # Two per-sample differences, 0 and 1: the four resamples with replacement have means 0, .5, .5, 1.
    # The 2.5th percentile sits at position .025 * 3 = .075 of the sorted means (0 + .075 * .5) and the
    # 97.5th at 2.925 (.5 + .925 * .5).
    every = np.array(list(itertools.product(range(2), repeat=2)))
    low, high = percentile_interval(mean_replicates(np.array([0.0, 1.0]), every))
    assert (low, high) == pytest.approx((0.0375, 0.9625))


def test_interval_of_every_resample_of_three_samples_by_hand():
    # All 27 resamples of three values, their means sorted, the percentiles interpolated by hand.
    values = np.array([0.0, 1.0, 5.0])
    every = np.array(list(itertools.product(range(3), repeat=3)))
    means = sorted(sum(values[list(idx)]) / 3 for idx in every)

    def percentile(q):
        position = q * (len(means) - 1)
        below = int(position)
        return means[below] + (position - below) * (means[below + 1] - means[below])

    low, high = percentile_interval(mean_replicates(values, every), level=0.9)
    assert low == pytest.approx(percentile(0.05)) and high == pytest.approx(percentile(0.95))


def test_resamples_are_seeded_and_shared():
    a, b = resample_indices(10, 5, seed=3), resample_indices(10, 5, seed=3)
    assert a.shape == (5, 10) and (a == b).all() and a.min() >= 0 and a.max() < 10
    assert not (a == resample_indices(10, 5, seed=4)).all()
    with pytest.raises(ValueError):
        resample_indices(1, 5)


@pytest.mark.parametrize("n, d", [(40, 6), (12, 30)])  # more samples than features, and fewer
def test_fd_on_each_resample_equals_the_direct_frechet_distance(n, d):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d))
    partner = x + rng.normal(size=(n, d))
    real = 2 * rng.normal(size=(200, d)) + 1
    indices = resample_indices(n, 4, seed=1)
    fixed = fd_replicates(x, FixedReference.of(real), indices)
    paired = fd_replicates(x, partner, indices)
    assert fixed == pytest.approx([fd(x[idx], real) for idx in indices], rel=1e-6)
    assert paired == pytest.approx([fd(x[idx], partner[idx]) for idx in indices], rel=1e-6)


@pytest.mark.parametrize(
    "interval, verdict",
    [((0.01, 0.2), "above"), ((-0.3, -0.02), "below"), ((-0.1, 0.4), "on"), ((0.0, 0.1), "on")],
)
def test_a_verdict_only_where_the_interval_excludes_a_tie(interval, verdict):
    assert tie_verdict(interval) == verdict


def _row(name, kind, latency, fd_full):
    return {"name": name, "kind": kind, "solver": "ddim", "steps": 10, "latency_ratio": latency,
            "flop_ratio": latency, "fd_full": fd_full, "psnr": 30.0, "ssim": 0.9}  # fmt: skip


def test_tunes_verdict_sets_the_winner_against_its_runner_with_the_paired_interval():
    rows = [_row("full", "steps", 1.0, 0.0), _row("ddim@10", "steps", 0.5, 3.0),
            _row("uniform-3", "schedule", 0.55, 5.0), _row("uniform-2", "schedule", 0.7, 1.0)]  # fmt: skip
    # Four resamples; the runner minus the winner on each: 2, 2, 1, 3. Sorted 1, 2, 2, 3: the 2.5th
    # percentile at position .075 (1 + .075), the 97.5th at 2.925 (2 + .925).
    boot = {"ddim@10": {"fd_full": np.array([3.0, 3.0, 2.0, 4.0])}, "uniform-2": {"fd_full": np.ones(4)},
            "uniform-3": {"fd_full": np.full(4, 5.0)}}  # fmt: skip
    line, best = verdict(rows, 0.8, boot)
    assert best["name"] == "uniform-2" and "[uniform-2 above ddim@10 under fd_full: +2 (95% interval" in line
    low, high = (float(x) for x in re.findall(r"interval ([-+.\d]+) to ([-+.\d]+)\)\]$", line)[0])
    assert low == pytest.approx(1.075, abs=0.006) and high == pytest.approx(2.925, abs=0.006)
    tied = {**boot, "uniform-2": {"fd_full": np.array([1.0, 4.0, 1.0, 1.0])}}  # differences 2, -1, 1, 3
    assert "[uniform-2 on ddim@10 under fd_full: +2" in verdict(rows, 0.8, tied)[0]
    # where fewer steps win, the winner is set against the best other run within the budget
    assert "fewer steps win [ddim@10 above uniform-3 under fd_full: +2" in verdict(rows, 0.6, boot)[0]
