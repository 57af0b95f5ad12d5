"""Published and embedded architectures as diffusers configs, and the noise processes they are
trained with.
"""

from __future__ import annotations

from typing import Any

# The CIFAR-10 DDPM in miniature: four resolutions, attention at 16x16, 18 skippable blocks.
EMBEDDED_UNET: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": [32, 64, 64, 64],
    "layers_per_block": 1,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "norm_num_groups": 16,
    "attention_head_dim": None,
}

# The config of google/ddpm-cifar10-32 (Ho et al. 2020: ch 128, mult 1,2,2,2, attention at 16x16).
DDPM_CIFAR10: dict[str, Any] = {
    "_class_name": "UNet2DModel",
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": [128, 256, 256, 256],
    "layers_per_block": 2,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "act_fn": "silu",
    "attention_head_dim": None,
    "center_input_sample": False,
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-6,
    "norm_num_groups": 32,
    "time_embedding_type": "positional",
}

# DiT-XL/2 (Peebles & Xie 2023) as facebook/DiT-XL-2-256 ships it: 28 blocks, 32x32x4 SD-VAE latents,
# 1000 classes, learned variance (8 output channels).
DIT_XL_2: dict[str, Any] = {
    "_class_name": "DiTTransformer2DModel",
    "sample_size": 32,
    "in_channels": 4,
    "out_channels": 8,
    "patch_size": 2,
    "num_layers": 28,
    "num_attention_heads": 16,
    "attention_head_dim": 72,
    "num_embeds_ada_norm": 1000,
    "norm_type": "ada_norm_zero",
    "activation_fn": "gelu-approximate",
    "dropout": 0.0,
    "norm_elementwise_affine": False,
    "upcast_attention": False,
}

# ADM-like (Dhariwal & Nichol 2021) at 64x64, as for CelebA 64: ch 128, mult 1,2,3,4, 3 res blocks,
# attention at 32, 16 and 8 with 64-channel heads, scale-shift norm, resblock up/down, learned sigma.
ADM_64: dict[str, Any] = {
    "_class_name": "UNet2DModel",
    "sample_size": 64,
    "in_channels": 3,
    "out_channels": 6,
    "block_out_channels": [128, 256, 384, 512],
    "layers_per_block": 3,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "attention_head_dim": 64,
    "resnet_time_scale_shift": "scale_shift",
    "downsample_type": "resnet",
    "upsample_type": "resnet",
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "norm_eps": 1e-5,
    "norm_num_groups": 32,
}

# LDM-like: the denoiser of CompVis/ldm-celebahq-256 (diffusers' UNet2DModel defaults), on the
# 64x64x3 latents of a VQ-f4 autoencoder (256x256 images).
LDM_CELEBAHQ_256: dict[str, Any] = {
    "_class_name": "UNet2DModel",
    "sample_size": 64,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": [224, 448, 672, 896],
    "layers_per_block": 2,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "attention_head_dim": 32,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "norm_eps": 1e-5,
    "norm_num_groups": 32,
}

# The paper's ImageNet 256 LDM: CompVis' class-conditional cin256-v2 denoiser (model channels 192,
# mult 1,2,3,5, 2 res blocks, one-head spatial transformers at 32, 16 and 8 attending to a 512-wide
# class embedding) on the 64x64x3 latents of a VQ-f4 autoencoder.
LDM_CIN256: dict[str, Any] = {
    "_class_name": "UNet2DConditionModel",
    "sample_size": 64,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": [192, 384, 576, 960],
    "layers_per_block": 2,
    "down_block_types": [
        "DownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
    ],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "cross_attention_dim": 512,
    "attention_head_dim": 1,  # diffusers' legacy name for the number of heads
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "norm_eps": 1e-5,
    "norm_num_groups": 32,
}

# embedded-base: the DDPM CIFAR-10 UNet at half width for 1-channel 32x32 images (Fashion-MNIST, padded):
# channels 64/128/128/128, two ResnetBlock2D per level, attention at 16x16 and in the middle, dropout 0.1
# (Ho et al.'s CIFAR-10 setting); everything else as google/ddpm-cifar10-32.
EMBEDDED_BASE: dict[str, Any] = DDPM_CIFAR10 | {
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": [64, 128, 128, 128],
    "dropout": 0.1,
}

# embedded-dit: a class-conditional DiT (Peebles & Xie 2023, adaLN-Zero) for 1-channel 32x32 images,
# 10 classes (+ the null class of classifier-free guidance), patch 4 (64 tokens), 12 blocks, width 128
# (4 heads of 32), trained with flow matching (FLOW_NOISE): the velocity has the input's one channel.
EMBEDDED_DIT: dict[str, Any] = {
    "_class_name": "DiTTransformer2DModel",
    "sample_size": 32,
    "in_channels": 1,
    "out_channels": 1,
    "patch_size": 4,
    "num_layers": 12,
    "num_attention_heads": 4,
    "attention_head_dim": 32,
    "num_embeds_ada_norm": 10,
    "norm_type": "ada_norm_zero",
    "activation_fn": "gelu-approximate",
    "dropout": 0.0,
    "norm_elementwise_affine": False,
}

ARCHITECTURES: dict[str, dict[str, Any]] = {
    "ddpm-cifar10": DDPM_CIFAR10,
    "embedded-base": EMBEDDED_BASE,
    "embedded-dit": EMBEDDED_DIT,
    "dit-xl-2": DIT_XL_2,
    "adm-64": ADM_64,
    "ldm-celebahq-256": LDM_CELEBAHQ_256,
    "ldm-cin256": LDM_CIN256,
}

# The DDPM noise schedule (Ho et al. 2020): the documented default of ``arch:`` random-weight models
# (nothing else: a trained model's comes with it) and the recipe of train_backbone.
DDPM_NOISE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "prediction_type": "epsilon",
    "clip_sample": True,
    "variance_type": "fixed_small",
}

# The flow-matching noise process (rectified flow, SD3's FlowMatchEulerDiscreteScheduler with no
# shift: 32x32 images need none): the recipe of train_backbone for transformers.
FLOW_NOISE: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 1.0}
FLOW_ARCHITECTURES = ("embedded-dit",)  # the architectures whose recipe is flow matching: arch: gets it
