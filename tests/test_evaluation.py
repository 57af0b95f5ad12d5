import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from lees import find_blocks
from lees.backbones import DDPM_NOISE
from lees.evaluation import ase_grid, score_schedule
from lees.sampling import sampler_timesteps


def pixels(images: torch.Tensor) -> np.ndarray:
    """A stand-in feature extractor: 6 pooled pixel values."""
    return torch.nn.functional.adaptive_avg_pool2d(images, (2, 3)).flatten(1).double().numpy()


def test_score_and_grid(tiny):
    noise = DDPMScheduler(**DDPM_NOISE)
    blocks = find_blocks(tiny)
    reference = pixels(torch.rand(64, 1, 16, 16) * 2 - 1)
    score = score_schedule(tiny, noise, None, pixels, reference, n=8, steps=3)
    assert (
        score.fd > 0 and score.seconds > 0 and score.seconds_per_100 == pytest.approx(100 * score.seconds / 8)
    )
    timesteps = sampler_timesteps(noise, 3)
    grid = ase_grid(
        tiny, noise, blocks, timesteps, pixels, reference, budget=0.9, drop_lengths=(200, 400), starts=(0,),
        n=8, progress=False,
    )  # fmt: skip
    assert grid.rows and all(r["flop_ratio"] <= 0.9 for r in grid.rows)
    assert grid.best.flop_ratio <= 0.9 and grid.seconds > 0
    best = min(grid.rows, key=lambda r: r["fd"])
    assert grid.best.settings["drop_length"] == best["drop_length"] and grid.best.source == "ase"
    with pytest.raises(ValueError, match="no ASE schedule"):
        ase_grid(tiny, noise, blocks, timesteps, pixels, reference, budget=0.01, n=8, progress=False)
