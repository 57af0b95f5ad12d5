"""A run / reuse / forecast schedule searched by rollouts: the final sample against the full model's.

The score of a schedule is what the user sees: the mean PSNR of its *final samples* against the full
model's at the same solver, steps, guidance, start noise and labels, over a small training batch on seeds
no evaluation uses (``TRAIN_SEED + SearchConfig.seed``). Its cost is *measured* latency: before
searching, whole sampling runs of the full model and of schedules that run every block at every call
but the last (which forecasts: every run then stores its residuals, as a run does in a schedule that
reuses, and the store costs time), or run call 0 and then reuse everywhere, forecast everywhere (order 1
and 2) or skip everywhere are timed, each
sampled alone in rounds whose order turns (as ``lees tune`` times its candidates, and as a user compares
the plain model with the enabled one: the full model runs without hooks), which gives a call's fixed cost
and each block's cost per action (a forecast costs more than a reuse: it sums stored residuals). A
schedule's latency share is then its modelled time over the full model's, and the search keeps it within
``target_latency_ratio``. The schedule found is timed the same way against the full model at the end
(``check_rounds``), and a measured share more than 0.02 off the budget warns with the figure.

The search (:func:`search_schedule`): start from the best of the uniform baselines that fit the budget
(every ``n``-th call run after ``w`` warm-up calls, the rest forecast at order 1 or 2 or reused; the few
most expensive are scored), then local search over the moves of the neighbourhood that fit the budget, in
a seeded random order: the first that improves is accepted (``accept="first"``, the default: more
accepted moves per rollout where a rollout costs seconds) or, with ``accept="best"``, every move is
scored and the best improving one accepted; until no move improves or ``max_rollouts`` are spent. The
moves: shift a fully run call one call earlier or later; run a call in full, or its first or its last
half of the blocks (per-block refinement, and the granularity that lets the budget be spent to within
0.02: one full call is about 1/T of the model's time); turn a segment of calls between two runs from
forecasting to reusing or back; switch the forecast order (one order per schedule, as
:class:`~lees.schedules.schedule.Schedule` holds it). So the warm-up, the first and last runs and where
forecasting pays are learned, not fixed. Call 0 always runs (nothing is cached before it).

The solver chosen with the table (``reference_run``, e.g. ``"dpm++@20"``): a search on UniPC at 10 steps
is scored against the full model's run at DPM-Solver++'s 20 steps and its budget is a share of that run's
latency (the per-call costs are the solver's own; the latency share divides by the reference's calls), so
a table on fewer steps of another solver is a candidate beside the tables on the user's own.

Why a search over rollouts and not backpropagation: the actions are discrete (a relaxation must be
rounded, and the rounded schedule is not the one trained; the step router's straight-through estimate
stays at its start, issue 34); the compounding error of a whole run is what matters and a rollout
measures it exactly; and on 2 CPU cores a rollout of 16 samples costs seconds while backpropagating
through 30 guided calls of the DiT costs about three times as much and the memory of every call's
activations. Each rollout's score is stored as it is taken (``state_path``, JSON): a search run again
with the same settings replays its moves from the stored scores and continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import SchedulerMixin
from torch import nn
from tqdm.auto import tqdm

from ..diffusion.samplers import sampler_timesteps
from ..diffusion.solvers import default_solver
from ..engine.actions import FORECAST, REUSE, RUN, SKIP
from ..engine.blocks import Blocks, find_blocks
from ..evaluation.fidelity import psnr
from ..evaluation.ode_reference import ODE, check_deterministic
from ..sampling.lockstep import TimedSamples, sample_lockstep
from ..schedules.baselines import cached_schedule
from ..schedules.schedule import Schedule
from ..utils.config import Settings
from ..utils.files import atomic_write_text
from .fd_guard import FdGuard, check_guard, fd_guard

TRAIN_SEED = 9001  # lees' evaluations sample at small seeds (0, 7, 23, 41, 71): training stays clear of them
BUDGET_SLACK = 0.02  # how far below the asked latency share a searched schedule may land without a warning
REFERENCES = {
    "run": "the full model's run",
    "ode": "the converged ODE solution",
    "both": "the full model's run and the converged ODE solution (mean of the two PSNRs)",
}  # the final samples a rollout is scored against, from the same noise and labels
TIMED = {"reuse": (REUSE, 1), "forecast-1": (FORECAST, 1), "forecast-2": (FORECAST, 2), "skip": (SKIP, 1)}


@dataclass
class SearchConfig(Settings):
    """Settings of one rollout search (saved in the schedule's settings)."""

    steps: int = 30  # the sampler's steps (model calls of one guidance branch)
    sampler: str | None = None  # a lees solver name; None: the model family's default (euler for flow)
    guidance_scale: float = 1.0
    target_latency_ratio: float = 0.5  # the schedule's latency over the full model's, measured per action
    samples: int = 16  # the training batch: rollouts of these many samples score each schedule
    seed: int = 0  # the training samples are sampled at seed TRAIN_SEED + seed: one no evaluation uses
    max_rollouts: int = 300  # the search's effort (scored schedules, the starts' included)
    starts: int = 4  # uniform baselines scored to pick the start (the most expensive within the budget)
    accept: str = "first"  # "first": the first improving move (moves in a seeded random order); "best"
    timing_repeats: int = 2  # timed rounds of the actions' costs (median of each over the rounds)
    timing_batch: int | None = None  # the batch the actions and the found table are timed at: the user's
    # (a call's fixed cost weighs more in a small batch); None: the training batch (``samples``)
    check_rounds: int = 3  # timed rounds of the found schedule against the full model (0: no check)
    reference: str = "run"  # what rollouts are scored against: "run", "ode" or "both" (REFERENCES)
    guard_data: str | None = None  # a dataset: penalise fd_clf's first-order rise to it (lees.learn.fd_guard)
    guard_n: int = 640  # the full model's samples behind the guard's feature statistics
    guard_weight: float = 50.0  # dB of score taken per unit that fd_clf rises (to first order)
    fd_weight: float = 0.0  # dB of score taken per unit of FD to the full model's samples (classifier
    # features, estimated on the training batch: FdGuard.to_full); needs guard_data, whose guard has them
    start: str | None = None  # a schedule file to start from (None: the best uniform baselines that fit)
    reference_run: str | None = None  # "SOLVER@STEPS": the full model's run the rollouts are scored and
    # the budget timed against, when not the search's own solver and steps (the solver chosen with the table)

    def __post_init__(self) -> None:
        if not 0 < self.target_latency_ratio <= 1:
            raise ValueError(f"the target latency ratio must lie in (0, 1], got {self.target_latency_ratio}")
        if self.steps < 2:
            raise ValueError("a schedule that reuses needs at least 2 steps")
        if (
            min(self.samples, self.max_rollouts, self.starts, self.timing_repeats) < 1
            or (self.timing_batch is not None and self.timing_batch < 1)
            or self.check_rounds < 0
        ):
            raise ValueError(
                "samples, max_rollouts, starts, timing_repeats and timing_batch must be positive, "
                "check_rounds not negative"
            )
        if self.reference not in REFERENCES:
            raise ValueError(f"reference is one of {', '.join(REFERENCES)}, got {self.reference!r}")
        if self.accept not in ("first", "best"):
            raise ValueError(f"accept is first or best, got {self.accept!r}")
        if self.fd_weight < 0 or (self.fd_weight and not self.guard_data):
            raise ValueError("fd_weight (--fd-weight) must not be negative and needs guard_data (--data)")
        self.against()  # a clear error for a malformed reference_run

    def against(self) -> tuple[str | None, int]:
        """The solver and steps of the full model's run the search is scored and timed against: those of
        ``reference_run``, else the search's own (a solver of None: the model family's default)."""
        if self.reference_run is None:
            return self.sampler, self.steps
        solver, _, steps = self.reference_run.rpartition("@")
        if not solver or not steps.isdigit() or int(steps) < 2:
            raise ValueError(f"reference_run is SOLVER@STEPS (e.g. dpm++@20), got {self.reference_run!r}")
        return solver, int(steps)


@dataclass
class LatencyCosts:
    """Seconds of one model call: ``fixed`` (everything but the blocks: embedding, output, solver
    update, the hooks' dispatch), and per block and action (``run``: by FLOP share; ``reuse``,
    ``forecast-1``, ``forecast-2``: alike for every block); ``full``: the plain model's call, no hooks;
    ``calls``: the model calls of the full run a table's latency is a share of (None: the table's own, T;
    another solver's step count where the search chooses the solver with the table)."""

    full: float
    fixed: float
    run: list[float]
    reuse: float
    forecast: dict[int, float]
    calls: int | None = None

    def ratio(self, actions: np.ndarray, order: int, ran: np.ndarray | None = None) -> float:
        """The modelled latency of a (K, T) action table over the full model's T calls; ``ran``: an adaptive
        schedule's share of runs per cell beyond the table (:attr:`TimedSamples.adaptive_share`)."""
        per_block = np.zeros(actions.shape)
        run = np.broadcast_to(np.asarray(self.run)[:, None], actions.shape)
        runs = actions == RUN
        per_block[runs] = run[runs]
        per_block[actions == REUSE] = self.reuse
        per_block[actions == FORECAST] = self.forecast[order]
        if ran is not None:
            per_block += ran * (run - per_block)
        full = self.full * (self.calls or actions.shape[1])
        return float((self.fixed * actions.shape[1] + per_block.sum()) / full)

    def to_dict(self) -> dict[str, Any]:
        calls = {} if self.calls is None else {"calls": self.calls}
        return {"full": self.full, "fixed": self.fixed, "run": self.run, "reuse": self.reuse,
                "forecast": {str(k): v for k, v in self.forecast.items()}, **calls}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyCosts:
        forecast = {int(k): float(v) for k, v in data["forecast"].items()}
        return cls(data["full"], data["fixed"], list(data["run"]), data["reuse"], forecast, data.get("calls"))


@dataclass
class SearchResult:
    """The searched schedule, its training PSNR, modelled and measured latency, the start's, and the log."""

    schedule: Schedule
    psnr: float
    latency_ratio: float
    start_psnr: float
    costs: LatencyCosts
    rollouts: int
    log: list[dict[str, Any]] = field(default_factory=list)
    measured_ratio: float | None = None  # timed against the full model at the end (None: not checked)


def measure_costs(
    model: nn.Module, scheduler: SchedulerMixin, blocks: Blocks, config: SearchConfig, timesteps: list
) -> LatencyCosts:
    """Each action's cost per block and call, from timed runs (module doc): the full model; a schedule that
    runs every call but forecasts the last (so every run stores its residuals, as in a schedule that reuses:
    storing them costs time too); and schedules that run call 0 and then reuse, forecast (order 1, 2) or
    skip everywhere. Their seconds, each a sum of call costs, are solved for the costs."""
    k, t = len(blocks), len(timesteps)
    run_table = _table(blocks, timesteps, RUN, 1, config)
    run_table.actions[:, -1] = FORECAST
    methods: dict[str, Schedule | None] = {"full": None, "run": run_table}
    methods |= {name: _table(blocks, timesteps, a, order, config) for name, (a, order) in TIMED.items()}
    seconds = timed_alone(model, scheduler, methods, config, config.timing_repeats)
    full = float(np.median(seconds["full"]))
    seconds = {name: full * median_ratio(s, seconds["full"]) for name, s in seconds.items()}
    # run: (t-1) runs and one forecast call; forecast-1: one run and (t-1) forecast calls
    run, forecast = np.linalg.solve([[t - 1, 1], [1, t - 1]], [seconds["run"], seconds["forecast-1"]])
    per_call = {name: (seconds[name] - run) / (t - 1) for name in TIMED} | {"forecast-1": forecast}
    fixed = per_call["skip"]
    shares = np.asarray(blocks.shares) / sum(blocks.shares)
    return LatencyCosts(
        full=full / t, fixed=fixed, run=((run - fixed) * shares).tolist(),
        reuse=(per_call["reuse"] - fixed) / k,
        forecast={o: (per_call[f"forecast-{o}"] - fixed) / k for o in (1, 2)},
    )  # fmt: skip


def timed_alone(
    model: nn.Module, scheduler: SchedulerMixin, methods: dict[str, Schedule | None], config: SearchConfig,
    rounds: int, reference: bool = False,
) -> dict[str, list[float]]:  # fmt: skip
    """The seconds of each method's run of the timing batch (``timing_batch``, else the training batch),
    sampled alone, in ``rounds`` rounds whose order turns (a slow spell falls on all alike), by method: as
    ``lees tune`` times its candidates; ``reference``: the method named ``full`` at the reference run's
    solver and steps (``config.against``)."""
    names, seconds = list(methods), {name: [] for name in methods}
    solver, steps = config.against() if reference else (None, None)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            at = {"steps": steps, "sampler": solver} if reference and name == "full" else {}
            at["samples"] = config.timing_batch or config.samples
            seconds[name].append(_sample(model, scheduler, {name: methods[name]}, config, **at)[name].seconds)
    return seconds


def median_ratio(seconds: list[float], full: list[float]) -> float:
    """The median over the rounds of a method's seconds over the full model's in the same round."""
    return float(np.median(np.asarray(seconds) / np.asarray(full)))


def measured_ratio(
    model: nn.Module, scheduler: SchedulerMixin, schedule: Schedule, config: SearchConfig
) -> float:
    """``schedule``'s latency over the full model's at the reference run's solver and steps, each sampled
    alone in ``config.check_rounds`` rounds."""
    methods = {"full": None, "schedule": schedule}
    seconds = timed_alone(model, scheduler, methods, config, config.check_rounds, reference=True)
    return median_ratio(seconds["schedule"], seconds["full"])


def _table(blocks: Blocks, timesteps: list, action: int, order: int, config: SearchConfig) -> Schedule:
    """Call 0 run, every later call ``action`` for every block."""
    actions = np.full((len(blocks), len(timesteps)), action, dtype=np.int8)
    actions[:, 0] = RUN
    return _schedule(blocks, timesteps, actions, order, config, {})


def _schedule(blocks: Blocks, timesteps: list, actions: np.ndarray, order: int, config: SearchConfig,
              extra: dict[str, Any]) -> Schedule:  # fmt: skip
    settings = {**config.to_dict(), "sampler": config.sampler, **extra}
    return Schedule(actions, blocks.names, timesteps, "search", settings, blocks.shares, forecast_order=order)


def _sample(model, scheduler, methods: dict[str, Schedule | None], config: SearchConfig,
            steps: int | None = None, sampler: str | None = None,
            samples: int | None = None) -> dict:  # fmt: skip
    samples = samples or config.samples  # the training batch, or (timing) the batch the user samples
    return sample_lockstep(
        model, methods, samples, steps=steps or config.steps, sampler=sampler or config.sampler,
        seed=TRAIN_SEED + config.seed, scheduler=scheduler, batch_size=samples, progress=False,
        guidance_scale=config.guidance_scale,
    )  # fmt: skip


SCORED = {"run": ("run",), "ode": ("ode",), "both": ("run", "ode")}  # the references each setting scores


def references(
    model, scheduler, blocks: Blocks, config: SearchConfig, names: tuple[str, ...] | None = None
) -> dict[str, torch.Tensor]:
    """The final samples of the training batch, by name, a rollout is compared with (``names``, default
    those ``config.reference`` scores against): ``run``, the full model's run at the reference run's solver
    and steps (``config.against``: by default the search's own); ``ode``, the converged ODE solution from
    the same noise and labels (:data:`lees.evaluation.ode_reference.ODE`, whose check says it has
    converged). Against the run alone, a schedule is pulled onto the run's own discretisation error; the
    ODE solution owns none (issue 34: the run-scored tables drift from the data under fd_clf where a solver
    nearer the ODE solution does not)."""
    found = {}
    for name in names or SCORED[config.reference]:
        if name == "run":
            solver, steps = config.against()
            found[name] = _sample(model, scheduler, {"full": None}, config, steps, solver)["full"].images
        else:
            solver, steps = ODE
            ode = Schedule.full(blocks, sampler_timesteps(scheduler, steps, solver))
            runs = _sample(model, scheduler, {"ode": ode}, config, steps=steps, sampler=solver)
            found[name] = runs["ode"].images
    return found


Candidate = tuple[np.ndarray, int]  # an action table and its forecast order


def digest(candidate: Candidate) -> str:
    """A short hash of a table and its order: the key of its stored score."""
    actions, order = candidate
    return hashlib.sha256(actions.astype(np.int8).tobytes() + bytes([order]) + str(actions.shape).encode()
                          ).hexdigest()[:16]  # fmt: skip


def uniform_starts(blocks: Blocks, timesteps: list) -> list[Candidate]:
    """The uniform baselines a search may start from: after ``w`` warm-up calls (0-3) every ``n``-th call
    runs (n = 2..T), the others forecast (order 1 or 2) or reuse; every table once."""
    found: dict[str, Candidate] = {}
    for n in range(2, len(timesteps) + 1):
        for warm in range(4):
            full = [*range(warm), *range(warm, len(timesteps), n)]
            for between, order in ((FORECAST, 1), (FORECAST, 2), (REUSE, 1)):
                made = cached_schedule(blocks, timesteps, full, [False] * len(blocks), "uniform", {}, between,
                                       order)  # fmt: skip
                candidate = (made.actions.copy(), order)
                found.setdefault(digest(candidate), candidate)
    return list(found.values())


def starts_of(blocks: Blocks, timesteps: list, config: SearchConfig) -> list[Candidate]:
    """Where the search may start: ``config.start``'s table (made for the same blocks and calls; e.g. a
    search's with another score, to refine it), else :func:`uniform_starts`."""
    if config.start is None:
        return uniform_starts(blocks, timesteps)
    start = Schedule.load(config.start, blocks)
    if start.timesteps != list(timesteps):
        raise ValueError(f"{config.start} was made for other calls than {config.steps} of {config.sampler}")
    if start.forecasts and start.forecast_order not in (1, 2):
        raise ValueError(f"{config.start} forecasts at order {start.forecast_order}: the search knows 1, 2")
    return [(start.actions.copy(), start.forecast_order)]


def neighbours(candidate: Candidate) -> Iterator[tuple[str, Candidate]]:
    """Every move of the local search from ``candidate`` (module doc), named; the budget is checked after."""
    actions, order = candidate
    k, t = actions.shape
    full = (actions == RUN).all(axis=0)
    idle = ~(actions == RUN).any(axis=0)
    for j in np.flatnonzero(full[1:]) + 1:
        for d in (-1, 1):
            if 1 <= j + d < t and idle[j + d]:
                moved = actions.copy()
                moved[:, [j, j + d]] = actions[:, [j + d, j]]
                yield f"shift run {j}->{j + d}", (moved, order)
    for j in np.flatnonzero(~full):
        for name, rows in (("run", slice(None)), ("run first half", slice(0, k // 2)),
                           ("run last half", slice(k // 2, k))):  # fmt: skip
            if name == "run" or idle[j]:
                more = actions.copy()
                more[rows, j] = RUN
                yield f"{name} at {j}", (more, order)
    for start, stop in _segments(full):
        cells = actions[:, start:stop]
        new = REUSE if (cells == FORECAST).any() else FORECAST
        switched = actions.copy()
        switched[:, start:stop] = np.where(np.isin(cells, (REUSE, FORECAST)), new, cells)
        yield f"{'reuse' if new == REUSE else 'forecast'} {start}-{stop - 1}", (switched, order)
    if (actions == FORECAST).any():
        yield f"forecast order {3 - order}", (actions, 3 - order)


def _segments(full: np.ndarray) -> Iterator[tuple[int, int]]:
    """The maximal stretches [start, stop) of calls that do not run in full."""
    j = 0
    while j < len(full):
        if full[j]:
            j += 1
            continue
        start = j
        while j < len(full) and not full[j]:
            j += 1
        yield start, j


GUARD_SEED = 500  # the guard's statistics sample at TRAIN_SEED + GUARD_SEED + seed: not the training batch


def _guard(
    model, scheduler, config: SearchConfig, full_batch: torch.Tensor, path: str | Path | None
) -> FdGuard:
    """The fd_clf guard of the training batch (the full model's run ``full_batch``; ``config.guard_data``),
    the full model's feature statistics from ``config.guard_n`` samples stored beside the search's state."""
    solver, steps = config.against()
    stats = lambda: sample_lockstep(  # noqa: E731
        model, {"full": None}, config.guard_n, steps=steps, sampler=solver,
        seed=TRAIN_SEED + GUARD_SEED + config.seed, scheduler=scheduler, batch_size=64, progress=False,
        guidance_scale=config.guidance_scale,
    )["full"].images  # fmt: skip
    stored = None if path is None else Path(path).with_name("guard-statistics.safetensors")
    return fd_guard(full_batch, stats, config.guard_data, stored)


class _Scorer:
    """Rollout scores of candidates: stored (``state``, written to ``path`` after each rollout) or taken
    by sampling the training batch with the candidate's schedule against the full model's samples."""

    def __init__(self, model, scheduler, blocks, timesteps, config, state, path, bar) -> None:
        self.model, self.scheduler, self.blocks, self.timesteps = model, scheduler, blocks, timesteps
        self.config, self.state, self.path, self.bar = config, state, path, bar
        scored = SCORED[config.reference]
        needed = (*scored, "run") if config.guard_data and "run" not in scored else scored
        found = references(model, scheduler, blocks, config, needed)  # the run once, for both uses
        self.references = [found[name] for name in scored]
        self.guard = _guard(model, scheduler, config, found["run"], path) if config.guard_data else None
        self.rollouts = 0

    @property
    def spent(self) -> bool:
        return len(self.state["scores"]) >= self.config.max_rollouts

    def __call__(self, candidate: Candidate) -> float:
        key = digest(candidate)
        if key not in self.state["scores"]:
            self.take(key, _schedule(self.blocks, self.timesteps, *candidate, self.config, {}))
        self.bar.update(len(self.state["scores"]) - self.bar.n)
        return self.state["scores"][key]

    def take(self, key: str, schedule: Schedule) -> TimedSamples:
        """Roll ``schedule`` out on the training batch, store its score under ``key`` (and save); its run."""
        run = _sample(self.model, self.scheduler, {"s": schedule}, self.config)["s"]
        scores = [float(psnr(run.images, r).clamp(max=100).mean()) for r in self.references]
        self.state["scores"][key] = float(np.mean(scores))
        if self.guard is not None:
            change = self.guard.change(run.images)
            self.state.setdefault("fd_change", {})[key] = change
            self.state["scores"][key] -= self.config.guard_weight * max(change, 0.0)
        if self.config.fd_weight:
            distance = self.guard.to_full(run.images)
            self.state.setdefault("fd_full", {})[key] = distance
            self.state["scores"][key] -= self.config.fd_weight * distance
        self.rollouts += 1
        self.save()
        return run

    def save(self) -> None:
        if self.path is not None:
            atomic_write_text(self.path, json.dumps(self.state) + "\n")


def check_search(model: nn.Module, scheduler: SchedulerMixin, config: SearchConfig) -> None:
    """A clear error for settings the search cannot score, before minutes of timing: an ODE reference of
    a stochastic solver, a guard whose dataset is not installed or whose classifier cannot read the
    model's images."""
    if "ode" in SCORED[config.reference]:
        check_deterministic(config.sampler or default_solver(scheduler), "the search's sampler")
    if config.reference_run is not None:
        solver, steps = config.against()
        sampler_timesteps(scheduler, steps, solver)  # a solver of another family: its one-line error
    if config.guard_data:
        check_guard(model, config.guard_data)


def search_schedule(
    model: nn.Module,
    scheduler: SchedulerMixin,
    config: SearchConfig | None = None,
    blocks: Blocks | None = None,
    progress: bool = True,
    state_path: str | Path | None = None,
    costs: LatencyCosts | None = None,
) -> SearchResult:
    """Search a run / reuse / forecast table for ``model`` with its solver that maximises the training
    batch's final-sample PSNR against the full model within a measured latency budget (module doc).

    Args:
        model: the denoiser (frozen; sampled as lees' sampler samples it, guidance as configured).
        scheduler: the model's scheduler: its config sets the noise process of ``config.sampler``.
        config: steps, solver, guidance, budget (``target_latency_ratio``), training batch and effort.
        blocks: the blocks to schedule (default: :func:`lees.find_blocks`); progress: a progress bar.
        state_path: a JSON file holding the costs and every rollout's score as the search goes; a search
            run again with it and the same settings continues where it stopped, to the same result.
        costs: the actions' costs (default: measured at the start, or read from ``state_path``).

    Returns the best schedule found (never worse on the training batch than its start), its PSNR, its
    modelled latency share and the share measured against the full model at the end (``check_rounds``);
    a share more than 0.02 below the budget, or measured more than 0.02 above it, warns with the figure.
    Example:
        >>> config = SearchConfig(steps=30, guidance_scale=2, target_latency_ratio=0.5)
        >>> result = search_schedule(model, scheduler, config)  # doctest: +SKIP
        >>> lees.enable(pipe, result.schedule)  # doctest: +SKIP
    """
    started = time.perf_counter()
    config, blocks, timesteps, state, costs = _prepared(
        model, scheduler, config or SearchConfig(), blocks, state_path, costs
    )
    bar = tqdm(total=config.max_rollouts, desc="search", unit="rollout", disable=not progress)
    with bar:
        score = _Scorer(model, scheduler, blocks, timesteps, config, state, state_path, bar)
        score.save()
        current, log = _local_search(score, costs, starts_of(blocks, timesteps, config), bar)
    schedule = _found(blocks, timesteps, current, config, costs, log, state)
    return _finished(model, scheduler, schedule, config, costs, log, score.rollouts, started)


def _prepared(model, scheduler, config: SearchConfig, blocks: Blocks | None, state_path, costs):
    """What a search (tables or probe thresholds) starts from: ``config`` with its solver named, the blocks,
    the solver's timesteps, the stored state at ``state_path`` (or a new one) and the actions' costs
    (``costs``, else stored, else measured now and stored); the settings checked before any timing."""
    sampler = config.sampler or default_solver(scheduler)
    config = type(config).from_dict({**config.to_dict(), "sampler": sampler})
    blocks = blocks or find_blocks(model)
    timesteps = sampler_timesteps(scheduler, config.steps, config.sampler)
    check_search(model, scheduler, config)
    state = _state(state_path, config)
    if "costs" not in state:
        state["costs"] = (costs or measure_costs(model, scheduler, blocks, config, timesteps)).to_dict()
    calls = None
    if config.reference_run is not None:
        solver, steps = config.against()
        calls = len(sampler_timesteps(scheduler, steps, solver))
    return config, blocks, timesteps, state, replace(LatencyCosts.from_dict(state["costs"]), calls=calls)


def _finished(model, scheduler, schedule: Schedule, config: SearchConfig, costs: LatencyCosts,
              log: list[dict[str, Any]], rollouts: int, started: float) -> SearchResult:  # fmt: skip
    """The found schedule timed against the full model (``check_rounds``), its settings completed, a warning
    where its modelled or measured share is off the budget, and the search's result."""
    measured = measured_ratio(model, scheduler, schedule, config) if config.check_rounds else None
    schedule.settings |= {"measured_latency_ratio": measured,
                          "train_seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    ratio = log[-1]["latency_ratio"]
    warn_off_budget(ratio, config.target_latency_ratio)
    if measured is not None:
        warn_off_budget(measured, config.target_latency_ratio, measured=True)
    return SearchResult(schedule, log[-1]["psnr"], ratio, log[0]["psnr"], costs, rollouts, log, measured)


def _found(blocks: Blocks, timesteps: list, current: Candidate, config: SearchConfig, costs: LatencyCosts,
           log: list[dict[str, Any]], state: dict[str, Any]) -> Schedule:  # fmt: skip
    """The table the search reached as a schedule, with how it was found in its settings."""
    objective = f"search: final-sample PSNR against {REFERENCES[config.reference]} (same noise)"
    if config.reference_run is not None:
        objective += f"; the full model's run at {config.reference_run}"
    objective += penalties(config)
    extra = {"objective": objective, "train_psnr": log[-1]["psnr"], "start_psnr": log[0]["psnr"],
             "train_fd_change": state.get("fd_change", {}).get(digest(current)),
             "train_fd_full": state.get("fd_full", {}).get(digest(current)),
             "latency_ratio": costs.ratio(*current), "costs": costs.to_dict(),
             "rollouts": len(state["scores"]),
             "moves": [r["move"] for r in log]}  # fmt: skip
    return _schedule(blocks, timesteps, *current, config, extra)


def penalties(config: SearchConfig) -> str:
    """What a search's score takes off the PSNR, in words (the objective's tail)."""
    said = ""
    if config.guard_data:
        rise = "dB per unit of fd_clf's first-order rise to"
        said += f", less {config.guard_weight:g} {rise} {config.guard_data}"
    if config.fd_weight:
        said += f", less {config.fd_weight:g} dB per unit of FD to the full model's samples (clf features)"
    return said


def _state(path: str | Path | None, config: SearchConfig) -> dict[str, Any]:
    """The stored search at ``path`` (for the same settings but its effort, ``max_rollouts``, and the end
    check's ``check_rounds``, which change no score: a search may be continued with more), else a new one."""
    same = _scored_settings(config.to_dict())
    if path is None or not Path(path).is_file():
        return {"config": same, "scores": {}}
    state = json.loads(Path(path).read_text())
    if _scored_settings(state.get("config", {})) != same:
        raise ValueError(
            f"{path} holds a search with other settings: use another folder or the same settings"
        )
    return state


LATER_SETTINGS = {"reference": "run", "guard_data": None, "guard_n": 640, "guard_weight": 50.0, "base": None,
                  "start": None, "reference_run": None, "timing_batch": None, "fd_weight": 0.0}  # fmt: skip
"""Settings added after searches were stored, with the value those searches were scored with."""


def _scored_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings a stored search's scores depend on (not its effort or its end check's rounds); a search
    stored before a setting of ``LATER_SETTINGS`` existed was scored with its value there."""
    settings = {**LATER_SETTINGS, **settings}
    return {k: v for k, v in settings.items() if k not in ("max_rollouts", "check_rounds")}


def _local_search(
    score: _Scorer, costs: LatencyCosts, starts: list[Candidate], bar
) -> tuple[Candidate, list[dict[str, Any]]]:
    """The best start within the budget, then the best improving move of the neighbourhood, until none
    improves or the rollouts are spent; the table reached and the log of accepted moves."""
    budget = score.config.target_latency_ratio
    fits: Callable[[Candidate], bool] = lambda c: costs.ratio(*c) <= budget + 1e-9  # noqa: E731
    if score.config.start is not None:
        starts = [_trimmed(score, costs, starts[0], budget)]
    within = sorted(filter(fits, starts), key=lambda c: -costs.ratio(*c))[: score.config.starts]
    if not within:
        cheapest = min(costs.ratio(*c) for c in starts)
        raise ValueError(
            f"no schedule fits a latency share of {budget:g}: the cheapest start takes {cheapest:.3f}"
        )
    current = max(within, key=score)
    log = [{"move": "start", "psnr": score(current), "latency_ratio": costs.ratio(*current)}]
    while True:
        scored = []
        moves = list(neighbours(current))
        for i in np.random.default_rng(len(log)).permutation(len(moves)):  # a seeded order: resumes alike
            name, candidate = moves[i]
            if fits(candidate) and (not score.spent or digest(candidate) in score.state["scores"]):
                scored.append((score(candidate), name, candidate))
                if score.config.accept == "first" and scored[-1][0] > log[-1]["psnr"]:
                    break
        best = max(scored, key=lambda s: s[0], default=None)
        if best is None or best[0] <= log[-1]["psnr"]:
            return current, log
        current = best[2]
        log.append({"move": best[1], "psnr": best[0], "latency_ratio": costs.ratio(*current)})
        bar.set_postfix(psnr=f"{best[0]:.2f}", latency=f"{log[-1]['latency_ratio']:.3f}")


def _trimmed(score: _Scorer, costs: LatencyCosts, start: Candidate, budget: float) -> Candidate:
    """A start file's table brought within the budget (its costs may have been timed on another day): while
    it is over, the best-scoring of its tables with one call that runs (wholly or in part) turned to the
    action of the cells beside it (forecast where the table forecasts, else reuse); call 0 stays."""
    while costs.ratio(*start) > budget + 1e-9:
        actions, order = start
        between = FORECAST if (actions == FORECAST).any() else REUSE
        options = []
        for j in np.flatnonzero((actions[:, 1:] == RUN).any(axis=0)) + 1:
            lighter = actions.copy()
            lighter[:, j] = np.where(actions[:, j] == RUN, between, actions[:, j])
            options.append((lighter, order))
        if not options:
            return start
        start = max(options, key=score)
    return start


def warn_off_budget(ratio: float, target: float, slack: float = BUDGET_SLACK, measured: bool = False) -> None:
    """Warn, with the figure, when the searched schedule's latency share (modelled, or ``measured`` against
    the full model) lies more than ``slack`` below ``target`` (the search stopped before it could spend
    the budget) or, measured, more than ``slack`` above it (the timed actions' costs did not add up)."""
    how = "measured against the full model" if measured else "modelled from the timed actions"
    if ratio < target - slack:
        warnings.warn(
            f"the searched schedule takes {ratio:.3f} of the full model's latency ({how}), not the "
            f"{target:.3f} asked for: no move that spends more improved its training score, or the rollouts "
            "ran out",
            stacklevel=3,
        )
    elif measured and ratio > target + slack:
        warnings.warn(
            f"the searched schedule takes {ratio:.3f} of the full model's latency ({how}), over the "
            f"{target:.3f} asked for: the machine was busier while its actions were timed, or a call's cost "
            "is not the sum of its blocks' (time it again: lees tune --schedules ...)",
            stacklevel=3,
        )
