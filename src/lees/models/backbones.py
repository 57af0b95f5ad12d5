"""Loading a backbone: a published architecture, a local diffusers folder, or a hub id.

``arch:NAME`` builds a published architecture from its config with random weights (for timing
and FLOP counts, where weights do not matter); a folder or hub id loads trained weights with
diffusers' ``from_pretrained``, from safetensors only unless pickle files are explicitly allowed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import DDPMScheduler, SchedulerMixin
from torch import nn

from ..diffusion.noising import MissingSchedulerError
from .architectures import ARCHITECTURES, DDPM_NOISE, FLOW_ARCHITECTURES, FLOW_NOISE

# The embedded default model: a DDPM pipeline folder shipped inside the package.
EMBEDDED_DIR = Path(__file__).parents[1] / "embedded"

# Where the deeper embedded model (arch embedded-base, trained on a GPU) is shipped once it is trained.
EMBEDDED_BASE_DIR = EMBEDDED_DIR / "base"

# The embedded class-conditional flow-matching DiT (arch embedded-dit): a ClassFlowPipeline folder.
EMBEDDED_DIT_DIR = EMBEDDED_DIR / "dit"

# How it is made: trained (resumable), then exported from the run's checkpoint (EMA weights, fp16).
EMBEDDED_DIT_TRAIN = (
    "lees backbone train --arch embedded-dit --data fashion-mnist --out runs/embedded-dit "
    "--train-steps 36000 --batch-size 64 --lr 3e-4 --warmup 500 --ema-decay 0.9995 "
    "--grid 80 --grid-every 2000"
)
EMBEDDED_DIT_EXPORT = "lees backbone export --run runs/embedded-dit --out src/lees/embedded/dit"

# How its weights are made (on a GPU; resumable), then put in place in half precision.
EMBEDDED_BASE_TRAIN = (
    "lees backbone train --arch embedded-base --data fashion-mnist --out runs/embedded-base "
    "--train-steps 100000 --batch-size 128 --lr 2e-4 --max-minutes 8 --device cuda --bf16"
)

EMBEDDED_BASE_EXPORT = (
    'python -c "from lees.learn.backbone_training import export_backbone; '
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
    if spec == "embedded-dit":
        if not (EMBEDDED_DIT_DIR / "transformer" / "config.json").is_file():
            raise BackboneError(
                f"the weights of embedded-dit are not shipped in this install: train them with "
                f"`{EMBEDDED_DIT_TRAIN}`, then `{EMBEDDED_DIT_EXPORT}`"
            )
        return EMBEDDED_DIT_DIR
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
        f"unknown model {spec!r}: give embedded, embedded-base, embedded-dit, arch:NAME "
        f"({', '.join(sorted(ARCHITECTURES))}), a local diffusers folder, or a hub id such as "
        "google/ddpm-cifar10-32"
    )


def load_noise_scheduler(spec: str) -> SchedulerMixin:
    """The noise process the model named by ``spec`` was trained with, from the scheduler config it
    comes with: ``scheduler/scheduler_config.json`` of a pipeline folder or hub repo, or
    ``scheduler_config.json`` beside a bare model's ``config.json``.

    Every value of that config is kept (betas, ``prediction_type``, ``set_alpha_to_one``,
    ``timestep_spacing``, ...; lees' samplers read them all), whatever scheduler class wrote it; a
    flow-matching config (``FlowMatch*``, e.g. embedded-dit's) gives that scheduler itself. A
    model without one is a :class:`MissingSchedulerError`; only ``arch:`` models, random weights
    trained with no noise process, get the documented default: their recipe's (``FLOW_NOISE`` for
    ``FLOW_ARCHITECTURES``), else DDPM's linear one (``DDPM_NOISE``).
    """
    if spec.startswith("arch:"):
        if spec.removeprefix("arch:") in FLOW_ARCHITECTURES:
            return diffusers.FlowMatchEulerDiscreteScheduler(**FLOW_NOISE)
        return DDPMScheduler(**DDPM_NOISE)
    config = _scheduler_config(spec)
    if str(config.get("_class_name", "")).startswith("FlowMatch"):
        return getattr(diffusers, config["_class_name"]).from_config(config)
    if "beta_schedule" not in config and config.get("trained_betas") is None:
        raise BackboneError(
            f"the scheduler config of {spec} ({config.get('_class_name')}) has no beta schedule; "
            "lees handles the DDPM family's noise process (betas and alphas_cumprod) and flow matching"
        )
    return DDPMScheduler.from_config(config)


def load_pipeline_scheduler(spec: str) -> SchedulerMixin:
    """The scheduler the model named by ``spec`` comes with, of the class its config names (a pipeline's
    ``DPMSolverMultistepScheduler``, ``PNDMScheduler``, ...), on the noise process
    :func:`load_noise_scheduler` reads (and checks); that one where the class is not a diffusers one."""
    noise = load_noise_scheduler(spec)
    if spec.startswith("arch:"):
        return noise
    config = _scheduler_config(spec)
    cls = getattr(diffusers, str(config.get("_class_name", "")), None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)) or isinstance(noise, cls):
        return noise
    return cls.from_config(config)


def _scheduler_config(spec: str) -> dict:
    """The scheduler config the model named by ``spec`` comes with (a MissingSchedulerError without)."""
    location = _location(spec)
    for sub in _SCHEDULER_SUBFOLDERS:
        try:
            return DDPMScheduler.load_config(location, subfolder=sub)
        except (OSError, ValueError):
            continue
    raise MissingSchedulerError(
        f"{spec} comes with no scheduler config (scheduler/scheduler_config.json or "
        "scheduler_config.json), so its noise process is unknown: add the one it was trained with"
    )


def load_backbone(
    spec: str, device: str | torch.device = "cpu", seed: int = 0, allow_pickle: bool = False
) -> nn.Module:
    """The denoiser named by ``spec``: ``embedded``, ``embedded-base``, ``embedded-dit``, ``arch:NAME``,
    a folder or a hub id.

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


def prompted_pipeline(spec: str) -> bool:
    """Whether ``spec`` names a local pipeline folder whose call takes prompts: its ``model_index.json``
    lists a text encoder or a tokenizer (SD, PixArt, SD3, Flux, ...)."""
    if spec.startswith("arch:"):
        return False
    index = _embedded_or_path(spec) / "model_index.json"
    if not index.is_file():
        return False
    return any(k.startswith(("text_encoder", "tokenizer")) for k in json.loads(index.read_text()))


def check_unprompted(spec: str, **call: Any) -> None:
    """One clear line where a text-to-image call's options (``prompts``, ``negative_prompt``, ``height``,
    ``width``: given where not None) come with a model that is no pipeline folder taking prompts."""
    given = [f"--{name.replace('_', '-')}" for name, value in call.items() if value is not None]
    if given:
        raise ValueError(
            f"{', '.join(given)} need{'s' * (len(given) == 1)} a pipeline folder with its text encoders (a "
            f"model_index.json naming them); {spec} has none"
        )


def load_pipeline(spec: str, device: str | torch.device = "cpu") -> Any:
    """The diffusers pipeline in the folder ``spec``, as ``DiffusionPipeline.from_pretrained`` gives it to
    a user (safetensors only), on ``device``."""
    try:
        pipe = diffusers.DiffusionPipeline.from_pretrained(_location(spec), use_safetensors=True)
    except (OSError, ValueError) as err:
        raise BackboneError(f"could not load the pipeline in {spec}: {err}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
