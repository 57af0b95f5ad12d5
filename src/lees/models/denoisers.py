"""One call convention for every backbone: ``eps = denoise(model, x, t, class_labels, context)``.

diffusers denoisers differ in how they are called and what they return: a ``UNet2DModel`` takes
``(sample, timestep)`` (plus ``class_labels`` when it has a class embedding), a
``DiTTransformer2DModel`` needs ``class_labels``, a ``UNet2DConditionModel`` attends to a context
(``encoder_hidden_states``: a class or text embedding made outside the denoiser), and models that
learn their variance (DiT, ADM) return 2C channels of which the first C are the noise prediction.
Samplers, gate training and FLOP measurement all go through here, so a new backbone family is
taught to lees in one place.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
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


def context_dim(model: nn.Module) -> int | None:
    """The width of the context a cross-attention denoiser attends to; None for one that takes none."""
    if type(model).__name__ != "UNet2DConditionModel":
        return None
    dims = model.config.cross_attention_dim
    dims = set(dims) if isinstance(dims, (list, tuple)) else {dims}
    if len(dims) != 1:
        raise TypeError("a context width per block is not supported; give every block the same width")
    return int(dims.pop())


def image_seq_len(model: nn.Module, x: Any) -> int | None:
    """The latent tokens of one image in the denoiser's input ``x``, as diffusers' pipelines count them
    for a resolution's timestep shift: a packed sequence's length (Flux: B x L x C), or H x W over the
    patch size squared (SD3: B x C x H x W); None for other inputs."""
    if not isinstance(x, torch.Tensor) or x.dim() not in (3, 4):
        return None
    if x.dim() == 3:
        return int(x.shape[1])
    patch = int((getattr(model, "config", None) or {}).get("patch_size") or 1)
    return (x.shape[-2] // patch) * (x.shape[-1] // patch)


TEXT_CONFIG = ("cross_attention_dim", "joint_attention_dim", "caption_channels", "text_dim")

"""Config entries of a denoiser conditioned on text (UNet2DConditionModel and PixArt: cross attention,
SD3 and Flux: joint attention, PixArt and Sana: caption channels, Wan: text_dim)."""


def text_conditioned(model: nn.Module) -> bool:
    """Does ``model`` need prompt embeddings (``encoder_hidden_states``) at every call?"""
    config = getattr(model, "config", None) or {}
    return any(config.get(key) is not None for key in TEXT_CONFIG)


def check_context(model: nn.Module, context: torch.Tensor | None, rows: int) -> None:
    """A clear error unless ``context`` is what ``model`` attends to: (1 or ``rows``, L, width) or None
    (None: one naming how to give a text-conditioned denoiser its prompts)."""
    if context is None and text_conditioned(model):
        raise ValueError(
            f"{type(model).__name__} is conditioned on text (encoder_hidden_states): give it prompts "
            "(lees tune and lees route: --prompts) or their embeddings (lees route --conditions FILE; "
            "context= or conditions= in Python)"
        )
    dim = context_dim(model)
    if dim is None:
        if context is not None:
            raise ValueError(f"{type(model).__name__} attends to no context; drop context=")
        return
    if not isinstance(context, torch.Tensor):
        raise TypeError(f"the context must be a tensor, not {type(context).__name__}")
    if context.dim() != 3 or context.shape[0] not in (1, rows) or context.shape[2] != dim:
        raise ValueError(
            f"the context has shape {tuple(context.shape)}; {type(model).__name__} takes "
            f"(1 or {rows}, tokens, {dim})"
        )


def context_rows(context: torch.Tensor | None, idx: torch.Tensor | range) -> torch.Tensor | None:
    """The context of the items at ``idx``: one shared row, or each item's own (a checked context)."""
    if context is None or len(context) == 1:
        return context
    return context[torch.as_tensor(list(idx) if isinstance(idx, range) else idx, device=context.device)]


def condition_kwargs(
    class_labels: torch.Tensor | None, context: torch.Tensor | None, batch: int
) -> dict[str, Any]:
    """The keyword arguments that carry class labels and a context (one row is shared) into a denoiser."""
    kwargs: dict[str, Any] = {}
    if class_labels is not None:
        kwargs["class_labels"] = class_labels
    if context is not None:
        kwargs["encoder_hidden_states"] = context.expand(batch, -1, -1) if len(context) == 1 else context
    return kwargs


def example_inputs(model: nn.Module, batch: int = 1, sample_size: int | None = None) -> tuple[tuple, dict]:
    """Positional and keyword inputs of one forward call at the model's own size, for measurement."""
    c, h, w = latent_shape(model)
    if sample_size is not None:
        h = w = sample_size
    param = next(model.parameters())
    x = torch.zeros(batch, c, h, w, device=param.device, dtype=param.dtype)
    t = torch.full((batch,), 500, device=param.device, dtype=torch.long)
    labels = torch.zeros(batch, dtype=torch.long, device=param.device) if num_classes(model) else None
    dim = context_dim(model)
    context = None if dim is None else torch.zeros(1, 1, dim, device=param.device, dtype=param.dtype)
    return (x, t), condition_kwargs(labels, context, batch)


def main_output(output: Any) -> torch.Tensor:
    """The tensor a diffusers module's output carries: itself, a tuple's first, or ``.sample``."""
    if isinstance(output, tuple):
        return output[0]
    return output.sample if hasattr(output, "sample") else output


def with_main_output(template: Any, tensor: torch.Tensor) -> Any:
    """``tensor`` in the form of ``template`` (an output :func:`main_output` unpacks), other parts kept."""
    if isinstance(template, tuple):
        return (tensor, *template[1:])
    return type(template)(sample=tensor) if hasattr(template, "sample") else tensor


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of a model's parameters (fp32, fp16, bf16): what its inputs are cast to."""
    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return torch.float32


def denoise(
    model: nn.Module,
    x: torch.Tensor,
    t: torch.Tensor,
    class_labels: torch.Tensor | None = None,
    context: torch.Tensor | None = None,
    **call: Any,
) -> torch.Tensor:
    """The noise prediction of ``model`` (or of a :class:`lees.GatedModel`, with ``call`` its mask/mode).

    ``x`` and ``context`` are cast to the model's dtype (a half-precision model takes half-precision
    inputs) and the prediction back to ``x``'s, so samplers and losses keep their fp32 state.
    """
    dtype = model_dtype(model)
    context = None if context is None else context.to(dtype)
    inputs = {**condition_kwargs(class_labels, context, len(x)), **call}
    if _timestep_second(type(model)):
        out = main_output(model(x.to(dtype), t, **inputs))
    else:  # PixArt, SD3: the text comes second, the timestep by name
        out = main_output(model(x.to(dtype), timestep=t, **inputs))
    if out.shape[1] == 2 * x.shape[1]:  # learned variance (DiT, ADM): the first half is epsilon
        out = out[:, : x.shape[1]]
    return out.to(x.dtype)


@functools.cache
def _timestep_second(cls: type) -> bool:
    """Whether ``cls.forward`` takes the timestep second (UNets, DiT, a bare ``forward(x, t)``), not by
    its name ``timestep`` further on."""
    params = list(inspect.signature(cls.forward).parameters)[1:]
    return "timestep" not in params or params.index("timestep") == 1


DEFAULT_GUIDANCE = 2.0  # classifier-free guidance of a class-conditional model with a null class


def default_guidance_scale(model: nn.Module, scale: float | None = None) -> float:
    """``scale``, or its default for ``model``: :data:`DEFAULT_GUIDANCE` where it has a null class to
    guide with, else 1 (no guidance)."""
    if scale is not None:
        return scale
    return DEFAULT_GUIDANCE if null_class(model) is not None else 1.0


def null_class(model: nn.Module) -> int | None:
    """The "no class" label of classifier-free guidance (one past the last class, diffusers'
    ``LabelEmbedding`` with a guidance row, as DiT has), or None for a model without one."""
    classes = num_classes(model)
    for module in model.modules():
        table = getattr(module, "embedding_table", None)
        if classes is not None and isinstance(table, nn.Embedding) and table.num_embeddings > classes:
            return classes
    return None


def check_guidance(model: nn.Module, guidance_scale: float) -> None:
    """A clear error for guidance on a model that has no null class to contrast with."""
    if guidance_scale != 1.0 and null_class(model) is None:
        raise ValueError(
            f"guidance scale {guidance_scale} needs a class-conditional model with a null class "
            f"(classifier-free guidance); {type(model).__name__} has none: use guidance scale 1"
        )


def guided_denoise(
    model: nn.Module,
    x: torch.Tensor,
    t: torch.Tensor,
    class_labels: torch.Tensor | None = None,
    context: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    **call: Any,
) -> torch.Tensor:
    """:func:`denoise` with classifier-free guidance: at a scale other than 1, one batched call on
    [cond, null] (what caches see as one call per step, as diffusers' batched pipelines make), and
    uncond + scale (cond - uncond)."""
    if guidance_scale == 1.0:
        return denoise(model, x, t, class_labels, context, **call)
    check_guidance(model, guidance_scale)
    null = torch.full_like(class_labels, null_class(model))
    both = denoise(model, torch.cat([x, x]), torch.cat([t, t]), torch.cat([class_labels, null]), context,
                   **call)  # fmt: skip
    cond, uncond = both.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


def draw_labels(
    model: nn.Module, generators: list[torch.Generator], device: torch.device
) -> torch.Tensor | None:
    """One uniform class label per sample from that sample's generator; None if unconditional."""
    classes = num_classes(model)
    if classes is None:
        return None
    drawn = [torch.randint(classes, (1,), generator=g, device=g.device) for g in generators]
    return torch.cat(drawn).to(device)


def denoiser_of(pipe_or_model: Any) -> nn.Module:
    """The denoiser of a diffusers pipeline (``unet`` or ``transformer``), or the model itself."""
    if isinstance(pipe_or_model, nn.Module):
        return pipe_or_model
    for name in ("unet", "transformer"):
        module = getattr(pipe_or_model, name, None)
        if isinstance(module, nn.Module):
            return module
    raise TypeError(
        f"{type(pipe_or_model).__name__} is neither a model nor a pipeline with a unet or transformer"
    )


def model_device(model: nn.Module) -> torch.device:
    """The device a model's parameters are on: where lees runs it unless told otherwise."""
    return next(model.parameters()).device


def batch_labels(
    backbone: nn.Module, labels: torch.Tensor | None, idx: torch.Tensor, gen: torch.Generator
) -> torch.Tensor | None:
    """Class labels of a batch for a class-conditional backbone (uniform random when not given)."""
    classes = num_classes(backbone)
    if classes is None:
        return None
    return labels[idx] if labels is not None else torch.randint(0, classes, (len(idx),), generator=gen)


def on_device(tensor: torch.Tensor | None, device: str | torch.device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device)


def model_device_checked(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """The device lees runs ``model`` on: its own. A different ``device`` is an error, never a silent move."""
    own = model_device(model)
    if (
        device is not None
        and torch.device(device) != own
        and not (torch.device(device).type == own.type and torch.device(device).index is None)
    ):
        raise ValueError(
            f"the model is on {own}, not {device}: move it first (model.to(...)) or drop device="
        )
    return own


@contextmanager
def frozen(model: nn.Module, evaluate: bool = True) -> Iterator[nn.Module]:
    """``model`` without gradients (and, with ``evaluate``, in eval mode) for the span of the block;
    every parameter's ``requires_grad`` and every submodule's training mode are restored after."""
    flags = [p.requires_grad for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    model.requires_grad_(False)
    if evaluate:
        model.eval()
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        for m, mode in zip(model.modules(), modes, strict=True):
            m.training = mode


PROMPTS_NEEDED = (
    "{} denoises from prompts' embeddings (encoder_hidden_states): give --prompts with a pipeline folder "
    "that has its text encoders (model_index.json), or --conditions FILE (the embeddings) to lees route"
)


def needs_prompts(model: nn.Module) -> bool:
    """Whether ``model`` denoises from a text embedding it cannot make (SD's UNet, PixArt, SD3, Flux)."""
    return "encoder_hidden_states" in inspect.signature(type(model).forward).parameters


def check_prompted(model: nn.Module) -> None:
    """One clear line for a denoiser that needs prompts' embeddings, loaded without its pipeline."""
    if needs_prompts(model):
        raise ValueError(PROMPTS_NEEDED.format(type(model).__name__))
