"""Tiny seeded model families and the denoising loops their diffusers pipelines run.

For the lees contract test (every family x scheduler). Imports only torch and diffusers (0.42.1), never
lees. Each :class:`Family` builds a tiny random model (2-4 blocks, width 16-32, a few tokens or pixels,
milliseconds per call on a CPU) and runs the loop of the family's real pipeline: the same start noise
(one seeded generator, as the pipelines use it), ``set_timesteps`` arguments, model call (positional or
keyword arguments, timestep shape, dtype and scale), guidance style (batched on a doubled batch, or split
into two calls under ``cache_context("cond")`` / ``("uncond")``) and ``scheduler.step``. Each loop cites
the pipeline lines it mirrors (paths relative to ``diffusers/pipelines/``).

Guidance styles and the calls per scheduler timestep (``Family.step_contexts``):

=================  ============================  ========================================
family             guidance (scale > 1)          cache context per call
=================  ============================  ========================================
unet2d             none (unconditional)          none
sd (UNet2DCond)    batched [uncond, cond]        none
dit, dit-sigma     batched [cond, uncond]        none
pixart             batched [uncond, cond]        none
sd3                batched [uncond, cond]        none
flux               split, true CFG, t / 1000     "cond", then "uncond"
ltx                batched [uncond, cond]        "cond_uncond"
wan                split                         "cond", then "uncond" (with step_index, sigma)
=================  ============================  ========================================

Block counting: lees replaces block forwards through diffusers' ``HookRegistry``, and an ``nn.Module``
forward pre-hook on the block itself still fires when such a hook skips or reuses the block. So
:class:`BlockCounter` hooks a submodule *inside* each block that the block body always calls exactly
once (``COUNTER_SUBMODULE``): a skipped or reused block is not counted.

Left out: HunyuanDiT, QwenImage, CogView4 and other transformers (every asked-for class builds tiny);
Wan 2.2's second (low-noise) transformer and SD3's skip-layer-guidance third call. Schedulers whose step
draws noise (DDPM, Euler-ancestral) only go with pipelines that pass the generator to ``step`` (UNets,
PixArt), so every loop is reproducible from its seed. PNDM with PRK warm-up needs >= 4 steps (``steps_for``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DiTTransformer2DModel,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    FluxTransformer2DModel,
    HeunDiscreteScheduler,
    LTXVideoTransformer3DModel,
    PixArtTransformer2DModel,
    PNDMScheduler,
    SD3Transformer2DModel,
    UNet2DConditionModel,
    UNet2DModel,
    UniPCMultistepScheduler,
    WanTransformer3DModel,
)
from diffusers.hooks.hooks import (
    BaseState,
    CacheContext,
    HookRegistry,
    ModelHook,
    StateManager,
    _set_cache_context,
)
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

Scheduler = object  # a diffusers scheduler (SchedulerMixin); kept loose for the type hints
Conditions = dict[str, torch.Tensor]

TEXT_LEN = 6  # prompt tokens
TEXT_DIM = 16  # prompt embedding width
POOLED_DIM = 16  # pooled prompt projection width (SD3, Flux)
NUM_CLASSES = 10  # DiT classes; the null (unconditional) class is NUM_CLASSES


# ----------------------------------------------------------------------------------------------------------
# Block counting and cache contexts
# ----------------------------------------------------------------------------------------------------------

# Block class -> the submodule its forward always calls exactly once (so "this block's body ran").
COUNTER_SUBMODULE = {
    "BasicTransformerBlock": "norm1",  # DiT (AdaLayerNormZero), PixArt (ada_norm_single: LayerNorm)
    "JointTransformerBlock": "norm1",  # SD3 / SD3.5 (AdaLayerNormZero / SD35AdaLayerNormZeroX)
    "FluxTransformerBlock": "norm1",  # Flux double-stream
    "FluxSingleTransformerBlock": "norm",  # Flux single-stream
    "LTXVideoTransformerBlock": "norm1",
    "WanTransformerBlock": "norm1",
    "ResnetBlock2D": "norm1",  # UNets
    "Attention": "to_q",  # UNet residual attention (AttnProcessor2_0 projects q first)
    "Transformer2DModel": "norm",  # UNet spatial transformer (GroupNorm before proj_in)
}


def counter_submodule(block: nn.Module) -> str:
    """The name (relative to ``block``) of the submodule whose pre-hook counts ``block``'s body runs."""
    try:
        return COUNTER_SUBMODULE[type(block).__name__]
    except KeyError:
        raise TypeError(f"no counter submodule known for {type(block).__name__}") from None


class BlockCounter(dict):
    """``{block name: times its body ran}``, counted live by pre-hooks inside each block.

    Use as a context manager (the hooks are removed on exit), or call :meth:`remove`.
    """

    def __init__(self, model: nn.Module, names: Sequence[str]):
        super().__init__((name, 0) for name in names)
        self._handles = []
        for name in names:
            block = model.get_submodule(name)
            inner = block.get_submodule(counter_submodule(block))
            self._handles.append(inner.register_forward_pre_hook(self._hook(name)))

    def _hook(self, name: str):
        def hook(module, args):
            self[name] += 1

        return hook

    def reset(self) -> None:
        for name in self:
            self[name] = 0

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> BlockCounter:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def count_block_calls(model: nn.Module, names: Sequence[str] | None = None) -> BlockCounter:
    """Count how often each block's body runs (all of ``block_names(model)`` by default)."""
    return BlockCounter(model, block_names(model) if names is None else names)


def block_names(model: nn.Module) -> list[str]:
    """The model's repeated blocks, in execution order.

    Transformers: ``transformer_blocks.i`` (DiT, PixArt, SD3, LTX), then ``single_transformer_blocks.i``
    (Flux), or ``blocks.i`` (Wan). UNets have no repeated transformer blocks; as lees' UNet adapter
    does, their blocks are every ``ResnetBlock2D``, residual ``Attention`` and ``Transformer2DModel``
    (module order).
    """
    if isinstance(model, UNet2DModel | UNet2DConditionModel):
        return [name for name, module in model.named_modules() if _is_unet_block(module)]
    names = []
    for attr in ("transformer_blocks", "single_transformer_blocks", "blocks"):
        blocks = getattr(model, attr, None)
        if isinstance(blocks, nn.ModuleList):
            names += [f"{attr}.{i}" for i in range(len(blocks))]
    if not names:
        raise TypeError(f"no repeated blocks found in {type(model).__name__}")
    return names


def _is_unet_block(module: nn.Module) -> bool:
    kind = type(module).__name__
    if kind == "Attention":
        return bool(getattr(module, "residual_connection", False))
    return kind in ("ResnetBlock2D", "Transformer2DModel")


@contextmanager
def cache_context(model: nn.Module, name: str, **kwargs) -> Iterator[None]:
    """``model.cache_context(name, **kwargs)``; for a model without ``CacheMixin``, the same thing done
    with ``_set_cache_context`` (what ``CacheMixin.cache_context`` does, ``models/cache_utils.py``)."""
    if hasattr(model, "cache_context"):
        with model.cache_context(name, **kwargs):
            yield
        return
    _set_cache_context(model, CacheContext(name, **kwargs))
    try:
        yield
    finally:
        _set_cache_context(model, None)


class _NoState(BaseState):
    def reset(self, *args, **kwargs) -> None:
        pass


class _ContextRecorder(ModelHook):
    """A stateful root hook: records the cache context each denoiser call runs in (None outside one)."""

    _is_stateful = True

    def __init__(self, seen: list):
        super().__init__()
        self.state_manager = StateManager(_NoState)
        self.seen = seen

    def pre_forward(self, module, *args, **kwargs):
        self.seen.append(self.state_manager._context)
        return args, kwargs

    def reset_state(self, module):
        self.state_manager.reset()
        return module


CONTEXT_RECORDER = "families_context_recorder"


@contextmanager
def record_contexts(model: nn.Module) -> Iterator[list[CacheContext | None]]:
    """Yield a list that receives the ``CacheContext`` (or None) of every call of ``model``."""
    seen: list[CacheContext | None] = []
    registry = HookRegistry.check_if_exists_or_initialize(model)
    registry.register_hook(_ContextRecorder(seen), CONTEXT_RECORDER)
    registry.invalidate_child_registries_cache()
    try:
        yield seen
    finally:
        registry.remove_hook(CONTEXT_RECORDER, recurse=False)


# ----------------------------------------------------------------------------------------------------------
# Pipeline helpers, mirrored
# ----------------------------------------------------------------------------------------------------------


def calculate_shift(seq_len, base_seq_len=256, max_seq_len=4096, base_shift=0.5, max_shift=1.15) -> float:
    """flux/pipeline_flux.py:73-84 (the same in ltx and stable_diffusion_3)."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    b = base_shift - m * base_seq_len
    return seq_len * m + b


def retrieve_timesteps(scheduler, steps: int, sigmas=None, **kwargs) -> torch.Tensor:
    """flux/pipeline_flux.py:87-143 (the copy every transformer pipeline has), without devices."""
    if sigmas is not None:
        if "sigmas" not in inspect.signature(scheduler.set_timesteps).parameters:
            raise ValueError(f"{type(scheduler).__name__}.set_timesteps does not accept custom sigmas")
        scheduler.set_timesteps(sigmas=sigmas, **kwargs)
    else:
        scheduler.set_timesteps(steps, **kwargs)
    return scheduler.timesteps


def extra_step_kwargs(scheduler, generator: torch.Generator, eta: float = 0.0) -> dict:
    """stable_diffusion/pipeline_stable_diffusion.py:608-623 (pixart_alpha :439-454): eta and the
    generator, for the step functions that take them (DDIM eta; DDPM / Euler-ancestral noise)."""
    params = inspect.signature(scheduler.step).parameters
    kwargs = {}
    if "eta" in params:
        kwargs["eta"] = eta
    if "generator" in params:
        kwargs["generator"] = generator
    return kwargs


def _batch_timestep(t: torch.Tensor, n: int) -> torch.Tensor:
    """dit/pipeline_dit.py:186-200, pixart_alpha :917-929: a 0-d t made 1-d and expanded to the batch."""
    if t.ndim == 0:
        t = t[None]
    return t.expand(n)


def _cfg(pred: torch.Tensor, scale: float) -> torch.Tensor:
    uncond, cond = pred.chunk(2)
    return uncond + scale * (cond - uncond)


def _randn(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=generator)


def _mask(generator: torch.Generator, batch: int) -> torch.Tensor:
    """A tokenizer-style attention mask: ones, then padding zeros (at least 2 real tokens)."""
    lengths = torch.randint(2, TEXT_LEN + 1, (batch,), generator=generator)
    return (torch.arange(TEXT_LEN)[None] < lengths[:, None]).long()


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# ----------------------------------------------------------------------------------------------------------
# Schedulers (zero-arg factories)
# ----------------------------------------------------------------------------------------------------------

DDPM_BETAS = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
SD_BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
FLOW = dict(use_flow_sigmas=True, prediction_type="flow_prediction")


def _ddpm_family(betas: dict, *names: str, sd: bool = False) -> dict[str, Callable[[], Scheduler]]:
    """DDPM-family schedulers over one beta schedule; ``sd`` adds SD-1.5's offsets."""
    sd_kw = dict(set_alpha_to_one=False, steps_offset=1) if sd else {}
    table = {
        "ddpm": lambda: DDPMScheduler(**betas, clip_sample=not sd),
        "ddim": lambda: DDIMScheduler(**betas, clip_sample=False, **sd_kw),
        "dpm++2m": lambda: DPMSolverMultistepScheduler(**betas, algorithm_type="dpmsolver++", solver_order=2),
        "euler": lambda: EulerDiscreteScheduler(**betas),
        "euler-a": lambda: EulerAncestralDiscreteScheduler(**betas),
        "heun": lambda: HeunDiscreteScheduler(**betas),
        "pndm-prk": lambda: PNDMScheduler(**betas, skip_prk_steps=False),
        "pndm-plms": lambda: PNDMScheduler(**betas, skip_prk_steps=True, **sd_kw),
        "unipc": lambda: UniPCMultistepScheduler(**betas),
    }
    return {name: table[name] for name in names}


def _flow_family(
    shift: float, *names: str, dynamic: dict | None = None
) -> dict[str, Callable[[], Scheduler]]:
    """Flow-matching schedulers with a static ``shift``, or dynamic shifting (``mu``) with ``dynamic``."""
    dyn = dict(use_dynamic_shifting=True, **dynamic) if dynamic else {}
    table = {
        "flow-euler": lambda: FlowMatchEulerDiscreteScheduler(shift=shift, **dyn),
        "flow-heun": lambda: FlowMatchHeunDiscreteScheduler(shift=shift),
        "dpm++2m-flow": lambda: DPMSolverMultistepScheduler(
            **FLOW, flow_shift=shift, algorithm_type="dpmsolver++", solver_order=2, **_no_shift_range(dyn)
        ),
        "unipc-flow": lambda: UniPCMultistepScheduler(**FLOW, flow_shift=shift, **_no_shift_range(dyn)),
    }
    return {name: table[name] for name in names}


def _no_shift_range(dyn: dict) -> dict:
    """DPM-Solver and UniPC take ``use_dynamic_shifting`` but not FlowMatchEuler's shift range."""
    return {"use_dynamic_shifting": True} if dyn else {}


FLUX_DEV_SHIFT = dict(base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
LTX_SHIFT = dict(
    base_shift=0.95, max_shift=2.05, base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=0.1
)


# ----------------------------------------------------------------------------------------------------------
# Family
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """A tiny model family and its pipeline's denoising loop.

    ``guidance``: "none", "batched" (one call on a doubled batch) or "split" (one call per branch).
    ``contexts``: the cache-context name of each call in one scheduler timestep with guidance on
    (None: the pipeline opens none). ``timestep_divisor``: what the pipeline divides t by (Flux: 1000).
    """

    name: str
    model_class: str
    pipeline: str
    build: Callable[[], nn.Module]
    schedulers: dict[str, Callable[[], Scheduler]]
    make_conditions: Callable[[torch.Generator, int], Conditions]
    make_noise: Callable[[nn.Module, int, torch.Generator], torch.Tensor]
    run: Callable[..., torch.Tensor]
    guidance: str = "batched"
    contexts: tuple[str | None, ...] = (None,)
    timestep_divisor: float = 1.0

    def make_model(self, seed: int = 0) -> nn.Module:
        """The tiny model with weights drawn from ``seed`` (global RNG untouched), in eval mode."""
        with _seeded(seed):
            return self.build().eval()

    def conditions(self, batch: int = 1, seed: int = 0) -> Conditions:
        """The conditioning inputs for ``batch`` samples (cond and, for guidance, negative ones)."""
        return self.make_conditions(torch.Generator().manual_seed(1_000_003 + seed), batch)

    def noise(self, model: nn.Module, batch: int = 1, seed: int = 0) -> torch.Tensor:
        """The loop's start noise (before any ``init_noise_sigma`` scaling), shaped as it returns."""
        return self.make_noise(model, batch, torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def loop(
        self,
        model: nn.Module,
        scheduler,
        steps: int = 4,
        seed: int = 0,
        guidance_scale: float = 4.0,
        batch: int = 1,
    ) -> torch.Tensor:
        """Run the pipeline's denoising loop; return the final latents (shaped as :meth:`noise`)."""
        generator = torch.Generator().manual_seed(seed)
        cond = self.conditions(batch, seed)
        return self.run(self, model, scheduler, steps, generator, cond, guidance_scale, batch)

    def step_contexts(self, guidance_scale: float = 4.0) -> tuple[str | None, ...]:
        """The cache context of each denoiser call within one scheduler timestep."""
        if self.guidance == "split" and guidance_scale <= 1:
            return self.contexts[:1]
        return self.contexts

    def calls_per_step(self, guidance_scale: float = 4.0) -> int:
        """Denoiser calls per element of ``scheduler.timesteps``."""
        return len(self.step_contexts(guidance_scale))

    def block_names(self, model: nn.Module) -> list[str]:
        return block_names(model)

    def count_block_calls(self, model: nn.Module, names: Sequence[str] | None = None) -> BlockCounter:
        return count_block_calls(model, names)


# ----------------------------------------------------------------------------------------------------------
# UNet2DModel: DDPMPipeline / DDIMPipeline / PNDMPipeline (unconditional)
# ----------------------------------------------------------------------------------------------------------


def _unet2d() -> nn.Module:
    return UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=8,
    )


def _image_noise(model, batch, generator):
    c, s = model.config.in_channels, model.config.sample_size
    return randn_tensor((batch, c, s, s), generator=generator)


def _run_unet2d(fam, model, scheduler, steps, generator, cond, guidance_scale, batch):
    # ddpm/pipeline_ddpm.py:118-128 (ddim/pipeline_ddim.py:154-165, deprecated/pndm/pipeline_pndm.py:98-108):
    # no scale_model_input (identity for DDPM/DDIM/PNDM), the sample and t positional, and the generator
    # passed to step when the step takes one (DDPM/DDIM do; PNDMPipeline passes none and PNDM takes none).
    image = fam.make_noise(model, batch, generator)
    scheduler.set_timesteps(steps)
    step_kwargs = {k: v for k, v in extra_step_kwargs(scheduler, generator).items() if k == "generator"}
    for t in scheduler.timesteps:
        model_output = model(image, t).sample
        image = scheduler.step(model_output, t, image, **step_kwargs).prev_sample
    return image


# ----------------------------------------------------------------------------------------------------------
# UNet2DConditionModel: StableDiffusionPipeline (batched [uncond, cond])
# ----------------------------------------------------------------------------------------------------------


def _unet2d_cond() -> nn.Module:
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        norm_num_groups=8,
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
    )


def _text_conditions(generator, batch):
    return {
        "prompt_embeds": _randn(generator, batch, TEXT_LEN, TEXT_DIM),
        "negative_prompt_embeds": _randn(generator, batch, TEXT_LEN, TEXT_DIM),
    }


def _run_sd(fam, model, scheduler, steps, generator, cond, guidance_scale, batch):
    # stable_diffusion/pipeline_stable_diffusion.py
    do_cfg = guidance_scale > 1 and model.config.time_cond_proj_dim is None  # :763-764
    prompt_embeds = cond["prompt_embeds"]
    if do_cfg:
        prompt_embeds = torch.cat([cond["negative_prompt_embeds"], prompt_embeds])  # :978
    timesteps = retrieve_timesteps(scheduler, steps)  # :993-995
    latents = fam.make_noise(model, batch, generator) * scheduler.init_noise_sigma  # :999-1008, :708-713
    step_kwargs = extra_step_kwargs(scheduler, generator, eta=0.0)  # :1011
    for t in timesteps:  # :1032
        latent_model_input = torch.cat([latents] * 2) if do_cfg else latents  # :1037
        if hasattr(scheduler, "scale_model_input"):  # :1038-1039
            latent_model_input = scheduler.scale_model_input(latent_model_input, t)
        noise_pred = model(  # :1042-1050
            latent_model_input,
            t,
            encoder_hidden_states=prompt_embeds,
            timestep_cond=None,
            cross_attention_kwargs=None,
            added_cond_kwargs=None,
            return_dict=False,
        )[0]
        if do_cfg:  # :1053-1055
            noise_pred = _cfg(noise_pred, guidance_scale)
        latents = scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=False)[0]  # :1062
    return latents


# ----------------------------------------------------------------------------------------------------------
# DiTTransformer2DModel: DiTPipeline (batched [cond, uncond], null class, learned sigma split)
# ----------------------------------------------------------------------------------------------------------


def _dit(out_channels: int) -> Callable[[], nn.Module]:
    def build():
        return DiTTransformer2DModel(
            num_attention_heads=2,
            attention_head_dim=8,
            in_channels=4,
            out_channels=out_channels,
            num_layers=3,
            sample_size=8,
            patch_size=2,
            norm_num_groups=1,
            num_embeds_ada_norm=NUM_CLASSES,
        )

    return build


def _class_conditions(generator, batch):
    return {"class_labels": torch.randint(0, NUM_CLASSES, (batch,), generator=generator)}


def _run_dit(fam, model, scheduler, steps, generator, cond, guidance_scale, batch):
    # dit/pipeline_dit.py (DiTPipeline steps without a generator: deterministic schedulers only)
    latent_channels = model.config.in_channels  # :164
    latents = fam.make_noise(model, batch, generator)  # :166-171 (no init_noise_sigma)
    latent_model_input = torch.cat([latents] * 2) if guidance_scale > 1 else latents  # :172
    class_labels = cond["class_labels"].reshape(-1)  # :174
    class_null = torch.full((batch,), model.config.num_embeds_ada_norm)  # :175 (1000 = DiT-XL's classes)
    class_labels_input = torch.cat([class_labels, class_null], 0) if guidance_scale > 1 else class_labels
    scheduler.set_timesteps(steps)  # :179
    for t in scheduler.timesteps:  # :180
        if guidance_scale > 1:  # :181-183
            half = latent_model_input[: len(latent_model_input) // 2]
            latent_model_input = torch.cat([half, half], dim=0)
        latent_model_input = scheduler.scale_model_input(latent_model_input, t)  # :184
        timesteps = _batch_timestep(t, latent_model_input.shape[0])  # :186-200
        noise_pred = model(latent_model_input, timestep=timesteps, class_labels=class_labels_input).sample
        if guidance_scale > 1:  # :207-214
            eps, rest = noise_pred[:, :latent_channels], noise_pred[:, latent_channels:]
            cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
            half_eps = uncond_eps + guidance_scale * (cond_eps - uncond_eps)
            eps = torch.cat([half_eps, half_eps], dim=0)
            noise_pred = torch.cat([eps, rest], dim=1)
        if model.config.out_channels // 2 == latent_channels:  # :217-220 learned sigma
            model_output, _ = torch.split(noise_pred, latent_channels, dim=1)
        else:
            model_output = noise_pred
        latent_model_input = scheduler.step(model_output, t, latent_model_input).prev_sample  # :223
    if guidance_scale > 1:  # :228-231
        latents, _ = latent_model_input.chunk(2, dim=0)
    else:
        latents = latent_model_input
    return latents


# ----------------------------------------------------------------------------------------------------------
# PixArtTransformer2DModel: PixArtAlphaPipeline (batched [uncond, cond], timestep=, added_cond_kwargs)
# ----------------------------------------------------------------------------------------------------------


def _pixart() -> nn.Module:
    return PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,  # learned sigma, as PixArt-alpha
        num_layers=3,
        cross_attention_dim=16,
        caption_channels=TEXT_DIM,
        sample_size=8,
        patch_size=2,
        norm_num_groups=1,
    )


def _masked_text_conditions(generator, batch):
    return {
        "prompt_embeds": _randn(generator, batch, TEXT_LEN, TEXT_DIM),
        "prompt_attention_mask": _mask(generator, batch),
        "negative_prompt_embeds": _randn(generator, batch, TEXT_LEN, TEXT_DIM),
        "negative_prompt_attention_mask": _mask(generator, batch),
    }


def _run_pixart(fam, model, scheduler, steps, generator, cond, guidance_scale, batch):
    # pixart_alpha/pipeline_pixart_alpha.py
    do_cfg = guidance_scale > 1.0  # :839
    prompt_embeds, mask = cond["prompt_embeds"], cond["prompt_attention_mask"]
    if do_cfg:  # :860-862
        prompt_embeds = torch.cat([cond["negative_prompt_embeds"], prompt_embeds], dim=0)
        mask = torch.cat([cond["negative_prompt_attention_mask"], mask], dim=0)
    timesteps = retrieve_timesteps(scheduler, steps)  # :874-876
    latent_channels = model.config.in_channels  # :879
    latents = fam.make_noise(model, batch, generator) * scheduler.init_noise_sigma  # :880-889, :678-683
    step_kwargs = extra_step_kwargs(scheduler, generator, eta=0.0)  # :892
    added_cond_kwargs = {"resolution": None, "aspect_ratio": None}  # :895 (sample_size != 128)
    if hasattr(scheduler, "set_begin_index"):  # :910-911
        scheduler.set_begin_index(0)
    for t in timesteps:  # :913
        latent_model_input = torch.cat([latents] * 2) if do_cfg else latents  # :914
        latent_model_input = scheduler.scale_model_input(latent_model_input, t)  # :915
        current_timestep = _batch_timestep(t, latent_model_input.shape[0])  # :917-929
        noise_pred = model(  # :932-939
            latent_model_input,
            encoder_hidden_states=prompt_embeds,
            encoder_attention_mask=mask,
            timestep=current_timestep,
            added_cond_kwargs=added_cond_kwargs,
            return_dict=False,
        )[0]
        if do_cfg:  # :942-944
            noise_pred = _cfg(noise_pred, guidance_scale)
        if model.config.out_channels // 2 == latent_channels:  # :947-950 learned sigma
            noise_pred = noise_pred.chunk(2, dim=1)[0]
        index = 1 if steps == 1 else 0  # :953-956
        latents = scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=False)[index]
    return latents


# ----------------------------------------------------------------------------------------------------------
# SD3Transformer2DModel: StableDiffusion3Pipeline (batched [uncond, cond], joint blocks)
# ----------------------------------------------------------------------------------------------------------


def _sd3() -> nn.Module:
    # 3 joint blocks, the last context_pre_only (returns (None, h)); block 0 has SD3.5's dual attention.
    return SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_layers=3,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=TEXT_DIM,
        caption_projection_dim=16,
        pooled_projection_dim=POOLED_DIM,
        out_channels=4,
        pos_embed_max_size=8,
        dual_attention_layers=(0,),
    )


def _pooled_text_conditions(generator, batch):
    return {
        "prompt_embeds": _randn(generator, batch, TEXT_LEN, TEXT_DIM),
        "pooled_prompt_embeds": _randn(generator, batch, POOLED_DIM),
        "negative_prompt_embeds": _randn(generator, batch, TEXT_LEN, TEXT_DIM),
        "negative_pooled_prompt_embeds": _randn(generator, batch, POOLED_DIM),
    }


def _run_sd3(fam, model, scheduler, steps, generator, cond, guidance_scale, batch):
    # stable_diffusion_3/pipeline_stable_diffusion_3.py (no skip-layer guidance, no scale_model_input)
    do_cfg = guidance_scale > 1  # :680-681
    prompt_embeds, pooled = cond["prompt_embeds"], cond["pooled_prompt_embeds"]
    if do_cfg:  # :997-999
        prompt_embeds = torch.cat([cond["negative_prompt_embeds"], prompt_embeds], dim=0)
        pooled = torch.cat([cond["negative_pooled_prompt_embeds"], pooled], dim=0)
    latents = fam.make_noise(model, batch, generator)  # :1003-1012, :660
    scheduler_kwargs = {}
    if scheduler.config.get("use_dynamic_shifting", None):  # :1015-1028
        _, _, height, width = latents.shape
        seq_len = (height // model.config.patch_size) * (width // model.config.patch_size)
        scheduler_kwargs["mu"] = calculate_shift(
            seq_len,
            scheduler.config.get("base_image_seq_len", 256),
            scheduler.config.get("max_image_seq_len", 4096),
            scheduler.config.get("base_shift", 0.5),
            scheduler.config.get("max_shift", 1.16),
        )
    timesteps = retrieve_timesteps(scheduler, steps, sigmas=None, **scheduler_kwargs)  # :1035-1041
    for t in timesteps:  # :1062
        latent_model_input = torch.cat([latents] * 2) if do_cfg else latents  # :1067
        timestep = t.expand(latent_model_input.shape[0])  # :1069
        noise_pred = model(  # :1074-1081
            hidden_states=latent_model_input,
            timestep=timestep,
            encoder_hidden_states=prompt_embeds,
            pooled_projections=pooled,
            joint_attention_kwargs=None,
            return_dict=False,
        )[0]
        if do_cfg:  # :1084-1086
            noise_pred = _cfg(noise_pred, guidance_scale)
        latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]  # :1113
    return latents


# ----------------------------------------------------------------------------------------------------------
# FluxTransformer2DModel: FluxPipeline (split true CFG under cache_context, t / 1000, ids, mu)
# ----------------------------------------------------------------------------------------------------------

FLUX_LATENT = (4, 8, 8)  # unpacked latent (C, H, W): 16 packed tokens of 16 channels


def _flux() -> nn.Module:
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=FLUX_LATENT[0] * 4,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=TEXT_DIM,
        pooled_projection_dim=POOLED_DIM,
        guidance_embeds=False,
        axes_dims_rope=(2, 2, 4),
    )


def _flux_noise(model, batch, generator):
    # flux/pipeline_flux.py:573-574: randn (B, C, H, W), then _pack_latents (:522-527)
    c, h, w = FLUX_LATENT
    latents = randn_tensor((batch, c, h, w), generator=generator)
    latents = latents.view(batch, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return latents.reshape(batch, (h // 2) * (w // 2), c * 4)


def _flux_image_ids() -> torch.Tensor:
    # flux/pipeline_flux.py:508-519
    _, h, w = FLUX_LATENT
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] = ids[..., 1] + torch.arange(h // 2)[:, None]
    ids[..., 2] = ids[..., 2] + torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3)


def _flux_conditions(generator, batch):
    cond = _pooled_text_conditions(generator, batch)
    cond["text_ids"] = torch.zeros(TEXT_LEN, 3)  # flux/pipeline_flux.py:387
    cond["negative_text_ids"] = torch.zeros(TEXT_LEN, 3)
    return cond


def _run_flux(fam, model, scheduler, steps, generator, cond, guidance_scale, batch):
    # flux/pipeline_flux.py; guidance_scale is true_cfg_scale (FLUX.1-dev's distilled guidance is off)
    do_true_cfg = guidance_scale > 1  # :771 (a negative prompt is always given)
    latents = fam.make_noise(model, batch, generator)  # :811-820
    latent_image_ids = _flux_image_ids()
    sigmas = np.linspace(1.0, 1 / steps, steps)  # :823
    if getattr(scheduler.config, "use_flow_sigmas", False):  # :824-825
        sigmas = None
    mu = calculate_shift(  # :826-833
        latents.shape[1],
        scheduler.config.get("base_image_seq_len", 256),
        scheduler.config.get("max_image_seq_len", 4096),
        scheduler.config.get("base_shift", 0.5),
        scheduler.config.get("max_shift", 1.15),
    )
    timesteps = retrieve_timesteps(scheduler, steps, sigmas=sigmas, mu=mu)  # :836-842
    guidance = None  # :846-851 (guidance_embeds=False)
    scheduler.set_begin_index(0)  # :888
    for t in timesteps:  # :890
        timestep = t.expand(latents.shape[0]).to(latents.dtype)  # :898
        with cache_context(model, "cond"):  # :900-911
            noise_pred = model(
                hidden_states=latents,
                timestep=timestep / 1000,
                guidance=guidance,
                pooled_projections=cond["pooled_prompt_embeds"],
                encoder_hidden_states=cond["prompt_embeds"],
                txt_ids=cond["text_ids"],
                img_ids=latent_image_ids,
                joint_attention_kwargs={},
                return_dict=False,
            )[0]
        if do_true_cfg:  # :913-930
            with cache_context(model, "uncond"):
                neg_noise_pred = model(
                    hidden_states=latents,
                    timestep=timestep / 1000,
                    guidance=guidance,
                    pooled_projections=cond["negative_pooled_prompt_embeds"],
                    encoder_hidden_states=cond["negative_prompt_embeds"],
                    txt_ids=cond["negative_text_ids"],
                    img_ids=latent_image_ids,
                    joint_attention_kwargs={},
                    return_dict=False,
                )[0]
            noise_pred = neg_noise_pred + guidance_scale * (noise_pred - neg_noise_pred)
        latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]  # :933
    return latents


# ----------------------------------------------------------------------------------------------------------
# LTXVideoTransformer3DModel: LTXPipeline (batched under one "cond_uncond" context, sigmas + mu)
# ----------------------------------------------------------------------------------------------------------

LTX_LATENT = (8, 2, 2, 4)  # latent (C, F, H, W): 16 tokens of 8 channels (patch size 1)


def _ltx() -> nn.Module:
    return LTXVideoTransformer3DModel(
        in_channels=LTX_LATENT[0],
        out_channels=LTX_LATENT[0],
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        num_layers=2,
        caption_channels=TEXT_DIM,
    )


def _ltx_noise(model, batch, generator):
    # ltx/pipeline_ltx.py:493-505: randn (B, C, F, H, W), then _pack_latents with patch 1 (:420-440)
    latents = randn_tensor((batch, *LTX_LATENT), generator=generator)
    return latents.permute(0, 2, 3, 4, 1).reshape(batch, -1, LTX_LATENT[0])


def _run_ltx(fam, model, scheduler, steps, generator, cond, guidance_scale, batch):
    # ltx/pipeline_ltx.py (frame_rate 25, VAE compression 8 in time and 32 in space: :216-221, :544)
    do_cfg = guidance_scale > 1.0  # :516-517
    prompt_embeds, mask = cond["prompt_embeds"], cond["prompt_attention_mask"]
    if do_cfg:  # :703-705
        prompt_embeds = torch.cat([cond["negative_prompt_embeds"], prompt_embeds], dim=0)
        mask = torch.cat([cond["negative_prompt_attention_mask"], mask], dim=0)
    latents = fam.make_noise(model, batch, generator)  # :709-718
    _, frames, height, width = LTX_LATENT  # :722-724
    sigmas = np.linspace(1.0, 1 / steps, steps)  # :726
    mu = calculate_shift(  # :727-733
        frames * height * width,
        scheduler.config.get("base_image_seq_len", 256),
        scheduler.config.get("max_image_seq_len", 4096),
        scheduler.config.get("base_shift", 0.5),
        scheduler.config.get("max_shift", 1.15),
    )
    timesteps = retrieve_timesteps(scheduler, steps, sigmas=sigmas, mu=mu)  # :738-745
    rope_interpolation_scale = (8 / 25, 32, 32)  # :750-754
    for t in timesteps:  # :758
        latent_model_input = torch.cat([latents] * 2) if do_cfg else latents  # :764
        latent_model_input = latent_model_input.to(prompt_embeds.dtype)  # :765
        timestep = t.expand(latent_model_input.shape[0])  # :768
        with cache_context(model, "cond_uncond"):  # :770-782
            noise_pred = model(
                hidden_states=latent_model_input,
                encoder_hidden_states=prompt_embeds,
                timestep=timestep,
                encoder_attention_mask=mask,
                num_frames=frames,
                height=height,
                width=width,
                rope_interpolation_scale=rope_interpolation_scale,
                attention_kwargs=None,
                return_dict=False,
            )[0]
        noise_pred = noise_pred.float()  # :783
        if do_cfg:  # :785-787
            noise_pred = _cfg(noise_pred, guidance_scale)
        latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]  # :796
    return latents


# ----------------------------------------------------------------------------------------------------------
# WanTransformer3DModel: WanPipeline (split CFG under cache_context with step_index / sigma)
# ----------------------------------------------------------------------------------------------------------

WAN_LATENT = (4, 2, 4, 4)  # latent (C, F, H, W): 8 tokens after the (1, 2, 2) patch


def _wan() -> nn.Module:
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=WAN_LATENT[0],
        out_channels=WAN_LATENT[0],
        text_dim=TEXT_DIM,
        freq_dim=16,
        ffn_dim=32,
        num_layers=2,
        rope_max_seq_len=32,
    )


def _wan_noise(model, batch, generator):
    return randn_tensor((batch, *WAN_LATENT), generator=generator)  # wan/pipeline_wan.py:341-355


def _run_wan(fam, model, scheduler, steps, generator, cond, guidance_scale, batch):
    # wan/pipeline_wan.py (Wan 2.1: one transformer, boundary_ratio None, expand_timesteps False)
    do_cfg = guidance_scale > 1.0  # :363-364
    scheduler.set_timesteps(steps)  # :554
    timesteps = scheduler.timesteps  # :555
    latents = fam.make_noise(model, batch, generator)  # :563-573 (float32)
    scheduler.set_begin_index(0)  # :583
    for i, t in enumerate(timesteps):  # :591
        latent_model_input = latents.to(model.dtype)  # :604
        timestep = t.expand(latents.shape[0])  # :613
        context_kwargs = {  # :615-619
            "step_index": i,
            "sigma": float(scheduler.sigmas[i]),
            "num_inference_steps": len(timesteps),
        }
        with cache_context(model, "cond", **context_kwargs):  # :620-627
            noise_pred = model(
                hidden_states=latent_model_input,
                timestep=timestep,
                encoder_hidden_states=cond["prompt_embeds"],
                attention_kwargs=None,
                return_dict=False,
            )[0]
        if do_cfg:  # :629-638
            with cache_context(model, "uncond", **context_kwargs):
                noise_uncond = model(
                    hidden_states=latent_model_input,
                    timestep=timestep,
                    encoder_hidden_states=cond["negative_prompt_embeds"],
                    attention_kwargs=None,
                    return_dict=False,
                )[0]
            noise_pred = noise_uncond + guidance_scale * (noise_pred - noise_uncond)
        latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]  # :641
    return latents


# ----------------------------------------------------------------------------------------------------------
# The families
# ----------------------------------------------------------------------------------------------------------

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            name="unet2d",
            model_class="UNet2DModel",
            pipeline="ddpm/pipeline_ddpm.py:118-128",
            build=_unet2d,
            # DDPM-cifar10's linear betas; DDPMPipeline, DDIMPipeline, PNDMPipeline (PRK warm-up)
            schedulers=_ddpm_family(DDPM_BETAS, "ddpm", "ddim", "pndm-prk", "dpm++2m"),
            make_conditions=lambda generator, batch: {},
            make_noise=_image_noise,
            run=_run_unet2d,
            guidance="none",
        ),
        Family(
            name="sd",
            model_class="UNet2DConditionModel",
            pipeline="stable_diffusion/pipeline_stable_diffusion.py:1032-1062",
            build=_unet2d_cond,
            # SD-1.5's scaled-linear betas; PNDM (PLMS, its default) and the usual swaps
            schedulers=_ddpm_family(
                SD_BETAS,
                "pndm-plms",
                "ddim",
                "ddpm",
                "dpm++2m",
                "euler",
                "euler-a",
                "heun",
                "pndm-prk",
                "unipc",
                sd=True,
            ),
            make_conditions=_text_conditions,
            make_noise=_image_noise,
            run=_run_sd,
        ),
        Family(
            name="dit",
            model_class="DiTTransformer2DModel",
            pipeline="dit/pipeline_dit.py:163-231",
            build=_dit(out_channels=4),
            # DiTPipeline: init_noise_sigma 1 and no step generator, so the deterministic DDPM-family ones
            schedulers=_ddpm_family(DDPM_BETAS, "ddim", "dpm++2m", "unipc", "pndm-plms"),
            make_conditions=_class_conditions,
            make_noise=_image_noise,
            run=_run_dit,
        ),
        Family(
            name="dit-sigma",
            model_class="DiTTransformer2DModel",
            pipeline="dit/pipeline_dit.py:163-231",
            build=_dit(out_channels=8),  # learned sigma, as DiT-XL/2: the loop keeps the eps half
            schedulers=_ddpm_family(DDPM_BETAS, "ddim", "dpm++2m"),
            make_conditions=_class_conditions,
            make_noise=_image_noise,
            run=_run_dit,
        ),
        Family(
            name="pixart",
            model_class="PixArtTransformer2DModel",
            pipeline="pixart_alpha/pipeline_pixart_alpha.py:913-956",
            build=_pixart,
            # PixArt-alpha ships DPM-Solver++; the pipeline passes the generator to step
            schedulers=_ddpm_family(DDPM_BETAS, "dpm++2m", "euler-a", "ddim", "unipc"),
            make_conditions=_masked_text_conditions,
            make_noise=_image_noise,
            run=_run_pixart,
        ),
        Family(
            name="sd3",
            model_class="SD3Transformer2DModel",
            pipeline="stable_diffusion_3/pipeline_stable_diffusion_3.py:1062-1113",
            build=_sd3,
            # SD3's FlowMatchEuler with shift 3, and the flow solvers people swap in
            schedulers=_flow_family(3.0, "flow-euler", "flow-heun", "dpm++2m-flow", "unipc-flow"),
            make_conditions=_pooled_text_conditions,
            make_noise=_image_noise,
            run=_run_sd3,
        ),
        Family(
            name="flux",
            model_class="FluxTransformer2DModel",
            pipeline="flux/pipeline_flux.py:890-933",
            build=_flux,
            schedulers={
                # FLUX.1-dev: dynamic shifting with mu
                **_flow_family(3.0, "flow-euler", "dpm++2m-flow", "unipc-flow", dynamic=FLUX_DEV_SHIFT),
                # FLUX.1-schnell: static shift 1 (mu is passed and ignored)
                "flow-euler-static": lambda: FlowMatchEulerDiscreteScheduler(shift=1.0),
            },
            make_conditions=_flux_conditions,
            make_noise=_flux_noise,
            run=_run_flux,
            guidance="split",
            contexts=("cond", "uncond"),
            timestep_divisor=1000.0,
        ),
        Family(
            name="ltx",
            model_class="LTXVideoTransformer3DModel",
            pipeline="ltx/pipeline_ltx.py:758-796",
            build=_ltx,
            # LTX-Video's scheduler; the pipeline passes custom sigmas, which only FlowMatchEuler takes
            schedulers=_flow_family(1.0, "flow-euler", dynamic=LTX_SHIFT),
            make_conditions=_masked_text_conditions,
            make_noise=_ltx_noise,
            run=_run_ltx,
            contexts=("cond_uncond",),
        ),
        Family(
            name="wan",
            model_class="WanTransformer3DModel",
            pipeline="wan/pipeline_wan.py:591-641",
            build=_wan,
            # Wan 2.1's UniPC with flow sigmas (shift 3), DPM-Solver++ and FlowMatchEuler (shift 5)
            schedulers={
                **_flow_family(3.0, "unipc-flow", "dpm++2m-flow", "flow-heun"),
                **{"flow-euler": _flow_family(5.0, "flow-euler")["flow-euler"]},
            },
            make_conditions=_text_conditions,
            make_noise=_wan_noise,
            run=_run_wan,
            guidance="split",
            contexts=("cond", "uncond"),
        ),
    )
}


def cases() -> list[tuple[str, str]]:
    """Every (family name, scheduler name) pair."""
    return [(f.name, s) for f in FAMILIES.values() for s in f.schedulers]


# PNDM's Runge-Kutta warm-up takes its last 4 steps (pndm_order): fewer fail in set_timesteps
# (scheduling_pndm.py:217, "operands could not be broadcast").
MIN_STEPS = {"pndm-prk": 4}


def steps_for(scheduler: str, steps: int) -> int:
    """``steps``, raised to what the named scheduler needs."""
    return max(steps, MIN_STEPS.get(scheduler, 1))
