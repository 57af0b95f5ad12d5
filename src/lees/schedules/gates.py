"""Time gates: g_k(t) = sigmoid(a_k * t + b_k), one per skippable block, 2K parameters in all.

Threshold rule: a block runs where ``g_k(t) >= 0.5`` (ties open). The paper writes ``g > 0.5``,
but it also initialises a = b = 0, where every gate sits at exactly 0.5: with a strict ``>`` the
training would start from the all-skipped network, whose output has nothing to do with the
pretrained model, so the first straight-through gradients would be measured far from the function
we want to keep. With ``>=`` the start is the full model and the compute penalty pushes gates
shut only where the diffusion loss allows it. Every hard decision in lees goes through
:func:`open_mask`, so training, schedules and sampling apply the same rule.
"""

from __future__ import annotations

import torch
from torch import nn

OPEN_THRESHOLD = 0.5


def open_mask(gates: torch.Tensor) -> torch.Tensor:
    """Hard decision of gate values: True where the block runs (``g >= 0.5``)."""
    return gates >= OPEN_THRESHOLD


def straight_through(gates: torch.Tensor) -> torch.Tensor:
    """Forward value of the hard mask (0/1), gradient of the gate values (straight-through)."""
    hard = open_mask(gates).to(gates.dtype)
    return hard + gates - gates.detach()


def normalised_time(timesteps: torch.Tensor | int, num_train_timesteps: int = 1000) -> torch.Tensor:
    """Map discrete timesteps 0..N-1 to t = (timestep + 1) / N in (0, 1]."""
    timesteps = torch.as_tensor(timesteps, dtype=torch.float32)
    if torch.any(timesteps < 0) or torch.any(timesteps >= num_train_timesteps):
        raise ValueError(f"timesteps must lie in [0, {num_train_timesteps}), got {timesteps.tolist()}")
    return (timesteps + 1) / num_train_timesteps


class SigmoidTimeGate(nn.Module):
    """K gates g_k(t) = sigmoid(a_k * t + b_k) of the normalised time t in (0, 1].

    Initialised at a = b = 0 as in the paper (every gate at 0.5, i.e. open under our rule).
    ``block_names`` names the block each gate belongs to (training and :func:`lees.training.load_gate`
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
