"""Time gates: g_k(t) = sigmoid(a_k * t + b_k), one per skippable block, 2K parameters in all.

A block runs where ``g_k(t) >= 0.5`` (ties open): the rule of :mod:`lees.engine.actions`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..engine.actions import open_mask


class SigmoidTimeGate(nn.Module):
    """K gates g_k(t) = sigmoid(a_k * t + b_k) of the normalised time t in (0, 1].

    Initialised at a = b = 0 as in the paper (every gate at 0.5, i.e. open under our rule).
    ``block_names`` names the block each gate belongs to (training and :func:`lees.schedules.saving.load_gate`
    set them); every consumer maps gates to modules by these names, never by position alone.
    """

    def __init__(self, num_blocks: int, block_names: list[str] | None = None) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ValueError("a gate needs at least one block")
        if block_names is not None and len(block_names) != num_blocks:
            raise ValueError(f"{len(block_names)} block names for {num_blocks} gates")
        self.block_names = None if block_names is None else list(block_names)
        self.a = nn.Parameter(torch.zeros(num_blocks))
        self.b = nn.Parameter(torch.zeros(num_blocks))

    @property
    def num_blocks(self) -> int:
        return self.a.numel()

    def logits(self, t: torch.Tensor) -> torch.Tensor:
        """a_k * t + b_k for each t: shape (B, K) for t of shape (B,), (K,) for a scalar t."""
        t = torch.as_tensor(t, dtype=self.a.dtype, device=self.a.device)
        return t.unsqueeze(-1) * self.a + self.b

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Gate values in (0, 1), shape (B, K) for t of shape (B,)."""
        return torch.sigmoid(self.logits(t))

    def hard(self, t: torch.Tensor) -> torch.Tensor:
        """Which blocks run at t (bool, same shape as :meth:`forward`)."""
        return open_mask(self(t))
