"""The router's teacher drawn through the user's own pipeline call (prompts in, not embeddings).

:func:`pipeline_teacher` runs ``pipe(prompt=...)`` with every block running and keeps each denoiser
call as the pipeline made it: its input latents (guidance's rows included: a batched pipeline calls on
[uncond, cond], and both halves are rows the table routes, as ``lees.enable`` routes them at sampling
time), its timestep, the prompts' embeddings and other inputs it got (captured at the denoiser's input
by a hook), its output and every block's residual. The router then learns at those inputs what the
pipeline will feed the denoiser. Each row of a call is one trajectory to the router: a guided run of
``n`` prompts gives ``2 n``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..engine.actions import RUN
from ..engine.hooks import Engine, ReuseCache
from ..models.denoisers import main_output
from ..sampling.pipeline_call import Call, PipelineSource, quiet_progress, recorded_calls
from .router import Trajectory, _stacked, _streams

BATCH = 8  # prompts per pipeline call
FIRST = 500_000  # the teacher's samples are i = FIRST, FIRST + 1, ...: other noise than a tune's samples


def pipeline_teacher(
    source: PipelineSource, steps: int, n: int, seed: int = 0
) -> Callable[[Engine], Trajectory]:
    """The router's ``teacher``: ``n`` samples through ``source``'s call at ``steps`` (samples ``FIRST``
    on, so a tune's router learns on other start noise than its samples are scored on), every call kept."""

    @torch.no_grad()
    def draw(engine: Engine) -> Trajectory:
        starts = range(FIRST, FIRST + n, BATCH)
        batches = [_batch(engine, source, range(s, min(FIRST + n, s + BATCH)), steps, seed) for s in starts]
        calls = [[c for c, _ in batch] for batch in batches]
        caches = [[r for _, r in batch] for batch in batches]
        grid = torch.as_tensor(source.pipe.scheduler.timesteps).tolist()
        if len(calls[0]) != len(grid):
            raise ValueError(
                f"{type(source.pipe).__name__} called its denoiser {len(calls[0])} times for {len(grid)} "
                "timesteps (guidance split into a call per branch): the router draws batched or unguided "
                "runs only; give --conditions for a hand loop"
            )
        states = torch.stack([torch.cat([b[j].sample.cpu() for b in calls]) for j in range(len(grid))])
        targets = torch.stack([torch.cat([_output(b[j]) for b in calls]) for j in range(len(grid))])
        residuals = [
            _stacked([_cat([cache[j][k] for cache in caches]) for j in range(len(grid))])
            for k in range(engine.num_blocks)
        ]
        per_row, shared = _conditions([b[0] for b in calls])
        timesteps = [c.timestep for c in calls[0]]
        return Trajectory(states, states, targets, residuals, timesteps, per_row, states[-1], [],
                          shared=shared, grid=grid)  # fmt: skip

    return draw


def _batch(
    engine: Engine, source: PipelineSource, idx: range, steps: int, seed: int
) -> list[tuple[Call, list]]:
    """One pipeline call on samples ``idx``, all blocks running: each denoiser call with the residuals."""
    cache = ReuseCache(engine.num_blocks)
    kept: list[list] = []
    keep = lambda call: kept.append([_streams(r, torch.Tensor.cpu) for r in cache.residuals])  # noqa: E731
    kwargs = source.prompting.call_kwargs(source.pipe, idx, steps, seed)
    everything = engine.deciding([RUN] * engine.num_blocks, "hard", cache)
    with quiet_progress(source.pipe), everything, recorded_calls(engine.model, keep) as calls:
        source.pipe(**kwargs)
    return list(zip(calls, kept, strict=True))


def _output(call: Call) -> torch.Tensor:
    """The call's prediction as lees' ``denoise`` returns it (a learned variance's second half dropped)."""
    out, x = main_output(call.output), call.sample
    return (out[:, : x.shape[1]] if out.dim() == 4 and out.shape[1] == 2 * x.shape[1] else out).cpu()


def _cat(slots: list[Any]) -> Any:
    """One block's cache slots of one call over the batches, as one slot of all their rows."""
    if isinstance(slots[0], torch.Tensor):
        return torch.cat(slots)
    return tuple(
        None if s[0] is None else torch.cat([x[i] for x in slots])
        for i, s in enumerate(zip(*slots, strict=True))
    )


def _conditions(firsts: list[Call]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The denoiser's other inputs from each batch's first call: those with one row per row of the
    latents (the prompts' embeddings and masks, also inside a dict), over the batches; and the rest,
    which every row takes as they are (Flux's position ids, PixArt's empty micro-conditions)."""
    per_row, shared = {}, {}
    for name, value in list(firsts[0].inputs.items())[1:]:
        if name == "timestep":
            continue
        if all(_is_rows(c.inputs[name], len(c.sample)) for c in firsts):
            per_row[name] = _cat_rows([c.inputs[name] for c in firsts])
        else:
            shared[name] = value
    return per_row, shared


def _is_rows(value: Any, rows: int) -> bool:
    if isinstance(value, dict):
        return bool(value) and all(v is None or _is_rows(v, rows) for v in value.values())
    return isinstance(value, torch.Tensor) and value.dim() >= 1 and len(value) == rows


def _cat_rows(values: list[Any]) -> Any:
    if isinstance(values[0], dict):
        return {k: None if values[0][k] is None else _cat_rows([v[k] for v in values]) for k in values[0]}
    return torch.cat(values)
