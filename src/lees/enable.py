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

import threading
import warnings
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import StateManager
from torch import nn

from .diffusion.samplers import gate_time
from .engine.actions import open_mask
from .engine.blocks import compiled_original
from .engine.hooks import Engine, ReuseCache, remove_hook
from .engine.layering import beneath_other_hooks
from .models.denoisers import denoiser_of, image_seq_len
from .schedules.fitting import Fitting, Grid, RunState, check_resolution
from .schedules.gates import SigmoidTimeGate
from .schedules.saving import load_policy
from .schedules.schedule import Schedule, ScheduleError
from .schedules.tuned import TunedPolicy, TunedScheduler, attach_cache, load_policies

ROOT_HOOK = "lees.steps"
TUNED_CACHE = "_lees_tuned_cache"  # the denoiser attribute holding an enabled cache policy's handle
TUNED_SCHEDULER = "_lees_swapped_scheduler"  # (the pipeline, weakly; its scheduler before a policy's)

Policy = Schedule | SigmoidTimeGate


THREADS = (
    "this denoiser is enabled in another thread and lees keeps one run state per denoiser, not per thread: "
    "give each thread its own denoiser (copy.deepcopy(pipe.unet)) or lees.disable it first"
)


class _StepHook(ModelHook):
    """Root hook: gives each call the policy's block decisions and its branch's reuse cache (module doc)."""

    _is_stateful = True

    def __init__(self, engine: Engine, fitting: Fitting, gate: SigmoidTimeGate | None, num_train: int,
                 grid: Grid, token: Any) -> None:  # fmt: skip
        super().__init__()
        self.engine, self.fitting, self.gate, self.num_train = engine, fitting, gate, num_train
        self.grid, self.token = grid, token
        self.state_manager = StateManager(RunState, (fitting,))  # one run per cache_context name
        self.outside = RunState(fitting)  # calls outside any cache context
        self.thread = threading.get_ident()  # the thread it belongs to: the enabling one, then the caller

    def new_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        timestep = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        x = kwargs.get("hidden_states", kwargs.get("sample", args[0] if args else None))
        decisions, cache, position = self.decisions(timestep, image_seq_len(module, x))
        if decisions is None:  # a plain run (on_mismatch="full", or a tuned run with no schedule)
            return self.fn_ref.original_forward(*args, **kwargs)
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
    def decisions(
        self, timestep: Any, seq_len: int | None = None
    ) -> tuple[list[int] | None, ReuseCache | None, torch.Tensor | None]:
        """This call's block actions (None: it runs plain), the reuse cache of its guidance branch, and
        the call's position in that branch's run (what a forecast extrapolates to; a tensor, so a compiled
        denoiser reads it as data, not as a constant to recompile for). ``seq_len``: the call's image
        size in latent tokens, checked against the one the schedules record."""
        if timestep is None:
            raise TypeError(
                "lees follows the denoiser's timestep: call it with timestep= or as its 2nd argument"
            )
        t = torch.as_tensor(timestep)
        flat = t.flatten().double()
        if flat.numel() > 1 and not torch.all(flat == flat[0]):
            raise ValueError("lees follows one timestep per call; this batch mixes timesteps")
        value = float(flat[0]) if flat.numel() else float("nan")
        check_resolution(self.fitting, seq_len)
        token = self.token()
        self._claim_thread(token)
        state, context = self.state()
        if self.gate is not None:
            gate = self.gate(gate_time(state.gate_timestep(value), self.num_train))
            return [int(b) for b in open_mask(gate).tolist()], None, None
        column = state.column(value, t.dtype, self.grid, context, token)
        if column is None:
            return None, None, None
        return state.schedule.actions_at(column), state.cache, torch.tensor(float(column))

    def _claim_thread(self, token: Any) -> None:
        """A call from another thread takes the denoiser over only when no run of this scheduler grid is
        in progress: runs of two threads would share one state (one line, :data:`THREADS`)."""
        caller = threading.get_ident()
        if caller == self.thread:
            return
        if any(s.in_progress and (token is None or token is s.token) for s in self.fitting.states):
            raise RuntimeError(f"lees: a call from a second thread while a run is in progress: {THREADS}")
        self.thread = caller

    def reset_state(self, module: nn.Module) -> nn.Module:
        self.state_manager.reset()
        self.outside.reset()
        return module


def enable(
    pipe_or_model: Any,
    policy: Policy | str | Path,
    num_train_timesteps: int | None = None,
    scheduler: Any = None,
    on_mismatch: str = "raise",
) -> nn.Module:
    """Make ``pipe_or_model``'s denoiser follow ``policy`` until :func:`disable`; returns the denoiser.

    Args:
        pipe_or_model: a diffusers pipeline (its ``unet`` or ``transformer`` is hooked) or a denoiser.
        policy: a :class:`Schedule` (one column per model call of a run, at the scheduler's timesteps:
            :func:`pipeline_timesteps`), a :class:`SigmoidTimeGate`, or a folder or file saved by lees
            (``save_pretrained``, or ``lees tune``'s ``policy.json``, for one step count or several: then
            each pipeline call at a tuned step count runs that count's winner, with its solver, and one
            line per winner says what it was measured as), or such a tuned policy as an object
            (:class:`lees.schedules.tuned.TunedPolicy`; said nothing).
        num_train_timesteps: N of the noise schedule, which normalises a gate's time (default: the
            pipeline scheduler's, else the schedule's).
        scheduler: the scheduler a hand-written loop steps with (default: the pipeline's): its whole
            timestep list is checked against the schedule's at the first call of each run, before any
            block runs. Without one, each call's timestep is checked as it comes.
        on_mismatch: what a run the policy does not fit does: "raise" a :class:`ScheduleError` before a
            block runs (the default), or "full": run the full model, with one warning per new grid (or
            step count), never per call: what a server wants (docs/pipelines.md).

    Enabling again (from the same thread) replaces the policy; the model and its weights are never
    changed. See docs/pipelines.md for what a pipeline must do (grid, guidance, offloading, diffusers'
    caches, servers and threads).

    Example:
        >>> lees.enable(pipe, lees.EMBEDDED_DIR / "router-0.70")  # doctest: +SKIP
        >>> images = pipe(batch_size=4, num_inference_steps=50).images  # doctest: +SKIP
        >>> lees.disable(pipe)  # doctest: +SKIP
    """
    denoiser = denoiser_of(pipe_or_model)
    fitting = Fitting([], on_mismatch)  # checks on_mismatch before anything changes
    _check_thread(denoiser)
    if isinstance(policy, TunedPolicy):  # given as an object: the caller knows what it runs
        return _enable_tuned(pipe_or_model, {policy.reference_steps: policy}, on_mismatch, announce=False)
    if isinstance(policy, (str, Path)):
        policies = load_policies(policy)
        if policies is not None:
            return _enable_tuned(pipe_or_model, policies, on_mismatch)
        policy = load_policy(policy)
    if not isinstance(policy, (Schedule, SigmoidTimeGate)):
        raise TypeError(f"enable takes a Schedule, a SigmoidTimeGate or a path, not {type(policy).__name__}")
    if policy.block_names is None:
        raise ValueError("this gate has no block names; load it with load_gate or set gate.block_names")
    fitting.candidates = [policy] if isinstance(policy, Schedule) else []
    gate = policy if isinstance(policy, SigmoidTimeGate) else None
    num_train = num_train_timesteps or _num_train(scheduler or pipe_or_model, policy)
    _attach(pipe_or_model, scheduler, policy.block_names, fitting, gate, num_train)
    _warn_recompiles(denoiser, policy)
    return denoiser


def _attach(pipe_or_model: Any, scheduler: Any, block_names: list[str], fitting: Fitting,
            gate: SigmoidTimeGate | None, num_train: int) -> _StepHook:  # fmt: skip
    """Hook the denoiser's blocks and its root (after removing what lees had attached to it)."""
    denoiser = denoiser_of(pipe_or_model)
    disable(denoiser)
    engine = Engine(denoiser, block_names)
    grid, token = _grid(pipe_or_model, scheduler)
    hook = _StepHook(engine, fitting, gate, num_train, grid, token)
    with beneath_other_hooks(denoiser, _hooked_modules(engine)):  # whichever was enabled first
        engine.attach()
        HookRegistry.check_if_exists_or_initialize(denoiser).register_hook(hook, ROOT_HOOK)
    return hook


def _enable_tuned(
    pipe_or_model: Any, policies: dict[int, TunedPolicy], on_mismatch: str, announce: bool = True
) -> nn.Module:
    """A ``lees tune`` policy (one winner per step count): a pipeline's scheduler picks the winner at each
    call's ``set_timesteps`` (:class:`TunedScheduler`); a bare denoiser takes a policy of one step count.
    ``announce``: one line per winner says what it runs (for a policy read from a file)."""
    denoiser = denoiser_of(pipe_or_model)
    disable(denoiser)
    for tuned in policies.values() if announce else ():
        print(tuned.describe())
    if getattr(pipe_or_model, "scheduler", None) is None or isinstance(pipe_or_model, nn.Module):
        if len(policies) > 1:
            raise ScheduleError(
                f"a tuned policy for {len(policies)} step counts needs the pipeline, whose scheduler picks "
                "one per call: lees.enable(pipe, folder)"
            )
        (tuned,) = policies.values()
        if tuned.schedule is not None:
            return enable(pipe_or_model, tuned.schedule, on_mismatch=on_mismatch)
        if tuned.cache is not None:
            setattr(denoiser, TUNED_CACHE, (tuned, attach_cache(denoiser, tuned)))
        return denoiser
    schedules = [p.schedule for p in policies.values() if p.schedule is not None]
    if any(s.block_names != schedules[0].block_names for s in schedules):
        raise ScheduleError("the tuned schedules name different blocks: tune them on one model")
    # the root hook always (it keeps the run state and the thread that owns it); block hooks for schedules
    names = schedules[0].block_names if schedules else []
    num_train = _num_train(pipe_or_model, schedules[0] if schedules else None)
    hook = _attach(pipe_or_model, None, names, Fitting([], on_mismatch), None, num_train)
    pipe = pipe_or_model
    denoiser.__dict__[TUNED_SCHEDULER] = (weakref.ref(pipe), pipe.scheduler)
    pipe.scheduler = TunedScheduler(
        pipe.scheduler, policies, on_mismatch, lambda p: _select(denoiser, hook, p)
    )
    return denoiser


def _select(denoiser: nn.Module, hook: _StepHook, tuned: TunedPolicy | None) -> None:
    """At a pipeline call's start, what its run follows: the tuned schedule (else plain blocks) and the
    tuned cache (attached, or reset when the last call used it too; else removed)."""
    hook.fitting.candidates = [tuned.schedule] if tuned is not None and tuned.schedule is not None else []
    hook.reset_state(denoiser)
    held, cache = denoiser.__dict__.get(TUNED_CACHE, (None, None))
    if cache is not None and held is tuned:
        cache.reset()  # a run broken off left its state: the new run starts empty
        return
    if cache is not None:
        denoiser.__dict__.pop(TUNED_CACHE)
        cache.remove()
    if tuned is not None and tuned.cache is not None:
        setattr(denoiser, TUNED_CACHE, (tuned, attach_cache(denoiser, tuned)))


def _grid(pipe_or_model: Any, scheduler: Any) -> tuple[Grid, Callable[[], Any]]:
    """Where a run's scheduler timesteps are read at its first call: ``scheduler``, else the pipeline's
    current ``scheduler`` (held weakly: the hook lives on the denoiser, which the pipeline holds); and the
    timestep list as an object, read at every call (a new one is a new run)."""
    if scheduler is not None:
        return (lambda: _timesteps(scheduler)), (lambda: getattr(scheduler, "timesteps", None))
    if getattr(pipe_or_model, "scheduler", None) is None or isinstance(pipe_or_model, nn.Module):
        return (lambda: None), (lambda: None)
    pipe = weakref.ref(pipe_or_model)
    current = lambda: getattr(pipe(), "scheduler", None)  # noqa: E731
    return (lambda: _timesteps(current())), (lambda: getattr(current(), "timesteps", None))


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


def _num_train(source: Any, policy: Policy | None) -> int:
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
    _, cache = denoiser.__dict__.pop(TUNED_CACHE, (None, None))
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


def _check_thread(denoiser: nn.Module) -> None:
    """Refuse to re-enable a denoiser that another live thread enabled or last called (:data:`THREADS`)."""
    hook, caller = _root_hook(denoiser), threading.get_ident()
    if (
        hook is not None
        and hook.thread != caller
        and any(t.ident == hook.thread for t in threading.enumerate())
    ):
        raise RuntimeError(f"lees: a second enable from another thread: {THREADS}")


def reset(pipe_or_model: Any) -> None:
    """Forget the current sampling run of an enabled denoiser: the next call starts a new one, with
    empty reuse caches (lees also notices a new run by itself: see :mod:`lees.schedules.fitting`)."""
    hook = _root_hook(denoiser_of(pipe_or_model))
    if hook is not None:
        hook.reset_state(hook.engine.model)
