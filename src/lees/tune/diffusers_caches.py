"""diffusers' own caches as ``lees tune`` candidates, on any denoiser, each run correctly or refused.

diffusers 0.42 ships five training-free caches (``FirstBlockCacheConfig``, ``TaylorSeerCacheConfig``,
``MagCacheConfig``, ``PyramidAttentionBroadcastConfig``, ``FasterCacheConfig``). A ``CacheMixin`` model
and its pipeline supply what they need; an arbitrary denoiser in an arbitrary loop does not, and then
they crash ("No cache context is set"), silently do nothing, or silently compute something else.
:func:`apply_cache` attaches one config with the glue lees supplies, or returns :class:`NotApplicable`
with the reason:

* a root hook (:class:`CacheGlue`) opens a cache context around each call the caller made outside one
  (FirstBlockCache and TaylorSeer keep their state per context and refuse to run without one); with
  split guidance and no contexts from the caller it names the branches by call parity;
* it reads each call's timestep (bound by the forward's signature, scaled to 0..1000) for the configs
  that ask for a ``current_timestep_callback`` (PyramidAttentionBroadcast, FasterCache);
* it resets every stateful hook when a new sampling run starts (a timestep above the previous call's
  in the same context), since diffusers resets them only for ``CacheMixin`` models at the end of a
  pipeline call;
* TaylorSeer gets the model's blocks as ``cache_identifiers`` (its defaults match only attention
  modules named exactly ``attn``: nothing in DiT, PixArt, LTX, Wan or a UNet), MagCache the calls per
  sampling run as ``num_inference_steps`` (its step counter wraps there), FasterCache its tensor
  format and guidance-distilled mode from :class:`DenoiserCalls`.

A config that would hook nothing is refused, not run as a no-op. What cannot be seen before a call
(inputs FasterCache would split inconsistently) is checked at each call: :class:`NotApplicableError`.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from diffusers.hooks import (
    FasterCacheConfig,
    FirstBlockCacheConfig,
    HookRegistry,
    MagCacheConfig,
    ModelHook,
    PyramidAttentionBroadcastConfig,
    TaylorSeerCacheConfig,
    apply_faster_cache,
    apply_first_block_cache,
    apply_mag_cache,
    apply_pyramid_attention_broadcast,
    apply_taylorseer_cache,
)
from torch import nn

from ..engine.blocks import block_kind, candidate_blocks
from ..engine.hooks import remove_hook
from ..utils.diffusers_private import (
    _ALL_TRANSFORMER_BLOCK_IDENTIFIERS,
    _FASTER_CACHE_BLOCK_HOOK,
    _FASTER_CACHE_DENOISER_HOOK,
    _FBC_BLOCK_HOOK,
    _FBC_LEADER_BLOCK_HOOK,
    _MAG_CACHE_BLOCK_HOOK,
    _MAG_CACHE_LEADER_BLOCK_HOOK,
    _PYRAMID_ATTENTION_BROADCAST_HOOK,
    _TAYLORSEER_CACHE_HOOK,
    _UNCOND_COND_INPUT_KWARGS_IDENTIFIERS,
    BaseState,
    CacheContext,
    StateManager,
    TransformerBlockRegistry,
    _set_cache_context,
)

GLUE_HOOK = "lees.tune.cache_glue"
GUIDANCE = ("none", "batched", "split")
LAYOUTS = ("BCHW", "BCFHW", "BSC")
CALIBRATION_STEPS = 2**62

"""MagCache's ``num_inference_steps`` while calibrating: its counter never wraps, so the ratios it
collects are still in its state after the run (at the wrap it prints them and clears them)."""

CacheConfig = (
    FirstBlockCacheConfig
    | TaylorSeerCacheConfig
    | MagCacheConfig
    | PyramidAttentionBroadcastConfig
    | FasterCacheConfig
)


@dataclass(frozen=True)
class DenoiserCalls:
    """How a sampling loop calls the denoiser: what the caches depend on and cannot see for themselves.

    ``guidance``: "none" (one call per timestep), "batched" (one call on a doubled batch, halves in
    ``batch_order``) or "split" (one call per branch, inside ``cache_context(name)`` if
    ``branch_contexts``). ``timestep_scale``: what the model's timestep is multiplied by to lie on
    0..1000 (1000 for Flux and QwenImage, which receive t / 1000). ``calls_per_run``: the calls per
    branch in one sampling run (``len(scheduler.timesteps)``). ``layout``: the main input's layout,
    "BCHW" (images), "BCFHW" (video) or "BSC" (tokens).
    """

    guidance: str = "none"
    batch_order: tuple[str, str] = ("uncond", "cond")
    branch_contexts: bool = True
    timestep_scale: float = 1.0
    calls_per_run: int | None = None
    layout: str = "BCHW"

    def __post_init__(self) -> None:
        if self.guidance not in GUIDANCE:
            raise ValueError(f"guidance must be one of {', '.join(GUIDANCE)}, not {self.guidance!r}")
        if sorted(self.batch_order) != ["cond", "uncond"]:
            raise ValueError(f"batch_order must order 'cond' and 'uncond', not {self.batch_order!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {self.layout!r}")
        if self.calls_per_run is not None and self.calls_per_run < 1:
            raise ValueError(f"calls_per_run must be at least 1, not {self.calls_per_run}")


@dataclass(frozen=True)
class NotApplicable:
    """A cache that cannot run correctly on this model and loop, and why."""

    method: str
    reason: str

    def __str__(self) -> str:
        return f"{self.method}: {self.reason}"


class NotApplicableError(ValueError):
    """A cache cannot run correctly here (raised while applying, or at a call that breaks its assumptions)."""


class _NoState(BaseState):
    def reset(self, *args: Any, **kwargs: Any) -> None:
        pass


Guard = Callable[[tuple, dict, float, int], None]  # (args, kwargs, t, call index in its context and run)


class CacheGlue(ModelHook):
    """Root hook: cache contexts, the current timestep and per-run resets for diffusers' cache hooks.

    Stateful with a ``StateManager``, so the caller's ``cache_context`` reaches it: inside one, the
    call runs as the caller set it; outside, in a context of its own ("lees", or "branch0"/"branch1"
    for split guidance). ``guards`` see each call's inputs first and raise :class:`NotApplicableError`.
    A new run is seen by its timestep rising; a loop of one step never shows one (call ``reset()``).
    """

    _is_stateful = True

    def __init__(self, signature: inspect.Signature, calls: DenoiserCalls) -> None:
        super().__init__()
        self.state_manager = StateManager(_NoState)
        self.signature, self.calls = signature, calls
        self.guards: list[Guard] = []
        self.timestep = math.nan
        self.reset_state(None)

    def reset_state(self, module: nn.Module | None) -> nn.Module | None:
        self.last: dict[str, float] = {}  # context name -> its last call's timestep in this run
        self.counts: dict[str, int] = {}  # context name -> its calls in this run
        self.own_calls = 0
        return module

    def current_timestep(self) -> float:
        """The timestep of the call in progress, on 0..1000 (the caches' ``current_timestep_callback``)."""
        return self.timestep

    def new_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        t = self._timestep(args, kwargs)
        context = self.state_manager._context
        name = context.name if context is not None else self._own_name()
        new_run = t > self.last.get(name, math.inf)
        if new_run:
            HookRegistry.check_if_exists_or_initialize(module).reset_stateful_hooks(recurse=True)
        index = self.counts.get(name, 0)
        self.last[name], self.counts[name], self.timestep = t, index + 1, t
        for guard in self.guards:
            guard(args, kwargs, t, index)
        if context is None:
            self.own_calls += 1
        if context is None or new_run:  # a reset cleared every state manager's context
            _set_cache_context(module, context or CacheContext(name))
        try:
            return self.fn_ref.original_forward(*args, **kwargs)
        finally:
            if context is None:
                _set_cache_context(module, None)

    def _own_name(self) -> str:
        if self.calls.guidance == "split":
            return f"branch{self.own_calls % 2}"
        return "lees"

    def _timestep(self, args: tuple, kwargs: dict) -> float:
        t = self.signature.bind_partial(*args, **kwargs).arguments.get("timestep")
        if t is None:
            raise NotApplicableError("the denoiser was called without a timestep; the caches key on it")
        value = float(t.flatten()[0]) if isinstance(t, torch.Tensor) else float(t)
        return value * self.calls.timestep_scale


@dataclass
class AppliedCache:
    """A diffusers cache attached to a model with lees' glue; :meth:`remove` restores the plain model."""

    method: str
    model: nn.Module
    hook_names: tuple[str, ...]
    glue: CacheGlue
    config: Any = field(repr=False)

    def hooked(self, names: tuple[str, ...] | None = None) -> list[str]:
        """The modules carrying one of this cache's hooks (of ``names``; all of them by default)."""
        names = self.hook_names if names is None else names
        return [name for name, module in self.model.named_modules() if _has_hook(module, names)]

    def reset(self) -> None:
        """Clear every cache state (a new sampling run starts); the glue also does it on its own."""
        HookRegistry.check_if_exists_or_initialize(self.model).reset_stateful_hooks(recurse=True)

    def remove(self) -> None:
        """Detach the cache and the glue: the model's forward and modules are as before."""
        for module in list(self.model.modules()):
            for name in (GLUE_HOOK, *self.hook_names):
                remove_hook(module, name)
        registry = getattr(self.model, "_diffusers_hook", None)
        if registry is not None:
            registry.invalidate_child_registries_cache()


def _has_hook(module: nn.Module, names: tuple[str, ...]) -> bool:
    registry = getattr(module, "_diffusers_hook", None)
    return registry is not None and any(name in registry.hooks for name in names)


# --------------------------------------------------------------------------------------------------
# What each cache needs
# --------------------------------------------------------------------------------------------------


def block_lists(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The blocks FirstBlockCache and MagCache hook: those of the model's direct children that are
    ``ModuleList``s named as diffusers' block lists (``transformer_blocks``, ``blocks``, ...), in order."""
    return [
        (f"{name}.{i}", block)
        for name, child in model.named_children()
        if name in _ALL_TRANSFORMER_BLOCK_IDENTIFIERS and isinstance(child, nn.ModuleList)
        for i, block in enumerate(child)
    ]


def _registered_blocks(model: nn.Module, method: str, least: int) -> list[tuple[str, nn.Module]]:
    """The block lists, each block of a class diffusers' block registry knows; else NotApplicableError."""
    blocks = block_lists(model)
    if len(blocks) < least:
        found = "none" if not blocks else f"only {blocks[0][0]}"
        lists = ", ".join(sorted(_ALL_TRANSFORMER_BLOCK_IDENTIFIERS))
        raise NotApplicableError(
            f"{method} hooks blocks in a block list ({lists}) that is a direct child of the model; "
            f"{type(model).__name__} has {found}"
        )
    for name, block in blocks:
        try:
            TransformerBlockRegistry.get(type(block))
        except ValueError:
            raise NotApplicableError(
                f"{type(block).__name__} ({name}) is not in diffusers' TransformerBlockRegistry, which tells "
                f"{method} where a block's hidden states are"
            ) from None
    return blocks


def _without_encoder_output(block: nn.Module) -> bool:
    """A joint block that returns no encoder hidden states (SD3's last block: ``context_pre_only``)."""
    return bool(getattr(block, "context_pre_only", False))


def _prepare_fbc(model: nn.Module, config: Any, calls: DenoiserCalls, glue: CacheGlue) -> Any:
    name, tail = _registered_blocks(model, "FirstBlockCache", least=2)[-1]
    if _without_encoder_output(tail):
        raise NotApplicableError(
            f"the last block ({name}) returns no encoder hidden states (context_pre_only), and "
            "FirstBlockCache's tail residual subtracts from it (a TypeError on None)"
        )
    return config


def _taylorseer_blocks(model: nn.Module) -> list[str]:
    """The blocks TaylorSeer predicts whole: the block lists, else a UNet's resnets, attentions and the
    blocks inside its spatial transformers (a ``Transformer2DModel`` returns a 1-tuple, which TaylorSeer's
    prediction would unwrap into a bare tensor). Blocks without an encoder output are left to run
    (TaylorSeer cannot store None)."""
    if block_lists(model):
        return [name for name, block in block_lists(model) if not _without_encoder_output(block)]
    try:
        names = candidate_blocks(model)
    except TypeError:
        return []
    modules = dict(model.named_modules())
    return [
        inner
        for name in names
        for inner in (
            [f"{name}.transformer_blocks.{i}" for i in range(len(modules[name].transformer_blocks))]
            if block_kind(modules[name]) == "transformer"
            else [name]
        )
    ]


def _prepare_taylorseer(model: nn.Module, config: Any, calls: DenoiserCalls, glue: CacheGlue) -> Any:
    if config.cache_identifiers or config.skip_predict_identifiers or config.use_lite_mode:
        return config  # the caller chose the modules
    names = _taylorseer_blocks(model)
    if not names:
        raise NotApplicableError(f"found no blocks in {type(model).__name__} to predict")
    return replace(config, cache_identifiers=[re.escape(name) for name in names])


def _prepare_mag_cache(model: nn.Module, config: Any, calls: DenoiserCalls, glue: CacheGlue) -> Any:
    _registered_blocks(model, "MagCache", least=1)
    if config.calibrate or calls.calls_per_run is None:
        return config
    return replace(config, num_inference_steps=calls.calls_per_run)


def _mag_cache_guards(config: Any, calls: DenoiserCalls) -> list[Guard]:
    steps = config.num_inference_steps

    def within_steps(args: tuple, kwargs: dict, t: float, index: int) -> None:
        if index >= steps:
            raise NotApplicableError(
                f"a sampling run makes more than MagCache's num_inference_steps = {steps} calls in one cache "
                "context: its step counter would wrap mid-run (state calls_per_run)"
            )

    return [within_steps]


def _prepare_pab(model: nn.Module, config: Any, calls: DenoiserCalls, glue: CacheGlue) -> Any:
    if calls.guidance == "split":
        raise NotApplicableError(
            "its state is one cache per attention module, not per cache context, so with split guidance "
            "the uncond call would reuse the cond call's attention"
        )
    return replace(config, current_timestep_callback=glue.current_timestep)


def _prepare_faster_cache(model: nn.Module, config: Any, calls: DenoiserCalls, glue: CacheGlue) -> Any:
    if calls.guidance == "split":
        raise NotApplicableError(
            "its state is on the hooks, not per cache context, and its CFG cache expects one batched "
            "[uncond, cond] call: split guidance would share one attention cache across the branches"
        )
    if calls.guidance == "batched" and calls.batch_order != ("uncond", "cond"):
        raise NotApplicableError(
            f"it takes the second half of a batched call as the conditional branch; this loop batches "
            f"[{', '.join(calls.batch_order)}], so it would rebuild the wrong half"
        )
    if calls.guidance == "batched" and calls.layout == "BSC":
        raise NotApplicableError(
            "its CFG cache splits the output into spatial frequencies (BCHW or BCFHW); this denoiser "
            "returns tokens (B, S, C)"
        )
    tensor_format = calls.layout if calls.layout != "BSC" else "BCHW"  # unused when guidance-distilled
    return replace(
        config,
        current_timestep_callback=glue.current_timestep,
        is_guidance_distilled=calls.guidance == "none",
        tensor_format=tensor_format,
    )


def _faster_cache_guards(config: Any, calls: DenoiserCalls) -> list[Guard]:
    if calls.guidance == "batched":
        return [_check_batched_split]
    ranges = [config.spatial_attention_timestep_skip_range]
    if config.temporal_attention_block_skip_range is not None:
        ranges.append(config.temporal_attention_timestep_skip_range)

    def first_call_computes(args: tuple, kwargs: dict, t: float, index: int) -> None:
        if index == 0 and any(lo < t < hi for lo, hi in ranges):
            raise NotApplicableError(
                f"the first call of a run (t = {t:g}) lies in the attention skip range {ranges}: "
                "guidance-distilled FasterCache would skip it with an empty cache"
            )

    return [first_call_computes]


def _tensors(kwargs: dict) -> Iterator[tuple[str, torch.Tensor]]:
    for name, value in kwargs.items():
        if isinstance(value, torch.Tensor):
            yield name, value
        elif isinstance(value, dict):
            yield from _tensors({f"{name}[{key!r}]": v for key, v in value.items()})


def _check_batched_split(args: tuple, kwargs: dict, t: float, index: int) -> None:
    """FasterCache skips the uncond half by halving every positional tensor and the keyword inputs it
    names; any other input that carries the doubled batch would stay whole (a mixed batch)."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    main = tensors[0] if tensors else kwargs.get("hidden_states", kwargs.get("sample"))
    batch = main.shape[0] if isinstance(main, torch.Tensor) and main.dim() else 0
    if batch % 2 or not batch:
        raise NotApplicableError(f"batched guidance needs an even batch, the call has {batch}")
    bad = [a for a in tensors if not a.dim() or a.shape[0] != batch]
    if bad:
        raise NotApplicableError(
            f"a positional input of shape {tuple(bad[0].shape)} has no batch of {batch}, and FasterCache "
            "halves every positional tensor"
        )
    unsplit = [n for n, v in _tensors(kwargs) if v.dim() and v.shape[0] == batch]
    unsplit = [n for n in unsplit if n not in _UNCOND_COND_INPUT_KWARGS_IDENTIFIERS]
    if unsplit:
        raise NotApplicableError(
            f"{', '.join(unsplit)} carries the doubled batch, but FasterCache halves only "
            f"{', '.join(_UNCOND_COND_INPUT_KWARGS_IDENTIFIERS)} when it skips the uncond half"
        )


@dataclass(frozen=True)
class _Method:
    name: str
    apply: Callable[[nn.Module, Any], None]
    hooks: tuple[str, ...]  # every hook diffusers attaches
    work_hooks: tuple[str, ...]  # those that skip work: none attached is a silent no-op
    prepare: Callable[[nn.Module, Any, DenoiserCalls, CacheGlue], Any]
    guards: Callable[[Any, DenoiserCalls], list[Guard]] = lambda config, calls: []


_FBC_HOOKS = (_FBC_LEADER_BLOCK_HOOK, _FBC_BLOCK_HOOK)
_MAG_HOOKS = (_MAG_CACHE_LEADER_BLOCK_HOOK, _MAG_CACHE_BLOCK_HOOK)
METHODS: dict[type, _Method] = {
    FirstBlockCacheConfig: _Method(
        "FirstBlockCache", apply_first_block_cache, _FBC_HOOKS, _FBC_HOOKS, _prepare_fbc
    ),
    TaylorSeerCacheConfig: _Method(
        "TaylorSeer",
        apply_taylorseer_cache,
        (_TAYLORSEER_CACHE_HOOK,),
        (_TAYLORSEER_CACHE_HOOK,),
        _prepare_taylorseer,
    ),
    MagCacheConfig: _Method(
        "MagCache", apply_mag_cache, _MAG_HOOKS, _MAG_HOOKS, _prepare_mag_cache, _mag_cache_guards
    ),
    PyramidAttentionBroadcastConfig: _Method(
        "PyramidAttentionBroadcast",
        apply_pyramid_attention_broadcast,
        (_PYRAMID_ATTENTION_BROADCAST_HOOK,),
        (_PYRAMID_ATTENTION_BROADCAST_HOOK,),
        _prepare_pab,
    ),
    FasterCacheConfig: _Method(
        "FasterCache",
        apply_faster_cache,
        (_FASTER_CACHE_DENOISER_HOOK, _FASTER_CACHE_BLOCK_HOOK),
        (_FASTER_CACHE_BLOCK_HOOK,),
        _prepare_faster_cache,
        _faster_cache_guards,
    ),
}

ALL_HOOKS = tuple(name for method in METHODS.values() for name in method.hooks)


# --------------------------------------------------------------------------------------------------
# Applying one
# --------------------------------------------------------------------------------------------------


def apply_cache(model: nn.Module, config: CacheConfig, calls: DenoiserCalls) -> AppliedCache | NotApplicable:
    """Attach one of diffusers' caches to ``model`` with lees' glue, or say why it cannot run here.

    Args:
        model: the denoiser (any diffusers transformer or UNet; ``CacheMixin`` is not needed).
        config: a diffusers cache config; the glue fills in what the loop decides (timestep callback,
            TaylorSeer's blocks when none are named, MagCache's steps, FasterCache's mode and format).
            The caller's config object is not changed.
        calls: how the sampling loop calls ``model``.

    Returns:
        An :class:`AppliedCache` (call its ``remove()`` when done), or :class:`NotApplicable`.
    """
    method = METHODS.get(type(config))
    if method is None:
        raise TypeError(f"not a diffusers cache config lees knows: {type(config).__name__}")
    signature = inspect.signature(model.forward)
    glue = CacheGlue(signature, calls)
    try:
        _check_free(model, signature)
        prepared = method.prepare(model, replace(config), calls, glue)
    except NotApplicableError as error:
        return NotApplicable(method.name, str(error))
    applied = AppliedCache(method.name, model, method.hooks, glue, prepared)
    try:
        method.apply(model, prepared)
    except Exception as error:  # diffusers' own failure on this model: reported, the model restored
        applied.remove()
        return NotApplicable(method.name, f"diffusers failed to attach it: {type(error).__name__}: {error}")
    if not applied.hooked(method.work_hooks):
        applied.remove()
        return NotApplicable(method.name, f"it found nothing to hook in {type(model).__name__} (a no-op)")
    glue.guards = method.guards(prepared, calls)
    registry = HookRegistry.check_if_exists_or_initialize(model)
    registry.register_hook(glue, GLUE_HOOK)
    registry.invalidate_child_registries_cache()  # else contexts never reach the new block hooks
    return applied


def _check_free(model: nn.Module, signature: inspect.Signature) -> None:
    if "timestep" not in signature.parameters:
        raise NotApplicableError(f"{type(model).__name__}.forward takes no timestep; the caches key on it")
    taken = [name for name, module in model.named_modules() if _has_hook(module, (GLUE_HOOK, *ALL_HOOKS))]
    if taken:
        raise NotApplicableError(f"a diffusers cache is already attached ({taken[0] or 'the model'})")


def calibrate_mag_cache(model: nn.Module, calls: DenoiserCalls, run: Callable[[], Any]) -> list[float]:
    """MagCache's magnitude ratios for this model and loop: one calibration run, nothing skipped.

    ``run`` runs one sampling run through ``model``. diffusers prints the ratios (and logs them at
    info level) when its step counter wraps and then clears them; here the counter never wraps and
    the ratios are read from the hook's state: those of the first cache context (the cond branch
    under split guidance), one per call.
    """
    applied = apply_cache(model, MagCacheConfig(calibrate=True, num_inference_steps=CALIBRATION_STEPS), calls)
    if isinstance(applied, NotApplicable):
        raise NotApplicableError(str(applied))
    try:
        run()
        tail = next(m for m in model.modules() if _has_hook(m, (_MAG_CACHE_BLOCK_HOOK,)))
        states = tail._diffusers_hook.get_hook(_MAG_CACHE_BLOCK_HOOK).state_manager._state_cache
        ratios = list(next(iter(states.values())).calibration_ratios) if states else []
    finally:
        applied.remove()
    if calls.calls_per_run is not None and len(ratios) != calls.calls_per_run:
        raise ValueError(
            f"the calibration run made {len(ratios)} calls in its first context, not calls_per_run = "
            f"{calls.calls_per_run}"
        )
    return ratios
