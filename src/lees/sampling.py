"""Sampling: DDPM ancestral sampling with a schedule applied step by step.

Sample i depends only on (seed, i): each sample draws its start noise and its per-step noise from
its own generator, so batching or sharding never changes an image.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler
from torch import nn
from tqdm.auto import tqdm

from .schedules import Schedule
from .skipping import GatedModel


def _generators(seed: int, indices: range, device: torch.device) -> list[torch.Generator]:
    return [torch.Generator(device).manual_seed(seed * 1_000_003 + i) for i in indices]


def sampler_timesteps(scheduler: DDPMScheduler, steps: int) -> list[int]:
    """The timesteps a DDPM sampler with ``steps`` steps visits, in sampling order."""
    scheduler = DDPMScheduler.from_config(scheduler.config)
    scheduler.set_timesteps(steps)
    return [int(t) for t in scheduler.timesteps]


@torch.inference_mode()
def ddpm_sample(
    model: nn.Module,
    scheduler: DDPMScheduler,
    n: int,
    steps: int = 50,
    seed: int = 0,
    schedule: Schedule | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> torch.Tensor:
    """``n`` samples in [-1, 1] from ``steps`` DDPM steps; ``schedule`` says which blocks run when."""
    scheduler = DDPMScheduler.from_config(scheduler.config)
    scheduler.set_timesteps(steps, device=device)
    timesteps = [int(t) for t in scheduler.timesteps]
    gated = None
    if schedule is not None:
        if schedule.timesteps != timesteps:
            raise ValueError(
                f"the schedule is for timesteps {schedule.timesteps[:3]}..., "
                f"the sampler uses {timesteps[:3]}..."
            )
        gated = GatedModel(model, schedule.block_names)
    c, s = model.config.in_channels, model.config.sample_size
    out = []
    bar = tqdm(total=n * steps, desc="sampling", unit="img-step", disable=not progress, leave=False)
    for start in range(0, n, batch_size):
        idx = range(start, min(n, start + batch_size))
        gens = _generators(seed, idx, torch.device(device))
        x = torch.stack([torch.randn(c, s, s, generator=g, device=device) for g in gens])
        for j, t in enumerate(scheduler.timesteps):
            tt = t.expand(len(idx))
            eps = (gated(x, tt, mask=schedule.mask(j)) if gated else model(x, tt)).sample
            x = scheduler.step(eps, t, x, generator=gens).prev_sample
            bar.update(len(idx))
        out.append(x.cpu())
    bar.close()
    return torch.cat(out)
