"""Sampling: DDPM (ancestral) or DDIM (deterministic), with a schedule applied step by step.

Sample i depends only on (seed, i): each sample draws its class label (class-conditional models),
its start noise and its per-step noise from its own generator, so batching or sharding never
changes an image (beyond float rounding). Any descending list of timesteps can replace the evenly
spaced ones (e.g. an Align-Your-Steps schedule); a gate schedule is built for whatever timesteps
the sampler visits. For latent diffusion, ``decoder`` (a diffusers ``AutoencoderKL`` or ``VQModel``)
turns the final latents into images once, outside the gated denoiser.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch import nn
from tqdm.auto import tqdm

from .backbones import DDPM_NOISE
from .denoisers import denoise, draw_labels, latent_shape
from .gates import SigmoidTimeGate, normalised_time
from .latents import decode
from .schedules import Schedule
from .skipping import GatedModel

SAMPLERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}


def _generators(seed: int, indices: range, device: torch.device) -> list[torch.Generator]:
    return [torch.Generator(device).manual_seed(seed * 1_000_003 + i) for i in indices]


def check_timesteps(timesteps: Sequence[int], num_train: int) -> list[int]:
    """A custom timestep list as ints; a clear error unless strictly descending within [0, num_train)."""
    ts = [int(t) for t in timesteps]
    if not ts:
        raise ValueError("the timestep list is empty")
    if any(t < 0 or t >= num_train for t in ts):
        raise ValueError(f"timesteps must lie in [0, {num_train}), got {ts}")
    if any(a <= b for a, b in zip(ts, ts[1:], strict=False)):
        raise ValueError(f"timesteps must be strictly descending, got {ts}")
    return ts


def make_sampler(
    noise: DDPMScheduler | None, sampler: str, steps: int, timesteps: Sequence[int] | None = None
):
    """A fresh diffusers scheduler of kind ``sampler`` on the model's noise schedule, set to its steps."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    if timesteps is None and steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    config = noise.config if noise is not None else DDPMScheduler(**DDPM_NOISE).config
    scheduler = SAMPLERS[sampler].from_config(config)
    if timesteps is None:
        scheduler.set_timesteps(steps)
    elif sampler == "ddpm":
        scheduler.set_timesteps(timesteps=check_timesteps(timesteps, scheduler.config.num_train_timesteps))
    else:  # lees steps DDIM itself (ddim_step), so any list works
        ts = check_timesteps(timesteps, scheduler.config.num_train_timesteps)
        scheduler.set_timesteps(len(ts))
        scheduler.timesteps = torch.tensor(ts)
    return scheduler


def sampler_timesteps(
    noise: DDPMScheduler | None, steps: int, sampler: str = "ddpm", timesteps: Sequence[int] | None = None
) -> list[int]:
    """The timesteps a sampler with ``steps`` steps (or the custom ``timesteps``) visits, in order."""
    return [int(t) for t in make_sampler(noise, sampler, steps, timesteps).timesteps]


def ddim_step(
    x: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, alpha_prev: torch.Tensor, clip: float | None
) -> torch.Tensor:
    """One deterministic DDIM step (eta = 0) from cumulative alpha ``alpha`` to ``alpha_prev``."""
    x0 = (x - (1 - alpha).sqrt() * eps) / alpha.sqrt()
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
    return alpha_prev.sqrt() * x0 + (1 - alpha_prev).sqrt() * eps


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
    timesteps: Sequence[int] | None = None,
    decoder: nn.Module | None = None,
    first: int = 0,
) -> torch.Tensor:
    """``n`` samples in [-1, 1]; ``schedule`` says which blocks run at each step (None: all).

    ``soft_gate`` instead mixes every block by its gate value (ablation A1: soft gating at inference;
    no block is skipped). ``noise`` is the model's training noise schedule (default: DDPM's linear).
    ``timesteps`` replaces the ``steps`` evenly spaced ones; ``decoder`` decodes latents to images.
    ``first`` is the index of the first sample: ``n`` samples from ``first`` on equal that slice of
    a larger run (how shards and resumed runs continue a sequence).
    """
    if schedule is not None and soft_gate is not None:
        raise ValueError("give a schedule or a soft gate, not both")
    scheduler = make_sampler(noise, sampler, steps, timesteps)
    visited = [int(t) for t in scheduler.timesteps]
    gated = None
    if schedule is not None:
        if schedule.timesteps != visited:
            raise ValueError(
                f"the schedule is for timesteps {schedule.timesteps[:3]}..., "
                f"the {sampler} sampler uses {visited[:3]}..."
            )
        gated = GatedModel(model, schedule.block_names)
    elif soft_gate is not None:
        from .blocks import candidate_blocks

        gated = GatedModel(model, candidate_blocks(model))
    num_train = scheduler.config.num_train_timesteps
    alphas = scheduler.alphas_cumprod.to(device)
    clip = scheduler.config.clip_sample_range if scheduler.config.clip_sample else None
    shape = latent_shape(model)
    out = []
    bar = tqdm(
        total=n * len(visited),
        desc=f"sampling ({sampler})",
        unit="img-step",
        disable=not progress,
        leave=False,
    )
    for start in range(0, n, batch_size):
        idx = range(first + start, first + min(n, start + batch_size))
        gens = _generators(seed, idx, torch.device(device))
        labels = draw_labels(model, gens, torch.device(device))
        x = torch.stack([torch.randn(shape, generator=g, device=device) for g in gens])
        for j, t in enumerate(scheduler.timesteps):
            tt = t.to(device).expand(len(idx))
            if schedule is not None:
                eps = denoise(gated, x, tt, labels, mask=schedule.mask(j))
            elif soft_gate is not None:
                g = soft_gate(normalised_time(int(t), num_train).to(device))
                eps = denoise(gated, x, tt, labels, mask=g, mode="soft")
            else:
                eps = denoise(model, x, tt, labels)
            if sampler == "ddpm":
                x = scheduler.step(eps, t, x, generator=gens).prev_sample
            else:
                prev = visited[j + 1] if j + 1 < len(visited) else None
                alpha_prev = alphas[prev] if prev is not None else torch.ones((), device=device)
                x = ddim_step(x, eps, alphas[int(t)], alpha_prev, clip)
            bar.update(len(idx))
        if decoder is not None:
            x = decode(decoder, x)
        out.append(x.cpu())
    bar.close()
    return torch.cat(out)
