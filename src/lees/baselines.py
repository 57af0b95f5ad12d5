"""Hand-made and random schedules to measure LEES against: ASE's drop schedule and random gates.

ASE (Moon et al., "A Simple Early Exiting Framework for Accelerated Sampling in Diffusion
Models", ICML 2024; code: taehong-moon/ee-diffusion, ``DiT/drop_scheduler.py``) splits the 1000
training timesteps into segments and, the noisier the segment, drops more of the deepest blocks.
Its released DiT-XL/2 schedule ("demo") runs [28, 28, 24, 24, 20, 20, 16, 16, 12, 12] of 28 blocks
on the segments [0, 100), [100, 200), ..., [900, 1000): 4 more blocks (1/7 of the model) dropped
every 200 timesteps, i.e. 71 % of the blocks run on average. We match that form:

    dropped(t) = min(max_drop, drop_step * floor((t - start) / drop_length))  for t >= start, else 0

with ``drop_length`` = 200, ``drop_step`` = round(K / 7) and ``start`` = 0 by default, where t is
the discrete timestep (0 = clean). "Deepest" follows ASE: in a transformer the last blocks in
execution order; in a UNet the blocks nearest the bottleneck (middle block first, then the lowest
resolution of the down and up paths, outwards), since a UNet's last blocks produce its output.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from .blocks import Blocks
from .schedules import Schedule

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


def ase_schedule(
    blocks: Blocks | Sequence[str],
    timesteps: Sequence[int],
    drop_length: int = 200,
    drop_step: int | None = None,
    start: int = 0,
    max_drop: int | None = None,
    block_shares: Sequence[float] | None = None,
) -> Schedule:
    """ASE's linear drop schedule at the sampler's ``timesteps`` (defaults: its released schedule)."""
    names = blocks.names if isinstance(blocks, Blocks) else list(blocks)
    shares = blocks.shares if isinstance(blocks, Blocks) else block_shares
    k = len(names)
    drop_step = max(1, round(k / 7)) if drop_step is None else drop_step
    max_drop = k if max_drop is None else max_drop
    if drop_length < 1 or drop_step < 0 or not 0 <= max_drop <= k or start < 0:
        raise ValueError("need drop_length >= 1, drop_step >= 0, 0 <= max_drop <= K and start >= 0")
    order = depth_order(names)
    table = np.ones((k, len(timesteps)), dtype=bool)
    for j, t in enumerate(timesteps):
        dropped = 0 if t < start else min(max_drop, drop_step * ((t - start) // drop_length))
        table[order[:dropped], j] = False
    settings = {"drop_length": drop_length, "drop_step": drop_step, "start": start, "max_drop": max_drop}
    return Schedule(table, names, list(timesteps), "ase", settings, None if shares is None else list(shares))


def random_schedule(
    blocks: Blocks | Sequence[str],
    timesteps: Sequence[int],
    ratio: float,
    seed: int = 0,
    block_shares: Sequence[float] | None = None,
) -> Schedule:
    """Random fixed gates (ablation A3): each block gets a random time window, ``ratio`` of cells run.

    Like a gate sigmoid(a t + b), each random block is on for one contiguous range of steps (or all
    or none); windows are drawn and trimmed until exactly round(ratio * K * T) cells run.
    """
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must lie in (0, 1], got {ratio}")
    names = blocks.names if isinstance(blocks, Blocks) else list(blocks)
    shares = blocks.shares if isinstance(blocks, Blocks) else block_shares
    k, t = len(names), len(timesteps)
    rng = np.random.default_rng(seed)
    want = round(ratio * k * t)
    # a random monotone threshold per block: on for steps >= c (opens late) or < c (closes late)
    lengths = rng.multinomial(want, rng.dirichlet(np.ones(k)))
    while (lengths > t).any():  # move the overflow of full rows to rows with room
        over = int((lengths - t).clip(min=0).sum())
        lengths = lengths.clip(max=t)
        room = np.flatnonzero(lengths < t)
        lengths[room] += rng.multinomial(over, np.full(len(room), 1 / len(room)))
    table = np.zeros((k, t), dtype=bool)
    for row, n in enumerate(lengths):
        if rng.random() < 0.5:
            table[row, :n] = True
        else:
            table[row, t - n :] = True
    settings = {"ratio": ratio, "seed": seed}
    return Schedule(
        table, names, list(timesteps), "random", settings, None if shares is None else list(shares)
    )
