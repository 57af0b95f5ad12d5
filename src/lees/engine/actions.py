"""Block actions (run, reuse its last residual, forecast it from its last runs, skip), the modes of a
decision, and the gate rule.

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

SKIP, RUN, REUSE, FORECAST = 0, 1, 2, 3
ACTIONS = {"skip": SKIP, "run": RUN, "reuse": REUSE, "forecast": FORECAST}
MODES = ("hard", "soft", "ste")

OPEN_THRESHOLD = 0.5


def open_mask(gates: torch.Tensor) -> torch.Tensor:
    """Hard decision of gate values: True where the block runs (``g >= 0.5``)."""
    return gates >= OPEN_THRESHOLD


def straight_through(gates: torch.Tensor) -> torch.Tensor:
    """Forward value of the hard mask (0/1), gradient of the gate values (straight-through)."""
    hard = open_mask(gates).to(gates.dtype)
    return hard + gates - gates.detach()
