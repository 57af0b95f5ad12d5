"""A diffusers pipeline for class-conditional flow-matching transformers (the embedded DiT).

diffusers' ``DiTPipeline`` samples DDPM latents through a VAE; a class-conditional flow-matching
model in pixel space needs the same loop with a flow-matching scheduler and no decoder. This is
that loop, written the way diffusers writes its pipelines (``register_modules``, ``progress_bar``,
``save_pretrained`` / ``from_pretrained``), so ``lees.enable(pipe, ...)`` is used on it exactly as
on any pipeline. Guidance is batched (one call on [cond, uncond]) by default, or split (two calls
per step inside ``transformer.cache_context("cond")`` / ``("uncond")``, as Flux and Wan do).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from ..utils.diffusers_private import CacheContext, _set_cache_context

GUIDANCE_MODES = ("batched", "split")


@contextmanager
def cache_context(model: torch.nn.Module, name: str) -> Iterator[None]:
    """``model.cache_context(name)``, also for diffusers models without ``CacheMixin`` (DiT, UNets):
    the cache hooks under ``model`` (diffusers' and lees') keep their state per context name."""
    if hasattr(model, "cache_context"):
        with model.cache_context(name):
            yield
        return
    _set_cache_context(model, CacheContext(name))
    try:
        yield
    finally:
        _set_cache_context(model, None)


class ClassFlowPipeline(DiffusionPipeline):
    """Class-conditional sampling with classifier-free guidance from a flow-matching transformer.

    The transformer takes ``(x, timestep, class_labels=...)`` and predicts the velocity eps - x0;
    the label ``num_classes`` (one past the last class) is the null class guidance contrasts with.
    """

    model_cpu_offload_seq = "transformer"

    def __init__(self, transformer, scheduler) -> None:
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler)

    @property
    def null_class(self) -> int:
        """The label of "no class" (the transformer's last embedding row)."""
        return int(self.transformer.config.num_embeds_ada_norm)

    def velocity(
        self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, guidance_scale: float, guidance: str
    ) -> torch.Tensor:
        """The guided velocity at ``x`` (one model call, two with split guidance or none without)."""
        n = len(x)
        null = torch.full_like(labels, self.null_class)
        if guidance_scale == 1.0:
            return self.transformer(x, t.expand(n), class_labels=labels).sample
        if guidance == "batched":
            both = self.transformer(
                torch.cat([x, x]), t.expand(2 * n), class_labels=torch.cat([labels, null])
            ).sample
            cond, uncond = both.chunk(2)
        else:
            with cache_context(self.transformer, "cond"):
                cond = self.transformer(x, t.expand(n), class_labels=labels).sample
            with cache_context(self.transformer, "uncond"):
                uncond = self.transformer(x, t.expand(n), class_labels=null).sample
        return uncond + guidance_scale * (cond - uncond)

    @torch.no_grad()
    def __call__(
        self,
        class_labels: Sequence[int] | torch.Tensor,
        guidance_scale: float = 2.0,
        num_inference_steps: int = 50,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        guidance: str = "batched",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Samples of the given classes.

        Args:
            class_labels: one class index per sample, each in [0, num_classes).
            guidance_scale: classifier-free guidance weight; 1 runs the conditional model alone.
            num_inference_steps: the scheduler's number of steps.
            generator: seeds the start noise (one generator, or one per sample).
            latents: the start noise itself, (N, C, H, W), instead of drawing it.
            output_type: ``pil``, ``np`` (N, H, W, C in [0, 1]) or ``pt`` (N, C, H, W in [0, 1]).
            guidance: ``batched`` (one call on [cond, uncond]) or ``split`` (two calls per step,
                each inside its own ``cache_context``).
            return_dict: an ``ImagePipelineOutput`` if true, else a 1-tuple.

        Example:
            >>> pipe = ClassFlowPipeline.from_pretrained(lees.EMBEDDED_DIT_DIR)  # doctest: +SKIP
            >>> pipe([0, 1, 2], num_inference_steps=20, output_type="pt").images.shape  # doctest: +SKIP
            torch.Size([3, 1, 32, 32])
        """
        if guidance not in GUIDANCE_MODES:
            raise ValueError(f"guidance must be one of {', '.join(GUIDANCE_MODES)}, not {guidance!r}")
        device = self._execution_device
        labels = torch.as_tensor(class_labels, dtype=torch.long, device=device).reshape(-1)
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < self.null_class:
            raise ValueError(f"class labels must lie in [0, {self.null_class}), got {labels.tolist()}")
        config = self.transformer.config
        shape = (len(labels), config.in_channels, config.sample_size, config.sample_size)
        dtype = self.transformer.dtype
        x = (
            latents.to(device, dtype)
            if latents is not None
            else randn_tensor(shape, generator, device, dtype)
        )
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        for t in self.progress_bar(self.scheduler.timesteps):
            v = self.velocity(x, t, labels, guidance_scale, guidance)
            x = self.scheduler.step(v, t, x).prev_sample
        images = _postprocess(x.float(), output_type)
        return ImagePipelineOutput(images=images) if return_dict else (images,)


def _postprocess(x: torch.Tensor, output_type: str) -> torch.Tensor | np.ndarray | list[Image.Image]:
    images = (x / 2 + 0.5).clamp(0, 1)
    if output_type == "pt":
        return images
    arr = images.permute(0, 2, 3, 1).cpu().numpy()
    if output_type == "np":
        return arr
    if output_type == "pil":
        pixels = (arr * 255).round().astype(np.uint8)
        return [Image.fromarray(p[..., 0] if p.shape[-1] == 1 else p) for p in pixels]
    raise ValueError(f"output_type must be pil, np or pt, not {output_type!r}")
