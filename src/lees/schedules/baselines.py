"""Hand-made and random schedules to measure LEES against: ASE's drop schedule, random gates, and
the caching baselines DeepCache (UNets) and uniform reuse (FORA-like, any model), or uniform forecasting
(TaylorSeer-like: between full steps each block extrapolates its residual from its last runs).

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

from collections.abc import Sequence

import numpy as np

from ..engine.actions import ACTIONS, FORECAST, REUSE, RUN, SKIP
from ..engine.blocks import _UNET_NAME, Blocks, depth_order, unet_level
from .schedule import Schedule

LAST_TIMESTEP = 999  # the 1000 training timesteps' last: ASE's segments end there


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
        segment = int((min(t, LAST_TIMESTEP) - start) // drop_length)  # flow matching's float t reach 1000
        dropped = 0 if t < start else min(max_drop, drop_step * segment)
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


def cached_schedule(
    blocks: Blocks,
    timesteps: Sequence[int],
    full_steps: Sequence[int],
    always: Sequence[bool],
    source: str,
    settings: dict,
    between: int = REUSE,
    order: int = 1,
) -> Schedule:
    """Every block at ``full_steps`` (step 0 always); in between the ``always`` blocks run and the
    others ``between``: reuse their last residual, forecast it from their last runs with a polynomial
    of degree ``order`` (:mod:`lees.engine.forecast`), or skip (the identity-skip comparison)."""
    if between not in (REUSE, FORECAST, SKIP):
        raise ValueError("blocks between full steps reuse, forecast or skip")
    actions = np.full((len(blocks), len(timesteps)), between, dtype=np.int8)
    actions[np.asarray(always, dtype=bool)] = RUN
    actions[:, sorted({0, *full_steps})] = RUN
    name = next(n for n, a in ACTIONS.items() if a == between)
    settings = {**settings, "between": name, **({"order": order} if between == FORECAST else {})}
    return Schedule(
        actions, blocks.names, list(timesteps), source, settings, blocks.shares, forecast_order=order
    )


def deepcache_schedule(
    blocks: Blocks,
    timesteps: Sequence[int],
    interval: int = 3,
    levels: int = 1,
    centre: int | None = None,
    power: float = 1.4,
    between: int = REUSE,
) -> Schedule:
    """DeepCache (Ma et al., CVPR 2024) for a diffusers UNet as a block schedule.

    A full step every ``interval`` steps; in between only the outer ``levels`` resolution levels of
    the down and up paths run and every deeper block reuses its last residual. DeepCache caches the
    deep feature entering the kept skip branch; here each deeper block reuses its own residual, which
    on the same step pattern is the same set of computed blocks. With ``centre`` the full steps are
    placed non-uniformly, denser around step ``centre`` (DeepCache's non-uniform 1:N, Eq. 7, with
    exponent ``power``), keeping their count at ceil(S / interval).
    """
    names = blocks.names
    if not all(_UNET_NAME.match(n) for n in names):
        raise ValueError("DeepCache needs a UNet's down_blocks/mid_block/up_blocks; use uniform_schedule")
    if interval < 1 or levels < 0:
        raise ValueError("need interval >= 1 and levels >= 0")
    up_levels = 1 + max((unet_level(n) for n in names if n.startswith("up_blocks")), default=0)

    def outer(name: str) -> bool:
        level = unet_level(name)
        if level is None:
            return False
        return level < levels if name.startswith("down_blocks") else up_levels - 1 - level < levels

    steps = len(timesteps)
    full = list(range(0, steps, interval))
    if centre is not None:
        full = _dense_around(steps, len(full), centre, power)
    settings = {"interval": interval, "levels": levels, "centre": centre, "power": power}
    return cached_schedule(blocks, timesteps, full, [outer(n) for n in names], "deepcache", settings, between)


def _dense_around(steps: int, count: int, centre: int, power: float) -> list[int]:
    """``count`` distinct step indices in [0, steps), step 0 first, spaced as |u|^power around ``centre``."""
    if not 0 <= centre < steps or power < 1 or not 1 <= count <= steps:
        raise ValueError("need 0 <= centre < steps, power >= 1 and 1 <= count <= steps")
    while True:
        u = np.linspace(-(centre ** (1 / power)), (steps - 1 - centre) ** (1 / power), count)
        picked = sorted({0, *(int(round(centre + np.sign(v) * abs(v) ** power)) for v in u)})
        if len(picked) >= count or power <= 1:
            return picked[:count] if len(picked) >= count else list(range(0, steps, max(1, steps // count)))
        power = max(1.0, power - 0.05)


def reuse_baseline(blocks: Blocks, timesteps: Sequence[int], target: float | None = None) -> Schedule:
    """The cached baseline that spends most of a FLOP budget, the router's default start.

    Candidates: DeepCache for a diffusers UNet (the outer level always running, or no level), else
    uniform reuse (the outer pair always, or none), each at intervals 2..S; for a transformer also
    uniform reuse every 2nd step with the outer 2, 3, ... K/2 - 1 pairs always, so the start lies near
    a budget above every-2nd-step reuse. Returned: the most expensive within ``target``; without a
    target the outer level or pair at interval 2; with none within, the cheapest. (0.70 on the
    embedded model: DeepCache, outer level, every 3rd step; 0.80 on the embedded DiT at 30 steps: the
    outer 3 pairs every 2nd step, 0.751.)"""
    unet = all(_UNET_NAME.match(n) for n in blocks.names)
    candidates = [
        deepcache_schedule(blocks, timesteps, n, levels=kept)
        if unet
        else uniform_schedule(blocks, timesteps, n, kept)
        for kept in (1, 0)
        for n in range(2, max(len(timesteps), 2) + 1)
    ]
    if not unet:
        candidates += [uniform_schedule(blocks, timesteps, 2, kept) for kept in range(2, len(blocks) // 2)]
    if target is None:
        return candidates[0]
    within = [s for s in candidates if s.flop_ratio <= target + 1e-9]
    return max(within, key=lambda s: s.flop_ratio) if within else min(candidates, key=lambda s: s.flop_ratio)


def uniform_schedule(
    blocks: Blocks,
    timesteps: Sequence[int],
    interval: int = 2,
    outer: int = 0,
    between: int = REUSE,
    order: int = 1,
) -> Schedule:
    """Every block every ``interval`` steps (as FORA for transformer blocks); in between the ``outer``
    first and ``outer`` last blocks in execution order still run and the others reuse, skip, or
    forecast with a polynomial of degree ``order`` (as TaylorSeer: ``between=FORECAST``)."""
    if interval < 1 or outer < 0:
        raise ValueError("need interval >= 1 and outer >= 0")
    k = len(blocks)
    always = [i < outer or i >= k - outer for i in range(k)]
    full = range(0, len(timesteps), interval)
    settings = {"interval": interval, "outer": outer}
    return cached_schedule(blocks, timesteps, full, always, "uniform", settings, between, order)
