"""Samplers as functions: the timesteps a sampler visits, its update rule (a named solver's step,
lees' deterministic DDIM on any timesteps) and each sample's own random generator.

The one home of timesteps: :func:`sampler_timesteps` (a named solver) and :func:`pipeline_timesteps`
(any diffusers scheduler) give them through :func:`timestep_values`, as the scheduler gives them, one
entry per model call (floats for flow matching and Euler, repeats for Heun and PNDM): the columns of a
schedule for ``lees.enable``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from diffusers import SchedulerMixin

from .noising import MissingSchedulerError, is_flow_matching, prediction_type, split
from .solvers import (
    check_solver,
    initial_noise_scale,
    make_solver,
    scale_input,
    set_custom_timesteps,
    solver_step,
)


def sample_generators(seed: int, indices: range, device: torch.device) -> list[torch.Generator]:
    """Sample i's own generator for run ``seed`` (its label, start noise and step noise come from it):
    what a diffusers pipeline given these as ``generator=`` draws the same start noise from."""
    return [torch.Generator(device).manual_seed(seed * 1_000_003 + i) for i in indices]


def check_timesteps(timesteps: Sequence[float], num_train: int, flow: bool = False) -> list:
    """A custom timestep list as ints, or as floats for a flow-matching model (``flow``); a clear error
    unless strictly descending within [0, num_train) (flow: (0, num_train])."""
    if not flow and any(float(t) != int(t) for t in timesteps):
        raise ValueError(
            f"this model's timesteps are integers (it is not flow matching), got {list(timesteps)}"
        )
    ts = [float(t) for t in timesteps] if flow else [int(t) for t in timesteps]
    if not ts:
        raise ValueError("the timestep list is empty")
    inside = (lambda t: 0 < t <= num_train) if flow else (lambda t: 0 <= t < num_train)
    if not all(inside(t) for t in ts):
        span = f"(0, {num_train}]" if flow else f"[0, {num_train})"
        raise ValueError(f"timesteps must lie in {span}, got {ts}")
    if any(a <= b for a, b in zip(ts, ts[1:], strict=False)):
        raise ValueError(f"timesteps must be strictly descending, got {ts}")
    return ts


def make_sampler(
    scheduler: SchedulerMixin | None, sampler: str | None, steps: int, timesteps: Sequence[int] | None = None
):
    """A fresh diffusers scheduler of the solver ``sampler`` on the model's ``scheduler`` config, set to
    its steps (the solvers of the model's family: :mod:`lees.diffusion.solvers`); ``sampler=None``: a
    fresh one of ``scheduler``'s own class (any diffusers scheduler, e.g. a pipeline's).

    Every value of the model's scheduler config carries over (betas, ``prediction_type``,
    ``timestep_spacing``, ``steps_offset``, ``clip_sample``, ``set_alpha_to_one``, ...); without one
    there is no noise schedule to sample with, which is an error rather than a guess.
    """
    if timesteps is None and steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    if scheduler is None:
        raise MissingSchedulerError(
            "no scheduler given: pass the model's (e.g. lees.load_noise_scheduler(folder)) "
            "or sample from its diffusers pipeline"
        )
    if sampler is not None:
        check_solver(scheduler, sampler)
    if not is_flow_matching(scheduler) and not scheduler.config.get("use_flow_sigmas"):
        prediction_type(scheduler)
    fresh = make_solver(scheduler, sampler) if sampler else type(scheduler).from_config(scheduler.config)
    if timesteps is None:
        if fresh.config.get("use_dynamic_shifting"):
            raise ValueError(SHIFTS_BY_SIZE.format(type(fresh).__name__))
        fresh.set_timesteps(steps)
    elif sampler == "ddim":  # lees steps DDIM itself (ddim_step), so any list works
        ts = check_timesteps(timesteps, fresh.config.num_train_timesteps)
        fresh.set_timesteps(len(ts))
        fresh.timesteps = torch.tensor(ts)
    else:
        ts = check_timesteps(timesteps, fresh.config.num_train_timesteps, is_flow_matching(scheduler))
        set_custom_timesteps(fresh, sampler or type(fresh).__name__, ts)
    return fresh


class SolverRun:
    """One sampling run of a solver, made afresh for it (multistep solvers keep the model's past
    outputs, Heun its half step): the timesteps it calls the model at, one per call, as it gives them;
    the model's input at call j (the solver's ``scale_model_input``) and the update after it.

    Args:
        scheduler, sampler, steps, timesteps: as for :func:`make_sampler`.
        device: where the states live (lees' DDIM keeps its alphas there).
    """

    def __init__(
        self, scheduler: SchedulerMixin | None, sampler: str | None, steps: int,
        timesteps: Sequence[float] | None = None, device: torch.device | str = "cpu",
    ) -> None:  # fmt: skip
        self.solver = make_sampler(scheduler, sampler, steps, timesteps)
        self.visited = timestep_values(self.solver.timesteps)
        self.update = sampler_update(self.solver, sampler, self.visited, torch.device(device))

    def start(self, noise: torch.Tensor) -> torch.Tensor:
        """The first state from unit noise (scaled by the solver's ``init_noise_sigma``)."""
        return noise * initial_noise_scale(self.solver)

    def model_input(self, x: torch.Tensor, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's input at state ``x`` of call ``j`` and its timestep, one per sample (a float one
        for flow matching)."""
        timestep = self.solver.timesteps[j]
        return scale_input(self.solver, x, timestep), timestep.to(x.device).expand(len(x))

    def step(
        self, output: torch.Tensor, j: int, x: torch.Tensor, gens: list[torch.Generator]
    ) -> torch.Tensor:
        """The state after call ``j``: the solver's update from the model's ``output`` there."""
        return self.update(output, j, x, gens)


def sampler_timesteps(
    scheduler: SchedulerMixin | None,
    steps: int,
    sampler: str = "ddpm",
    timesteps: Sequence[int] | None = None,
) -> list[int | float]:
    """The timesteps a sampler with ``steps`` steps (or the custom ``timesteps``) visits, in order."""
    return timestep_values(make_sampler(scheduler, sampler, steps, timesteps).timesteps)


def pipeline_timesteps(
    scheduler: Any, steps: int | None = None, image_seq_len: int | None = None, **kwargs: Any
) -> list[int | float]:
    """The timesteps a diffusers scheduler calls the model at, one entry per call of one guidance branch,
    as the scheduler gives them (ints, or floats: flow matching's lie in (0, 1000]): a schedule's columns.

    Args:
        scheduler: the pipeline's scheduler (``pipe.scheduler``), or the pipeline itself: then its own
            call sets them (stopped there, before any denoiser call) with ``kwargs`` as its arguments
            (e.g. ``height=``, ``width=``: Flux and SD3 shift their timesteps by the image size).
        steps: set it to this many steps first, as its pipeline does (``set_timesteps(steps, **kwargs)``);
            without steps or kwargs, the timesteps it is set to now (e.g. after a pipeline run).
        image_seq_len: the image's length in latent tokens, for a scheduler that shifts its timesteps by
            it (``use_dynamic_shifting``): ``mu`` is computed from it as Flux's and SD3's pipelines do.
        kwargs: what the pipeline passes to ``set_timesteps`` besides the steps (``sigmas=``, ``mu=``).
    """
    if hasattr(scheduler, "scheduler") and callable(scheduler):
        return called_timesteps(scheduler, steps, **kwargs)
    if steps is not None and "mu" not in kwargs and scheduler.config.get("use_dynamic_shifting"):
        kwargs["mu"] = dynamic_shift(scheduler, image_seq_len)
    if steps is not None:
        scheduler.set_timesteps(steps, **kwargs)
    elif kwargs:
        scheduler.set_timesteps(**kwargs)
    if getattr(scheduler, "timesteps", None) is None:
        raise ValueError(f"{type(scheduler).__name__} has no timesteps yet: pass steps, or set them first")
    return timestep_values(scheduler.timesteps)


SHIFTS_BY_SIZE = (
    "{} shifts its timesteps by the image size (use_dynamic_shifting): they are a pipeline's at a "
    "resolution (lees.pipeline_timesteps(pipe, steps, height=H, width=W), or image_seq_len=: the latent "
    "tokens of one image; or mu=); sample it through its pipeline"
)


def dynamic_shift(scheduler: Any, image_seq_len: int | None) -> float:
    """``mu`` of a scheduler that shifts its timesteps by the image size (``use_dynamic_shifting``), as
    diffusers' Flux and SD3 pipelines compute it (``calculate_shift``): linear in the image's length in
    latent tokens between the config's ``base_image_seq_len`` and ``max_image_seq_len``."""
    if image_seq_len is None:
        raise ValueError(SHIFTS_BY_SIZE.format(type(scheduler).__name__))
    config = scheduler.config
    base, top = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    low, high = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    return low + (high - low) / (top - base) * (image_seq_len - base)


class _TimestepsSet(Exception):
    """Raised by :func:`called_timesteps` once the pipeline has set its timesteps: no denoiser call."""


def called_timesteps(pipe: Any, steps: int | None = None, **call: Any) -> list[int | float]:
    """The timesteps ``pipe(num_inference_steps=steps, **call)`` sets, read from its own call to its
    scheduler's ``set_timesteps`` (whatever it passes: ``mu`` for the resolution, Flux's ``sigmas``),
    which stops the call there. A text pipeline gets an empty prompt and a class-conditional one class
    0 unless ``call`` gives them: the timesteps depend on neither."""
    scheduler, original = pipe.scheduler, pipe.scheduler.set_timesteps

    @functools.wraps(original)  # its signature: pipelines check it for sigmas= and timesteps=
    def set_and_stop(*args: Any, **kwargs: Any) -> None:
        original(*args, **kwargs)
        raise _TimestepsSet

    accepts = inspect.signature(pipe.__call__).parameters
    defaults = {"prompt": "", "class_labels": [0]}
    call = {**{k: v for k, v in defaults.items() if k in accepts}, **call}
    if steps is not None:
        call["num_inference_steps"] = steps
    scheduler.set_timesteps = set_and_stop
    try:
        pipe(**call)
    except _TimestepsSet:
        return timestep_values(scheduler.timesteps)
    finally:
        del scheduler.set_timesteps
    raise ValueError(f"{type(pipe).__name__} never set its scheduler's timesteps")


def timestep_values(timesteps: Sequence[Any]) -> list[int | float]:
    """Timesteps as plain Python numbers, exactly as given: integers stay integers, floats stay floats."""
    values = [t.item() if hasattr(t, "item") else t for t in timesteps]
    if not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in values):
        raise ValueError(f"timesteps must be numbers, got {values[:4]}")
    return values


def gate_time(timesteps: Any, num_train_timesteps: int = 1000) -> torch.Tensor:
    """:func:`normalised_time`, also for flow matching's t in (0, N]: a gate's time is the one it was
    trained at, (t + 1) / N, clamped to 1 (t = N, a flow sampler's first step, maps to 1)."""
    t = torch.as_tensor(timesteps, dtype=torch.float32)
    if torch.any(t < 0) or torch.any(t > num_train_timesteps):
        raise ValueError(f"timesteps must lie in [0, {num_train_timesteps}], got {t.tolist()}")
    return ((t + 1) / num_train_timesteps).clamp(max=1.0)


def normalised_time(timesteps: torch.Tensor | int, num_train_timesteps: int = 1000) -> torch.Tensor:
    """Map discrete timesteps 0..N-1 to t = (timestep + 1) / N in (0, 1]."""
    timesteps = torch.as_tensor(timesteps, dtype=torch.float32)
    if torch.any(timesteps < 0) or torch.any(timesteps >= num_train_timesteps):
        raise ValueError(f"timesteps must lie in [0, {num_train_timesteps}), got {timesteps.tolist()}")
    return (timesteps + 1) / num_train_timesteps


def ddim_step(
    x: torch.Tensor, output: torch.Tensor, alpha: torch.Tensor, alpha_prev: torch.Tensor, kind: str,
    clip: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:  # fmt: skip
    """One deterministic DDIM step (eta = 0) from cumulative alpha ``alpha`` to ``alpha_prev``.

    ``output`` is the model's prediction of type ``kind`` (see :mod:`lees.noising`); ``clip`` is
    applied to the predicted clean sample, as diffusers' ``DDIMScheduler.step`` does.
    """
    x0, eps = split(kind, output, x, alpha)
    return alpha_prev.sqrt() * clip(x0) + (1 - alpha_prev).sqrt() * eps


def x0_clip(scheduler: SchedulerMixin) -> Callable[[torch.Tensor], torch.Tensor]:
    """What the scheduler's config does to a predicted clean sample: dynamic thresholding, clipping
    to ``clip_sample_range``, or nothing (diffusers' order of precedence)."""
    config = scheduler.config
    if config.get("thresholding", False):
        return scheduler._threshold_sample
    if config.get("clip_sample", False):
        bound = config.clip_sample_range
        return lambda x0: x0.clamp(-bound, bound)
    return lambda x0: x0


def sampler_update(scheduler, sampler: str | None, visited: list[int], device: torch.device):
    """The sampler's update ``x_{j+1} = update(output, j, x_j, generators)`` from the model's output at
    step j: the solver's own step (diffusers', with each sample's generator where it draws noise), or
    lees' DDIM (:func:`ddim_step`, any timestep list; after the last step, the config's final alpha: 1
    with ``set_alpha_to_one``, else alpha at t = 0)."""
    if sampler != "ddim":
        return lambda output, j, x, gens: solver_step(scheduler, output, j, x, gens)
    kind = prediction_type(scheduler)
    alphas = scheduler.alphas_cumprod.to(device)
    final = scheduler.final_alpha_cumprod.to(device)
    clip = x0_clip(scheduler)

    def ddim(output, j, x, gens):
        alpha_prev = alphas[visited[j + 1]] if j + 1 < len(visited) else final
        return ddim_step(x, output, alphas[visited[j]], alpha_prev, kind, clip)

    return ddim
