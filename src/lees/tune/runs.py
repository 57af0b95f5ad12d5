"""Candidates made runnable on one model: a solver at a step count, plus a block schedule or a cache.

:func:`build_runs` turns each applicable :class:`~lees.tune.candidates.Candidate` into a :class:`Run`
(the others into a reason) and :meth:`Run.sample` draws samples ``first .. first + count - 1`` with it:
the same start noise, labels and per-step noise for every run (lees' per-sample generators), so each
sample has a partner in the full model's. The full model itself is the run ``full``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import SchedulerMixin
from diffusers.utils import logging as diffusers_logging
from torch import nn
from tqdm.auto import tqdm

from ..diffusion.samplers import sampler_timesteps
from ..diffusion.solvers import default_solver, solvers_for
from ..enable import disable, enable
from ..engine.blocks import Blocks, find_blocks
from ..learn.pipeline_teacher import pipeline_teacher
from ..learn.router import RouterConfig, train_router
from ..sampling.lockstep import TimedSamples, sample_lockstep
from ..sampling.pipeline_call import Call, PipelineMethod, PipelineSource, probe, sample_pipeline
from ..schedules.registry import build_schedule
from ..schedules.schedule import Schedule
from ..schedules.tuned import TunedPolicy
from .candidates import Candidate, blocks_reason
from .diffusers_caches import (
    DenoiserCalls,
    NotApplicable,
    NotApplicableError,
    apply_cache,
    calibrate_mag_cache,
)

FULL = "full"
PIPELINE_TRAJECTORIES = 8  # a router's teacher runs through a pipeline's call: 8 prompts (16 rows guided)


@dataclass
class Run:
    """One way to sample: ``solver`` at ``steps``, with a block ``schedule`` or a diffusers ``cache``
    (``{"method", "config", "calls"}``) or neither; ``flop_ratio`` to the full model's where known;
    ``guidance_scale``: classifier-free guidance of a class-conditional model (one batched call)."""

    name: str
    kind: str
    solver: str
    steps: int
    schedule: Schedule | None = None
    cache: dict[str, Any] | None = None
    flop_ratio: float | None = None
    guidance_scale: float = 1.0

    def digest(self) -> str:
        """A short hash of what the run does: stored samples belong to it and no other."""
        what = {
            "solver": self.solver,
            "steps": self.steps,
            "cache": self.cache,
            "guidance": self.guidance_scale,
        }
        if self.schedule is not None:
            what["schedule"] = [self.schedule.actions.tolist(), list(self.schedule.timesteps)]
            if self.schedule.adaptive:
                what["thresholds"] = self.schedule.to_dict()["thresholds"]
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]

    def tuned(self) -> TunedPolicy:
        """The run as the policy ``lees.enable`` applies (the solver swapped in, the schedule or cache)."""
        return TunedPolicy(self.kind, self.name, self.solver, self.steps, self.schedule, self.cache)

    def sample(
        self, model: nn.Module | PipelineSource, scheduler: SchedulerMixin, first: int, count: int, seed: int
    ) -> TimedSamples:
        """Samples ``first .. first + count - 1`` (one batch) and the seconds their model calls took (through
        a pipeline: the whole call, the run applied as a user applies its policy, ``lees.enable``)."""
        if isinstance(model, PipelineSource):
            return self._through(model, first, count, seed)
        applied = None
        if self.cache is not None:
            with quiet_diffusers():  # FasterCache's notices at every attach
                applied = apply_cache(model, cache_config(self.cache), cache_calls(self.cache))
            if isinstance(applied, NotApplicable):
                raise NotApplicableError(str(applied))
        try:
            runs = sample_lockstep(
                model, {self.name: self.schedule}, count, steps=self.steps, sampler=self.solver, seed=seed,
                scheduler=scheduler, batch_size=count, first=first, progress=False,
                guidance_scale=self.guidance_scale,
            )  # fmt: skip
        finally:
            if applied is not None:
                applied.remove()
        return runs[self.name]

    def _through(self, source: PipelineSource, first: int, count: int, seed: int) -> TimedSamples:
        """One batch through the pipeline's own call; a candidate that fails there cannot run (the full
        model's failure is raised as it is)."""
        method = PipelineMethod(self.steps, lambda pipe: enabled(pipe, self.tuned()))
        try:
            with quiet_diffusers():
                runs = sample_pipeline(source.pipe, {self.name: method}, source.prompting, count, seed,
                                       batch_size=count, first=first, progress=False)  # fmt: skip
        except Exception as error:  # a pipeline's own code may fail on a candidate (PixArt at 1 step)
            if self.name == FULL or isinstance(error, NotApplicableError):
                raise
            raise NotApplicableError(f"failed in the pipeline's call: {error}") from error
        return runs[self.name]


@contextmanager
def enabled(pipe: Any, policy: TunedPolicy) -> Iterator[None]:
    """``policy`` enabled in ``pipe`` for the span, as a user enables it; disabled after."""
    enable(pipe, policy)
    try:
        yield
    finally:
        disable(pipe)


def pipeline_calls(timesteps: Sequence[float], calls: list[Call]) -> DenoiserCalls:
    """How a pipeline calls its denoiser, from one probed sample (:func:`lees.sampling.pipeline_call.probe`):
    two rows per call is batched guidance ([uncond, cond], as diffusers' pipelines order it), two calls
    per timestep split guidance; a timestep a thousandth of the scheduler's is Flux's t / 1000."""
    rows, dims = len(calls[0].sample), calls[0].sample.dim()
    split = len(calls) == 2 * len(timesteps)
    guidance = "batched" if rows == 2 else "split" if split else "none"
    first = float(timesteps[0])
    scale = 1000.0 if first > 1 and abs(float(calls[0].timestep) * 1000 - first) < 1e-3 * first else 1.0
    layout = {3: "BSC", 5: "BCFHW"}.get(dims, "BCHW")
    return DenoiserCalls(guidance=guidance, timestep_scale=scale, calls_per_run=len(timesteps), layout=layout)


@contextmanager
def quiet_diffusers() -> Iterator[None]:
    """diffusers' logging at errors only, for the duration."""
    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)


def cache_config(cache: dict[str, Any]) -> Any:
    """The diffusers config of a run's (or a saved policy's) cache."""
    from .candidates import CACHE_CONFIGS

    return CACHE_CONFIGS[cache["method"]](**cache["config"])


def cache_calls(cache: dict[str, Any]) -> DenoiserCalls:
    """How the sampling loop called the model when a run's (or a saved policy's) cache was measured."""
    return DenoiserCalls(**{k: tuple(v) if isinstance(v, list) else v for k, v in cache["calls"].items()})


def own_solver(scheduler: SchedulerMixin, class_name: str | None = None) -> str:
    """The registry's name of the solver the model ships with: its scheduler config's ``_class_name``
    (``class_name``; lees loads a DDPM-family config as a ``DDPMScheduler`` whatever wrote it), else the
    scheduler's class; its family's default solver where the registry has no such class."""
    class_name = class_name or type(scheduler).__name__
    for name, (cls, overrides) in solvers_for(scheduler).items():
        if cls == class_name and not overrides.get("use_flow_sigmas"):
            return name
    return default_solver(scheduler)


def build_runs(
    candidates: list[Candidate],
    model: nn.Module,
    scheduler: SchedulerMixin,
    solver: str,
    steps: int,
    seed: int,
    guidance_scale: float = 1.0,
    router_train_steps: int = 200,
    folder: str | Path | None = None,
    source: PipelineSource | None = None,
) -> tuple[dict[str, Run], dict[str, str]]:
    """The full model (``full``: ``solver`` at ``steps``) and each applicable candidate as a run, and
    why each other candidate cannot run, by name. With guidance (a scale other than 1) lees' sampler
    makes one batched call on [cond, null] per step, which is what the caches are told; each budget's
    router trains for ``router_train_steps`` and is kept in ``folder/routers`` (a run again there loads
    it instead of training it again). With a pipeline ``source`` the timesteps and how the model is
    called are read from one probed sample of the user's call, and the router learns on its runs."""
    if source is not None:
        reference, recorded = probe(source, steps, seed)
        calls = pipeline_calls(reference, recorded)
    else:
        reference = sampler_timesteps(scheduler, steps, solver)
        guided = {"guidance": "batched", "batch_order": ("cond", "uncond")} if guidance_scale != 1.0 else {}
        calls = DenoiserCalls(calls_per_run=len(reference), **guided)
    full = Run(FULL, "steps", solver, steps, flop_ratio=1.0, guidance_scale=guidance_scale)
    runs, reasons = {FULL: full}, {}
    context = _Context(model, scheduler, full, reference, calls, seed, router_train_steps, folder, source)
    for candidate in tqdm(candidates, desc="candidates", unit="candidate", leave=False):
        if source is not None and candidate.kind == "router":  # it learns on the pipeline's own runs
            reason = blocks_reason(model)
        else:
            reason = candidate.applies_to(model, scheduler, calls)
        if reason is not None:
            reasons[candidate.name] = reason
            continue
        try:
            runs[candidate.name] = _run(candidate, context)
        except NotApplicableError as error:  # MagCache's calibration through a pipeline's call
            reasons[candidate.name] = str(error)
            continue
        runs[candidate.name].guidance_scale = guidance_scale
    return runs, reasons


@dataclass
class _Context:
    """What every run of one tune is built for (the model's blocks found once, when first needed)."""

    model: nn.Module
    scheduler: SchedulerMixin
    full: Run
    reference: list
    calls: DenoiserCalls
    seed: int
    router_train_steps: int
    folder: str | Path | None = None
    source: PipelineSource | None = None  # the user's pipeline call, where runs sample through it
    _blocks: Blocks | None = None

    @property
    def solver(self) -> str:
        return self.full.solver

    @property
    def blocks(self) -> Blocks:
        if self._blocks is None:
            self._blocks = find_blocks(self.model)
        return self._blocks


def _run(candidate: Candidate, ctx: _Context) -> Run:
    settings, name, steps = candidate.settings, candidate.name, ctx.full.steps
    if candidate.kind == "steps":
        ratio = _calls(ctx, settings["solver"], settings["steps"]) / len(ctx.reference)
        return Run(name, "steps", settings["solver"], settings["steps"], flop_ratio=ratio)
    if candidate.kind in SCHEDULES:
        schedule = SCHEDULES[candidate.kind](candidate, ctx)
        found = _solver_run(schedule, ctx)
        if found is None:
            raise NotApplicableError(
                f"made for {schedule.num_steps} other timesteps than the reference run's, and not those of a "
                "solver of the model's at a step count (its settings' sampler and steps)"
            )
        solver, steps = found
        schedule.settings = {**schedule.settings, "sampler": solver}
        share = len(schedule.timesteps) / len(ctx.reference)  # a schedule on another solver's fewer steps
        flops = None if schedule.adaptive else schedule.flop_ratio * share  # an adaptive one's: the batch's
        return Run(name, "schedule", solver, steps, schedule=schedule, flop_ratio=flops)
    config = dict(settings["config"])
    if settings["method"] == "MagCache":
        try:
            config["mag_ratios"] = _mag_ratios(ctx)
        except ValueError as error:  # e.g. a pipeline that resets the calibrating hooks at its end
            raise NotApplicableError(f"MagCache's calibration run: {error}") from error
        config["num_inference_steps"] = steps
    cache = {"method": settings["method"], "config": config, "calls": _calls_dict(ctx.calls)}
    return Run(name, "cache", ctx.solver, steps, cache=cache)


def _calls(ctx: _Context, solver: str, steps: int) -> int:
    """The model calls of ``solver`` at ``steps``; ``steps`` where its timesteps depend on the run
    (a pipeline's dynamic shifting: Flux's ``mu``)."""
    try:
        return len(sampler_timesteps(ctx.scheduler, steps, solver))
    except ValueError:
        return steps


def _registry_schedule(candidate: Candidate, ctx: _Context) -> Schedule:
    """Uniform reuse or DeepCache at the reference timesteps, by the method registry's name."""
    options = {k: v for k, v in candidate.settings.items() if k != "interval"}
    method = f"{candidate.kind}-{candidate.settings['interval']}"
    return build_schedule(method, ctx.blocks, ctx.reference, ctx.scheduler, ctx.solver, **options)


def _router_schedule(candidate: Candidate, ctx: _Context) -> Schedule:
    """The step router trained on the full run's own solver and steps to the candidate's budget, taken
    as a FLOP ratio (hook overhead makes the measured latency ratio somewhat higher)."""
    config = RouterConfig(
        steps=ctx.full.steps, sampler=ctx.solver, guidance_scale=ctx.full.guidance_scale,
        target_flop_ratio=candidate.settings["budget"], seed=ctx.seed, train_steps=ctx.router_train_steps,
        trajectories=32 if ctx.source is None else PIPELINE_TRAJECTORIES,
    )  # fmt: skip
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    path = None if ctx.folder is None else Path(ctx.folder) / "routers" / f"{candidate.name}-{digest}.json"
    if path is not None and path.is_file():
        return Schedule.load(path, ctx.blocks)
    if ctx.source is None:
        schedule = train_router(ctx.model, ctx.scheduler, config, ctx.blocks, progress=False).schedule
    else:
        teacher = pipeline_teacher(ctx.source, ctx.full.steps, config.trajectories, ctx.seed)
        schedule = train_router(ctx.model, ctx.source.pipe.scheduler, config, ctx.blocks, progress=False,
                                teacher=teacher).schedule  # fmt: skip
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        schedule.save(path)
    return schedule


def _file_schedule(candidate: Candidate, ctx: _Context) -> Schedule:
    """A schedule file (or a folder's), for the model's blocks (its timesteps: :func:`_solver_run`)."""
    from ..schedules.saving import load_policy

    schedule = load_policy(candidate.settings["path"])
    if not isinstance(schedule, Schedule):
        raise NotApplicableError(f"{candidate.settings['path']} holds a gate, not a schedule")
    schedule.check_blocks(ctx.blocks)
    return schedule


def _solver_run(schedule: Schedule, ctx: _Context) -> tuple[str, int] | None:
    """The solver and steps a schedule runs with: the reference run's where its timesteps are the
    reference's; else those it was made for (its settings' ``sampler`` and ``steps``: a search that chose
    the solver with the table, ``lees route --reference-run``) where they give its timesteps, on lees' own
    sampler; None where neither."""
    if schedule.timesteps == list(ctx.reference):
        return ctx.solver, ctx.full.steps
    solver, steps = schedule.settings.get("sampler"), schedule.settings.get("steps")
    if ctx.source is not None or solver not in solvers_for(ctx.scheduler) or not isinstance(steps, int):
        return None
    return (solver, steps) if sampler_timesteps(ctx.scheduler, steps, solver) == schedule.timesteps else None


# How each schedule kind of candidate becomes its block schedule at the reference steps.
SCHEDULES: dict[str, Callable[[Candidate, _Context], Schedule]] = {
    "uniform": _registry_schedule,
    "deepcache": _registry_schedule,
    "router": _router_schedule,
    "schedule": _file_schedule,
}


def _calls_dict(calls: DenoiserCalls) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(calls).items()}


def _mag_ratios(ctx: _Context) -> list[float]:
    """MagCache's magnitude ratios from one calibration run of the full model on one sample."""
    with torch.inference_mode():
        run = lambda: ctx.full.sample(ctx.source or ctx.model, ctx.scheduler, 0, 1, ctx.seed)  # noqa: E731
        return calibrate_mag_cache(ctx.model, ctx.calls, run)
