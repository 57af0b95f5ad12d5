"""One example call of a denoiser, for measuring its blocks and FLOPs: per model class, the keyword
inputs its pipeline passes.

UNets and DiT take ``(sample, timestep)`` and are built by :func:`lees.models.denoisers.example_inputs`
(as is any model whose forward takes ``timestep`` second). Today's transformers take keyword inputs
that differ per class: PixArt needs ``timestep=`` (its second positional parameter is the text) and
``added_cond_kwargs``, SD3 ``pooled_projections``, Flux packed latents with ``img_ids``/``txt_ids``
(and ``guidance`` when guidance-distilled), LTX packed video tokens with their grid, Wan a video
latent, HunyuanDiT two texts, image sizes, a style and a rotary embedding, CogView4 the image sizes.
Inputs are zeros (the FLOP count does not depend on values) at the model's own ``sample_size`` where
its config has one, else at a small latent grid (``sample_size=`` sets the latent height and width).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .denoisers import example_inputs, latent_shape

TEXT_TOKENS = 8  # prompt tokens of an example call
IMAGE_SIDE = 64  # latent height and width when the config has no sample_size (512 px at 8x)
VIDEO_SIDE, VIDEO_FRAMES = 16, 3  # latent grid of an example video call


def _zeros(model: nn.Module, *shape: int) -> torch.Tensor:
    param = next(model.parameters())
    return torch.zeros(*shape, device=param.device, dtype=param.dtype)


def _timestep(model: nn.Module, batch: int, value: float = 500.0) -> torch.Tensor:
    return torch.full((batch,), value, device=next(model.parameters()).device)


def _pixart(model: nn.Module, batch: int, size: int | None) -> dict[str, Any]:
    c, h, w = latent_shape(model)
    h, w = (size, size) if size else (h, w)
    config = model.config
    added: dict[str, Any] = {"resolution": None, "aspect_ratio": None}
    if model.use_additional_conditions:  # PixArt-alpha 1024: the image size (px) and aspect ratio
        added["resolution"] = _timestep(model, batch, 8.0 * h)[:, None].repeat(1, 2)
        added["aspect_ratio"] = _timestep(model, batch, w / h)[:, None]
    text = config.caption_channels or config.cross_attention_dim
    return {
        "hidden_states": _zeros(model, batch, c, h, w),
        "encoder_hidden_states": _zeros(model, batch, TEXT_TOKENS, text),
        "timestep": _timestep(model, batch),
        "added_cond_kwargs": added,
    }


def _sd3(model: nn.Module, batch: int, size: int | None) -> dict[str, Any]:
    c, h, w = latent_shape(model)
    h, w = (size, size) if size else (h, w)
    config = model.config
    return {
        "hidden_states": _zeros(model, batch, c, h, w),
        "encoder_hidden_states": _zeros(model, batch, TEXT_TOKENS, config.joint_attention_dim),
        "pooled_projections": _zeros(model, batch, config.pooled_projection_dim),
        "timestep": _timestep(model, batch),
    }


def _flux(model: nn.Module, batch: int, size: int | None) -> dict[str, Any]:
    config = model.config
    tokens = ((size or IMAGE_SIDE) // 2) ** 2  # the pipeline packs 2x2 latent pixels into one token
    call = {
        "hidden_states": _zeros(model, batch, tokens, config.in_channels),
        "encoder_hidden_states": _zeros(model, batch, TEXT_TOKENS, config.joint_attention_dim),
        "pooled_projections": _zeros(model, batch, config.pooled_projection_dim),
        "timestep": _timestep(model, batch, 0.5),  # the pipeline passes t / 1000
        "img_ids": _zeros(model, tokens, 3),
        "txt_ids": _zeros(model, TEXT_TOKENS, 3),
    }
    if config.guidance_embeds:
        call["guidance"] = _timestep(model, batch, 3.5)
    return call


def _ltx(model: nn.Module, batch: int, size: int | None) -> dict[str, Any]:
    config = model.config
    side = size or VIDEO_SIDE
    param = next(model.parameters())
    return {
        "hidden_states": _zeros(model, batch, VIDEO_FRAMES * side * side, config.in_channels),
        "encoder_hidden_states": _zeros(model, batch, TEXT_TOKENS, config.caption_channels),
        "timestep": _timestep(model, batch),
        "encoder_attention_mask": torch.ones(batch, TEXT_TOKENS, device=param.device),
        "num_frames": VIDEO_FRAMES,
        "height": side,
        "width": side,
    }


def _wan(model: nn.Module, batch: int, size: int | None) -> dict[str, Any]:
    config = model.config
    side = size or VIDEO_SIDE
    call = {
        "hidden_states": _zeros(model, batch, config.in_channels, VIDEO_FRAMES, side, side),
        "encoder_hidden_states": _zeros(model, batch, TEXT_TOKENS, config.text_dim),
        "timestep": _timestep(model, batch).long(),
    }
    if config.image_dim is not None:  # image-to-video: the CLIP image tokens
        call["encoder_hidden_states_image"] = _zeros(model, batch, 257, config.image_dim)
    return call


def _hunyuan_dit(model: nn.Module, batch: int, size: int | None) -> dict[str, Any]:
    from diffusers.models.embeddings import get_2d_rotary_pos_embed

    c, h, w = latent_shape(model)
    h, w = (size, size) if size else (h, w)
    config = model.config
    grid = (h // config.patch_size, w // config.patch_size)
    rope = get_2d_rotary_pos_embed(model.inner_dim // model.num_heads, ((0, 0), grid), grid, output_type="pt")
    param = next(model.parameters())
    return {
        "hidden_states": _zeros(model, batch, c, h, w),
        "timestep": _timestep(model, batch),
        "encoder_hidden_states": _zeros(model, batch, config.text_len, config.cross_attention_dim),
        "text_embedding_mask": torch.ones(batch, config.text_len, device=param.device),
        "encoder_hidden_states_t5": _zeros(model, batch, config.text_len_t5, config.cross_attention_dim_t5),
        "text_embedding_mask_t5": torch.ones(batch, config.text_len_t5, device=param.device),
        "image_meta_size": _timestep(model, batch, 8.0 * h)[:, None].repeat(1, 6),
        "style": torch.zeros(batch, dtype=torch.long, device=param.device),
        "image_rotary_emb": tuple(r.to(param.device) for r in rope),
    }


def _cogview4(model: nn.Module, batch: int, size: int | None) -> dict[str, Any]:
    c, h, w = latent_shape(model)
    h, w = (size, size) if size else (h, w)
    pixels = _timestep(model, batch, 8.0 * h)[:, None].repeat(1, 2)  # the image size, as the pipeline
    return {
        "hidden_states": _zeros(model, batch, c, h, w),
        "encoder_hidden_states": _zeros(model, batch, TEXT_TOKENS, model.config.text_embed_dim),
        "timestep": _timestep(model, batch),
        "original_size": pixels,
        "target_size": pixels,
        "crop_coords": torch.zeros_like(pixels),
    }


BUILDERS: dict[str, Callable[[nn.Module, int, int | None], dict[str, Any]]] = {
    "PixArtTransformer2DModel": _pixart,
    "SD3Transformer2DModel": _sd3,
    "FluxTransformer2DModel": _flux,
    "LTXVideoTransformer3DModel": _ltx,
    "WanTransformer3DModel": _wan,
    "HunyuanDiT2DModel": _hunyuan_dit,
    "CogView4Transformer2DModel": _cogview4,
}


def example_call(model: nn.Module, batch: int = 1, sample_size: int | None = None) -> tuple[tuple, dict]:
    """Positional and keyword inputs of one forward call of ``model``, for measurement."""
    builder = BUILDERS.get(type(model).__name__)
    if builder is not None:
        return (), builder(model, batch, sample_size)
    params = list(inspect.signature(model.forward).parameters)
    if len(params) > 1 and params[1] != "timestep":  # not (sample, timestep, ...): UNets and DiT are
        raise TypeError(
            f"no example call for {type(model).__name__} (its forward takes {', '.join(params[:4])}, ...): "
            "pass example_inputs= and example_kwargs= (one call's positional and keyword inputs)"
        )
    return example_inputs(model, batch, sample_size)


def main_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """The noisy latent of a call: its first positional tensor, else ``hidden_states``/``sample``."""
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    for key in ("hidden_states", "sample"):
        if isinstance(kwargs.get(key), torch.Tensor):
            return kwargs[key]
    raise TypeError("the example call carries no input tensor (first argument, hidden_states= or sample=)")
