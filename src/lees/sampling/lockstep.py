"""Sampling: DDPM (ancestral) or DDIM (deterministic), with a schedule applied step by step.

A schedule's actions (run, reuse the last residual, skip) go through the engine's hooks; each
method keeps its own reuse cache, cleared at the start of every run and every batch.

Sample i depends only on (seed, i): each sample draws its class label (class-conditional models),
its start noise and its per-step noise from its own generator, so batching or sharding never
changes an image (beyond float rounding). Any descending list of timesteps can replace the evenly
spaced ones (e.g. an Align-Your-Steps schedule); a gate schedule is built for whatever timesteps
the sampler visits. For latent diffusion, ``decoder`` (a diffusers ``AutoencoderKL`` or ``VQModel``)
turns the final latents into images once, outside the gated denoiser.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import SchedulerMixin
from torch import nn
from tqdm.auto import tqdm

from ..diffusion.samplers import SolverRun, normalised_time, sample_generators, sampler_timesteps
from ..diffusion.solvers import default_solver
from ..engine.hooks import Engine
from ..models.denoisers import (
    check_context,
    check_guidance,
    context_rows,
    denoiser_of,
    draw_labels,
    guided_denoise,
    latent_shape,
    model_device,
)
from ..models.latents import decode
from ..schedules.gates import SigmoidTimeGate
from ..schedules.schedule import Schedule
from ..utils.timing import synchronizer

Method = Schedule | SigmoidTimeGate | None

"""How one sampling run treats the blocks: a schedule (run/reuse/skip), a gate (soft mix), or None (all)."""


@torch.inference_mode()
def sample(
    pipe_or_model: Any,
    schedule: Schedule | None = None,
    n: int = 64,
    steps: int = 50,
    sampler: str | None = None,
    seed: int = 0,
    scheduler: SchedulerMixin | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    progress: bool = True,
    soft_gate: SigmoidTimeGate | None = None,
    timesteps: Sequence[int] | None = None,
    decoder: nn.Module | None = None,
    first: int = 0,
    context: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
) -> torch.Tensor:
    """``n`` samples in [-1, 1] from a model or a diffusers pipeline.

    Args:
        pipe_or_model: a denoiser, or a diffusers pipeline (its ``unet`` or ``transformer`` is sampled,
            with its scheduler's config).
        schedule: what each block does at each step (None: all run). It carries its timesteps, so it
            sets the steps (``steps`` is then ignored).
        n: how many samples; steps: sampler steps without a schedule; sampler: a solver of the
            model's family (``ddpm``, ``ddim``, ``dpm++``, ``euler``, ...; :mod:`lees.diffusion.solvers`;
            default: a schedule's own, else ``ddpm``, or ``euler`` for flow matching).
        seed: sample i depends on (seed, i) only, so batching or sharding never changes an image.
        scheduler: the model's, whose config sets the noise process (betas, ``prediction_type``,
            spacing, clipping, final alpha); a bare model needs it (a clear error without).
        batch_size: samples per batch; device: where to sample (default: the model's).
        progress: show a progress bar.
        soft_gate: instead of a schedule, mix every block by its gate value (ablation A1: soft gating
            at inference; no block is skipped).
        timesteps: a descending list replacing the ``steps`` evenly spaced ones.
        decoder: decodes latents to images (a diffusers ``AutoencoderKL`` or ``VQModel``).
        first: the index of the first sample: ``n`` samples from ``first`` on equal that slice of a
            larger run (how shards and resumed runs continue a sequence).
        context: what a cross-attention denoiser attends to, (1, tokens, width) for all or (n, ...) each.
        guidance_scale: classifier-free guidance of a class-conditional model with a null class (one
            batched call on [cond, null] per step); 1: none.

    Example:
        >>> images = lees.sample(model, schedule, n=64, scheduler=scheduler)  # doctest: +SKIP
    """
    if schedule is not None and soft_gate is not None:
        raise ValueError("give a schedule or a soft gate, not both")
    if schedule is not None and timesteps is not None and list(timesteps) != schedule.timesteps:
        raise ValueError("the schedule samples at its own timesteps; drop timesteps=")
    method = schedule if schedule is not None else soft_gate
    runs = sample_lockstep(
        pipe_or_model, {"": method}, n, steps=steps, sampler=sampler, seed=seed, scheduler=scheduler,
        batch_size=batch_size, device=device, progress=progress, timesteps=timesteps, decoder=decoder,
        first=first, context=context, guidance_scale=guidance_scale,
    )  # fmt: skip
    return runs[""].images


@dataclass
class TimedSamples:
    """The samples of one method, the seconds its denoiser calls and sampler updates took (a pipeline
    call's: the whole call), the peak memory of its reuse cache (bytes per sample; 0 for a method that
    reuses nothing), for a pipeline call the seconds its denoiser calls took within it, and for an adaptive
    schedule the share of batches in which each (block, call) cell ran though its table reused or
    forecast it (:mod:`lees.engine.probe`)."""

    images: torch.Tensor
    seconds: float
    cache_bytes_per_sample: float = 0.0
    denoiser_seconds: float | None = None
    adaptive_share: np.ndarray | None = None


@torch.inference_mode()
def sample_lockstep(
    pipe_or_model: Any,
    methods: Mapping[str, Method],
    n: int = 64,
    steps: int = 50,
    sampler: str | None = None,
    seed: int = 0,
    scheduler: SchedulerMixin | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    progress: bool = True,
    timesteps: Sequence[int] | None = None,
    decoder: nn.Module | None = None,
    first: int = 0,
    context: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    solvers: Mapping[str, str] | None = None,
) -> dict[str, TimedSamples]:
    """Sample the same ``n`` seeds with several methods side by side, and time each one.

    At every step each method's denoiser call and sampler update run back to back, in an order that
    turns from step to step, so a slow spell of a noisy machine falls on all methods alike: ratios
    of the returned seconds are paired measurements (a method with fewer steps is paired over the
    steps it has). Each method's images equal what :func:`sample` gives it alone (same seeds, noise).

    Args:
        methods: by name, a schedule (at its own timesteps: the full model at fewer steps is
            ``Schedule.full(blocks, fewer_timesteps)``), a gate (soft mix) or None (all run).
        pipe_or_model, n, steps, ...: as for :func:`sample` (gates and None sample at ``steps``).
        solvers: by method name, a solver other than ``sampler`` that method samples with (the full
            model's fewer-steps curves of several solvers in one paired run).

    Example:
        >>> runs = sample_lockstep(model, {"full": None, "fast": schedule}, scheduler=s)  # doctest: +SKIP
    """
    if not methods:
        raise ValueError("give at least one method to sample with")
    model = denoiser_of(pipe_or_model)
    scheduler = scheduler if scheduler is not None else getattr(pipe_or_model, "scheduler", None)
    sampler = sampler or default_solver(scheduler)
    check_context(model, context, n)
    check_guidance(model, guidance_scale)
    device = model_device(model) if device is None else torch.device(device)
    context = None if context is None else context.to(device)
    engines: dict[tuple[str, ...], Engine] = {}  # one per block set, shared by the methods that gate it
    own, settings = solvers or {}, (steps, timesteps, engines, device, guidance_scale)
    runs = {
        name: _Method(model, m, scheduler, own.get(name, sampler), *settings) for name, m in methods.items()
    }
    total = n * sum(len(r.visited) for r in runs.values())
    bar = tqdm(total=total, desc=f"sampling ({sampler})", unit="img-step", disable=not progress, leave=False)
    with ExitStack() as attached, bar:
        for engine in engines.values():
            attached.enter_context(engine.attached())
        batches = (range(first, first + n), batch_size, context, seed, device, decoder, bar)
        return _sample_batches(model, runs, *batches)


def _sample_batches(model, runs: dict[str, _Method], indices: range, batch_size: int, context, seed: int,
                    device, decoder, bar) -> dict[str, TimedSamples]:  # fmt: skip
    """Every method's samples ``indices`` in batches of ``batch_size``, timed on one clock."""
    clock = _Clock(device, list(runs))
    images: dict[str, list[torch.Tensor]] = {name: [] for name in runs}
    for start in range(0, len(indices), batch_size):
        idx = indices[start : start + batch_size]
        rows = context_rows(context, range(start, start + len(idx)))
        for name, x in _batch(model, runs, idx, rows, seed, device, decoder, clock, bar).items():
            images[name].append(x.cpu())
    cache = {name: run.cache_bytes_per_sample for name, run in runs.items()}
    return {
        name: TimedSamples(torch.cat(images[name]), clock.seconds[name], cache[name],
                           adaptive_share=run.adaptive_share)
        for name, run in runs.items()
    }  # fmt: skip


def _batch(model, runs: dict[str, _Method], idx: range, rows, seed: int, device, decoder, clock: _Clock,
           bar) -> dict[str, torch.Tensor]:  # fmt: skip
    """One batch with every method, step by step in a turning order; each method's final samples."""
    names, shape = list(runs), latent_shape(model)
    state = {}
    for name in names:  # each method its own generators: the same streams as sampling alone
        gens = sample_generators(seed, idx, device)
        cond = {"class_labels": draw_labels(model, gens, device), "context": rows}
        runs[name].new_run()
        noise = torch.stack([torch.randn(shape, generator=g, device=device) for g in gens])
        state[name] = [runs[name].run.start(noise), gens, cond]
    for j in range(max(len(r.visited) for r in runs.values())):
        for name in names[j % len(names) :] + names[: j % len(names)]:
            if j < len(runs[name].visited):
                x, gens, cond = state[name]
                state[name][0] = clock(name, runs[name].step, x, j, cond, gens)
                bar.update(len(idx))
    if decoder is None:
        return {name: state[name][0] for name in names}
    return {name: clock(name, decode, decoder, state[name][0]) for name in names}


class _Clock:
    """The seconds each method's work took, every call timed between two device synchronisations."""

    def __init__(self, device: torch.device, names: list[str]) -> None:
        self.sync = synchronizer(device)
        self.seconds = dict.fromkeys(names, 0.0)

    def __call__(self, name: str, work: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
        self.sync()
        started = time.perf_counter()
        out = work(*args)
        self.sync()
        self.seconds[name] += time.perf_counter() - started
        return out


class _Method:
    """One method of a side-by-side run: its sampler and timesteps, and its noise prediction at step
    ``j``: all blocks, a schedule's actions (with its own reuse cache, cleared at every new run), or
    soft gates mixed by block name. Its solver is made afresh for every run (multistep solvers keep
    the model's past outputs)."""

    def __init__(
        self, model, method: Method, scheduler, sampler: str, steps: int, timesteps, engines, device,
        guidance_scale: float = 1.0,
    ) -> None:  # fmt: skip
        self.model, self.method, self.cache, self.guidance_scale = model, method, None, guidance_scale
        if isinstance(method, Schedule):
            sampler = schedule_sampler(method, sampler, scheduler)
            steps, timesteps = method.num_steps, _own_timesteps(scheduler, sampler, method.timesteps)
        self.solver = (scheduler, sampler, steps, timesteps, device)
        self.new_run()
        if method is None:
            return
        if isinstance(method, Schedule):
            names = method.block_names
            self.cache = method.new_cache()
        elif isinstance(method, SigmoidTimeGate):
            if method.block_names is None:
                raise ValueError(
                    "this gate has no block names; load it with load_gate or set gate.block_names"
                )
            names = method.block_names
            self.times = normalised_time(
                torch.tensor(self.visited), self.scheduler.config.num_train_timesteps
            )
        else:
            raise TypeError(f"a method is a Schedule, a SigmoidTimeGate or None, not {type(method).__name__}")
        self.engine = engines.setdefault(tuple(names), Engine(model, names))

    def new_run(self) -> None:
        """A fresh solver (set to its steps) and an empty reuse cache, for a new batch."""
        self.run = SolverRun(*self.solver)
        self.scheduler, self.visited = self.run.solver, self.run.visited
        if self.cache is not None:
            self.cache.clear()

    @property
    def cache_bytes_per_sample(self) -> float:
        return self.cache.peak_bytes_per_sample if self.cache is not None else 0.0

    @property
    def adaptive_share(self) -> np.ndarray | None:
        """An adaptive schedule's per-cell share of batches that ran beyond its table (else None)."""
        probe = None if self.cache is None else self.cache.probe
        return None if probe is None else probe.ran_share

    def step(self, x: torch.Tensor, j: int, cond: dict, gens: list[torch.Generator]) -> torch.Tensor:
        """One sampler step from x_j: the model's (guided) prediction at the solver's scaled input and
        its timestep (a float one for flow matching), then the solver's update."""
        inputs, t = self.run.model_input(x, j)
        if self.method is None:
            return self.run.step(self._predict(inputs, t, cond), j, x, gens)
        if isinstance(self.method, Schedule):
            decisions, mode = self.method.actions_at(j), "hard"
        else:
            decisions, mode = self.method(self.times[j].to(x.device)), "soft"
        with self.engine.deciding(decisions, mode, self.cache, position=j):
            output = self._predict(inputs, t, cond)
        return self.run.step(output, j, x, gens)

    def _predict(self, x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        return guided_denoise(self.model, x, t, **cond, guidance_scale=self.guidance_scale)


def schedule_sampler(
    schedule: Schedule, sampler: str | None = None, scheduler: SchedulerMixin | None = None
) -> str:
    """The sampler a schedule runs on: the one it was made for (``settings["sampler"]``), else
    ``sampler``, else the default of the model's family (``scheduler``; DDPM without one). A sampler
    asked for that contradicts the schedule's is an error: the table's columns are the steps of that
    sampler, and another one would run them as other updates."""
    made_for = schedule.settings.get("sampler")
    if sampler is not None and made_for is not None and sampler != made_for:
        raise ValueError(f"the schedule was made for the {made_for} sampler, not {sampler}")
    if made_for is None and schedule.settings.get("scheduler") and sampler is None:
        raise ValueError(
            f"the schedule was made for a {schedule.settings['scheduler']} no lees solver names: run it with "
            "lees.enable in a pipeline with that scheduler, or name --sampler"
        )
    return sampler or made_for or default_solver(scheduler)


def _own_timesteps(scheduler, sampler: str, timesteps: list[int]) -> list[int] | None:
    """None where ``timesteps`` are the sampler's evenly spaced ones (its own stepping), else them."""
    return None if sampler_timesteps(scheduler, len(timesteps), sampler) == timesteps else timesteps
