"""Named solvers: a fresh diffusers scheduler of a chosen kind, made from the model's own scheduler config.

Two families, as :func:`lees.diffusion.noising.is_flow_matching` tells them apart. A DDPM-family model
(betas, ``prediction_type``) samples with ``ddpm``, ``ddim``, ``dpm++`` (DPM-Solver++ 2M), ``unipc``,
``euler``, ``euler-a`` (ancestral), ``heun`` and ``pndm``; a flow-matching model with ``euler``,
``heun``, ``dpm++`` and ``unipc``, the last two on flow sigmas (``use_flow_sigmas``, velocity as
``flow_prediction``, the config's ``shift`` as ``flow_shift``). Every value of the model's config
carries over (diffusers' ``from_config``); only what makes the solver the named one is overridden.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import diffusers
import torch
from diffusers import SchedulerMixin

from .noising import is_flow_matching

# name -> (diffusers scheduler class, config overrides), per family.
DDPM_SOLVERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
}

_FLOW_SIGMAS = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}

FLOW_SOLVERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("FlowMatchEulerDiscreteScheduler", {}),
    "heun": ("FlowMatchHeunDiscreteScheduler", {}),
    "dpm++": (
        "DPMSolverMultistepScheduler",
        {**_FLOW_SIGMAS, "algorithm_type": "dpmsolver++", "solver_order": 2},
    ),
    "unipc": ("UniPCMultistepScheduler", _FLOW_SIGMAS),
}

# The solvers that draw fresh noise at every step (ancestral): a sample has no deterministic ODE partner.
STOCHASTIC_SOLVERS = ("ddpm", "euler-a")

# Every solver name of either family (what ``--sampler`` accepts; the model's family decides).
SOLVER_NAMES = tuple(dict.fromkeys([*DDPM_SOLVERS, *FLOW_SOLVERS]))


class SolverError(ValueError):
    """A solver name that the model's family has no solver for."""


def family(scheduler: SchedulerMixin) -> str:
    """``flow`` for a flow-matching model's scheduler, else ``ddpm``."""
    return "flow" if is_flow_matching(scheduler) else "ddpm"


def solvers_for(scheduler: SchedulerMixin) -> dict[str, tuple[str, dict[str, Any]]]:
    """The solvers of the family ``scheduler``'s model belongs to, by name."""
    return FLOW_SOLVERS if is_flow_matching(scheduler) else DDPM_SOLVERS


def check_solver(scheduler: SchedulerMixin, name: str) -> None:
    """A clear one-line error unless ``name`` is a solver of the model's family."""
    known = solvers_for(scheduler)
    if name not in known:
        kind = "a flow-matching" if is_flow_matching(scheduler) else "a DDPM-family"
        raise SolverError(f"no solver {name!r} for {kind} model; available: {', '.join(known)}")


def make_solver(scheduler: SchedulerMixin, name: str) -> SchedulerMixin:
    """A fresh scheduler of the solver ``name`` on ``scheduler``'s config (not yet set to any steps).

    Args:
        scheduler: the model's scheduler (its config sets the noise process and the family).
        name: a solver of that family (see :data:`DDPM_SOLVERS`, :data:`FLOW_SOLVERS`).
    """
    check_solver(scheduler, name)
    cls_name, overrides = solvers_for(scheduler)[name]
    config = dict(scheduler.config)
    if "use_flow_sigmas" in overrides:  # a flow shift is flow_shift to these schedulers
        overrides = {**overrides, "flow_shift": float(config.pop("shift", 1.0))}
    return getattr(diffusers, cls_name).from_config({**config, **overrides})


def named_scheduler(scheduler: SchedulerMixin, class_name: str) -> SchedulerMixin:
    """A fresh diffusers scheduler of the class ``class_name`` (e.g. ``DPMSolverMultistepScheduler``) on
    ``scheduler``'s config, every value carried over as diffusers' ``from_config`` does.

    A class that would read a flow-matching model's config as a DDPM noise process (no flow sigmas) is
    refused: the named solvers of the flow family (``dpm++``, ``unipc``) set the flow options."""
    cls = getattr(diffusers, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise SolverError(f"{class_name!r} is no diffusers scheduler (e.g. DPMSolverMultistepScheduler)")
    made = cls.from_config(scheduler.config)
    if is_flow_matching(scheduler) and not (is_flow_matching(made) or made.config.get("use_flow_sigmas")):
        raise SolverError(
            f"{class_name} would read this flow-matching model's config as a DDPM noise process; "
            f"name a flow solver instead ({', '.join(FLOW_SOLVERS)})"
        )
    return made


def solver_name(solver: SchedulerMixin) -> str | None:
    """The name of the solver ``solver`` is (its class, with the overrides that make it the named one);
    None for a scheduler no name describes. (A flow model's ``dpm++`` and ``unipc`` share their names
    and classes with the DDPM family's.)"""
    for name, (cls_name, overrides) in solvers_for(solver).items():
        if type(solver).__name__ == cls_name and all(solver.config.get(k) == v for k, v in overrides.items()):
            return name
    return None


def set_custom_timesteps(solver: SchedulerMixin, name: str, timesteps: Sequence[float]) -> None:
    """Set ``solver`` to a custom (checked) timestep list; a clear error for a solver that takes none."""
    if "timesteps" not in inspect.signature(solver.set_timesteps).parameters:
        raise SolverError(f"the {name} solver samples only at its own timesteps; drop the custom timesteps")
    solver.set_timesteps(timesteps=list(timesteps))


def initial_noise_scale(solver: SchedulerMixin) -> float | torch.Tensor:
    """What the solver's start noise is scaled by (``init_noise_sigma``; 1 where a scheduler has none)."""
    return getattr(solver, "init_noise_sigma", 1.0)


def scale_input(solver: SchedulerMixin, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The model's input at x_t: the solver's ``scale_model_input`` (x itself where it has none)."""
    scale = getattr(solver, "scale_model_input", None)
    return x if scale is None else scale(x, t)


def solver_step(
    solver: SchedulerMixin, output: torch.Tensor, j: int, x: torch.Tensor, generators: list[torch.Generator]
) -> torch.Tensor:
    """The solver's own update from the model's ``output`` at its step ``j``; stochastic solvers draw
    each sample's noise from that sample's generator."""
    extra = {"generator": generators} if "generator" in inspect.signature(solver.step).parameters else {}
    return solver.step(output, solver.timesteps[j], x, **extra).prev_sample


def default_solver(scheduler: SchedulerMixin | None) -> str:
    """The solver a model samples with unless told: ``euler`` for flow matching, else ``ddpm``."""
    return "euler" if scheduler is not None and is_flow_matching(scheduler) else "ddpm"
