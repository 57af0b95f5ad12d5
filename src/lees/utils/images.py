"""Turning sample tensors into pictures people can look at."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .files import atomic_write_bytes


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] to (N, H, W, C) uint8."""
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def image_format(path: str | Path) -> str:
    """The PIL format a picture named ``path`` is written in, from its suffix; ValueError if none can."""
    suffix = Path(path).suffix.lower()
    extensions = Image.registered_extensions()
    if extensions.get(suffix) not in Image.SAVE:
        raise ValueError(
            f"cannot write a picture named {Path(path).name}: use a suffix such as .png, .jpg or .webp"
        )
    return extensions[suffix]


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 2) -> Path:
    """Save samples as one grid (2 px gaps, upscaled ``scale`` times), written atomically.

    The format follows the suffix of ``path`` (``.png``, ``.jpg``, ...; see :func:`image_format`).
    """
    arr = to_uint8(images)
    n, h, w, c = arr.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + 2) + 2, nrow * (w + 2) + 2, c), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + col * (w + 2) : 2 + col * (w + 2) + w] = arr[i]
    image = Image.fromarray(grid[..., 0] if c == 1 else grid)
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format(path))
    return atomic_write_bytes(path, buffer.getvalue())


def save_samples(images: torch.Tensor, grid: str | Path) -> tuple[Path, Path]:
    """The samples as a picture grid at ``grid`` and, beside it, every sample as uint8 in an ``.npz``."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=to_uint8(images))
    return save_grid(images, grid), atomic_write_bytes(Path(grid).with_suffix(".npz"), buffer.getvalue())
