"""Sampling through the user's own pipeline call: prompts, guidance, size, VAE and all.

A text-to-image pipeline (SD, PixArt, SD3, Flux, ...) does much that lees' own sampler does not: it
encodes the prompts, batches or splits guidance, computes its timesteps for the resolution (Flux's
``mu``), steps its scheduler and decodes the latents through its VAE. :func:`sample_pipeline` samples
by calling ``pipe(prompt=..., num_inference_steps=..., generator=..., output_type="pt")`` itself, once
per method and batch, each method applied to the pipeline as a user would apply it (a context the
caller supplies: ``lees.enable``, a scheduler swap, a diffusers cache). What it times is the whole call,
text encoders and VAE included, and the denoiser's share of it; methods take turns batch by batch in
an order that turns from batch to batch, so the ratios are paired measurements (as
:func:`lees.sample_lockstep`'s, which interleaves steps instead).

Sample i depends only on (seed, i): it takes prompt i mod P and its own generator, so batching never
changes an image (beyond float rounding). Images come back in [-1, 1], as lees' sampler gives them.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..models.denoisers import denoiser_of, model_device
from ..utils.timing import synchronizer
from .lockstep import TimedSamples

# What lees prompts with when the user gives no prompts: objects, scenes, text, people and styles.
BUILT_IN_PROMPTS = (
    "a red sports car parked on a wet city street at night",
    "a bowl of ramen with a soft-boiled egg, studio lighting",
    "a mountain lake at sunrise, mist over the water",
    "a storefront sign that says OPEN in neon letters",
    "portrait of an elderly fisherman with a grey beard, natural light",
    "a watercolor painting of a fox in a snowy forest",
    "an astronaut riding a horse on the moon, digital art",
    "a cozy living room with a green sofa and a cat asleep on it",
)

PIPELINE_BINS = {128, 64, 32, 256}  # transformer sample sizes PixArt's resolution binning has tables for


@dataclass
class Prompting:
    """The user's call: prompts (sample i takes prompt i mod P), a negative prompt, and the guidance
    scale, height and width (None: the pipeline's own defaults)."""

    prompts: Sequence[str] = BUILT_IN_PROMPTS
    negative_prompt: str | None = None
    guidance_scale: float | None = None
    height: int | None = None
    width: int | None = None
    built_in: bool = field(default=False)

    def __post_init__(self) -> None:
        self.prompts = list(self.prompts)
        if not self.prompts or not all(isinstance(p, str) and p.strip() for p in self.prompts):
            raise ValueError("give at least one prompt, none of them empty")
        for name in ("height", "width"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be a positive number of pixels, not {value}")

    def settings(self) -> dict[str, Any]:
        """What ties stored samples to this call (JSON-ready)."""
        return {k: v for k, v in asdict(self).items() if k != "built_in"}

    def describe(self) -> str:
        """One line: the prompts and call settings (the built-in list said as such)."""
        which = "lees' built-in varied prompts" if self.built_in else "prompts"
        said = "; ".join(self.prompts[:3]) + (
            f"; ... ({len(self.prompts)} in all)" if len(self.prompts) > 3 else ""
        )
        extra = [f"{k} {v!r}" for k, v in self.settings().items() if k != "prompts" and v is not None]
        return f"{which}: {said}" + (f" ({', '.join(extra)})" if extra else "")

    def call_kwargs(self, pipe: Any, indices: Sequence[int], steps: int, seed: int) -> dict[str, Any]:
        """The keyword arguments of ``pipe(...)`` for the samples ``indices``: their prompts and their own
        generators (sample i's seeded by (seed, i) only), ``steps``, and the user's settings."""
        device = model_device(denoiser_of(pipe))
        kwargs: dict[str, Any] = {
            "prompt": [self.prompts[i % len(self.prompts)] for i in indices],
            "num_inference_steps": steps,
            "generator": [torch.Generator(device).manual_seed(seed * 1_000_003 + i) for i in indices],
            "output_type": "pt",
        }
        if self.negative_prompt is not None:
            kwargs["negative_prompt"] = [self.negative_prompt] * len(indices)
        kwargs.update({k: getattr(self, k) for k in ("guidance_scale", "height", "width")
                       if getattr(self, k) is not None})  # fmt: skip
        return {**kwargs, **_binning(pipe)}


def _binning(pipe: Any) -> dict[str, Any]:
    """PixArt's resolution binning off where its transformer's size has no bins (else the pipeline
    raises "Invalid sample size"); nothing for other pipelines."""
    if "use_resolution_binning" not in inspect.signature(pipe.__call__).parameters:
        return {}
    size = getattr(getattr(denoiser_of(pipe), "config", None), "sample_size", None)
    return {} if size in PIPELINE_BINS else {"use_resolution_binning": False}


@dataclass
class PipelineMethod:
    """One way to call the pipeline: at ``steps``, with ``apply(pipe)`` (a context manager that applies
    the method for its span: a schedule enabled, a scheduler swapped, a cache attached) or plain."""

    steps: int
    apply: Callable[[Any], AbstractContextManager] | None = None


@torch.inference_mode()
def sample_pipeline(
    pipe: Any,
    methods: Mapping[str, PipelineMethod],
    prompting: Prompting,
    n: int = 8,
    seed: int = 0,
    batch_size: int = 8,
    first: int = 0,
    progress: bool = True,
) -> dict[str, TimedSamples]:
    """``n`` images with every method through ``pipe``'s own call, timed end to end, paired per batch.

    Args:
        pipe: a diffusers pipeline that takes ``prompt=`` (its ``unet`` or ``transformer`` denoises).
        methods: by name, how to call it (:class:`PipelineMethod`).
        prompting: the prompts and call settings (:class:`Prompting`).
        n, seed, batch_size, first: samples ``first .. first + n - 1``, each from (seed, i) only, in
            batches of ``batch_size`` (one pipeline call per method and batch).
        progress: show a progress bar.

    Returns each method's images (N, C, H, W in [-1, 1]) and seconds; ``denoiser_seconds`` the share
    its denoiser calls took.

    Example:
        >>> runs = sample_pipeline(pipe, {"full": PipelineMethod(20)}, Prompting(["a cat"]))  # doctest: +SKIP
    """
    if not methods:
        raise ValueError("give at least one method to sample with")
    names = list(methods)
    images: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    seconds, inside = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
    batches = [range(s, min(s + batch_size, first + n)) for s in range(first, first + n, batch_size)]
    bar = tqdm(total=len(batches) * len(names), desc="sampling (pipeline)", unit="call", disable=not progress,
               leave=False)  # fmt: skip
    with bar, quiet_progress(pipe), _DenoiserClock(denoiser_of(pipe)) as clock:
        for r, idx in enumerate(batches):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                method = methods[name]
                kwargs = prompting.call_kwargs(pipe, idx, method.steps, seed)
                with method.apply(pipe) if method.apply is not None else nullcontext():
                    out, took, denoising = clock.call(pipe, kwargs)
                images[name].append(out.float().cpu() * 2 - 1)
                seconds[name] += took
                inside[name] += denoising
                bar.update()
    return {name: TimedSamples(torch.cat(images[name]), seconds[name], 0.0, inside[name]) for name in names}


class _DenoiserClock:
    """Times whole pipeline calls and, within them, the denoiser's calls (between device syncs)."""

    def __init__(self, denoiser: nn.Module) -> None:
        self.denoiser, self.sync, self.inside, self.handles = (
            denoiser,
            synchronizer(model_device(denoiser)),
            0.0,
            [],
        )

    def __enter__(self) -> _DenoiserClock:
        started: list[float] = []

        def before(module, args, kwargs=None):
            self.sync()
            started.append(time.perf_counter())

        def after(module, args, output):
            self.sync()
            self.inside += time.perf_counter() - started.pop()

        self.handles = [
            self.denoiser.register_forward_pre_hook(before),
            self.denoiser.register_forward_hook(after),
        ]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()

    def call(self, pipe: Any, kwargs: dict[str, Any]) -> tuple[torch.Tensor, float, float]:
        """The call's images, its seconds, and its denoiser's seconds."""
        self.inside = 0.0
        self.sync()
        started = time.perf_counter()
        out = pipe(**kwargs).images
        self.sync()
        return out, time.perf_counter() - started, self.inside


@contextmanager
def quiet_progress(pipe: Any) -> Iterator[None]:
    """The pipeline's own progress bar off for the span (lees shows its own)."""
    config = dict(getattr(pipe, "_progress_bar_config", {}) or {})
    pipe.set_progress_bar_config(disable=True)
    try:
        yield
    finally:
        pipe._progress_bar_config = config


@dataclass
class PipelineSource:
    """A pipeline and the user's call: what lees samples through in place of a bare denoiser."""

    pipe: Any
    prompting: Prompting

    @property
    def denoiser(self) -> nn.Module:
        return denoiser_of(self.pipe)


@dataclass
class Call:
    """One denoiser call inside a pipeline call: its arguments by name (bound to its forward's
    signature, the main input first) and its output."""

    inputs: dict[str, Any]
    output: Any

    @property
    def sample(self) -> torch.Tensor:
        """The main input (the latents: ``sample`` of a UNet, ``hidden_states`` of a transformer)."""
        return next(iter(self.inputs.values()))

    @property
    def timestep(self) -> int | float:
        """The call's timestep as the denoiser got it (one value, of its type; Flux's is t / 1000)."""
        return torch.as_tensor(self.inputs["timestep"]).flatten()[0].item()


@contextmanager
def recorded_calls(denoiser: nn.Module, after: Callable[[Call], None] | None = None) -> Iterator[list[Call]]:
    """Every call of ``denoiser`` within the span, in order; ``after(call)`` runs right after each one."""
    signature = inspect.signature(type(denoiser).forward)
    calls: list[Call] = []

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        bound = signature.bind_partial(module, *args, **kwargs).arguments
        calls.append(Call({k: v for k, v in bound.items() if k != "self"}, output))
        if after is not None:
            after(calls[-1])

    handle = denoiser.register_forward_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


@torch.inference_mode()
def probe(source: PipelineSource, steps: int, seed: int = 0) -> tuple[list[float], list[Call]]:
    """One sample through the user's call at ``steps``: the timesteps the pipeline's scheduler set
    (for the run's resolution: Flux's ``mu`` included) and the denoiser's calls (one sample: a call
    on two rows is batched guidance)."""
    kwargs = source.prompting.call_kwargs(source.pipe, [0], steps, seed)
    with quiet_progress(source.pipe), recorded_calls(source.denoiser) as calls:
        source.pipe(**kwargs)
    timesteps = torch.as_tensor(source.pipe.scheduler.timesteps).tolist()
    return timesteps, calls
