"""The engine: each block of a model runs, reuses or forecasts its residual, or is skipped, call by call.

Every skippable block gets a diffusers ``ModelHook`` (through ``HookRegistry``, as
``apply_layer_skip`` and ``apply_first_block_cache`` attach theirs); the user's model is never
patched by hand, its parameters and ``state_dict`` never change, and detaching restores exactly
the plain forward. One :class:`Engine` per model holds the hooks; what each block does on the next
call is a *decision* the caller sets (:meth:`Engine.deciding`), and the residuals a block computed
live in a :class:`ReuseCache` the caller owns, so several methods can share one set of hooks and
still keep their caches apart (side-by-side timing).

Block actions (hard mode, one per block for the whole batch):

* ``RUN``: the block computes. If the cache keeps that block, its residual
  ``output - shortcut(input)`` is stored per sample, for every stream the block changes (its adapter
  says which: both the image and the text stream of SD3's and Flux's joint blocks); for a
  ``ResnetBlock2D``, the output of its residual branch, taken by a hook on its ``conv2`` as it is
  computed: no second shortcut, no subtraction.
* ``REUSE``: per stream, the block's shortcut of the *current* input plus the residual it computed
  the last time it ran in this sampling run (a stream the block returns as None stays None). A block
  with no cached residual yet (or one of another batch shape) runs instead, so a reuse schedule's
  first step always computes.
* ``FORECAST``: as ``REUSE``, with the residual extrapolated to the call's position from the block's
  last runs (:mod:`lees.engine.forecast`; the cache's ``order``, the position given to
  :meth:`Engine.deciding`); with one run stored, exactly ``REUSE``.
* ``SKIP``: the shortcut only (identity for attention and transformer blocks).

Soft modes, for training (one weight per block, shape (K,) or per sample (B, K)):

* ``soft``: every block runs and its residual is weighted: ``shortcut + w * residual`` when the
  fallback is ``SKIP``; with the fallback ``REUSE`` the residual carried forward becomes
  ``w * fresh + (1 - w) * cached`` (differentiable through a rollout; at w in {0, 1} it is exactly
  the hard run/reuse rule).
* ``ste``: as ``soft`` with the straight-through weight (forward 0/1, gradient of w).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook
from torch import nn

from .actions import FORECAST, MODES, REUSE, RUN, SKIP, straight_through
from .adapters import BlockAdapter, Streams, adapter_for
from .blocks import Blocks, compiled_original, resolve_modules
from .forecast import ORDERS, Position, extrapolate
from .probe import PROBE_BLOCK, Probe


class ReuseCache:
    """The residuals of one sampling run, one slot per block, and the peak memory they took.

    ``keep[k]`` says whether block k's residual is stored when it runs (only blocks a schedule
    reuses or forecasts need it); ``forecast[k]`` whether its last ``order + 1`` runs are kept too,
    with their call positions (``history[k]``, oldest first), to extrapolate from. ``probe``: the
    adaptive decisions of a schedule with thresholds (:mod:`lees.engine.probe`), which sees the probe
    block's residual at every call (that block's residual is then always kept). Clear it at the
    start of every sampling run and every batch. A slot holds one tensor for a block that changes one
    stream, and a tuple (one tensor or None per stream, in the order of its adapter's ``streams``) for
    one that changes several (SD3's and Flux's joint blocks).
    """

    def __init__(
        self,
        num_blocks: int,
        keep: Sequence[bool] | None = None,
        forecast: Sequence[bool] | None = None,
        order: int = 1,
        probe: Probe | None = None,
    ) -> None:
        self.keep = list(keep) if keep is not None else [True] * num_blocks
        self.probe = probe
        if probe is not None:
            self.keep[PROBE_BLOCK] = True
        self.forecast = list(forecast) if forecast is not None else [False] * num_blocks
        if len(self.keep) != num_blocks or len(self.forecast) != num_blocks:
            raise ValueError(
                f"{len(self.keep)} keep and {len(self.forecast)} forecast flags for {num_blocks} blocks"
            )
        if order not in ORDERS:
            raise ValueError(f"the forecast order is one of {ORDERS}, got {order!r}")
        self.order = order
        self.residuals: list[torch.Tensor | tuple | None] = [None] * num_blocks
        self.history: list[list[tuple[Position, torch.Tensor | tuple]]] = [[] for _ in range(num_blocks)]
        self.peak_bytes = 0
        self.peak_batch = 0

    @property
    def forecasts(self) -> bool:
        """Whether any block keeps its runs to forecast from (its calls then need their position)."""
        return any(self.forecast)

    def clear(self) -> None:
        """Forget every residual (a new sampling run or batch starts)."""
        self.residuals = [None] * len(self.residuals)
        self.history = [[] for _ in self.residuals]
        if self.probe is not None:
            self.probe.clear()

    def store(self, k: int, residual: torch.Tensor | tuple, position: Position | None = None) -> None:
        """Keep block k's residual (a tensor, or a tuple of per-stream tensors and Nones), computed at
        call ``position`` (needed for a block it forecasts; its earlier runs of another shape are
        dropped). Positions must increase within a run."""
        self.residuals[k] = residual
        if self.probe is not None and k == PROBE_BLOCK:
            self.probe.observe(_tensors(residual)[0])
        if self.forecast[k]:
            if position is None:
                raise ValueError(f"block {k} is forecast: store its residual with the call's position")
            shape = _shapes(residual)
            runs = [(p, r) for p, r in self.history[k] if _shapes(r) == shape]
            self.history[k] = [*runs, (position, residual)][-(self.order + 1) :]
        older = (r for runs in self.history for _, r in runs[:-1])  # a run's newest is its residual
        held = [t for r in (*self.residuals, *older) for t in _tensors(r)]
        total = sum(t.numel() * t.element_size() for t in held)
        if total > self.peak_bytes:
            self.peak_bytes, self.peak_batch = total, len(_tensors(residual)[0])

    def forecast_at(self, k: int, position: Position | None) -> torch.Tensor | tuple | None:
        """Block k's residual extrapolated to call ``position`` from its stored runs (its last residual
        for a block not forecast, or one run stored); None with nothing stored."""
        if not self.forecast[k] or not self.history[k]:
            return self.residuals[k]
        return extrapolate(self.history[k], position)

    @property
    def peak_bytes_per_sample(self) -> float:
        """Peak bytes the residuals held, per sample of the batch that held them."""
        return self.peak_bytes / self.peak_batch if self.peak_batch else 0.0


def _shapes(residual: torch.Tensor | tuple) -> list[tuple[int, ...] | None]:
    """The shape of each stream a cache slot holds (None for a stream the block does not return)."""
    return [
        None if t is None else tuple(t.shape)
        for t in (residual if isinstance(residual, tuple) else (residual,))
    ]


def _tensors(residual: torch.Tensor | tuple | None) -> list[torch.Tensor]:
    """The tensors a cache slot holds."""
    if residual is None:
        return []
    return [residual] if isinstance(residual, torch.Tensor) else [t for t in residual if t is not None]


HOOK_NAME = "lees.block"

CAPTURE_NAME = "lees.residual"


class _CaptureHook(ModelHook):
    """On a resnet block's ``conv2``: while armed, keeps its output, the block's residual branch
    (diffusers' ``ResnetBlock2D`` returns ``(shortcut + conv2(...)) / output_scale_factor``)."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.output: torch.Tensor | None = None

    def post_forward(self, module: nn.Module, output: Any) -> Any:
        if self.armed:
            self.output = output
        return output


class _BlockHook(ModelHook):
    """One per hooked module, shared by every engine attached to it: hands the call to the engine
    that is deciding (the latest attached), else runs the block. Sharing one hook keeps the
    registry's chain to a single lees entry, so engines can detach in any order."""

    def __init__(self) -> None:
        super().__init__()
        self.users: list[tuple[Engine, int]] = []

    def new_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        forward = self.fn_ref.original_forward
        for engine, k in reversed(self.users):
            if engine._decisions is not None:
                return engine._call_block(k, module, forward, args, kwargs)
        return forward(*args, **kwargs)


class Engine:
    """Hooks on the K named blocks of ``model``, and the decisions and cache of the current call.

    Attach with :meth:`attached` (for a span of calls) or :meth:`attach`/:meth:`detach`; outside a
    :meth:`deciding` span every hooked block runs as in the plain model.
    """

    def __init__(self, model: nn.Module, blocks: Blocks | Sequence[str]) -> None:
        self.model = model
        self.block_names = list(blocks.names if isinstance(blocks, Blocks) else blocks)
        self.modules = resolve_modules(model, self.block_names)
        self.adapters: list[BlockAdapter] = [adapter_for(m) for m in self.modules]
        self.kinds = [a.kind for a in self.adapters]
        self._attached = 0
        self._decisions: Sequence[Any] | None = None
        self._mode = "hard"
        self._fallback = SKIP
        self._cache: ReuseCache | None = None
        self._position: Position | None = None

    @property
    def num_blocks(self) -> int:
        return len(self.block_names)

    # -- hooks ----------------------------------------------------------------------------------

    def attach(self) -> None:
        """Register the block hooks (nested calls count; the first one registers)."""
        if self._attached == 0:
            for k, module in enumerate(self.modules):
                registry = HookRegistry.check_if_exists_or_initialize(module)
                if registry.get_hook(HOOK_NAME) is None:
                    registry.register_hook(_BlockHook(), HOOK_NAME)
                    if self.kinds[k] == "resnet":
                        conv2 = HookRegistry.check_if_exists_or_initialize(module.conv2)
                        conv2.register_hook(_CaptureHook(), CAPTURE_NAME)
                registry.get_hook(HOOK_NAME).users.append((self, k))
        self._attached += 1

    def detach(self) -> None:
        """Remove the block hooks once the last :meth:`attach` is undone; the plain forward is back."""
        if self._attached == 0:
            return
        self._attached -= 1
        if self._attached == 0:
            for k, module in enumerate(self.modules):
                hook = module._diffusers_hook.get_hook(HOOK_NAME)
                hook.users.remove((self, k))
                if not hook.users:
                    remove_hook(module, HOOK_NAME)
                    if self.kinds[k] == "resnet":
                        remove_hook(module.conv2, CAPTURE_NAME)

    @contextmanager
    def attached(self) -> Iterator[Engine]:
        self.attach()
        try:
            yield self
        finally:
            self.detach()

    # -- decisions ------------------------------------------------------------------------------

    @contextmanager
    def deciding(
        self,
        decisions: Any,
        mode: str = "hard",
        cache: ReuseCache | None = None,
        fallback: int = SKIP,
        position: Position | None = None,
    ) -> Iterator[None]:
        """Within the span, hooked blocks follow ``decisions`` (see the module doc); restored after.
        ``position`` is the call's place in its sampling run (column j of a schedule), which a cache that
        forecasts needs: its blocks' runs are stored at it and forecasts extrapolated to it."""
        checked = self.check_decisions(decisions, mode)
        if fallback not in (SKIP, REUSE):
            raise ValueError("the soft fallback is SKIP or REUSE")
        if cache is not None and len(cache.residuals) != self.num_blocks:
            raise ValueError(f"the cache has {len(cache.residuals)} slots for {self.num_blocks} blocks")
        if cache is not None and cache.forecasts and position is None:
            raise ValueError("a cache that forecasts needs each call's position: deciding(..., position=j)")
        saved = self._decisions, self._mode, self._cache, self._fallback, self._position
        self._decisions, self._mode, self._cache, self._fallback = checked, mode, cache, fallback
        self._position = position
        try:
            yield
        finally:
            self._decisions, self._mode, self._cache, self._fallback, self._position = saved

    def check_decisions(self, decisions: Any, mode: str) -> Any:
        """Hard: K actions (bools are run/skip); soft/ste: a float tensor (K,) or (B, K) of weights."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "hard":
            if isinstance(decisions, torch.Tensor):
                if decisions.dim() != 1:
                    raise ValueError("hard mode takes one mask for the whole batch, shape (K,)")
                decisions = decisions.tolist()
            actions = [int(RUN if d is True else SKIP if d is False else d) for d in decisions]
            if len(actions) != self.num_blocks:
                raise ValueError(f"mask has {len(actions)} entries for {self.num_blocks} blocks")
            if any(a not in (SKIP, RUN, REUSE, FORECAST) for a in actions):
                raise ValueError("a block action is skip (0), run (1), reuse (2) or forecast (3)")
            return actions
        if not isinstance(decisions, torch.Tensor) or not decisions.is_floating_point():
            raise TypeError(f"{mode} mode takes a float tensor of gate values, shape (K,) or (B, K)")
        if decisions.dim() not in (1, 2) or decisions.shape[-1] != self.num_blocks:
            raise ValueError(
                f"gate values of shape {tuple(decisions.shape)} do not fit {self.num_blocks} blocks"
            )
        weights = straight_through(decisions) if mode == "ste" else decisions
        return weights.float().unbind(-1)

    # -- one block call -------------------------------------------------------------------------

    def _call_block(self, k: int, module: nn.Module, forward, args: tuple, kwargs: dict) -> Any:
        if self._decisions is None:
            return forward(*args, **kwargs)
        if self._mode != "hard":
            return self._mixed(k, module, forward, args, kwargs)
        adapter, action, cache = self.adapters[k], self._decisions[k], self._cache
        if cache is not None and cache.probe is not None:
            action = cache.probe.action(k, action, self._position)
        if action == SKIP:
            return adapter.build(kwargs, adapter.shortcuts(module, adapter.inputs(module, args, kwargs)))
        if action in (REUSE, FORECAST) and cache is not None:
            held = cache.residuals[k] if action == REUSE else cache.forecast_at(k, self._position)
            reused = self._reused(k, module, args, kwargs, adapter.unpack(held))
            if reused is not None:
                return reused
        if cache is None or not cache.keep[k]:
            out = forward(*args, **kwargs)
            adapter.outputs(module, out)  # a block lees cannot read is refused, not silently passed
            return out
        return self._run_and_store(k, module, forward, args, kwargs, cache)

    def _reused(self, k: int, module: nn.Module, args: tuple, kwargs: dict, cached: Streams) -> Any:
        """Block k's output as each returned stream's shortcut plus its cached residual; None (the block
        runs instead) when a stream has none cached or one of another shape."""
        adapter = self.adapters[k]
        inputs = adapter.inputs(module, args, kwargs)
        base = adapter.shortcuts(module, inputs)
        pairs = zip(base, cached, strict=True)
        if any(b is not None and (c is None or c.shape != b.shape) for b, c in pairs):
            return None
        out = [
            None if b is None else b.add_(c) if b is not x else b + c  # a new tensor: add in place
            for x, b, c in zip(inputs, base, cached, strict=True)
        ]
        return adapter.build(kwargs, tuple(out))

    def _run_and_store(self, k: int, module: nn.Module, forward, args: tuple, kwargs: dict, cache) -> Any:
        """Run block k and keep its residual per stream: a resnet's as its ``conv2`` computes it (no
        second shortcut, no subtraction), any other block's as ``output - shortcut(input)``."""
        adapter = self.adapters[k]
        if adapter.kind != "resnet":
            inputs = adapter.inputs(module, args, kwargs)
            out = forward(*args, **kwargs)
            base = adapter.shortcuts(module, inputs)
            outs = adapter.outputs(module, out)
            residual = adapter.pack(tuple(_minus(o, b) for o, b in zip(outs, base, strict=True)))
            cache.store(k, residual, self._position)
            return out
        capture = module.conv2._diffusers_hook.get_hook(CAPTURE_NAME)
        capture.armed = True
        try:
            out = forward(*args, **kwargs)
        finally:
            capture.armed, residual, capture.output = False, capture.output, None
        scale = module.output_scale_factor
        cache.store(k, residual if scale == 1 else residual / scale, self._position)
        return out

    def _mixed(self, k: int, module: nn.Module, forward, args: tuple, kwargs: dict) -> Any:
        """Soft/STE, per stream: ``shortcut + w * fresh`` (fallback SKIP) or the weighted carried
        residual (REUSE)."""
        adapter, cache = self.adapters[k], self._cache
        base = adapter.shortcuts(module, adapter.inputs(module, args, kwargs))
        outs = adapter.outputs(module, forward(*args, **kwargs))
        weight = self._decisions[k]
        carry = self._fallback == REUSE and cache is not None
        cached = adapter.unpack(cache.residuals[k]) if carry else (None,) * len(base)
        streams = zip(base, outs, cached, strict=True)
        kept = [None if o is None else _weighted(weight, o - b, c, carry) for b, o, c in streams]
        mixed = [None if r is None else b + r for b, r in zip(base, kept, strict=True)]
        if carry:
            cache.store(k, adapter.pack(tuple(kept)), self._position)  # the cache holds the block's dtype
        return adapter.build(kwargs, tuple(mixed))


def _minus(out: torch.Tensor | None, base: torch.Tensor | None) -> torch.Tensor | None:
    return None if out is None else out - base


def _weighted(
    weight: torch.Tensor, fresh: torch.Tensor, cached: torch.Tensor | None, carry: bool
) -> torch.Tensor:
    """``w * fresh``; carrying (fallback REUSE), ``w * fresh + (1 - w) * cached``, or the fresh residual
    when none of its shape is cached. Mixed in fp32, returned in the block's dtype."""
    if carry and (cached is None or cached.shape != fresh.shape):
        return fresh
    weight = weight.to(fresh.device)  # fp32: the mix is computed in fp32
    weight = weight if weight.dim() == 0 else weight.view(-1, *([1] * (fresh.dim() - 1)))
    residual = weight * fresh.float()
    if carry:
        residual = residual + (1 - weight) * cached.float()
    return residual.to(fresh.dtype)


def remove_hook(module: nn.Module, name: str) -> None:
    """Remove hook ``name``; with no hooks left, drop the registry and the forward it installed."""
    registry = getattr(module, "_diffusers_hook", None)
    if registry is None:
        return
    registry.remove_hook(name, recurse=False)
    if registry.hooks:
        return
    del module._diffusers_hook
    forward = module.__dict__.get("forward")
    if getattr(forward, "__func__", None) is type(module).forward:
        del module.forward


class CompiledModelError(ValueError):
    """A form of ``torch.compile`` that lees cannot run without recompiling at every call."""


COMPILED_GATED = (
    "GatedModel (and gate training) attach hooks call by call, so under torch.compile every call "
    "would recompile: give it the uncompiled model, or compile the model and sample with "
    "lees.enable(torch.compile(model), schedule) or lees.sample"
)


@torch.compiler.disable  # runs eagerly, so the error reaches the caller instead of an eager fallback
def _refuse_compile() -> None:
    raise CompiledModelError(COMPILED_GATED)


class GatedModel(nn.Module):
    """Wrap ``model`` so that each call can run, reuse or skip any of its ``blocks``.

    ``blocks`` is the result of :func:`lees.find_blocks` or a list of module names. Call it like the
    model, plus ``mask=`` (K actions or gate values), ``mode=``, ``cache=`` (a :class:`ReuseCache`
    for ``REUSE`` and ``FORECAST``) and ``position=`` (the call's place in its run, which a forecasting
    cache needs); with ``mask=None`` it is the plain model. The hooks are attached for the length
    of each call only, so the model is plain between calls; for that reason it refuses to be
    compiled or to wrap a compiled model (:class:`CompiledModelError`; see docs/reuse.md).
    """

    def __init__(self, model: nn.Module, blocks: Blocks | Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.engine = Engine(model, blocks)
        self.block_names = self.engine.block_names

    @property
    def num_blocks(self) -> int:
        return self.engine.num_blocks

    def forward(
        self,
        *args: Any,
        mask: Any = None,
        mode: str = "hard",
        cache: ReuseCache | None = None,
        fallback: int = SKIP,
        position: Position | None = None,
        **kwargs: Any,
    ) -> Any:
        """The model's output with the blocks chosen by ``mask`` run, reused, skipped or mixed."""
        if mask is None:
            return self.model(*args, **kwargs)
        compiled = compiled_original(self.model) is not self.model or self.model._compiled_call_impl
        if compiled or torch.compiler.is_compiling():
            _refuse_compile()
        with self.engine.attached(), self.engine.deciding(mask, mode, cache, fallback, position):
            return self.model(*args, **kwargs)
