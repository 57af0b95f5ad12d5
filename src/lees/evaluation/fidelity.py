"""Fidelity to the full model: how far a faster method's samples lie from the full model's.

Both are drawn from the same start noise and conditions, so each sample has a partner and no
dataset is needed: PSNR and SSIM per pair (images in [-1, 1], so the data range is 2), and a
Fréchet distance between the two sample sets in a feature space (Inception where its weights are
installed, else the project's classifier for 1-channel 32x32 images). SSIM is Wang et al.'s (2004):
an 11x11 Gaussian window of sigma 1.5 over the valid region, K1 = 0.01, K2 = 0.03, averaged over
the window positions and the channels, as scikit-image's ``structural_similarity`` with
``gaussian_weights=True`` computes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .bootstrap import fd_replicates, mean_replicates
from .metrics import fd, features

DATA_RANGE = 2.0  # images in [-1, 1]
SSIM_WINDOW, SSIM_SIGMA, SSIM_K = 11, 1.5, (0.01, 0.03)


def _check_pairs(images: torch.Tensor, reference: torch.Tensor) -> None:
    if images.shape != reference.shape or images.dim() != 4:
        raise ValueError(
            f"fidelity compares pairs: two (N, C, H, W) batches of one shape, got {tuple(images.shape)} "
            f"and {tuple(reference.shape)}"
        )


def psnr(images: torch.Tensor, reference: torch.Tensor, data_range: float = DATA_RANGE) -> torch.Tensor:
    """Peak signal-to-noise ratio of each image against its partner, in dB (inf where identical)."""
    _check_pairs(images, reference)
    mse = (images.double() - reference.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of each channel over the valid region."""
    c = x.shape[1]
    x = torch.nn.functional.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return torch.nn.functional.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def ssim(images: torch.Tensor, reference: torch.Tensor, data_range: float = DATA_RANGE) -> torch.Tensor:
    """Structural similarity of each image with its partner (1 where identical), Wang et al. 2004."""
    _check_pairs(images, reference)
    if min(images.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels")
    x, y = images.double(), reference.double()
    g = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA).to(x.device)
    mx, my = _filter(x, g), _filter(y, g)
    n = SSIM_WINDOW**2
    unbias = n / (n - 1)  # sample covariances, as scikit-image's use_sample_covariance
    vx = unbias * (_filter(x * x, g) - mx * mx)
    vy = unbias * (_filter(y * y, g) - my * my)
    cxy = unbias * (_filter(x * y, g) - mx * my)
    c1, c2 = ((k * data_range) ** 2 for k in SSIM_K)
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


@dataclass
class Fidelity:
    """How close a method's samples are to the full model's: means over the pairs, and the FD."""

    psnr: float
    ssim: float
    fd: float | None
    feature_space: str | None
    n: int

    def to_dict(self) -> dict[str, object]:
        return {"psnr": self.psnr, "ssim": self.ssim, "fd_full": self.fd, "features": self.feature_space,
                "n": self.n}  # fmt: skip


def fidelity(
    images: torch.Tensor,
    reference: torch.Tensor,
    extractor: Callable[[torch.Tensor], np.ndarray] | None = None,
) -> Fidelity:
    """PSNR and SSIM (means over pairs; identical pairs count 100 dB of PSNR, so the mean stays
    finite) and, with an ``extractor``, the Fréchet distance between the two sets' features."""
    p = psnr(images, reference).clamp(max=100.0)
    s = ssim(images, reference)
    distance = None
    if extractor is not None:
        distance = fd(features(extractor, images), features(extractor, reference))
    name = None if extractor is None else getattr(extractor, "name", type(extractor).__name__)
    return Fidelity(float(p.mean()), float(s.mean()), distance, name, len(images))


def paired_fidelity(
    images: torch.Tensor,
    reference: torch.Tensor,
    indices: np.ndarray,
    feats: np.ndarray | None = None,
    reference_feats: np.ndarray | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """PSNR, SSIM and (with both sets' features) the FD to ``reference``'s partners, and each on every
    paired bootstrap resample of the pairs (``indices``, one row per resample: both sets resampled with
    the same indices)."""
    per_pair = {
        "psnr": psnr(images, reference).clamp(max=100.0).numpy(),
        "ssim": ssim(images, reference).numpy(),
    }
    values = {name: float(v.mean()) for name, v in per_pair.items()}
    replicates = {name: mean_replicates(v, indices) for name, v in per_pair.items()}
    if feats is not None and reference_feats is not None:
        every = np.arange(len(feats))[None]  # all pairs once: exact, and fast for Inception's 2048-d
        values["fd"] = float(fd_replicates(feats, reference_feats, every)[0])
        replicates["fd"] = fd_replicates(feats, reference_feats, indices)
    return values, replicates
