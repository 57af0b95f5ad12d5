"""Adaptive decisions from a cheap probe: a block runs when the first block's output has moved enough.

FirstBlockCache, TeaCache and MagCache decide per call from how much the first block's output changed;
their thresholds are hand-set and one for the whole model. Here a schedule's cells may carry a threshold
(``Schedule.thresholds``, K x T; ``inf``: the cell follows its table): the probe block (block 0) runs at
every call, and after it ran at call j its residual's relative change since call j - 1,

    d_j = mean |r_j - r_(j-1)| / mean |r_(j-1)|        (over the whole batch, as FirstBlockCache's),

is added to every other block's *accumulated change* (TeaCache's rule: the change since that block last
ran). A cell that reuses or forecasts in the table runs instead where its block's accumulated change
exceeds the cell's threshold; a block that runs starts accumulating again from zero. With every threshold
infinite the schedule is exactly its table; with thresholds learned per block and call
(:mod:`lees.learn.probe_search`) it spends its runs where this batch's trajectory moves.

One decision per call for the whole batch, as every hard action in lees. The probe counts, per cell, the
batches it ran in adaptively (``ran``), so a sampler reports what the schedule actually did and what it cost.
"""

from __future__ import annotations

import numpy as np
import torch

from .actions import FORECAST, REUSE, RUN

PROBE_BLOCK = 0  # the block whose output's change drives the decisions; it runs at every call


def relative_change(new: torch.Tensor, old: torch.Tensor) -> float:
    """FirstBlockCache's measure: the mean absolute change over the mean absolute old value (fp32)."""
    old, new = old.float(), new.float()
    return float((new - old).abs().mean() / old.abs().mean().clamp_min(1e-12))


class Probe:
    """The probe's state over one sampling run (one guidance branch), and the adaptive runs it caused.

    Args:
        thresholds: (K, T) per cell; ``inf`` where the table decides alone. Cleared with its cache.
    """

    def __init__(self, thresholds: np.ndarray) -> None:
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        k, t = self.thresholds.shape
        self.ran = np.zeros((k, t), dtype=np.int64)  # batches in which each cell ran adaptively
        self.runs = 0  # sampling runs (batches) the probe saw start
        self.clear()

    def clear(self) -> None:
        """A new sampling run starts: no previous probe output, nothing accumulated."""
        self.previous: torch.Tensor | None = None
        self.accumulated = np.zeros(self.thresholds.shape[0])
        self.changes: list[float] = []  # this run's d_j, call by call (d_0 = 0)

    def observe(self, residual: torch.Tensor) -> None:
        """The probe block ran: add its change since the last call to every block's accumulated change."""
        self.runs += self.previous is None
        change = 0.0 if self.previous is None else relative_change(residual, self.previous)
        self.previous = residual.detach()
        self.changes.append(change)
        self.accumulated += change

    def action(self, k: int, table_action: int, position) -> int:
        """Block k's action at call ``position``: the table's, or RUN where it reuses or forecasts and
        the block's accumulated change exceeds the cell's threshold. A block that runs is reset."""
        j = int(position)
        run = table_action == RUN or (
            table_action in (REUSE, FORECAST) and self.accumulated[k] > self.thresholds[k, j]
        )
        if not run:
            return table_action
        if table_action != RUN:
            self.ran[k, j] += 1
        self.accumulated[k] = 0.0
        return RUN

    @property
    def ran_share(self) -> np.ndarray:
        """Per cell, the share of the sampling runs in which it ran adaptively."""
        return self.ran / max(self.runs, 1)
