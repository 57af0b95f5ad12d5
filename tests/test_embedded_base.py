"""embedded-base: the half-width DDPM CIFAR-10 UNet, its training path and its (not yet shipped) weights."""

import json
import math

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from safetensors.torch import load_file

from lees import BackboneError, find_blocks, load_backbone
from lees.diffusion.noising import Noising
from lees.learn.backbone_training import BackboneTrainConfig, export_backbone, train_backbone, training_step
from lees.models import backbones
from lees.models.architectures import ARCHITECTURES, EMBEDDED_BASE

from .test_backbone_training import TINY
from .test_data import write_idx

# embedded-base's structure (two resnets per level, attention at 16x16 and in the middle, dropout 0.1)
# at a quarter of its width, so that training it on a CPU takes seconds.
NARROW = EMBEDDED_BASE | {"block_out_channels": [16, 32, 32, 32], "norm_num_groups": 8}


def test_architecture():
    model = load_backbone("arch:embedded-base")
    assert sum(p.numel() for p in model.parameters()) == 8_949_761
    assert model.config.in_channels == model.config.out_channels == 1
    assert list(model.config.block_out_channels) == [64, 128, 128, 128]
    assert model.config.layers_per_block == 2 and model.config.dropout == 0.1
    blocks = find_blocks(model)
    assert len(blocks) == 28 and sum(b.kind == "attention" for b in blocks) == 6
    assert {b.name.rsplit(".", 2)[0] for b in blocks if b.kind == "attention"} == {
        "down_blocks.1",
        "mid_block",
        "up_blocks.2",
    }
    assert blocks.total_flops == pytest.approx(3.194e9, rel=1e-3)  # at 1x1x32x32
    assert 2 * sum(p.numel() for p in model.parameters()) <= 20e6  # fits the 20 MB budget in fp16


def _data(tmp_path):
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 256, (16, 28, 28), dtype=np.uint8))
    return str(tmp_path)


def _config(data, steps, grid=0):
    return BackboneTrainConfig(
        data=data, train_steps=steps, batch_size=4, checkpoint_every=1, grid=grid, arch="embedded-base"
    )


def test_train_embedded_base_resumes(tmp_path, monkeypatch):
    monkeypatch.setitem(ARCHITECTURES, "embedded-base", NARROW)
    data = _data(tmp_path)
    folder = train_backbone(tmp_path / "a", _config(data, 2, grid=1))
    train_backbone(tmp_path / "b", _config(data, 1))  # "interrupted" after 1 step
    train_backbone(tmp_path / "b", _config(data, 2))  # resumed: the same dropout masks and batches
    a = load_file(tmp_path / "a" / "checkpoint.safetensors")
    b = load_file(tmp_path / "b" / "checkpoint.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["ema.conv_in.weight"], a["model.conv_in.weight"])  # both saved, EMA lags
    log = [json.loads(line) for line in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2] and all(math.isfinite(row["loss"]) for row in log)
    card = json.loads((folder / "training.json").read_text())
    assert card["step"] == 2 and card["device"] == "cpu" and card["config"]["arch"] == "embedded-base"
    assert (tmp_path / "a" / "samples.png").is_file() and not (tmp_path / "b" / "samples.png").exists()
    model = load_backbone(str(folder))
    assert model.config.layers_per_block == 2 and model.config.dropout == 0.1
    assert torch.equal(model.conv_in.weight, a["ema.conv_in.weight"])  # the model folder holds the EMA


def test_resume_refuses_another_architecture(tmp_path, monkeypatch):
    monkeypatch.setitem(ARCHITECTURES, "embedded-base", NARROW)
    data = _data(tmp_path)
    config = BackboneTrainConfig(data=data, train_steps=1, batch_size=2, grid=0, unet=TINY)
    train_backbone(tmp_path / "run", config)
    with pytest.raises(ValueError, match="another architecture"):
        train_backbone(tmp_path / "run", _config(data, 2))


def test_bf16_step_keeps_fp32_weights():
    """The bf16 path of a step (autocast forward, fp32 loss), run here with the CPU's autocast."""
    torch.manual_seed(0)
    model = UNet2DModel(**TINY).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, noising = torch.rand(8, 1, 32, 32) * 2 - 1, Noising(DDPMScheduler(), "cpu")
    loss = training_step(model, opt, images, noising, 4, seed=0, bf16=True)
    assert loss.dtype == torch.float32 and math.isfinite(loss.item())
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_bad_options(tmp_path):
    with pytest.raises(ValueError, match="bf16 autocast is for CUDA"):
        train_backbone(tmp_path, BackboneTrainConfig(arch="embedded-base", bf16=True), device="cpu")
    with pytest.raises(ValueError, match="cannot train architecture 'dit-xl-2'"):
        train_backbone(tmp_path, BackboneTrainConfig(arch="dit-xl-2"))
    assert not list(tmp_path.iterdir())  # refused before writing anything


def _trained_folder(tmp_path):
    torch.manual_seed(0)
    unet = UNet2DModel(**TINY)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "training.json").write_text(json.dumps({"step": 3}))
    return unet


def test_export_half_precision_round_trip(tmp_path):
    unet = _trained_folder(tmp_path)
    out = export_backbone(tmp_path / "model", tmp_path / "ship")
    stored = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    assert {v.dtype for v in stored.values()} == {torch.float16}
    assert (out / "scheduler" / "scheduler_config.json").is_file()
    assert json.loads((out / "training.json").read_text()) == {"step": 3, "weights_dtype": "float16"}
    loaded = load_backbone(str(out))
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    state = loaded.state_dict()
    assert all(torch.equal(state[k], v.half().float()) for k, v in unet.state_dict().items())
    x, t = torch.randn(2, 1, 32, 32), torch.tensor([10, 500])
    with torch.no_grad():
        assert torch.allclose(loaded(x, t).sample, unet.eval()(x, t).sample, atol=1e-2)


def test_export_keeps_fp32_over_budget(tmp_path):
    unet = _trained_folder(tmp_path)
    out = export_backbone(tmp_path / "model", tmp_path / "ship", max_mb=0.01)
    stored = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    assert {v.dtype for v in stored.values()} == {torch.float32}
    state = load_backbone(str(out)).state_dict()
    assert all(torch.equal(state[k], v) for k, v in unet.state_dict().items())


def test_embedded_base_weights_not_shipped(tmp_path, monkeypatch):
    monkeypatch.setattr(backbones, "EMBEDDED_BASE_DIR", tmp_path / "base")
    for load in (load_backbone, backbones.load_noise_scheduler):
        with pytest.raises(BackboneError, match="weights of embedded-base are not shipped yet") as err:
            load("embedded-base")
        message = str(err.value)
        assert "\n" not in message
        assert "lees backbone train --arch embedded-base" in message and "--device cuda" in message
