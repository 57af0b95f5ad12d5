"""Loading a backbone: a published architecture, a local diffusers folder, or a hub id.

``arch:NAME`` builds a published architecture from its config with random weights (for timing
and FLOP counts, where weights do not matter); a folder or hub id loads trained weights with
diffusers' ``from_pretrained``, from safetensors only unless pickle files are explicitly allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import DDPMScheduler
from torch import nn

from .noising import MissingSchedulerError

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

# The embedded default model: a DDPM pipeline folder shipped inside the package.
EMBEDDED_DIR = Path(__file__).parent / "embedded"
# Where the deeper embedded model (arch embedded-base, trained on a GPU) is shipped once it is trained.
EMBEDDED_BASE_DIR = EMBEDDED_DIR / "base"
# How its weights are made (on a GPU; resumable), then put in place in half precision.
EMBEDDED_BASE_TRAIN = (
    "lees backbone train --arch embedded-base --data fashion-mnist --out runs/embedded-base "
    "--steps 100000 --batch-size 128 --lr 2e-4 --max-minutes 8 --device cuda --bf16"
)
EMBEDDED_BASE_EXPORT = (
    'python -c "from lees.backbone_training import export_backbone; '
    "export_backbone('runs/embedded-base/model', 'src/lees/embedded/base')\""
)

# Where a diffusers pipeline folder keeps its denoiser.
_DENOISER_SUBFOLDERS = (None, "unet", "transformer")


class BackboneError(ValueError):
    """A model spec that names nothing loadable."""


def build_architecture(name: str, seed: int = 0) -> nn.Module:
    """A published architecture with random (seeded) weights, in eval mode."""
    if name not in ARCHITECTURES:
        raise BackboneError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    config = dict(ARCHITECTURES[name])
    cls = getattr(diffusers, config.pop("_class_name"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(**config)
    return model.eval()


def _model_class(config: dict[str, Any]) -> type:
    name = config.get("_class_name")
    cls = getattr(diffusers, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.ModelMixin)):
        raise BackboneError(f"config names {name!r}, which is not a diffusers model class")
    return cls


def _local_subfolder(folder: Path) -> str | None:
    for sub in _DENOISER_SUBFOLDERS:
        if (folder / (sub or "") / "config.json").is_file():
            return sub
    raise BackboneError(f"{folder} holds no config.json, nor unet/ or transformer/ with one")


def _hub_subfolder(repo_id: str) -> str | None:
    last: Exception | None = None
    for sub in _DENOISER_SUBFOLDERS:
        try:
            diffusers.UNet2DModel.load_config(repo_id, subfolder=sub)
            return sub
        except (OSError, ValueError) as err:
            last = err
    raise BackboneError(f"could not load {repo_id!r} from the hub: {last}")


def _embedded_or_path(spec: str) -> Path:
    if spec == "embedded-base":
        if not (EMBEDDED_BASE_DIR / "unet" / "config.json").is_file():
            raise BackboneError(
                "the weights of embedded-base are not shipped yet (it needs a GPU run): train them with "
                f"`{EMBEDDED_BASE_TRAIN}`, then `{EMBEDDED_BASE_EXPORT}`"
            )
        return EMBEDDED_BASE_DIR
    if spec != "embedded":
        return Path(spec).expanduser()
    if not (EMBEDDED_DIR / "unet" / "config.json").is_file():
        raise BackboneError(f"the embedded model is missing from this install ({EMBEDDED_DIR})")
    return EMBEDDED_DIR


# Where a model or pipeline folder (or hub repo) keeps its scheduler config, in the order tried.
_SCHEDULER_SUBFOLDERS = ("scheduler", None)


def _location(spec: str) -> str:
    """Where the model ``spec`` names (``embedded``, ``embedded-base``, a folder, a hub id) is found."""
    path = _embedded_or_path(spec)
    if path.exists():
        if not path.is_dir():
            raise BackboneError(f"{spec} is a file; --model takes a diffusers folder (with config.json)")
        return str(path)
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        return spec
    raise BackboneError(
        f"unknown model {spec!r}: give embedded, embedded-base, arch:NAME "
        f"({', '.join(sorted(ARCHITECTURES))}), a local diffusers folder, or a hub id such as "
        "google/ddpm-cifar10-32"
    )


def load_noise_scheduler(spec: str) -> DDPMScheduler:
    """The noise process the model named by ``spec`` was trained with, from the scheduler config it
    comes with: ``scheduler/scheduler_config.json`` of a pipeline folder or hub repo, or
    ``scheduler_config.json`` beside a bare model's ``config.json``.

    Every value of that config is kept (betas, ``prediction_type``, ``set_alpha_to_one``,
    ``timestep_spacing``, ...; lees' samplers read them all), whatever scheduler class wrote it. A
    model without one is a :class:`MissingSchedulerError`; only ``arch:`` models, random weights
    trained with no noise process, get the documented default, DDPM's linear one (``DDPM_NOISE``).
    """
    if spec.startswith("arch:"):
        return DDPMScheduler(**DDPM_NOISE)
    location = _location(spec)
    for sub in _SCHEDULER_SUBFOLDERS:
        try:
            config = DDPMScheduler.load_config(location, subfolder=sub)
        except (OSError, ValueError):
            continue
        if "beta_schedule" not in config and config.get("trained_betas") is None:
            raise BackboneError(
                f"the scheduler config of {spec} ({config.get('_class_name')}) has no beta schedule; "
                "lees handles the DDPM family's noise process (betas and alphas_cumprod)"
            )
        return DDPMScheduler.from_config(config)
    raise MissingSchedulerError(
        f"{spec} comes with no scheduler config (scheduler/scheduler_config.json or "
        "scheduler_config.json), so its noise process is unknown: add the one it was trained with"
    )


def load_backbone(
    spec: str, device: str | torch.device = "cpu", seed: int = 0, allow_pickle: bool = False
) -> nn.Module:
    """The denoiser named by ``spec``: ``embedded``, ``embedded-base``, ``arch:NAME``, a folder or a hub id.

    Weights load from safetensors only, unless ``allow_pickle`` (then ``.bin`` files are read with
    ``torch.load(weights_only=True)`` by diffusers). Returns the model in eval mode on ``device``.
    """
    if spec.startswith("arch:"):
        return build_architecture(spec[len("arch:") :], seed).to(device)
    location = _location(spec)
    subfolder = _local_subfolder(Path(location)) if Path(location).is_dir() else _hub_subfolder(location)
    config = diffusers.UNet2DModel.load_config(location, subfolder=subfolder)
    cls = _model_class(config)
    try:
        model = cls.from_pretrained(
            location,
            subfolder=subfolder,
            use_safetensors=None if allow_pickle else True,
            low_cpu_mem_usage=False,  # the accelerate path is not needed (and not installed)
        )
    except OSError as err:
        hint = "" if allow_pickle else " (only safetensors weights are read unless pickle files are allowed)"
        raise BackboneError(f"could not load weights of {spec!r}{hint}: {err}") from None
    return model.eval().to(device)
