"""A block's residual at a call it does not run, extrapolated from its last runs (``FORECAST``).

TaylorSeer (Liu et al., 2025) predicts a transformer block's features at a skipped step from those of
its last computed steps, by finite differences in the step position. Here a block a schedule forecasts
keeps its last ``order + 1`` residuals with the call positions they were computed at
(:class:`lees.engine.hooks.ReuseCache`), and its residual at call ``p`` is the polynomial through them
evaluated at ``p`` (Lagrange's form; Newton's divided differences give the same polynomial):

* order 1: ``r1 + (r1 - r0) * (p - p1) / (p1 - p0)``, the line through the last two runs;
* order 2: the parabola through the last three;
* order 0, or a single stored run: the last residual itself, exactly as ``REUSE``.

With fewer runs stored than ``order + 1`` (the first steps of a run) the order is what they allow.
Each stream of a multi-stream block (SD3's and Flux's joint blocks) is extrapolated on its own. The
sum is taken in fp32 and returned in the residual's dtype.

A position is a number or a 0-d tensor: ``lees.enable`` passes tensors made outside the compiled
region, so under ``torch.compile`` the weights are computed in the graph from graph inputs and a new
position needs no new graph (a Python number there would be a constant, guarded at every call).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Slot = torch.Tensor | tuple  # a cache slot: one tensor, or one tensor (or None) per stream
Position = float | torch.Tensor  # a call's place in its run: a number, or a 0-d tensor
ORDERS = (0, 1, 2)


def lagrange_weights(positions: Sequence[Position], at: Position) -> list[Position]:
    """The weights w_i with sum_i w_i r_i the polynomial through (positions[i], r_i), evaluated at ``at``
    (numbers checked to be distinct; tensors are not read, so a compiled graph does not branch on them)."""
    numbers = [p for p in positions if not isinstance(p, torch.Tensor)]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"extrapolation needs distinct positions, got {list(positions)}")
    weights = []
    for i, p_i in enumerate(positions):
        w = 1.0
        for j, p_j in enumerate(positions):
            if j != i:
                w *= (at - p_j) / (p_i - p_j)
        weights.append(w)
    return weights


def extrapolate(runs: Sequence[tuple[Position, Slot]], at: Position) -> Slot:
    """The residual at position ``at`` from ``runs``, (position, slot) pairs oldest first (module doc)."""
    if not runs:
        raise ValueError("extrapolation needs at least one stored run")
    weights = lagrange_weights([p for p, _ in runs], at)
    slots = [s for _, s in runs]
    if isinstance(slots[0], torch.Tensor):
        return _combine(weights, slots)
    return tuple(_combine(weights, streams) for streams in zip(*slots, strict=True))


def _combine(weights: Sequence[Position], residuals: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
    """sum_i w_i r_i in fp32, in the residuals' dtype; the residual itself for one run; None for a stream
    the block does not return."""
    if any(r is None for r in residuals):
        return None
    if len(residuals) == 1:
        return residuals[0]
    total = sum(w * r.float() for w, r in zip(weights, residuals, strict=True))
    return total.to(residuals[-1].dtype)
