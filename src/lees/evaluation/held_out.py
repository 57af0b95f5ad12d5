"""The held-out loss: the error of the model (or of the gated model) against its training target on
images it was not trained on, at fixed noise and timesteps.
"""

from __future__ import annotations

import torch
from diffusers import SchedulerMixin
from torch import nn
from tqdm.auto import tqdm

from ..diffusion.noising import noise_process
from ..diffusion.samplers import normalised_time
from ..engine.blocks import Blocks
from ..engine.hooks import GatedModel
from ..models.data import fit_images
from ..models.denoisers import (
    batch_labels,
    check_context,
    context_rows,
    denoise,
    model_device_checked,
    on_device,
)
from ..models.latents import denoiser_input
from ..schedules.gates import SigmoidTimeGate


@torch.no_grad()
def held_out_loss(
    backbone: nn.Module,
    blocks: Blocks,
    data: torch.Tensor,
    scheduler: SchedulerMixin,
    gate: SigmoidTimeGate | None = None,
    n: int = 2000,
    batch_size: int = 100,
    seed: int = 1234,
    device: str | torch.device | None = None,
    labels: torch.Tensor | None = None,
    autoencoder: nn.Module | None = None,
    context: torch.Tensor | None = None,
    resize: bool = False,
) -> float:
    """Mean squared error of the model's prediction against its target (its scheduler's
    ``prediction_type``) on the first ``n`` images, fixed noise and t; with ``gate``, under its hard masks.
    ``data`` is checked against the backbone as by :func:`train_gates` (``resize`` fits it)."""
    check_context(backbone, context, len(data))
    data = fit_images(data, backbone, autoencoder, resize)
    device = model_device_checked(backbone, device)
    gated = GatedModel(backbone, blocks)
    gen = torch.Generator().manual_seed(seed)
    noising = noise_process(scheduler, device)
    num_train = noising.num_train
    total, count = 0.0, 0
    for i in range(0, min(n, len(data)), batch_size):
        idx = torch.arange(i, min(n, len(data), i + batch_size))
        x0 = denoiser_input(data[idx].to(device), autoencoder)
        y = batch_labels(backbone, labels, idx, gen)
        y = None if y is None else y.to(device)
        ctx = on_device(context_rows(context, idx), device)
        t = noising.draw_timesteps(len(x0), gen)
        eps = torch.randn(x0.shape, generator=gen).to(device)
        xt, target = noising(x0, eps, t)
        if gate is None:
            pred = denoise(backbone, xt, t.to(device), y, ctx)
        else:  # one hard decision per sample: the straight-through forward value is exactly the hard mask
            g = gate(normalised_time(t, num_train).to(device))
            pred = denoise(gated, xt, t.to(device), y, ctx, mask=g, mode="ste")
        total += nn.functional.mse_loss(pred, target, reduction="sum").item()
        count += target.numel()
    return total / count


HELD_OUT_CHUNK = 100  # test images per call of held_out_loss: one tick of the progress bar


def held_out_losses(
    backbone: nn.Module,
    blocks: Blocks,
    data: torch.Tensor,
    scheduler: SchedulerMixin,
    gate: SigmoidTimeGate,
    n: int = 2000,
    device: str | torch.device | None = None,
    autoencoder: nn.Module | None = None,
    resize: bool = False,
    progress: bool = True,
) -> tuple[float, float]:
    """The held-out loss of the full and of the gated model on the first ``n`` images of ``data``,
    scored chunk by chunk (chunk k with noise seed k, the same for both models) so a progress bar can
    show the longer part of ``lees train`` on the embedded model."""
    data = data[:n]
    totals = [0.0, 0.0]
    with tqdm(total=2 * len(data), desc="held-out loss", unit="img", disable=not progress) as bar:
        for k, first in enumerate(range(0, len(data), HELD_OUT_CHUNK)):
            chunk = data[first : first + HELD_OUT_CHUNK]
            for j, g in enumerate((None, gate)):
                loss = held_out_loss(
                    backbone, blocks, chunk, scheduler, g, n=len(chunk), batch_size=len(chunk), seed=k,
                    device=device, autoencoder=autoencoder, resize=resize,
                )  # fmt: skip
                totals[j] += loss * len(chunk)
                bar.update(len(chunk))
    return totals[0] / len(data), totals[1] / len(data)
