"""Tiny random-weight text-to-image pipeline folders, built offline: SD, PixArt-alpha, SD3 and Flux.

Each is the real diffusers pipeline class with its real components (text encoders from ``transformers``,
a VAE, the denoiser, the scheduler it ships with), shrunk to a few thousand weights, seeded, and saved
with ``save_pretrained`` so that ``DiffusionPipeline.from_pretrained(folder)`` loads it as a user's
folder. The tokenizers are built from one tiny vocabulary file (``fixtures/tiny_vocab.txt``: one
character per token), CLIP's as a byte-pair vocabulary without merges and T5's as a unigram one.
Images are 16x16 (SD, PixArt, SD3: a VAE with two levels, latents of 8x8) or 16x16 (Flux, 2x2 packed).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    PixArtAlphaPipeline,
    PixArtTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

VOCAB = Path(__file__).parent / "fixtures" / "tiny_vocab.txt"
TEXT_LEN = 16  # tokens per prompt (CLIP's model_max_length)
KINDS = ("sd", "pixart", "sd3", "flux")
SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}


def _characters() -> list[str]:
    return list(VOCAB.read_text().strip())


def clip_tokenizer(folder: Path) -> CLIPTokenizer:
    """CLIP's tokenizer on the tiny vocabulary: each character a token, word-final ones marked."""
    chars = _characters()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({f"{c}</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=TEXT_LEN)


def t5_tokenizer() -> T5Tokenizer:
    """T5's tokenizer on the tiny vocabulary: a unigram model over the characters and word starts."""
    chars = _characters()
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(c, -1.0) for c in chars]
    pieces += [("\u2581" + c, -2.0) for c in chars] + [("\u2581", -3.0)]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=TEXT_LEN)


def _clip(tokenizer, width: int = 16, projection: bool = False):
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=TEXT_LEN, projection_dim=width,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def _t5(tokenizer, width: int = 16) -> T5EncoderModel:
    config = T5Config(
        vocab_size=len(tokenizer), d_model=width, d_kv=8, d_ff=2 * width, num_layers=2, num_heads=2,
        relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0,
    )  # fmt: skip
    return T5EncoderModel(config).eval()


def _vae(latent_channels: int = 4, **extra) -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=4, sample_size=16, **extra,
    ).eval()  # fmt: skip


def _sd(folder: Path) -> StableDiffusionPipeline:
    tokenizer = clip_tokenizer(folder / "_vocab")
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=8, cross_attention_dim=16,
        attention_head_dim=8,
    )  # fmt: skip
    scheduler = DDIMScheduler(**SD_BETAS, clip_sample=False, set_alpha_to_one=False)
    return StableDiffusionPipeline(
        vae=_vae(), text_encoder=_clip(tokenizer), tokenizer=tokenizer, unet=unet.eval(), scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip


def _pixart(folder: Path) -> PixArtAlphaPipeline:
    transformer = PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=3,
        cross_attention_dim=16, caption_channels=16, sample_size=8, patch_size=2, norm_num_groups=1,
    )  # fmt: skip
    scheduler = DPMSolverMultistepScheduler(**SD_BETAS)
    tokenizer = t5_tokenizer()
    return PixArtAlphaPipeline(
        tokenizer=tokenizer, text_encoder=_t5(tokenizer), vae=_vae(), transformer=transformer.eval(),
        scheduler=scheduler,
    )  # fmt: skip


def _sd3(folder: Path) -> StableDiffusion3Pipeline:
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, num_layers=3, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=32, caption_projection_dim=16, pooled_projection_dim=32, out_channels=4,
        pos_embed_max_size=8,
    )  # fmt: skip
    one, two = clip_tokenizer(folder / "_vocab"), clip_tokenizer(folder / "_vocab")
    three = t5_tokenizer()
    return StableDiffusion3Pipeline(
        transformer=transformer.eval(), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae(shift_factor=0.0), text_encoder=_clip(one, projection=True), tokenizer=one,
        text_encoder_2=_clip(two, projection=True), tokenizer_2=two, text_encoder_3=_t5(three, 32),
        tokenizer_3=three,
    )  # fmt: skip


def _flux(folder: Path) -> FluxPipeline:
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=16, pooled_projection_dim=16, axes_dims_rope=(4, 2, 2),
    )  # fmt: skip
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_image_seq_len=256, max_image_seq_len=4096, base_shift=0.5,
        max_shift=1.15,
    )  # fmt: skip
    tokenizer, tokenizer_2 = clip_tokenizer(folder / "_vocab"), t5_tokenizer()
    return FluxPipeline(
        scheduler=scheduler, vae=_vae(latent_channels=4, shift_factor=0.0), text_encoder=_clip(tokenizer),
        tokenizer=tokenizer, text_encoder_2=_t5(tokenizer_2), tokenizer_2=tokenizer_2,
        transformer=transformer.eval(),
    )  # fmt: skip


BUILDERS = {"sd": _sd, "pixart": _pixart, "sd3": _sd3, "flux": _flux}


def build_pipeline(kind: str, folder: str | Path, seed: int = 0) -> Path:
    """Save the tiny ``kind`` pipeline (one of ``KINDS``) with seeded random weights into ``folder``."""
    folder = Path(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pipe = BUILDERS[kind](folder)
    pipe.save_pretrained(folder)
    for leftover in (folder / "_vocab").glob("*"):
        leftover.unlink()
    if (folder / "_vocab").is_dir():
        (folder / "_vocab").rmdir()
    return folder
