"""Latent diffusion: the autoencoder around a denoiser that works in latent space.

Gates cover the denoiser only: images are encoded once per training batch, and latents are decoded
once at the end of sampling. ``AutoencoderKL`` latents are scaled by the config's
``scaling_factor`` (as Stable Diffusion's pipelines do); ``VQModel`` latents are used unscaled (as
diffusers' ``LDMPipeline`` does).
"""

from __future__ import annotations

from pathlib import Path

import diffusers
import torch
from torch import nn

from .denoisers import (
    model_dtype,
)

AUTOENCODER_SUBFOLDERS = ("vae", "vqvae")

AUTOENCODERS = ("AutoencoderKL", "VQModel")


def _scale(autoencoder: nn.Module) -> float:
    if type(autoencoder).__name__ == "VQModel":
        return 1.0
    return float(getattr(autoencoder.config, "scaling_factor", 1.0) or 1.0)


@torch.no_grad()
def encode(autoencoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Latents of ``images`` in [-1, 1] (the posterior mean for a KL autoencoder), scaled for the denoiser;
    a half-precision autoencoder gets its own dtype, the latents come back in the images' dtype."""
    out = autoencoder.encode(images.to(model_dtype(autoencoder)))
    latents = out.latent_dist.mean if hasattr(out, "latent_dist") else out.latents
    return latents.to(images.dtype) * _scale(autoencoder)


@torch.no_grad()
def decode(autoencoder: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] from the denoiser's latents."""
    images = autoencoder.decode((latents / _scale(autoencoder)).to(model_dtype(autoencoder))).sample
    return images.to(latents.dtype).clamp(-1, 1)


def load_autoencoder(folder: str | Path, device: str | torch.device = "cpu") -> nn.Module | None:
    """The ``vae/`` or ``vqvae/`` autoencoder of a local pipeline folder (safetensors), else None."""
    folder = Path(folder)
    for sub in AUTOENCODER_SUBFOLDERS:
        if (folder / sub / "config.json").is_file():
            config = diffusers.AutoencoderKL.load_config(folder, subfolder=sub)
            if config.get("_class_name") not in AUTOENCODERS:
                found = config.get("_class_name")
                raise ValueError(f"{folder / sub} holds a {found}, not one of {', '.join(AUTOENCODERS)}")
            cls = getattr(diffusers, config["_class_name"])
            model = cls.from_pretrained(folder, subfolder=sub, use_safetensors=True, low_cpu_mem_usage=False)
            return model.eval().to(device)
    return None


def denoiser_input(x0: torch.Tensor, autoencoder: nn.Module | None) -> torch.Tensor:
    """The denoiser's clean input: the images, or their latents for latent diffusion."""
    return x0 if autoencoder is None else encode(autoencoder, x0)
