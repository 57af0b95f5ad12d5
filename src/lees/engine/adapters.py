"""Block adapters: which streams a block changes, where they sit in its call and its output, and how a
skipped or reused block's output is built.

A diffusers block is not always ``tensor -> tensor``. SD3's ``JointTransformerBlock`` and Flux's
``FluxTransformerBlock``/``FluxSingleTransformerBlock`` take ``hidden_states`` and
``encoder_hidden_states`` and return both, as ``(encoder_hidden_states, hidden_states)``; SD3's last
block (``context_pre_only``) returns ``(None, hidden_states)``; CogView4 returns ``(hidden_states,
encoder_hidden_states)``; Wan and CogView4 call their blocks positionally. A :class:`BlockAdapter`
says, per block class:

* ``streams``: the forward parameters that carry the streams the block changes, by name. They are
  bound to the block's forward signature, so a positional call finds them as a keyword call does.
* ``returns``: where each stream sits in the output (None: the block returns its one stream).
* ``shortcut``: the skip path of one stream's input (identity for transformer blocks).
* ``dropped``: which streams a given block returns as None (SD3's last block drops the text stream).

A skipped block returns each stream's shortcut; a reused one each stream's shortcut plus the residual
that stream had when the block last ran; a dropped stream stays None.

Which adapter a block gets (:func:`adapter_for`): one registered with :func:`register_block_adapter`
(for the class or a base class), else lees' own for the diffusers classes it knows, else one read from
diffusers' (private) ``TransformerBlockRegistry`` for a diffusers class listed there, else the plain
rule: the block's first input is its one stream, and its output must be one tensor of that shape.
A block of an unknown class that returns anything else is refused (:func:`refuse`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from torch import nn

from ..models.denoisers import main_output

Shortcut = Callable[[nn.Module, torch.Tensor], torch.Tensor]
Streams = tuple[torch.Tensor | None, ...]


def identity(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Skip path of a transformer block (and any plain residual unit): the input, unchanged."""
    return x


def resnet_shortcut(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Skip path of a diffusers ``ResnetBlock2D``: resample, 1x1 projection, output scale."""
    if module.upsample is not None:
        x = module.upsample(x)
    elif module.downsample is not None:
        x = module.downsample(x)
    if module.conv_shortcut is not None:
        x = module.conv_shortcut(x)
    if module.output_scale_factor != 1:
        x = x / module.output_scale_factor
    return x


def attention_shortcut(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Skip path of a residual diffusers ``Attention``: its input over ``rescale_output_factor``."""
    scale = getattr(module, "rescale_output_factor", 1.0)
    return x / scale if scale != 1 else x


def transformer_output(kwargs: dict, tensor: torch.Tensor) -> Any:
    """A ``Transformer2DModel``'s output: a 1-tuple under ``return_dict=False``, else an output object."""
    return (tensor,) if kwargs.get("return_dict", True) is False else Transformer2DModelOutput(sample=tensor)


_POSITIONS: dict[type, dict[str, int]] = {}


def forward_positions(cls: type) -> dict[str, int]:
    """Each positional parameter of ``cls.forward`` (``self`` left out) with its index in ``args``.

    Kept in a plain dict, filled when a block's adapter is looked up, so that a call traced by
    ``torch.compile`` finds it there (dynamo would trace into a ``functools`` cache and break its
    graph on ``inspect``)."""
    if cls not in _POSITIONS:
        _POSITIONS[cls] = _positions(cls)
    return _POSITIONS[cls]


def _positions(cls: type) -> dict[str, int]:
    params = list(inspect.signature(cls.forward).parameters.values())[1:]
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positions = {}
    for index, p in enumerate(params):
        if p.kind in kinds or p.kind is inspect.Parameter.VAR_POSITIONAL:
            positions[p.name] = index
        if p.kind not in kinds:
            break
    return positions


@dataclass(frozen=True)
class BlockAdapter:
    """How lees reads and rebuilds one block class's call (see the module docstring).

    Args:
        streams: the forward parameters carrying the streams the block changes, by name.
        returns: the stream at each position of the output tuple, by the same names; None when the
            block returns its one stream as a tensor.
        shortcut: the skip path ``(block, stream input) -> stream``, the same for every stream.
        dropped: ``block -> names of the streams this block returns as None`` (default: none).
        kind: the short name listings show (``Block.kind``).
        wrap: for a one-stream block, ``(call kwargs, tensor) -> output`` when it returns more than the
            tensor (``Transformer2DModel``'s output object).

    Example:
        >>> lees.register_block_adapter(MyJointBlock, BlockAdapter(  # doctest: +SKIP
        ...     streams=("hidden_states", "context"), returns=("context", "hidden_states"), kind="joint"))
    """

    streams: tuple[str, ...] = ("hidden_states",)
    returns: tuple[str, ...] | None = None
    shortcut: Shortcut = identity
    dropped: Callable[[nn.Module], tuple[str, ...]] | None = None
    kind: str = "identity"
    wrap: Callable[[dict, torch.Tensor], Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.streams:
            raise ValueError("a block adapter names at least one stream")
        if self.returns is None and len(self.streams) != 1:
            raise ValueError("a block with several streams returns a tuple: give returns=")
        if self.returns is not None and set(self.streams) - set(self.returns):
            raise ValueError(f"returns={self.returns} does not place every stream of {self.streams}")

    def inputs(self, module: nn.Module, args: tuple, kwargs: dict) -> Streams:
        """Each stream's input to this call, found by name or by position in ``type(module).forward``."""
        positions = forward_positions(type(module))
        found = []
        for name in self.streams:
            if name in kwargs:
                found.append(kwargs[name])
            elif name in positions and positions[name] < len(args):
                found.append(args[positions[name]])
            else:
                raise TypeError(f"{type(module).__name__} was called without its {name!r} input")
        return tuple(found)

    def live(self, module: nn.Module) -> tuple[bool, ...]:
        """Whether this block returns each stream (False: it returns None there)."""
        dropped = self.dropped(module) if self.dropped is not None else ()
        return tuple(name not in dropped for name in self.streams)

    def outputs(self, module: nn.Module, output: Any) -> Streams:
        """Each stream as the block returned it (None where it returns None)."""
        if self.returns is None:
            if self.wrap is None and not isinstance(output, torch.Tensor):
                refuse(type(module), output, "one tensor")
            return (main_output(output),)
        if not isinstance(output, tuple) or len(output) != len(self.returns):
            refuse(type(module), output, f"a tuple of {len(self.returns)}")
        return tuple(output[self.returns.index(name)] for name in self.streams)

    def shortcuts(self, module: nn.Module, inputs: Streams) -> Streams:
        """Each returned stream's skip path of its input; None for a dropped stream."""
        live = self.live(module)
        return tuple(self.shortcut(module, x) if on else None for x, on in zip(inputs, live, strict=True))

    def build(self, kwargs: dict, streams: Streams) -> Any:
        """The block's output made of ``streams`` (in ``self.streams`` order), as its caller unpacks it."""
        if self.returns is None:
            return self.wrap(kwargs, streams[0]) if self.wrap is not None else streams[0]
        return tuple(streams[self.streams.index(name)] for name in self.returns)

    def pack(self, residuals: Streams) -> Any:
        """What a :class:`ReuseCache` slot holds: one tensor for a one-stream block, else a tuple."""
        return residuals[0] if len(self.streams) == 1 else tuple(residuals)

    def unpack(self, held: Any) -> Streams:
        """The per-stream residuals of a cache slot (a tensor or a tuple; None: nothing held)."""
        if held is None:
            return (None,) * len(self.streams)
        return (held,) if len(self.streams) == 1 else tuple(held)


def _context_pre_only(block: nn.Module) -> tuple[str, ...]:
    """SD3's last joint block returns no text stream (``JointTransformerBlock.context_pre_only``)."""
    return ("encoder_hidden_states",) if getattr(block, "context_pre_only", False) else ()


HIDDEN = ("hidden_states",)
JOINT = ("hidden_states", "encoder_hidden_states")
TEXT_FIRST = ("encoder_hidden_states", "hidden_states")

# diffusers block classes by name (only classes defined inside diffusers match: see adapter_for).
BUILTIN: dict[str, BlockAdapter] = {
    # UNets
    "ResnetBlock2D": BlockAdapter(streams=("input_tensor",), shortcut=resnet_shortcut, kind="resnet"),
    "Attention": BlockAdapter(shortcut=attention_shortcut, kind="attention"),
    "Transformer2DModel": BlockAdapter(kind="transformer", wrap=transformer_output),
    # one stream changed, the text (if any) read only: DiT, PixArt, LTX, Wan, HunyuanDiT
    "BasicTransformerBlock": BlockAdapter(),
    "LTXVideoTransformerBlock": BlockAdapter(),
    "WanTransformerBlock": BlockAdapter(),
    "HunyuanDiTBlock": BlockAdapter(),
    # both streams changed: SD3, Flux (double and single stream), QwenImage, CogView4
    "JointTransformerBlock": BlockAdapter(JOINT, TEXT_FIRST, dropped=_context_pre_only, kind="joint"),
    "FluxTransformerBlock": BlockAdapter(JOINT, TEXT_FIRST, kind="joint"),
    "FluxSingleTransformerBlock": BlockAdapter(JOINT, TEXT_FIRST, kind="joint"),
    "QwenImageTransformerBlock": BlockAdapter(JOINT, TEXT_FIRST, kind="joint"),
    "CogView4TransformerBlock": BlockAdapter(JOINT, JOINT, kind="joint"),
}

_REGISTERED: dict[type, BlockAdapter] = {}


def register_block_adapter(cls: type, adapter: BlockAdapter) -> None:
    """Teach lees the block class ``cls`` (and its subclasses): how its streams come in and go out.

    Args:
        cls: the block's class (an ``nn.Module`` subclass).
        adapter: its :class:`BlockAdapter`; replaces any adapter lees has for the class.
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_block_adapter takes an nn.Module subclass, not {cls!r}")
    if not isinstance(adapter, BlockAdapter):
        raise TypeError(f"register_block_adapter takes a BlockAdapter, not {type(adapter).__name__}")
    _REGISTERED[cls] = adapter


def adapter_for(module: nn.Module) -> BlockAdapter:
    """The adapter of ``module``'s class (see the module docstring for the order they are looked up in)."""
    forward_positions(type(module))
    for cls in type(module).__mro__:
        if cls in _REGISTERED:
            return _REGISTERED[cls]
        if cls.__module__.startswith("diffusers.") and cls.__name__ in BUILTIN:
            return BUILTIN[cls.__name__]
    if type(module).__module__.startswith("diffusers."):
        read = _from_diffusers(type(module))
        if read is not None:
            return read
    return BlockAdapter(streams=(next(iter(forward_positions(type(module))), "hidden_states"),))


@functools.cache
def _from_diffusers(cls: type) -> BlockAdapter | None:
    """An adapter read from diffusers' ``TransformerBlockRegistry`` metadata; None if not listed there."""
    try:
        from ..utils.diffusers_private import TransformerBlockRegistry

        meta = TransformerBlockRegistry.get(cls)
    except (ImportError, ValueError):
        return None
    hidden, text = meta.hidden_states_argument_name, meta.encoder_hidden_states_argument_name
    if meta.return_encoder_hidden_states_index is None:
        return BlockAdapter(streams=(hidden,))
    returns = [""] * 2
    returns[meta.return_hidden_states_index], returns[meta.return_encoder_hidden_states_index] = hidden, text
    return BlockAdapter(streams=(hidden, text), returns=tuple(returns), kind="joint")


def refuse(cls: type, output: Any, expected: str) -> None:
    """The one-line error for a block whose output its adapter does not describe (for a class lees does
    not know: anything but one tensor)."""
    raise TypeError(
        f"lees cannot read the output of {cls.__name__} ({type(output).__name__}, expected {expected}): "
        f"describe its streams with lees.register_block_adapter({cls.__name__}, BlockAdapter(...))"
    )
