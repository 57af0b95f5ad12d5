"""Common corruptions at a chosen severity, after CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019).

A documented subset of the 15 corruptions of ``make_cifar_c.py`` (hendrycks/robustness), with its
CIFAR severity tables; severity 3 is the paper's setting. Implemented here in torch/PIL because the
reference code needs ImageMagick (Wand), OpenCV and scikit-image, none of which lees depends on.
Images are tensors in [-1, 1], (N, C, H, W), grayscale or RGB; randomness comes from ``seed``.

| corruption | what it does | severities 1..5 |
|---|---|---|
| gaussian_noise | x + N(0, c^2) | c = .04 .06 .08 .09 .10 |
| shot_noise | Poisson(x c) / c | c = 500 250 100 75 50 |
| impulse_noise | salt and pepper on a share c of pixels | c = .01 .02 .03 .05 .07 |
| defocus_blur | disk of radius r, then a 3x3 Gaussian of sigma s | (r,s) = .3,.4 .4,.5 .5,.6 1,.2 1.5,.1 |
| brightness | HSV value + c | c = .05 .1 .15 .2 .3 |
| contrast | (x - mean) c + mean, per image | c = .75 .5 .4 .3 .15 |
| pixelate | box-downsample to c * size and back | c = .95 .9 .85 .75 .65 |
| jpeg_compression | JPEG at quality c | c = 80 65 58 50 40 |

Values are in [0, 1] pixel units and every result is clipped to [0, 1], as in the reference.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

SEVERITY = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "jpeg_compression": (80, 65, 58, 50, 40),
}


def _gaussian_noise(x: torch.Tensor, c: float, gen: torch.Generator) -> torch.Tensor:
    return x + c * torch.randn(x.shape, generator=gen)


def _shot_noise(x: torch.Tensor, c: float, gen: torch.Generator) -> torch.Tensor:
    return torch.poisson(x * c, generator=gen) / c


def _impulse_noise(x: torch.Tensor, c: float, gen: torch.Generator) -> torch.Tensor:
    u = torch.rand(x.shape, generator=gen)
    salt = torch.rand(x.shape, generator=gen) < 0.5
    hit = u < c
    return torch.where(hit & salt, 1.0, torch.where(hit & ~salt, 0.0, x))


def _disk_kernel(radius: float, sigma: float) -> torch.Tensor:
    coords = torch.arange(-8, 9, dtype=torch.float32)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    disk = ((xx**2 + yy**2) <= radius**2).float()
    disk /= disk.sum()
    g = torch.exp(-(torch.arange(-1, 2, dtype=torch.float32) ** 2) / (2 * sigma**2))
    g = (g / g.sum()).outer(g / g.sum())
    return F.conv2d(disk[None, None], g[None, None], padding=1)[0, 0]


def _defocus_blur(x: torch.Tensor, c: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    kernel = _disk_kernel(*c)
    n, ch, h, w = x.shape
    flat = F.pad(x.reshape(n * ch, 1, h, w), (8, 8, 8, 8), mode="reflect")
    return F.conv2d(flat, kernel[None, None]).reshape(n, ch, h, w)


def _brightness(x: torch.Tensor, c: float, gen: torch.Generator) -> torch.Tensor:
    value = x.amax(dim=1, keepdim=True)  # HSV value; hue and saturation stay, so RGB scales with it
    new = (value + c).clamp(0, 1)
    return torch.where(value > 0, x * new / value.clamp_min(1e-12), new.expand_as(x))


def _contrast(x: torch.Tensor, c: float, gen: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * c + mean


def _pil_each(x: torch.Tensor, fn: Callable[[Image.Image], Image.Image]) -> torch.Tensor:
    arr = (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = []
    for img in arr:
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        res = np.asarray(fn(pil), dtype=np.float32) / 255
        out.append(res[..., None] if res.ndim == 2 else res)
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)


def _pixelate(x: torch.Tensor, c: float, gen: torch.Generator) -> torch.Tensor:
    h, w = x.shape[2:]
    small = (int(w * c), int(h * c))
    return _pil_each(x, lambda im: im.resize(small, Image.BOX).resize((w, h), Image.BOX))


def _jpeg(x: torch.Tensor, c: int, gen: torch.Generator) -> torch.Tensor:
    def compress(im: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        im.save(buffer, "JPEG", quality=c)
        return Image.open(buffer)

    return _pil_each(x, compress)


CORRUPTIONS: dict[str, Callable] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur,
    "brightness": _brightness,
    "contrast": _contrast,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg,
}


def corrupt(images: torch.Tensor, name: str, severity: int = 3, seed: int = 0) -> torch.Tensor:
    """``images`` ([-1, 1]) with corruption ``name`` at ``severity`` 1..5, clipped, back in [-1, 1]."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if severity not in range(1, 6):
        raise ValueError(f"severity must be 1..5, got {severity}")
    x = ((images.detach().cpu().float() + 1) / 2).clamp(0, 1)
    gen = torch.Generator().manual_seed(seed)
    out = CORRUPTIONS[name](x, SEVERITY[name][severity - 1], gen).clamp(0, 1)
    return out * 2 - 1
