"""Inside the user's own pipeline: ``lees.enable(pipe, schedule)`` and ``lees.disable(pipe)``.

After ``enable`` the user's ``pipe(...)`` (or their own sampling loop) runs unchanged and every hooked
block follows the schedule. Built on diffusers' hooks, as ``apply_first_block_cache`` is: a stateful
root hook on the denoiser sets the block decisions of a :class:`lees.engine.hooks.Engine` call by call.

Which column of a schedule applies: the call's position in its sampling run (see
:mod:`lees.schedules.fitting`: Heun's and PNDM's repeated timesteps, flow matching's floats and Flux's
t / 1000 included); a run that does not fit the schedule is a :class:`ScheduleError` at its first call.
A sigmoid gate applies at any timestep: a block runs where g_k(t) >= 0.5.

Guidance: batched (one call on [uncond, cond]) needs nothing, each sample has its own cached residuals.
Split (one call per branch) must run each branch inside ``model.cache_context(name)``: the root hook
keeps one run state and reuse cache per context name in a diffusers ``StateManager``, so
``cache_context`` reaches it as it reaches diffusers' own cache hooks; calls outside any context share
one state. Reuse caches start empty at each run, when a diffusers pipeline finishes (its
``maybe_free_model_hooks`` resets stateful hooks) and at :func:`reset`.

Other hooks (accelerate's model CPU offload, diffusers' group offloading and caches) wrap lees' hooks
whichever is enabled first (:mod:`lees.engine.layering`), so they stack and disable in any order
(docs/pipelines.md).
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import StateManager
from torch import nn

from .diffusion.samplers import gate_time
from .diffusion.solvers import make_solver
from .engine.actions import open_mask
from .engine.blocks import compiled_original
from .engine.hooks import Engine, ReuseCache, remove_hook
from .engine.layering import beneath_other_hooks
from .models.denoisers import denoiser_of
from .schedules.fitting import Grid, RunState
from .schedules.gates import SigmoidTimeGate
from .schedules.saving import load_policy
from .schedules.schedule import Schedule
from .schedules.tuned import TunedPolicy, attach_cache, load_tuned

ROOT_HOOK = "lees.steps"
TUNED_CACHE = "_lees_tuned_cache"  # the denoiser attribute holding an enabled cache policy's handle
TUNED_SCHEDULER = "_lees_swapped_scheduler"  # (the pipeline, weakly; its scheduler before a policy's)

Policy = Schedule | SigmoidTimeGate


class _StepHook(ModelHook):
    """Root hook: gives each call the policy's block decisions and its branch's reuse cache (module doc)."""

    _is_stateful = True

    def __init__(self, engine: Engine, policy: Policy, num_train: int, grid: Grid) -> None:
        super().__init__()
        self.engine, self.policy, self.num_train, self.grid = engine, policy, num_train, grid
        self.state_manager = StateManager(RunState, (policy,))  # one run per cache_context name
        self.outside = RunState(policy)  # calls outside any cache context

    def new_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        timestep = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        decisions, cache, position = self.decisions(timestep)
        with self.engine.deciding(decisions, "hard", cache, position=position):
            return self.fn_ref.original_forward(*args, **kwargs)

    def state(self) -> tuple[RunState, str | None]:
        """The run state of the cache context set by ``model.cache_context`` and its name, else the
        state shared by calls outside any context."""
        try:
            name = self.state_manager.context.name
        except ValueError:  # no context is set
            return self.outside, None
        return self.state_manager.get_state(), name

    @torch.compiler.disable  # eager under an in-place compile: one graph per block set, not per timestep
    def decisions(self, timestep: Any) -> tuple[list[int], ReuseCache | None, torch.Tensor | None]:
        """This call's block actions, the reuse cache of its guidance branch, and the call's position in
        that branch's run (what a forecast extrapolates to; a tensor, so a compiled denoiser reads it
        as data, not as a constant to recompile for)."""
        if timestep is None:
            raise TypeError(
                "lees follows the denoiser's timestep: call it with timestep= or as its 2nd argument"
            )
        t = torch.as_tensor(timestep)
        flat = t.flatten().double()
        if flat.numel() > 1 and not torch.all(flat == flat[0]):
            raise ValueError("lees follows one timestep per call; this batch mixes timesteps")
        value = float(flat[0]) if flat.numel() else float("nan")
        state, context = self.state()
        if isinstance(self.policy, SigmoidTimeGate):
            gate = self.policy(gate_time(state.gate_timestep(value), self.num_train))
            return [int(b) for b in open_mask(gate).tolist()], None, None
        column = state.column(value, t.dtype, self.grid, context)
        return self.policy.mask(column), state.cache, torch.tensor(float(column))

    def reset_state(self, module: nn.Module) -> nn.Module:
        self.state_manager.reset()
        self.outside.reset()
        return module


def enable(
    pipe_or_model: Any,
    policy: Policy | str | Path,
    num_train_timesteps: int | None = None,
    scheduler: Any = None,
) -> nn.Module:
    """Make ``pipe_or_model``'s denoiser follow ``policy`` until :func:`disable`; returns the denoiser.

    Args:
        pipe_or_model: a diffusers pipeline (its ``unet`` or ``transformer`` is hooked) or a denoiser.
        policy: a :class:`Schedule` (one column per model call of a run, at the scheduler's timesteps:
            :func:`pipeline_timesteps`), a :class:`SigmoidTimeGate`, or a folder or file saved by lees
            (``save_pretrained``, or ``lees tune``'s ``policy.json``: then a pipeline's scheduler becomes
            the policy's solver, and one line says which solver and steps it was measured with), or such
            a tuned policy as an object (:class:`lees.schedules.tuned.TunedPolicy`; said nothing).
        num_train_timesteps: N of the noise schedule, which normalises a gate's time (default: the
            pipeline scheduler's, else the schedule's).
        scheduler: the scheduler a hand-written loop steps with (default: the pipeline's): its whole
            timestep list is checked against the schedule's at the first call of each run, before any
            block runs. Without one, each call's timestep is checked as it comes.

    Enabling again replaces the policy; the model and its weights are never changed. See
    docs/pipelines.md for what a pipeline must do (grid, guidance, offloading, diffusers' caches).

    Example:
        >>> lees.enable(pipe, lees.EMBEDDED_DIR / "router-0.70")  # doctest: +SKIP
        >>> images = pipe(batch_size=4, num_inference_steps=50).images  # doctest: +SKIP
        >>> lees.disable(pipe)  # doctest: +SKIP
    """
    denoiser = denoiser_of(pipe_or_model)
    if isinstance(policy, TunedPolicy):  # given as an object: the caller knows what it runs
        return _enable_tuned(pipe_or_model, policy, announce=False)
    if isinstance(policy, (str, Path)):
        tuned = load_tuned(policy)
        if tuned is not None:
            return _enable_tuned(pipe_or_model, tuned)
        policy = load_policy(policy)
    if not isinstance(policy, (Schedule, SigmoidTimeGate)):
        raise TypeError(f"enable takes a Schedule, a SigmoidTimeGate or a path, not {type(policy).__name__}")
    if policy.block_names is None:
        raise ValueError("this gate has no block names; load it with load_gate or set gate.block_names")
    disable(denoiser)
    engine = Engine(denoiser, policy.block_names)
    num_train = num_train_timesteps or _num_train(scheduler or pipe_or_model, policy)
    hook = _StepHook(engine, policy, num_train, _grid(pipe_or_model, scheduler))
    with beneath_other_hooks(denoiser, _hooked_modules(engine)):  # whichever was enabled first
        engine.attach()
        HookRegistry.check_if_exists_or_initialize(denoiser).register_hook(hook, ROOT_HOOK)
    _warn_recompiles(denoiser, policy)
    return denoiser


def _enable_tuned(pipe_or_model: Any, tuned: TunedPolicy, announce: bool = True) -> nn.Module:
    """A ``lees tune`` policy: a pipeline's scheduler becomes its solver; its schedule or cache attaches;
    ``announce``: one line says what it runs (for a policy read from a file)."""
    denoiser = denoiser_of(pipe_or_model)
    disable(denoiser)
    if getattr(pipe_or_model, "scheduler", None) is not None and not isinstance(pipe_or_model, nn.Module):
        denoiser.__dict__[TUNED_SCHEDULER] = (weakref.ref(pipe_or_model), pipe_or_model.scheduler)
        pipe_or_model.scheduler = make_solver(pipe_or_model.scheduler, tuned.solver)
    if announce:
        print(tuned.describe())
    if tuned.schedule is not None:
        return enable(pipe_or_model, tuned.schedule)
    if tuned.cache is not None:
        setattr(denoiser, TUNED_CACHE, attach_cache(denoiser, tuned))
    return denoiser


def _grid(pipe_or_model: Any, scheduler: Any) -> Grid:
    """Where a run's scheduler timesteps are read at its first call: ``scheduler``, else the pipeline's
    current ``scheduler`` (held weakly: the hook lives on the denoiser, which the pipeline holds)."""
    if scheduler is not None:
        return lambda: _timesteps(scheduler)
    if getattr(pipe_or_model, "scheduler", None) is None or isinstance(pipe_or_model, nn.Module):
        return lambda: None
    pipe = weakref.ref(pipe_or_model)
    return lambda: _timesteps(getattr(pipe(), "scheduler", None))


def _timesteps(scheduler: Any) -> tuple[str, Sequence[float]] | None:
    timesteps = getattr(scheduler, "timesteps", None)
    return None if timesteps is None else (type(scheduler).__name__, torch.as_tensor(timesteps).tolist())


def _hooked_modules(engine: Engine) -> list[nn.Module]:
    """The modules lees hooks besides the denoiser: the blocks, and the ``conv2`` of resnet blocks."""
    convs = [m.conv2 for m, kind in zip(engine.modules, engine.kinds, strict=True) if kind == "resnet"]
    return [*engine.modules, *convs]


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


def _num_train(source: Any, policy: Policy) -> int:
    """N, which normalises t: the scheduler's (or the pipeline's), else the schedule's."""
    scheduler = source if hasattr(source, "set_timesteps") else getattr(source, "scheduler", None)
    if scheduler is not None:
        return int(scheduler.config.num_train_timesteps)
    return policy.num_train_timesteps if isinstance(policy, Schedule) else 1000


def _root_hook(denoiser: nn.Module) -> _StepHook | None:
    registry = getattr(denoiser, "_diffusers_hook", None)
    return None if registry is None else registry.get_hook(ROOT_HOOK)


def disable(pipe_or_model: Any) -> None:
    """Remove what :func:`enable` attached: the denoiser is its plain self again (a no-op if nothing is),
    and a pipeline whose scheduler a tuned policy swapped gets its own back; other hooks (accelerate's
    offload, diffusers' caches and group offloading) stay as they are."""
    denoiser = denoiser_of(pipe_or_model)
    cache = denoiser.__dict__.pop(TUNED_CACHE, None)
    if cache is not None:
        cache.remove()
    pipe, scheduler = denoiser.__dict__.pop(TUNED_SCHEDULER, (lambda: None, None))
    if pipe() is not None:
        pipe().scheduler = scheduler
    hook = _root_hook(denoiser)
    if hook is None:
        return
    with beneath_other_hooks(denoiser, _hooked_modules(hook.engine)):
        remove_hook(denoiser, ROOT_HOOK)
        hook.engine.detach()


def reset(pipe_or_model: Any) -> None:
    """Forget the current sampling run of an enabled denoiser: the next call starts a new one, with
    empty reuse caches (lees also notices a new run by itself: see :mod:`lees.schedules.fitting`)."""
    hook = _root_hook(denoiser_of(pipe_or_model))
    if hook is not None:
        hook.reset_state(hook.engine.model)
