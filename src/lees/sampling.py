"""Sampling: DDPM (ancestral) or DDIM (deterministic), with a schedule applied step by step.

Sample i depends only on (seed, i): each sample draws its start noise and its per-step noise from
its own generator, so batching or sharding never changes an image (beyond float rounding).
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch import nn
from tqdm.auto import tqdm

from .backbones import DDPM_NOISE
from .gates import SigmoidTimeGate, normalised_time
from .schedules import Schedule
from .skipping import GatedModel

SAMPLERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}


def _generators(seed: int, indices: range, device: torch.device) -> list[torch.Generator]:
    return [torch.Generator(device).manual_seed(seed * 1_000_003 + i) for i in indices]


def make_sampler(noise: DDPMScheduler | None, sampler: str, steps: int):
    """A fresh diffusers scheduler of kind ``sampler`` on the model's noise schedule, set to ``steps``."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    config = noise.config if noise is not None else DDPMScheduler(**DDPM_NOISE).config
    scheduler = SAMPLERS[sampler].from_config(config)
    scheduler.set_timesteps(steps)
    return scheduler


def sampler_timesteps(noise: DDPMScheduler | None, steps: int, sampler: str = "ddpm") -> list[int]:
    """The timesteps a sampler with ``steps`` steps visits, in sampling order."""
    return [int(t) for t in make_sampler(noise, sampler, steps).timesteps]


@torch.inference_mode()
def sample(
    model: nn.Module,
    schedule: Schedule | None = None,
    n: int = 64,
    steps: int = 50,
    sampler: str = "ddpm",
    seed: int = 0,
    noise: DDPMScheduler | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
    soft_gate: SigmoidTimeGate | None = None,
) -> torch.Tensor:
    """``n`` samples in [-1, 1]; ``schedule`` says which blocks run at each step (None: all).

    ``soft_gate`` instead mixes every block by its gate value (ablation A1: soft gating at inference;
    no block is skipped). ``noise`` is the model's training noise schedule (default: DDPM's linear).
    """
    if schedule is not None and soft_gate is not None:
        raise ValueError("give a schedule or a soft gate, not both")
    scheduler = make_sampler(noise, sampler, steps)
    timesteps = [int(t) for t in scheduler.timesteps]
    gated = None
    if schedule is not None:
        if schedule.timesteps != timesteps:
            raise ValueError(
                f"the schedule is for timesteps {schedule.timesteps[:3]}..., "
                f"the {sampler} sampler uses {timesteps[:3]}..."
            )
        gated = GatedModel(model, schedule.block_names)
    elif soft_gate is not None:
        from .blocks import candidate_blocks

        gated = GatedModel(model, candidate_blocks(model))
    num_train = scheduler.config.num_train_timesteps
    c, s = model.config.in_channels, model.config.sample_size
    out = []
    bar = tqdm(
        total=n * steps, desc=f"sampling ({sampler})", unit="img-step", disable=not progress, leave=False
    )
    for start in range(0, n, batch_size):
        idx = range(start, min(n, start + batch_size))
        gens = _generators(seed, idx, torch.device(device))
        x = torch.stack([torch.randn(c, s, s, generator=g, device=device) for g in gens])
        for j, t in enumerate(scheduler.timesteps):
            tt = t.to(device).expand(len(idx))
            if schedule is not None:
                eps = gated(x, tt, mask=schedule.mask(j)).sample
            elif soft_gate is not None:
                g = soft_gate(normalised_time(int(t), num_train).to(device))
                eps = gated(x, tt, mask=g, mode="soft").sample
            else:
                eps = model(x, tt).sample
            if sampler == "ddpm":
                x = scheduler.step(eps, t, x, generator=gens).prev_sample
            else:
                x = scheduler.step(eps, t, x, eta=0.0).prev_sample
            bar.update(len(idx))
        out.append(x.cpu())
    bar.close()
    return torch.cat(out)
