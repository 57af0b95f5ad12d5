"""Shared fixtures: small diffusers UNets that run in milliseconds on a CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from lees.models.architectures import DDPM_NOISE
from lees.models.backbones import build_architecture


def tiny_unet(seed: int = 0) -> UNet2DModel:
    """Two resolutions, attention in both paths, channel changes on the way down and up."""
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=16,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=8,
    ).eval()


@pytest.fixture
def tiny() -> UNet2DModel:
    return tiny_unet()


@pytest.fixture(scope="session")
def cifar_ddpm() -> UNet2DModel:
    """The google/ddpm-cifar10-32 architecture with random weights."""
    return build_architecture("ddpm-cifar10")


@pytest.fixture
def folder(tmp_path) -> str:
    """A diffusers model folder holding the tiny UNet, with the scheduler config it was trained with."""
    tiny_unet().save_pretrained(tmp_path / "unet")
    DDPMScheduler(**DDPM_NOISE).save_pretrained(tmp_path / "unet")
    return str(tmp_path / "unet")


@pytest.fixture
def idx_data(tmp_path) -> str:
    """A folder of idx files (32 train, 8 test images of random pixels), like MNIST's."""
    from .test_data import write_idx

    rng = np.random.default_rng(0)
    for split, n in (("train", 32), ("t10k", 8)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
    return str(tmp_path)
