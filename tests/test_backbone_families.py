"""Beyond the DDPM UNet: DiT, ADM-style and latent diffusion denoisers, end to end on tiny configs."""

import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    DiTTransformer2DModel,
    UNet2DConditionModel,
    UNet2DModel,
    VQModel,
)

from lees import GatedModel, Schedule, find_blocks, sample
from lees.diffusion.samplers import sampler_timesteps
from lees.evaluation.held_out import held_out_loss
from lees.learn.gate_training import GateTrainConfig, train_gates
from lees.models.architectures import DDPM_NOISE
from lees.models.backbones import build_architecture
from lees.models.denoisers import denoise, num_classes
from lees.models.latents import decode, encode


@pytest.fixture
def noise():
    return DDPMScheduler(**{**DDPM_NOISE, "clip_sample": False})


def tiny_dit(classes: int = 10) -> DiTTransformer2DModel:
    torch.manual_seed(0)
    return DiTTransformer2DModel(
        sample_size=8,
        in_channels=4,
        out_channels=8,  # learned variance, as DiT-XL/2
        patch_size=2,
        num_layers=3,
        num_attention_heads=2,
        attention_head_dim=8,
        num_embeds_ada_norm=classes,
    ).eval()


def tiny_latent_unet(in_channels: int = 4) -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=8,
    ).eval()


def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
    ).eval()


def tiny_cross_attention_unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=12,
        attention_head_dim=8,
        norm_num_groups=8,
    ).eval()


@torch.no_grad()
def test_cross_attention_unet_gates_its_spatial_transformers():
    model = tiny_cross_attention_unet()
    blocks = find_blocks(model)
    transformers = [b.name for b in blocks if b.kind == "transformer"]
    assert transformers == [
        "down_blocks.0.attentions.0",
        "mid_block.attentions.0",
        "up_blocks.1.attentions.0",
        "up_blocks.1.attentions.1",
    ]
    assert all(b.share > 0 for b in blocks)
    x, t, context = torch.randn(2, 4, 8, 8), torch.tensor([10, 900]), torch.randn(2, 3, 12)
    gated = GatedModel(model, blocks)
    full = denoise(model, x, t, context=context)
    assert not torch.allclose(denoise(model, x, t, context=torch.randn(2, 3, 12)), full)  # it attends
    assert torch.equal(denoise(gated, x, t, context=context, mask=[True] * len(blocks)), full)

    # Skipping a spatial transformer equals the model with that block's output replaced by its input.
    k = blocks.names.index("mid_block.attentions.0")
    module = dict(model.named_modules())["mid_block.attentions.0"]
    handle = module.register_forward_hook(lambda m, args, out: (args[0],))
    expected = denoise(model, x, t, context=context)
    handle.remove()
    mask = [i != k for i in range(len(blocks))]
    assert not torch.allclose(expected, full)
    assert torch.allclose(denoise(gated, x, t, context=context, mask=mask), expected, atol=1e-6)
    soft = torch.tensor(mask, dtype=torch.float32)
    assert torch.allclose(denoise(gated, x, t, context=context, mask=soft, mode="soft"), expected, atol=1e-5)


def test_cross_attention_context_is_checked(noise):
    model = tiny_cross_attention_unet()
    data = torch.randn(8, 4, 8, 8)
    with pytest.raises(ValueError, match="context="):
        sample(model, None, 2, steps=2, scheduler=noise, progress=False)
    with pytest.raises(ValueError, match=r"\(1 or 8, tokens, 12\)"):
        train_gates(
            model, data, noise, GateTrainConfig(train_steps=1, batch_size=4), context=torch.randn(8, 3, 5)
        )
    with pytest.raises(TypeError, match="must be a tensor, not list"):
        sample(model, None, 2, steps=2, scheduler=noise, progress=False, context=[[0.0] * 12])
    with pytest.raises(ValueError, match="attends to no context"):
        sample(tiny_latent_unet(), None, 2, steps=2, scheduler=noise, progress=False, context=data[:1, 0])


def test_cross_attention_end_to_end(noise):
    model = tiny_cross_attention_unet()
    data = torch.randn(24, 4, 8, 8).clamp(-1, 1)  # stands in for latents
    context = torch.randn(24, 3, 12)  # one embedding per image, e.g. of its class or caption
    config = GateTrainConfig(lam=0.5, train_steps=3, batch_size=8)
    result = train_gates(model, data, noise, config, progress=False, context=context)
    assert torch.isfinite(result.gate.a.grad).all() and result.gate.a.grad.abs().sum() > 0
    schedule = Schedule.from_gate(result.gate, result.blocks, sampler_timesteps(noise, 3))
    shared = sample(model, schedule, 5, steps=3, scheduler=noise, context=context[:1], progress=False)
    assert shared.shape == (5, 4, 8, 8) and torch.isfinite(shared).all()
    # One context per sample: sample i uses row i, however the run is batched. (Checked with the
    # cross-attention blocks running: these 3 steps of lambda=0.5 close every gate.)
    full = Schedule.full(result.blocks, sampler_timesteps(noise, 3))
    shared = sample(model, full, 5, steps=3, scheduler=noise, context=context[:1], progress=False)
    each = sample(model, full, 5, steps=3, scheduler=noise, context=context[:5], batch_size=2, progress=False)
    assert torch.allclose(each[:1], shared[:1], atol=1e-5) and not torch.allclose(each[1:], shared[1:])
    assert held_out_loss(model, result.blocks, data, noise, result.gate, n=16, context=context) > 0


def test_dit_blocks_are_its_transformer_blocks():
    model = tiny_dit()
    blocks = find_blocks(model)
    assert blocks.names == [f"transformer_blocks.{i}" for i in range(3)]
    assert all(b.kind == "identity" and b.share > 0 for b in blocks)
    assert num_classes(model) == 10
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([10, 900]), torch.tensor([1, 7])
    gated = GatedModel(model, blocks)
    with torch.no_grad():
        eps = denoise(model, x, t, y)
        assert eps.shape == x.shape  # the learned-variance half is dropped
        assert torch.allclose(denoise(gated, x, t, y, mask=[True] * 3), eps, atol=1e-6)
        assert not torch.allclose(denoise(gated, x, t, y, mask=[True, False, True]), eps)


def test_dit_end_to_end(noise):
    model = tiny_dit()
    data = torch.randn(32, 4, 8, 8).clamp(-1, 1)  # stands in for latents
    labels = torch.randint(0, 10, (32,))
    config = GateTrainConfig(lam=0.5, train_steps=4, batch_size=8, kl_every=2)
    result = train_gates(model, data, noise, config, progress=False, labels=labels)
    assert torch.isfinite(result.gate.a.grad).all() and result.gate.a.grad.abs().sum() > 0
    timesteps = sampler_timesteps(noise, 4, "ddim")
    schedule = Schedule.from_gate(result.gate, result.blocks, timesteps)
    images = sample(model, schedule, 3, steps=4, sampler="ddim", scheduler=noise, progress=False)
    assert images.shape == (3, 4, 8, 8) and torch.isfinite(images).all()
    assert held_out_loss(model, result.blocks, data, noise, result.gate, n=16, labels=labels) > 0


@pytest.mark.parametrize("vq", [False, True])
def test_latent_diffusion_end_to_end(noise, vq):
    if vq:
        torch.manual_seed(0)
        autoencoder = VQModel(
            in_channels=1,
            out_channels=1,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(8, 16),
            latent_channels=3,
            num_vq_embeddings=32,
            norm_num_groups=8,
            sample_size=16,
        ).eval()
    else:
        autoencoder = tiny_vae()
    model = tiny_latent_unet(3 if vq else 4)
    images = torch.rand(24, 1, 16, 16) * 2 - 1
    latents = encode(autoencoder, images)
    assert latents.shape == (24, 3 if vq else 4, 8, 8)
    assert decode(autoencoder, latents).shape == images.shape
    calls = []
    model.register_forward_hook(lambda m, a, o: calls.append(a[0].shape))
    config = GateTrainConfig(lam=0.1, train_steps=3, batch_size=8)
    result = train_gates(model, images, noise, config, progress=False, autoencoder=autoencoder)
    assert calls and all(shape[1:] == latents.shape[1:] for shape in calls)  # the loss is in latent space
    timesteps = sampler_timesteps(noise, 3)
    schedule = Schedule.from_gate(result.gate, result.blocks, timesteps)
    decoded = []
    original = autoencoder.decode
    autoencoder.decode = lambda z, *a, **k: (decoded.append(z.shape), original(z, *a, **k))[1]
    out = sample(
        model, schedule, 5, steps=3, scheduler=noise, batch_size=5, decoder=autoencoder, progress=False
    )
    assert out.shape == (5, 1, 16, 16) and out.abs().max() <= 1
    assert decoded == [torch.Size([5, 3 if vq else 4, 8, 8])]  # decoded once, after the last step


def test_class_labels_pass_through_and_are_per_sample(noise):
    model = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        num_class_embeds=5,
    ).eval()
    assert num_classes(model) == 5
    assert len(find_blocks(model)) == 9  # 2 down, 2 resnets + attention in the middle, 4 up
    a = sample(model, None, 4, steps=2, seed=2, scheduler=noise, batch_size=4, progress=False)
    b = sample(model, None, 4, steps=2, seed=2, scheduler=noise, batch_size=1, progress=False)
    assert torch.allclose(a, b, atol=1e-4)  # labels, like noise, come from each sample's own generator


@pytest.mark.parametrize(
    ("name", "count", "kinds"),
    [("adm-64", 57, {"resnet": 35, "attention": 22})],
)
def test_adm_architecture_blocks(name, count, kinds):
    model = build_architecture(name)
    blocks = find_blocks(model)
    assert len(blocks) == count
    assert {k: [b.kind for b in blocks].count(k) for k in kinds} == kinds
    # resblock down/up-sampling: the resampling resnets are blocks, and their shortcut resamples
    assert any("downsamplers" in b.name for b in blocks) and any("upsamplers" in b.name for b in blocks)
    assert model.config.resnet_time_scale_shift == "scale_shift"


def test_pipeline_folder_with_transformer_and_vae(tmp_path):
    from lees import load_backbone
    from lees.models.latents import load_autoencoder

    tiny_dit().save_pretrained(tmp_path / "transformer")
    tiny_vae().save_pretrained(tmp_path / "vae")
    model = load_backbone(str(tmp_path))
    assert type(model).__name__ == "DiTTransformer2DModel" and len(find_blocks(model)) == 3
    assert type(load_autoencoder(tmp_path)).__name__ == "AutoencoderKL"
    assert load_autoencoder(tmp_path / "transformer") is None


def test_cross_attention_unet_on_the_command_line(tmp_path, capsys):
    from lees.cli import main

    tiny_cross_attention_unet().save_pretrained(tmp_path / "unet")
    DDPMScheduler(**DDPM_NOISE).save_pretrained(tmp_path / "scheduler")
    assert main(["blocks", "--model", str(tmp_path)]) == 0
    assert "transformer" in capsys.readouterr().out
    argv = ["sample", "--model", str(tmp_path), "-n", "2", "--steps", "2", "--out", str(tmp_path / "s")]
    assert main(argv) == 2  # the command line has no context to give it: one clear line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "context=" in err[0]


def test_ldm_cin256_architecture_blocks():
    model = build_architecture("ldm-cin256")
    blocks = find_blocks(model)  # the derived example call carries a 512-wide context
    kinds = [b.kind for b in blocks]
    assert len(blocks) == 38 and kinds.count("resnet") == 22 and kinds.count("transformer") == 16
    assert sum(blocks.shares) < 1 and all(b.share > 0 for b in blocks)
