"""Blocks of a backbone: which modules can be skipped, what a skip computes, and what it saves.

A *block* is a residual unit ``y = shortcut(x) + residual(x)``. Skipping it keeps the shortcut and
drops the residual branch:

* ``resnet`` (diffusers ``ResnetBlock2D``): the shortcut is the block's own skip path, i.e. the
  input resampled where the block resamples (``up``/``down``), then the 1x1 ``conv_shortcut`` where
  the channel count changes (as in the up path, where skip features are concatenated), divided by
  ``output_scale_factor``; identity when none of those apply.
* ``attention`` (diffusers ``Attention`` with a residual connection): the shortcut is the input
  divided by ``rescale_output_factor`` (1 in every published UNet), i.e. identity.
* ``transformer`` (diffusers ``Transformer2DModel``, the spatial transformer of a cross-attention
  UNet such as ``UNet2DConditionModel``): ``y = x + proj_out(...)``, so the shortcut is identity;
  a skipped one still returns what its caller unpacks (a 1-tuple under ``return_dict=False``).
* ``identity`` (any other module a user names, e.g. a transformer block): the shortcut is the
  first input; the block's output must have the input's shape.

Each block's FLOPs are measured with ``torch.utils.flop_counter`` at one input size: the share a
block saves is its own FLOPs minus those of its shortcut, over the whole model's FLOPs.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from torch import nn

from ..models.denoisers import example_inputs as example_call
from ..models.denoisers import main_output
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


Shortcut = Callable[[nn.Module, tuple, dict], torch.Tensor]


def first_tensor(args: tuple, kwargs: dict) -> torch.Tensor:
    """The block's main input: its first positional tensor, else ``hidden_states``/``input_tensor``."""
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    for key in ("hidden_states", "input_tensor", "x", "sample"):
        if isinstance(kwargs.get(key), torch.Tensor):
            return kwargs[key]
    raise TypeError("a skipped block needs its input tensor as first argument or as hidden_states=")


def resnet_shortcut(module: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
    """Skip path of a diffusers ``ResnetBlock2D``: resample, 1x1 projection, output scale."""
    x = first_tensor(args, kwargs)
    if module.upsample is not None:
        x = module.upsample(x)
    elif module.downsample is not None:
        x = module.downsample(x)
    if module.conv_shortcut is not None:
        x = module.conv_shortcut(x)
    if module.output_scale_factor != 1:
        x = x / module.output_scale_factor
    return x


def attention_shortcut(module: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
    """Skip path of a residual diffusers ``Attention``: its input over ``rescale_output_factor``."""
    x = first_tensor(args, kwargs)
    scale = getattr(module, "rescale_output_factor", 1.0)
    return x / scale if scale != 1 else x


def identity_shortcut(module: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
    """Skip path of any other residual unit: its input, unchanged."""
    return first_tensor(args, kwargs)


SHORTCUTS: dict[str, Shortcut] = {
    "resnet": resnet_shortcut,
    "attention": attention_shortcut,
    "transformer": identity_shortcut,
    "identity": identity_shortcut,
}


def skipped_output(kind: str, kwargs: dict, tensor: torch.Tensor) -> Any:
    """A skipped block's shortcut ``tensor`` in the form its caller unpacks: a ``transformer`` block
    returns a 1-tuple under ``return_dict=False``, else an output object; the others a tensor."""
    if kind != "transformer":
        return tensor
    return (tensor,) if kwargs.get("return_dict", True) is False else Transformer2DModelOutput(sample=tensor)


def block_kind(module: nn.Module) -> str:
    """The skip rule that applies to ``module`` (see the module docstring)."""
    name = type(module).__name__
    if name == "ResnetBlock2D":
        return "resnet"
    if name == "Attention" and getattr(module, "residual_connection", False):
        return "attention"
    if name == "Transformer2DModel":
        return "transformer"
    return "identity"


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


def candidate_blocks(model: nn.Module) -> list[str]:
    """Module names the built-in adapters gate, in module order (execution order is measured later).

    diffusers UNets (``UNet2DModel``, ``UNet2DConditionModel``; DDPM, ADM and LDM denoisers): every
    ``ResnetBlock2D``, residual ``Attention`` and spatial ``Transformer2DModel``. Transformers with
    ``transformer_blocks`` (DiT, PixArt, ``Transformer2DModel``): each transformer block, as identity.
    """
    if type(model).__name__ in ("UNet2DModel", "UNet2DConditionModel"):
        return [name for name, module in model.named_modules() if block_kind(module) != "identity"]
    if isinstance(getattr(model, "transformer_blocks", None), nn.ModuleList):
        return [f"transformer_blocks.{i}" for i in range(len(model.transformer_blocks))]
    raise TypeError(
        f"no block adapter for {type(model).__name__}; pass the module names to gate, "
        "e.g. find_blocks(model, names=['blocks.0', 'blocks.1'], example_inputs=(x, t))"
    )


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
    model: nn.Module,
    names: Sequence[str] | None = None,
    example_inputs: tuple | None = None,
    sample_size: int | None = None,
    example_kwargs: dict | None = None,
) -> Blocks:
    """List the skippable blocks of ``model`` in execution order, with their measured FLOP shares.

    Args:
        model: the denoiser (a ``torch.compile``d model is measured through its eager original).
        names: the blocks by module name (any model); without it the built-in adapters pick every
            ``ResnetBlock2D``, residual ``Attention`` and spatial ``Transformer2DModel`` of a diffusers
            UNet, or each of a transformer's ``transformer_blocks``.
        example_inputs: the positional input of one forward call (batch 1 recommended); diffusers
            denoisers derive it (and their class labels or context) when it is not given.
        sample_size: the input size to count FLOPs at, instead of the model's own.
        example_kwargs: the keyword input of that call.

    Example:
        >>> blocks = find_blocks(pipe.unet)  # doctest: +SKIP
        >>> names = ["blocks.0", "blocks.1"]  # any model: its residual units and one example input
        >>> blocks = find_blocks(model, names, example_inputs=(x, t))  # doctest: +SKIP
    """
    model = compiled_original(model)
    names = list(names) if names is not None else candidate_blocks(model)
    if not names:
        raise ValueError(f"{type(model).__name__} has no skippable blocks")
    modules = resolve_modules(model, names)
    if example_inputs is None:
        example_inputs, derived = example_call(model, sample_size=sample_size)
        example_kwargs = {**derived, **(example_kwargs or {})}
    calls, counter = _trace(model, modules, example_inputs, example_kwargs or {})
    never = [names[k] for k in range(len(names)) if k not in calls]
    if never:
        raise ValueError(f"block {never[0]!r} did not run in a forward pass of {type(model).__name__}")
    total, counts, root = int(counter.get_total_flops()), counter.get_flop_counts(), type(model).__name__
    blocks = [
        _measure(names[k], modules[k], *calls[k], _module_flops(counts, root, names[k]), total) for k in calls
    ]
    return Blocks(tuple(blocks), total, tuple(example_inputs[0].shape), root)


def _trace(model: nn.Module, modules: list[nn.Module], inputs: tuple, kwargs: dict):
    """One forward pass in eval mode under a FLOP counter: each block's first call (its arguments and
    output shape), keyed by block index in the order the blocks ran, and the counter."""
    calls: dict[int, tuple[tuple, dict, tuple]] = {}

    def pre_hook(k):
        def hook(module, args, kw):
            if k not in calls:
                calls[k] = (args, kw, ())

        return hook

    def post_hook(k):
        def hook(module, args, kw, output):
            a, b, shape = calls[k]
            if not shape:
                calls[k] = (a, b, tuple(main_output(output).shape))

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


def _measure(name: str, module: nn.Module, args: tuple, kwargs: dict, out_shape: tuple, flops: int,
             total: int) -> Block:  # fmt: skip
    """One block with the FLOPs its skip saves (its own minus its shortcut's), checked to keep the shape."""
    kind = block_kind(module)
    with flop_counter() as shortcut_counter:
        skipped = SHORTCUTS[kind](module, args, kwargs)
    if tuple(skipped.shape) != out_shape:
        raise ValueError(
            f"block {name!r} ({kind}) maps {tuple(skipped.shape)} to {out_shape}: "
            "skipping it would change the tensor shape, so it cannot be a skippable block"
        )
    saved = flops - int(shortcut_counter.get_total_flops())
    return Block(name, kind, flops, saved, saved / total if total else 0.0, math.prod(out_shape[1:]))
