"""Inside the user's own pipeline: ``lees.enable(pipe, schedule)`` and ``lees.disable(pipe)``.

After ``enable`` the user's ``pipe(...)`` (or their own sampling loop) runs unchanged and every
hooked block follows the schedule at the timestep the scheduler passes to the denoiser. Built on
diffusers' hooks, as ``apply_first_block_cache`` is: a stateful root hook on the denoiser reads the
timestep of each call and sets the block decisions of a :class:`lees.engine.hooks.Engine` for that call.

Which column of a schedule applies: the one whose timestep equals the call's timestep rounded to
an integer (float timesteps, as Euler passes, included); a timestep that is not on the schedule's
grid is a :class:`ScheduleError` naming the grid. A sigmoid gate applies at any timestep: a block
runs where g_k(t) >= 0.5.

Reuse caches are per sampling run: they are cleared whenever a call's column comes before the
previous call's (a new run started), when a diffusers pipeline finishes (its
``maybe_free_model_hooks`` resets stateful hooks) and by :func:`reset`. Calls at the same column
(PNDM repeats a timestep) keep the cache. Classifier-free guidance must be batched, as diffusers
pipelines do: both halves are samples of one call, each with its own cached residuals.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook
from torch import nn

from .diffusion.samplers import normalised_time
from .engine.actions import open_mask
from .engine.blocks import compiled_original
from .engine.hooks import Engine, ReuseCache, remove_hook
from .models.denoisers import denoiser_of
from .schedules.gates import SigmoidTimeGate
from .schedules.saving import load_policy
from .schedules.schedule import Schedule, ScheduleError

ROOT_HOOK = "lees.steps"

Policy = Schedule | SigmoidTimeGate


class _StepHook(ModelHook):
    """Root hook: maps each call's timestep to the policy's block decisions (see the module doc)."""

    _is_stateful = True

    def __init__(self, engine: Engine, policy: Policy, num_train: int) -> None:
        super().__init__()
        self.engine, self.policy, self.num_train = engine, policy, num_train
        if isinstance(policy, Schedule):
            self.columns = {t: j for j, t in enumerate(policy.timesteps)}
            self.cache = ReuseCache(policy.num_blocks, policy.kept_blocks()) if policy.reuses else None
        else:
            self.cache = None
        self.last = -1

    def new_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        timestep = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        with self.engine.deciding(self.decisions(timestep), "hard", self.cache):
            return self.fn_ref.original_forward(*args, **kwargs)

    @torch.compiler.disable  # eager under an in-place compile: one graph per block set, not per timestep
    def decisions(self, timestep: Any) -> list[int]:
        if timestep is None:
            raise TypeError(
                "lees follows the denoiser's timestep: call it with timestep= or as its 2nd argument"
            )
        t = torch.as_tensor(timestep).flatten().float()
        if t.numel() > 1 and not torch.all(t == t[0]):
            raise ValueError("lees follows one timestep per call; this batch mixes timesteps")
        value = float(t[0]) if t.numel() else float("nan")
        if isinstance(self.policy, SigmoidTimeGate):
            gate = self.policy(normalised_time(value, self.num_train))
            return [int(b) for b in open_mask(gate).tolist()]
        j = self.columns.get(round(value))
        if j is None:
            raise ScheduleError(
                f"timestep {value:g} is not on the schedule's grid {self.policy.timesteps[:4]}...; build the "
                "schedule for this scheduler's timesteps (lees.pipeline_timesteps)"
            )
        if j < self.last and self.cache is not None:
            self.cache.clear()
        self.last = j
        return self.policy.mask(j)

    def reset_state(self, module: nn.Module) -> nn.Module:
        if self.cache is not None:
            self.cache.clear()
        self.last = -1
        return module


def enable(
    pipe_or_model: Any, policy: Policy | str | Path, num_train_timesteps: int | None = None
) -> nn.Module:
    """Make ``pipe_or_model``'s denoiser follow ``policy`` until :func:`disable`; returns the denoiser.

    Args:
        pipe_or_model: a diffusers pipeline (its ``unet`` or ``transformer`` is hooked) or a denoiser.
        policy: a :class:`Schedule` (built for the scheduler's timesteps: :func:`pipeline_timesteps`),
            a :class:`SigmoidTimeGate`, or a folder or file saved by lees (``save_pretrained``).
        num_train_timesteps: N of the noise schedule, which normalises a gate's time (default: the
            pipeline scheduler's, else the schedule's).

    Enabling again replaces the policy; the model and its weights are never changed.

    Example:
        >>> lees.enable(pipe, lees.EMBEDDED_DIR / "router-0.70")  # doctest: +SKIP
        >>> images = pipe(batch_size=4, num_inference_steps=50).images  # doctest: +SKIP
        >>> lees.disable(pipe)  # doctest: +SKIP
    """
    denoiser = denoiser_of(pipe_or_model)
    if isinstance(policy, (str, Path)):
        policy = load_policy(policy)
    if not isinstance(policy, (Schedule, SigmoidTimeGate)):
        raise TypeError(f"enable takes a Schedule, a SigmoidTimeGate or a path, not {type(policy).__name__}")
    names = policy.block_names
    if names is None:
        raise ValueError("this gate has no block names; load it with load_gate or set gate.block_names")
    disable(denoiser)
    engine = Engine(denoiser, names)
    hook = _StepHook(engine, policy, num_train_timesteps or _num_train(pipe_or_model, policy))
    engine.attach()
    HookRegistry.check_if_exists_or_initialize(denoiser).register_hook(hook, ROOT_HOOK)
    _warn_recompiles(denoiser, policy)
    return denoiser


def _warn_recompiles(denoiser: nn.Module, policy: Policy) -> None:
    """Warn when a compiled denoiser would need more graphs for this schedule than dynamo keeps: one
    per distinct run-set, plus one for the first step (nothing cached yet). See docs/reuse.md."""
    compiled = compiled_original(denoiser) is not denoiser or denoiser._compiled_call_impl is not None
    if not compiled or not isinstance(policy, Schedule):
        return
    graphs = policy.run_sets() + 1
    limit = torch._dynamo.config.recompile_limit
    if graphs > limit:
        warnings.warn(
            f"this schedule compiles about {graphs} graphs, more than torch._dynamo.config.recompile_limit "
            f"({limit}): the steps beyond it run uncompiled; raise the limit before the first call",
            stacklevel=3,
        )


def _num_train(pipe_or_model: Any, policy: Policy) -> int:
    """The training timestep count that normalises t: the pipeline scheduler's, else the schedule's."""
    scheduler = getattr(pipe_or_model, "scheduler", None)
    if scheduler is not None:
        return int(scheduler.config.num_train_timesteps)
    return policy.num_train_timesteps if isinstance(policy, Schedule) else 1000


def _root_hook(denoiser: nn.Module) -> _StepHook | None:
    registry = getattr(denoiser, "_diffusers_hook", None)
    return None if registry is None else registry.get_hook(ROOT_HOOK)


def disable(pipe_or_model: Any) -> None:
    """Remove what :func:`enable` attached: the denoiser is its plain self again (a no-op if nothing is)."""
    denoiser = denoiser_of(pipe_or_model)
    hook = _root_hook(denoiser)
    if hook is None:
        return
    remove_hook(denoiser, ROOT_HOOK)
    hook.engine.detach()


def reset(pipe_or_model: Any) -> None:
    """Clear the reuse cache of an enabled denoiser (a new sampling run starts)."""
    hook = _root_hook(denoiser_of(pipe_or_model))
    if hook is not None:
        hook.reset_state(hook.engine.model)
