"""One call convention for every backbone: ``eps = denoise(model, x, t, class_labels)``.

diffusers denoisers differ in how they are called and what they return: a ``UNet2DModel`` takes
``(sample, timestep)`` (plus ``class_labels`` when it has a class embedding), a
``DiTTransformer2DModel`` needs ``class_labels``, and models that learn their variance (DiT, ADM)
return 2C channels of which the first C are the noise prediction. Samplers, gate training and FLOP
measurement all go through here, so a new backbone family is taught to lees in one place.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def num_classes(model: nn.Module) -> int | None:
    """How many class labels a class-conditional denoiser takes; None for an unconditional one."""
    config = getattr(model, "config", None) or {}
    if type(model).__name__ == "DiTTransformer2DModel" or config.get("norm_type") == "ada_norm_zero":
        return config.get("num_embeds_ada_norm")
    if config.get("class_embed_type") is None and config.get("num_class_embeds"):
        return int(config["num_class_embeds"])
    return None


def latent_shape(model: nn.Module) -> tuple[int, int, int]:
    """(channels, height, width) of one input of ``model`` (a latent for latent diffusion)."""
    config = getattr(model, "config", None) or {}
    if "in_channels" not in config or not config.get("sample_size"):
        raise TypeError(
            f"cannot derive an input size for {type(model).__name__} (no in_channels/sample_size in its "
            "config); pass example_inputs="
        )
    size = config["sample_size"]
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return int(config["in_channels"]), int(height), int(width)


def class_kwargs(class_labels: torch.Tensor | None) -> dict[str, Any]:
    """The keyword arguments that carry class labels into a diffusers denoiser (none if unconditional)."""
    return {} if class_labels is None else {"class_labels": class_labels}


def example_inputs(model: nn.Module, batch: int = 1, sample_size: int | None = None) -> tuple[tuple, dict]:
    """Positional and keyword inputs of one forward call at the model's own size, for measurement."""
    c, h, w = latent_shape(model)
    if sample_size is not None:
        h = w = sample_size
    param = next(model.parameters())
    x = torch.zeros(batch, c, h, w, device=param.device, dtype=param.dtype)
    t = torch.full((batch,), 500, device=param.device, dtype=torch.long)
    labels = torch.zeros(batch, dtype=torch.long, device=param.device) if num_classes(model) else None
    return (x, t), class_kwargs(labels)


def denoise(
    model: nn.Module, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None, **call: Any
) -> torch.Tensor:
    """The noise prediction of ``model`` (or of a :class:`lees.GatedModel`, with ``call`` its mask/mode)."""
    out = model(x, t, **class_kwargs(class_labels), **call)
    if hasattr(out, "sample"):
        out = out.sample
    elif isinstance(out, tuple):
        out = out[0]
    if out.shape[1] == 2 * x.shape[1]:  # learned variance (DiT, ADM): the first half is epsilon
        out = out[:, : x.shape[1]]
    return out


def draw_labels(
    model: nn.Module, generators: list[torch.Generator], device: torch.device
) -> torch.Tensor | None:
    """One uniform class label per sample from that sample's generator; None if unconditional."""
    classes = num_classes(model)
    if classes is None:
        return None
    drawn = [torch.randint(classes, (1,), generator=g, device=g.device) for g in generators]
    return torch.cat(drawn).to(device)
