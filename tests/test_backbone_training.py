import json

import numpy as np
import torch
from safetensors.torch import load_file

from lees import find_blocks, load_backbone
from lees.learn.backbone_training import BackboneTrainConfig, train_backbone
from lees.models.architectures import EMBEDDED_UNET

from .test_data import write_idx

TINY = {
    "sample_size": 32,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": [8, 16],
    "layers_per_block": 1,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "norm_num_groups": 4,
    "attention_head_dim": None,
}


def _config(data, steps):
    return BackboneTrainConfig(
        data=str(data), train_steps=steps, batch_size=4, checkpoint_every=2, grid=4, unet=TINY
    )


def test_train_resume_equals_uninterrupted(tmp_path):
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 256, (16, 28, 28), dtype=np.uint8))
    folder = train_backbone(tmp_path / "a", _config(tmp_path, 4))
    train_backbone(tmp_path / "b", _config(tmp_path, 2))  # "interrupted" after 2 steps
    train_backbone(tmp_path / "b", _config(tmp_path, 4))  # resumed
    a = load_file(tmp_path / "a" / "checkpoint.safetensors")
    b = load_file(tmp_path / "b" / "checkpoint.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "b" / "checkpoint.json").read_text())["step"] == 4
    model = load_backbone(str(folder))  # a diffusers pipeline folder with unet/ and scheduler/
    assert (folder / "scheduler" / "scheduler_config.json").is_file()
    assert (tmp_path / "a" / "samples.png").stat().st_size > 0
    assert list(model.config.block_out_channels) == [8, 16]


def test_embedded_architecture_is_worth_gating():
    from diffusers import UNet2DModel

    blocks = find_blocks(UNet2DModel(**EMBEDDED_UNET))
    assert len(blocks) >= 12
    attention = {b.name.rsplit(".", 2)[0] for b in blocks if b.kind == "attention"}
    assert attention == {"down_blocks.1", "mid_block", "up_blocks.2"}  # 16x16, plus the middle
