"""Blocks of a backbone: which modules can be skipped, what a skip computes, and what it saves.

A *block* is a residual unit: each stream it changes is ``shortcut(x) + residual(x)``. Skipping it keeps
the shortcuts and drops the residual branches. The skip rule of a block class is its *adapter*
(:mod:`lees.engine.adapters`), shown as the block's ``kind``:

* ``resnet`` (diffusers ``ResnetBlock2D``): the shortcut is the block's own skip path, i.e. the
  input resampled where the block resamples (``up``/``down``), then the 1x1 ``conv_shortcut`` where
  the channel count changes (as in the up path, where skip features are concatenated), divided by
  ``output_scale_factor``; identity when none of those apply.
* ``attention`` (diffusers ``Attention`` with a residual connection): the shortcut is the input
  divided by ``rescale_output_factor`` (1 in every published UNet), i.e. identity.
* ``transformer`` (diffusers ``Transformer2DModel``, the spatial transformer of a cross-attention
  UNet such as ``UNet2DConditionModel``): ``y = x + proj_out(...)``, so the shortcut is identity;
  a skipped one still returns what its caller unpacks (a 1-tuple under ``return_dict=False``).
* ``identity``: a transformer block that changes one stream (DiT, PixArt, LTX, Wan, HunyuanDiT), or
  any other module a user names whose output is one tensor of its input's shape.
* ``joint``: a block that changes two streams, image and text (SD3, Flux double- and single-stream,
  QwenImage, CogView4): each passes through; SD3's last block keeps returning None for the text.

Each block's FLOPs are measured with ``torch.utils.flop_counter`` at one input size: the share a
block saves is its own FLOPs minus those of its shortcuts, over the whole model's FLOPs.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..models.denoisers import denoiser_of
from ..models.example_calls import example_call, main_input
from .adapters import adapter_for
from .flops import _module_flops, flop_counter

_UNET_NAME = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.|^mid_block\.")


def depth_order(names: Sequence[str]) -> list[int]:
    """Block indices from deepest to shallowest (see the module docstring)."""
    matches = [_UNET_NAME.match(n) for n in names]
    if not all(matches):  # not a UNet: deeper = later in execution
        return list(range(len(names)))[::-1]
    levels = 1 + max(int(m.group(2)) for m in matches if m.group(1) == "down_blocks")
    levels = max(levels, 1 + max((int(m.group(2)) for m in matches if m.group(1) == "up_blocks"), default=0))

    def depth(k: int) -> int:
        m = matches[k]
        if m.group(1) is None:
            return levels  # the middle block
        level = int(m.group(2))
        return level if m.group(1) == "down_blocks" else levels - 1 - level

    return sorted(range(len(names)), key=lambda k: (-depth(k), -k))


def unet_stage(name: str) -> str | None:
    """The UNet stage a block belongs to (``down_blocks.1``, ``mid_block``, ...); None outside them."""
    m = _UNET_NAME.match(name)
    return m.group(0).rstrip(".") if m else None


def unet_level(name: str) -> int | None:
    """How many resolution levels lie above a UNet block (0: the outermost); None outside the paths."""
    m = _UNET_NAME.match(name)
    if m is None or m.group(1) is None:
        return None
    return int(m.group(2))


def block_kind(module: nn.Module) -> str:
    """The skip rule that applies to ``module``: its adapter's kind (see :mod:`lees.engine.adapters`)."""
    return adapter_for(module).kind


@dataclass(frozen=True)
class Block:
    """One skippable unit: module path, skip rule, FLOPs at the measured input size, and how many
    values one sample's output holds (what a reuse cache keeps for it)."""

    name: str
    kind: str
    flops: int
    saved_flops: int
    share: float
    out_numel: int = 0


@dataclass(frozen=True)
class Blocks(Sequence[Block]):
    """The skippable blocks of a model in execution order, with the model's total FLOPs."""

    blocks: tuple[Block, ...]
    total_flops: int
    input_shape: tuple[int, ...]
    model_class: str

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index):  # type: ignore[override]
        return self.blocks[index]

    def __iter__(self) -> Iterator[Block]:
        return iter(self.blocks)

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.blocks]

    @property
    def shares(self) -> list[float]:
        return [b.share for b in self.blocks]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_class": self.model_class,
            "input_shape": list(self.input_shape),
            "total_flops": self.total_flops,
            "blocks": [asdict(b) for b in self.blocks],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks", "blocks")


def candidate_blocks(model: nn.Module) -> list[str]:
    """Module names the built-in adapters gate, in module order (execution order is measured later).

    diffusers UNets (``UNet2DModel``, ``UNet2DConditionModel``; DDPM, ADM and LDM denoisers): every
    ``ResnetBlock2D``, residual ``Attention`` and spatial ``Transformer2DModel``. diffusers transformers:
    each block of their ``transformer_blocks``, ``single_transformer_blocks`` (Flux) and ``blocks``
    (Wan, HunyuanDiT) lists. Other models name their blocks.
    """
    from diffusers import ModelMixin  # here: it imports transformers, which `import lees` need not

    if type(model).__name__ in ("UNet2DModel", "UNet2DConditionModel"):
        return [name for name, module in model.named_modules() if _is_unet_block(module)]
    names = []
    for attr in BLOCK_LISTS if isinstance(model, ModelMixin) else ():
        blocks = getattr(model, attr, None)
        if isinstance(blocks, nn.ModuleList):
            names += [f"{attr}.{i}" for i in range(len(blocks))]
    if not names:
        raise TypeError(
            f"no block adapter for {type(model).__name__}; pass the module names to gate, "
            "e.g. find_blocks(model, names=['blocks.0', 'blocks.1'], example_inputs=(x, t))"
        )
    return names


def _is_unet_block(module: nn.Module) -> bool:
    kind = block_kind(module)
    if kind == "attention":
        return bool(getattr(module, "residual_connection", False))
    return kind in ("resnet", "transformer")


def compiled_original(model: nn.Module) -> nn.Module:
    """The module that ``torch.compile(model)`` compiles (its ``_orig_mod``), else ``model`` itself.

    Blocks are named, measured and hooked on the original: the compiled code calls its submodules,
    so hooks there are traced into it.
    """
    return getattr(model, "_orig_mod", model)


def resolve_modules(model: nn.Module, names: Sequence[str]) -> list[nn.Module]:
    """The modules behind ``names`` (inside a compiled model's original); a clear error for an unknown,
    repeated or nested name."""
    modules = dict(compiled_original(model).named_modules())
    missing = [n for n in names if n not in modules or n == ""]
    if missing:
        raise ValueError(f"no module named {missing[0]!r} in {type(model).__name__}")
    if len(set(names)) != len(names):
        raise ValueError("a block is named twice")
    for a in names:
        for b in names:
            if a != b and b.startswith(a + "."):
                raise ValueError(f"blocks must not nest: {b!r} lies inside {a!r}")
    return [modules[n] for n in names]


@torch.no_grad()
def find_blocks(
    model: Any,
    names: Sequence[str] | None = None,
    example_inputs: tuple | None = None,
    sample_size: int | None = None,
    example_kwargs: dict | None = None,
) -> Blocks:
    """List the skippable blocks of ``model`` in execution order, with their measured FLOP shares.

    Args:
        model: the denoiser, or a diffusers pipeline (its ``unet`` or ``transformer`` is measured); a
            ``torch.compile``d model is measured through its eager original.
        names: the blocks by module name (any model); without it the built-in adapters pick every
            ``ResnetBlock2D``, residual ``Attention`` and spatial ``Transformer2DModel`` of a diffusers
            UNet, or each block of a transformer's ``transformer_blocks``, ``single_transformer_blocks``
            and ``blocks`` lists.
        example_inputs: the positional input of one forward call (batch 1 recommended); diffusers
            denoisers derive one call (the keyword inputs their pipeline passes) when it is not given.
        sample_size: the latent height and width to count FLOPs at, instead of the model's own.
        example_kwargs: the keyword input of that call.

    Example:
        >>> blocks = find_blocks(pipe)  # doctest: +SKIP
        >>> names = ["blocks.0", "blocks.1"]  # any model: its residual units and one example input
        >>> blocks = find_blocks(model, names, example_inputs=(x, t))  # doctest: +SKIP
    """
    model = compiled_original(denoiser_of(model))
    names = list(names) if names is not None else candidate_blocks(model)
    if not names:
        raise ValueError(f"{type(model).__name__} has no skippable blocks")
    modules = resolve_modules(model, names)
    if example_inputs is None:
        example_inputs, derived = example_call(model, sample_size=sample_size)
        example_kwargs = {**derived, **(example_kwargs or {})}
    example_kwargs = example_kwargs or {}
    calls, counter = _trace(model, modules, example_inputs, example_kwargs)
    never = [names[k] for k in range(len(names)) if k not in calls]
    if never:
        raise ValueError(f"block {never[0]!r} did not run in a forward pass of {type(model).__name__}")
    total, counts, root = int(counter.get_total_flops()), counter.get_flop_counts(), type(model).__name__
    blocks = [
        _measure(names[k], modules[k], *calls[k], _module_flops(counts, root, names[k]), total) for k in calls
    ]
    shape = tuple(main_input(example_inputs, example_kwargs).shape)
    return Blocks(tuple(blocks), total, shape, root)


def _trace(model: nn.Module, modules: list[nn.Module], inputs: tuple, kwargs: dict):
    """One forward pass in eval mode under a FLOP counter: each block's first call (its arguments and
    output), keyed by block index in the order the blocks ran, and the counter."""
    calls: dict[int, list] = {}

    def pre_hook(k):
        def hook(module, args, kw):
            if k not in calls:
                calls[k] = [args, kw, None]

        return hook

    def post_hook(k):
        def hook(module, args, kw, output):
            if calls[k][2] is None:
                calls[k][2] = output

        return hook

    handles = []
    for k, module in enumerate(modules):
        handles.append(module.register_forward_pre_hook(pre_hook(k), with_kwargs=True))
        handles.append(module.register_forward_hook(post_hook(k), with_kwargs=True))
    was_training = model.training
    model.eval()
    try:
        with flop_counter() as counter:
            model(*inputs, **kwargs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return calls, counter


def _measure(name: str, module: nn.Module, args: tuple, kwargs: dict, output: Any, flops: int,
             total: int) -> Block:  # fmt: skip
    """One block with the FLOPs its skip saves (its own minus its shortcuts'), checked to keep each
    stream's shape; ``out_numel`` counts the values of every stream it returns, per sample."""
    adapter = adapter_for(module)
    outs = adapter.outputs(module, output)
    with flop_counter() as shortcut_counter:
        skipped = adapter.shortcuts(module, adapter.inputs(module, args, kwargs))
    for stream, out, skip in zip(adapter.streams, outs, skipped, strict=True):
        got = None if skip is None else tuple(skip.shape)
        want = None if out is None else tuple(out.shape)
        if got != want:
            raise ValueError(
                f"block {name!r} ({adapter.kind}) maps {stream} {got} to {want}: "
                "skipping it would change the tensor shape, so it cannot be a skippable block"
            )
    saved = flops - int(shortcut_counter.get_total_flops())
    numel = sum(math.prod(out.shape[1:]) for out in outs if out is not None)
    return Block(name, adapter.kind, flops, saved, saved / total if total else 0.0, numel)
