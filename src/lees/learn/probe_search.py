"""An adaptive schedule whose thresholds are learned: each call decides from a probe which blocks run.

FirstBlockCache, TeaCache and MagCache decide at every call from how far the first block's output moved,
against one hand-set threshold. Here (:mod:`lees.engine.probe`) block 0 runs at every call, the first
``warmup`` calls run in full, and every other cell forecasts its block's residual (order 1) unless the
block's accumulated change of block 0's output since it last ran exceeds the cell's threshold
``exp(theta[s, g])``: ``s`` the call's segment (``segments`` equal stretches of the calls after the
warm-up), ``g`` the block's group (``groups`` equal stretches of blocks 1 .. K-1). So the thresholds
differ per block and time, and are few enough to search by rollouts. With ``base`` (a schedule file for
the same calls, e.g. a table searched at a smaller budget) its table is the floor instead: block 0 then
runs at every call, and each cell it reuses or forecasts may run where the probe says (adaptive runs on
top of a static learned table).

The objective and the costs are the rollout search's (:mod:`lees.learn.search`): the training batch's
final-sample PSNR against the reference (less the fd_clf guard's penalty, with ``guard_data``), and the
modelled latency from the actions' timed costs, here of what the rollout *did*: its adaptive runs
counted (:attr:`lees.sampling.lockstep.TimedSamples.adaptive_share`). The search:

1. the start: one threshold for every cell, bisected on a log scale to the smallest whose rollout fits
   the budget (the probe then spends it, as a one-threshold cache tuned to the budget would);
2. local search from it: scale one group-segment threshold up or down by ``STEP``, one down and another up
   (runs moved where they pay, at about the same cost), or all of them by ``FINE`` (the budget spent
   more closely), in a seeded random order; the first move that improves and fits is accepted, until
   none does or ``max_rollouts`` are spent. Every rollout is stored as it is taken; the same command
   again replays them and continues.

A batch's decisions depend on its own trajectory, so an evaluation's latency varies with the batch; the
share the schedule measured at the end (``check_rounds``) is printed beside the modelled one.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from diffusers import SchedulerMixin
from torch import nn
from tqdm.auto import tqdm

from ..engine.actions import FORECAST, REUSE, RUN
from ..engine.blocks import Blocks
from ..engine.probe import PROBE_BLOCK
from ..schedules.schedule import Schedule
from .search import (
    REFERENCES,
    LatencyCosts,
    SearchConfig,
    SearchResult,
    _finished,
    _prepared,
    _Scorer,
    penalties,
)

STEP = math.log(1.5)  # a move scales a threshold by 1.5 (or 1 / 1.5)
FINE = math.log(1.1)  # a move of all thresholds together: 1.1
BISECTIONS = 8  # rollouts of the start's bisection between LOWEST and HIGHEST
LOWEST, HIGHEST = math.log(1e-3), math.log(10.0)  # thresholds of the start: run almost always, almost never


@dataclass
class ProbeConfig(SearchConfig):
    """The rollout search's settings, and the adaptive schedule's shape."""

    warmup: int = 3  # calls run in full before the probe decides
    segments: int = 5  # stretches of the calls after the warm-up with thresholds of their own
    groups: int = 2  # stretches of blocks 1 .. K-1 with thresholds of their own
    base: str | None = None  # a schedule file whose table is the floor (None: warm-up, then forecasts)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.warmup < self.steps or min(self.segments, self.groups) < 1:
            raise ValueError("warmup lies in [1, steps); segments and groups are positive")


def base_table(num_blocks: int, num_calls: int, warmup: int) -> np.ndarray:
    """The table under the probe: the probe block and the warm-up calls run, every other cell forecasts."""
    actions = np.full((num_blocks, num_calls), FORECAST, dtype=np.int8)
    actions[:, :warmup] = RUN
    actions[PROBE_BLOCK] = RUN
    return actions


def floor_of(blocks: Blocks, timesteps: list, config: ProbeConfig) -> tuple[np.ndarray, int]:
    """The table the probe adds runs to and its forecast order: :func:`base_table`, or ``config.base``'s
    table (made for the same blocks and calls) with the probe block run at every call."""
    if config.base is None:
        return base_table(len(blocks), len(timesteps), config.warmup), 1
    base = Schedule.load(config.base, blocks)
    if base.timesteps != list(timesteps):
        raise ValueError(f"{config.base} was made for other calls than {config.steps} of {config.sampler}")
    actions = base.actions.copy()
    actions[PROBE_BLOCK] = RUN
    return actions, base.forecast_order


def thresholds_of(theta: np.ndarray, actions: np.ndarray, warmup: int) -> np.ndarray:
    """Each reusing or forecasting cell's threshold ``exp(theta[segment, group])`` (module doc); ``inf``
    elsewhere."""
    k, t = actions.shape
    segments, groups = theta.shape
    segment = np.clip((np.arange(t) - warmup) * segments // max(t - warmup, 1), 0, segments - 1)
    group = np.clip((np.arange(k) - 1) * groups // max(k - 1, 1), 0, groups - 1)
    values = np.exp(theta[segment[None, :], group[:, None]])
    return np.where(np.isin(actions, (REUSE, FORECAST)), values, np.inf)


def probe_schedule(blocks: Blocks, timesteps: list, theta: np.ndarray, config: ProbeConfig,
                   extra: dict | None = None) -> Schedule:  # fmt: skip
    """The adaptive schedule of log-thresholds ``theta`` (segments x groups) on its floor."""
    actions, order = floor_of(blocks, timesteps, config)
    settings = {**config.to_dict(), **(extra or {})}
    thresholds = thresholds_of(theta, actions, config.warmup)
    return Schedule(actions, blocks.names, timesteps, "search", settings, blocks.shares, 1000, order,
                    thresholds)  # fmt: skip


def key_of(theta: np.ndarray) -> str:
    """The stored score's key of a theta (rounded: a replayed move lands on the same key)."""
    return json.dumps(np.round(theta, 6).tolist())


class _ProbeScorer(_Scorer):
    """Rollout scores and modelled latencies (of what the rollout ran) of log-thresholds, stored."""

    def __call__(self, theta: np.ndarray) -> tuple[float, float]:
        key = key_of(theta)
        if key not in self.state["scores"]:
            run = self.take(key, probe_schedule(self.blocks, self.timesteps, theta, self.config))
            table, order = floor_of(self.blocks, self.timesteps, self.config)
            self.state.setdefault("latency", {})[key] = self.costs.ratio(table, order, run.adaptive_share)
            self.save()
        self.bar.update(len(self.state["scores"]) - self.bar.n)
        return self.state["scores"][key], self.state["latency"][key]


def moves(theta: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """Every move of the local search from ``theta`` (module doc), named."""
    cells = list(np.ndindex(theta.shape))
    for cell, sign in itertools.product(cells, (-1, 1)):
        moved = theta.copy()
        moved[cell] += sign * STEP
        yield f"{'lower' if sign < 0 else 'raise'} {cell}", moved
    for down, up in itertools.permutations(cells, 2):
        moved = theta.copy()
        moved[down] -= STEP
        moved[up] += STEP
        yield f"lower {down}, raise {up}", moved
    for sign in (-1, 1):
        yield f"{'lower' if sign < 0 else 'raise'} all", theta + sign * FINE


def _start(score: _ProbeScorer, shape: tuple[int, int], budget: float) -> np.ndarray:
    """One threshold for every cell, the smallest (on a log scale, ``BISECTIONS`` rollouts) that fits."""
    high = np.full(shape, HIGHEST)
    if score(high)[1] > budget + 1e-9:
        raise ValueError(
            f"no adaptive schedule fits a latency share of {budget:g}: its warm-up and probe alone take "
            f"{score(high)[1]:.3f} (fewer --probe-warmup calls, or a larger budget)"
        )
    low, fits = LOWEST, HIGHEST
    if score(np.full(shape, low))[1] <= budget + 1e-9:
        return np.full(shape, low)
    for _ in range(BISECTIONS):
        middle = (low + fits) / 2
        if score(np.full(shape, middle))[1] <= budget + 1e-9:
            fits = middle
        else:
            low = middle
    return np.full(shape, fits)


def _local_search(score: _ProbeScorer, start: np.ndarray, budget: float) -> tuple[np.ndarray, list[dict]]:
    """From ``start``, the first improving move that fits, until none does or the rollouts are spent."""
    current = start
    psnr, latency = score(current)
    log = [{"move": "start", "psnr": psnr, "latency_ratio": latency}]
    while True:
        found = None
        options = list(moves(current))
        for i in np.random.default_rng(len(log)).permutation(len(options)):
            name, theta = options[i]
            if score.spent and key_of(theta) not in score.state["scores"]:
                break
            psnr, latency = score(theta)
            if latency <= budget + 1e-9 and psnr > log[-1]["psnr"]:
                found = (name, theta, psnr, latency)
                break
        if found is None:
            return current, log
        name, current, psnr, latency = found
        log.append({"move": name, "psnr": psnr, "latency_ratio": latency})
        score.bar.set_postfix(psnr=f"{psnr:.2f}", latency=f"{latency:.3f}")


def search_probe(
    model: nn.Module,
    scheduler: SchedulerMixin,
    config: ProbeConfig | None = None,
    blocks: Blocks | None = None,
    progress: bool = True,
    state_path: str | Path | None = None,
    costs: LatencyCosts | None = None,
) -> SearchResult:
    """Learn the thresholds of an adaptive schedule for ``model`` with its solver (module doc): the best
    final-sample score on the training batch within a latency budget spent by the probe's runs.

    Args:
        model: the denoiser (frozen); scheduler: its scheduler (the noise process of ``config.sampler``).
        config: as the rollout search's (steps, solver, guidance, ``target_latency_ratio``, training batch,
            reference, guard, effort), and the schedule's ``warmup``, ``segments`` and ``groups``.
        blocks: the blocks to schedule (default: :func:`lees.find_blocks`); progress: a progress bar.
        state_path: a JSON file of the costs and every rollout's score and latency; the same call again
            continues from it. costs: the actions' costs (default: measured, or read from ``state_path``).

    Returns the schedule (its table, thresholds and how they were found in its settings), its training
    score, its modelled latency share on the training batch and the share measured at the end.
    Example:
        >>> config = ProbeConfig(steps=30, target_latency_ratio=0.5)
        >>> result = search_probe(model, scheduler, config)  # doctest: +SKIP
        >>> lees.enable(pipe, result.schedule)  # doctest: +SKIP
    """
    started = time.perf_counter()
    config, blocks, timesteps, state, costs = _prepared(
        model, scheduler, config or ProbeConfig(), blocks, state_path, costs
    )
    budget = config.target_latency_ratio
    bar = tqdm(total=config.max_rollouts, desc="probe search", unit="rollout", disable=not progress)
    with bar:
        score = _ProbeScorer(model, scheduler, blocks, timesteps, config, state, state_path, bar)
        score.costs = costs
        score.save()
        theta, log = _local_search(score, _start(score, (config.segments, config.groups), budget), budget)
    schedule = probe_schedule(blocks, timesteps, theta, config, _found(config, theta, log, state))
    return _finished(model, scheduler, schedule, config, costs, log, score.rollouts, started)


def _found(config: ProbeConfig, theta: np.ndarray, log: list[dict], state: dict) -> dict:
    """How the thresholds were found, for the schedule's settings."""
    objective = f"probe search: final-sample PSNR against {REFERENCES[config.reference]} (same noise)"
    objective += penalties(config)
    key = key_of(theta)
    return {"objective": objective, "theta": np.round(theta, 6).tolist(), "train_psnr": log[-1]["psnr"],
            "train_fd_change": state.get("fd_change", {}).get(key),
            "train_fd_full": state.get("fd_full", {}).get(key),
            "start_psnr": log[0]["psnr"], "latency_ratio": log[-1]["latency_ratio"],
            "costs": state["costs"], "rollouts": len(state["scores"]),
            "moves": [r["move"] for r in log]}  # fmt: skip
