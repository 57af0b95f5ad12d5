"""The skipping engine: run a backbone with a per-call mask over its K blocks.

The user's model is never changed: for the length of one call each block's ``forward`` is
shadowed by an instance attribute that decides between the block and its shortcut, and restored
afterwards, so parameters, buffers, ``state_dict`` and module tree stay as they were. A masked-off
block in ``hard`` mode computes only its shortcut (no wasted FLOPs).

Modes:

* ``hard``: ``mask`` is K booleans (one decision for the whole batch); closed blocks are skipped.
* ``soft``: ``mask`` holds gate values g in [0, 1], shape (K,) or (B, K); every block runs and its
  output is mixed as ``shortcut + g * (block - shortcut)``.
* ``ste``: as ``soft``, but with the straight-through gate: the forward value is the hard 0/1
  decision of :func:`lees.gates.open_mask`, the gradient is that of g. Every block runs, since the
  gradient of a closed gate needs the block's output.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .blocks import SHORTCUTS, Blocks, block_kind, resolve_modules, skipped_output
from .denoisers import main_output, with_main_output
from .gates import straight_through

MODES = ("hard", "soft", "ste")


def _broadcast(weight: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-call scalar or a per-sample (B,) weight shaped to multiply ``like``."""
    if weight.dim() == 0:
        return weight
    return weight.view(-1, *([1] * (like.dim() - 1)))


class GatedModel(nn.Module):
    """Wrap ``model`` so that each call can skip any of its ``blocks``.

    ``blocks`` is the result of :func:`lees.find_blocks` or a list of module names. Call it like the
    model, plus ``mask=`` and ``mode=``; with ``mask=None`` it is the plain model. Not re-entrant:
    one call at a time per wrapped model.
    """

    def __init__(self, model: nn.Module, blocks: Blocks | Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.block_names = list(blocks.names if isinstance(blocks, Blocks) else blocks)
        self._block_modules = resolve_modules(model, self.block_names)
        self._kinds = [block_kind(m) for m in self._block_modules]

    @property
    def num_blocks(self) -> int:
        return len(self.block_names)

    def forward(self, *args: Any, mask: Any = None, mode: str = "hard", **kwargs: Any) -> Any:
        """The model's output with the blocks chosen by ``mask`` skipped or mixed (see module doc)."""
        if mask is None:
            return self.model(*args, **kwargs)
        with self.skipping(mask, mode):
            return self.model(*args, **kwargs)

    def _check_mask(self, mask: Any, mode: str) -> Any:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "hard":
            if isinstance(mask, torch.Tensor):
                if mask.dim() != 1:
                    raise ValueError("hard mode takes one mask for the whole batch, shape (K,)")
                mask = mask.tolist()
            mask = [bool(m) for m in mask]
            if len(mask) != self.num_blocks:
                raise ValueError(f"mask has {len(mask)} entries for {self.num_blocks} blocks")
            return mask
        if not isinstance(mask, torch.Tensor) or not mask.is_floating_point():
            raise TypeError(f"{mode} mode takes a float tensor of gate values, shape (K,) or (B, K)")
        if mask.dim() not in (1, 2) or mask.shape[-1] != self.num_blocks:
            raise ValueError(f"gate values of shape {tuple(mask.shape)} do not fit {self.num_blocks} blocks")
        weights = straight_through(mask) if mode == "ste" else mask
        return weights.unbind(-1)

    @contextmanager
    def skipping(self, mask: Any, mode: str = "hard"):
        """Within the block, calls of the wrapped model skip or mix blocks as ``mask`` says."""
        decisions = self._check_mask(mask, mode)
        saved = []
        for module, kind, decision in zip(self._block_modules, self._kinds, decisions, strict=True):
            saved.append(module.__dict__.get("forward"))
            module.forward = self._gated_forward(module, module.forward, kind, decision, mode)
        try:
            yield
        finally:
            for module, previous in zip(self._block_modules, saved, strict=True):
                if previous is None:
                    del module.forward
                else:
                    module.forward = previous

    @staticmethod
    def _gated_forward(module, forward, kind, decision, mode):
        shortcut = SHORTCUTS[kind]
        if mode == "hard":
            if decision:
                return forward

            def skipped(*args, **kwargs):
                return skipped_output(kind, kwargs, shortcut(module, args, kwargs))

            return skipped

        def mixed(*args, **kwargs):
            skip = shortcut(module, args, kwargs)
            full = forward(*args, **kwargs)
            out = main_output(full)
            return with_main_output(full, skip + _broadcast(decision, out) * (out - skip))

        return mixed
