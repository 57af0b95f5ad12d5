"""Training a small diffusion backbone on local data: how the embedded models are made.

Two recipes, chosen by the architecture:

- a diffusers ``UNet2DModel`` with the DDPM recipe (linear betas, 1000 steps, epsilon prediction):
  the embedded default architecture, or a named one (``arch="embedded-base"``);
- a class-conditional ``DiTTransformer2DModel`` (``arch="embedded-dit"``) with flow matching
  (rectified flow, velocity target, logit-normal timesteps; :class:`lees.diffusion.noising.FlowNoising`) and
  classifier-free guidance: each sample's label is replaced by the null class with probability
  ``label_dropout``.

Both keep an EMA of the weights. Every step's batch, timesteps, noise and dropped labels are drawn
from a generator seeded by (seed, step), so a run that is stopped and resumed from its checkpoint
takes exactly the steps an uninterrupted run would. Checkpoints (safetensors + JSON) are written
atomically, with a sample grid every ``grid_every`` steps. ``export_backbone`` stores a trained
model folder with half-precision weights where that keeps it small enough to ship.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import diffusers
import torch
from diffusers import DDPMPipeline, DDPMScheduler, FlowMatchEulerDiscreteScheduler, SchedulerMixin
from safetensors.torch import load_file, save
from torch import nn
from tqdm.auto import tqdm

from ..diffusion.noising import FlowNoising, Noising, noise_process
from ..models.architectures import ARCHITECTURES, DDPM_NOISE, EMBEDDED_UNET, FLOW_NOISE
from ..models.data import fit_images, load_images
from ..models.denoisers import denoise, num_classes
from ..models.pipelines import ClassFlowPipeline
from ..sampling.lockstep import sample
from ..utils.config import Settings
from ..utils.files import atomic_write_bytes, atomic_write_text
from ..utils.images import save_grid
from ..utils.timing import synchronizer
from .checkpoint import load_optimizer, optimizer_tensors


@dataclass
class BackboneTrainConfig(Settings):
    """Settings of one backbone training run (saved beside its checkpoints)."""

    RENAMED: ClassVar[dict[str, str]] = {"steps": "train_steps"}

    data: str = "fashion-mnist"
    train_steps: int = 5000  # optimisation steps
    batch_size: int = 64
    lr: float = 5e-4
    warmup: int = 200
    ema_decay: float = 0.999
    seed: int = 0
    checkpoint_every: int = 250
    max_minutes: float | None = None  # of this invocation; a resumed run gets its own
    grid: int = 64  # samples in out/samples.png (DDPM-50 or, class-conditional, 50 Euler steps); 0: none
    unet: dict[str, Any] | None = None  # UNet2DModel keyword arguments; replaces ``arch`` where given
    arch: str = "embedded"  # EMBEDDED_UNET, or an ARCHITECTURES entry of a UNet2DModel or DiT
    bf16: bool = False  # bfloat16 autocast of the forward pass (CUDA only); weights and EMA stay fp32
    label_dropout: float = 0.1  # class-conditional models: share of labels replaced by the null class
    grid_every: int = 0  # steps between sample grids in out/grids/ (a multiple of checkpoint_every); 0: none
    guidance_scale: float = 2.0  # of the class-conditional sample grids

    def __post_init__(self) -> None:
        if min(self.train_steps, self.batch_size, self.checkpoint_every) < 1:
            raise ValueError("train_steps, batch_size and checkpoint_every must be positive")
        if self.grid_every % self.checkpoint_every:
            raise ValueError("grid_every must be a multiple of checkpoint_every")
        if not 0 <= self.label_dropout <= 1:
            raise ValueError(f"label_dropout must lie in [0, 1], got {self.label_dropout}")


def _trainable(arch: dict[str, Any]) -> bool:
    """A UNet, or a DiT that predicts as many channels as it takes (a learned variance needs the VLB
    loss, which is not trained here)."""
    if arch["_class_name"] == "UNet2DModel":
        return True
    return arch["_class_name"] == "DiTTransformer2DModel" and arch["out_channels"] == arch["in_channels"]


def model_config(config: BackboneTrainConfig) -> dict[str, Any]:
    """The model a training run builds: ``_class_name`` and its keyword arguments, from ``unet`` or
    ``arch``."""
    if config.unet is not None:
        return {"_class_name": "UNet2DModel", **config.unet}
    if config.arch == "embedded":
        return {"_class_name": "UNet2DModel", **EMBEDDED_UNET}
    known = ["embedded"] + [k for k, v in ARCHITECTURES.items() if _trainable(v)]
    if config.arch not in known:
        raise ValueError(f"cannot train architecture {config.arch!r}; trainable: {', '.join(known)}")
    return dict(ARCHITECTURES[config.arch])


def build_model(config: BackboneTrainConfig) -> nn.Module:
    """A freshly initialised model of ``config``'s architecture (seeded by the caller)."""
    kwargs = model_config(config)
    return getattr(diffusers, kwargs.pop("_class_name"))(**kwargs)


def training_scheduler(model: nn.Module) -> SchedulerMixin:
    """The noise process a model of this class is trained with: flow matching for transformers."""
    if type(model).__name__ == "UNet2DModel":
        return DDPMScheduler(**DDPM_NOISE)
    return FlowMatchEulerDiscreteScheduler(**FLOW_NOISE)


def _save_checkpoint(folder: Path, model, ema, opt, step: int, elapsed: float, config) -> None:
    tensors = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    tensors |= {f"ema.{k}": v.contiguous() for k, v in ema.state_dict().items()}
    tensors |= optimizer_tensors(opt, "opt")
    atomic_write_bytes(folder / "checkpoint.safetensors", save(tensors))
    meta = {
        "step": step,
        "elapsed_s": elapsed,
        "config": config.to_dict(),
        "param_groups": opt.state_dict()["param_groups"],
    }
    atomic_write_text(folder / "checkpoint.json", json.dumps(meta, indent=1))


def _load_checkpoint(folder: Path, model, ema, opt, config) -> tuple[int, float]:
    meta = json.loads((folder / "checkpoint.json").read_text())
    saved = BackboneTrainConfig.from_dict({"arch": "embedded", **meta["config"]})  # older ones lack arch
    if json.dumps(model_config(saved), sort_keys=True) != json.dumps(model_config(config), sort_keys=True):
        arch = "a custom unet" if saved.unet is not None else f"arch {saved.arch}"
        raise ValueError(
            f"{folder} holds a checkpoint of another architecture ({arch}); "
            "resume it with the same --arch, or give another --out"
        )
    tensors = load_file(folder / "checkpoint.safetensors")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    load_optimizer(opt, tensors, "opt", meta["param_groups"])
    return meta["step"], meta["elapsed_s"]


def _batch_labels(
    labels: torch.Tensor | None, idx: torch.Tensor, null: int | None, dropout: float, gen: torch.Generator
) -> torch.Tensor | None:
    """The batch's class labels, each replaced by the null class with probability ``dropout``."""
    if null is None:
        return None
    if labels is None or int(labels[idx].min()) < 0:
        raise ValueError("a class-conditional model needs labelled data (the idx labels file)")
    drop = torch.rand(len(idx), generator=gen) < dropout
    return torch.where(drop, null, labels[idx])


def training_step(
    model: nn.Module, opt: torch.optim.Optimizer, images: torch.Tensor, noising: Noising | FlowNoising,
    batch_size: int, seed: int, bf16: bool = False, labels: torch.Tensor | None = None,
    label_dropout: float = 0.0,
) -> torch.Tensor:  # fmt: skip
    """One step of diffusion training (MSE against the noise process's target, on a seeded random
    batch, clipped gradients); the loss.

    A class-conditional model gets the batch's ``labels``, each dropped to the null class with
    probability ``label_dropout``. ``bf16`` runs the forward pass under bfloat16 autocast (CUDA);
    the loss is taken in fp32.
    """
    device = noising.device
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(images), (batch_size,), generator=gen)
    x0 = images[idx].to(device)
    t = noising.draw_timesteps(batch_size, gen).to(device)
    eps = torch.randn(x0.shape, generator=gen).to(device)
    y = _batch_labels(labels, idx, num_classes(model), label_dropout, gen)
    xt, target = noising(x0, eps, t)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        pred = denoise(model, xt, t, None if y is None else y.to(device))
    loss = torch.nn.functional.mse_loss(pred.float(), target)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss


def epoch_seconds(
    model: nn.Module, images: torch.Tensor, scheduler: SchedulerMixin, batch_size: int = 64, steps: int = 10,
    device: str | torch.device = "cpu", labels: torch.Tensor | None = None,
) -> float:  # fmt: skip
    """Seconds one epoch of training ``model`` on ``images`` would take here, from ``steps`` timed steps.

    Trains a copy (Adam on every weight, as fine-tuning would), so the model itself is untouched;
    the first step is a warm-up and is not timed. This is the yardstick for gate training's cost.
    """
    copy = deepcopy(model).to(device).train().requires_grad_(True)
    opt = torch.optim.Adam(copy.parameters(), lr=1e-5)
    noising = noise_process(scheduler, device)
    sync = synchronizer(device)
    times = []
    for step in range(steps + 1):
        sync()
        started = time.perf_counter()
        training_step(copy, opt, images, noising, batch_size, step, labels=labels)
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:]) * len(images) / batch_size


def _training_mode(model: nn.Module) -> None:
    """Put ``model`` in the mode it trains in.

    A class-conditional diffusers model drops labels by itself in training mode, independently in
    each block's embedding (DiT gives every block its own), which never trains a consistent null
    class; lees drops them once per sample instead, so such a model trains in eval mode, which is
    exact only while its dropout is 0.
    """
    if num_classes(model) is None:
        model.train()
        return
    if float(model.config.get("dropout", 0.0)) > 0:
        raise ValueError("a class-conditional model with dropout > 0 cannot be trained here; set dropout 0")
    model.eval()


def trained_pipeline(model: nn.Module, scheduler: SchedulerMixin):
    """The diffusers pipeline a trained model is saved and sampled as."""
    if type(model).__name__ == "UNet2DModel":
        return DDPMPipeline(unet=model, scheduler=scheduler)
    return ClassFlowPipeline(transformer=model, scheduler=scheduler)


def sample_grid(
    model: nn.Module, scheduler: SchedulerMixin, n: int, path: Path, config: BackboneTrainConfig, device
) -> Path:
    """``n`` samples of ``model`` saved as a grid: DDPM-50, or 50 Euler steps with guidance one row per
    class (``n`` rounded up to whole rows) for a class-conditional model."""
    classes = num_classes(model)
    if classes is None:
        grid = sample(model, None, n, steps=50, seed=config.seed, scheduler=scheduler, device=device,
                      progress=False)  # fmt: skip
        return save_grid(grid, path, nrow=8)
    per_class = -(-n // classes)
    labels = torch.arange(classes).repeat_interleave(per_class)
    pipe = trained_pipeline(model, deepcopy(scheduler))
    pipe.set_progress_bar_config(disable=True)
    gen = torch.Generator(device).manual_seed(config.seed)
    images = pipe(labels, config.guidance_scale, 50, generator=gen, output_type="pt").images
    return save_grid(images * 2 - 1, path, nrow=per_class)


class _Run:
    """One training run's model, EMA, optimiser and data, resumed from ``out`` where it has a checkpoint."""

    def __init__(self, out: Path, config: BackboneTrainConfig, device: str) -> None:
        if config.bf16 and torch.device(device).type != "cuda":
            raise ValueError(f"bf16 autocast is for CUDA devices; train on {device} without --bf16")
        self.out, self.config, self.device = out, config, device
        self.images, self.labels = load_images(config.data, "train")
        torch.manual_seed(config.seed)
        self.model = build_model(config).to(device)
        self.images = fit_images(self.images, self.model)  # never silently resized
        self.ema = deepcopy(self.model).requires_grad_(False)
        self.scheduler = training_scheduler(self.model)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.step, self.elapsed = 0, 0.0
        if (out / "checkpoint.json").is_file():
            self.step, self.elapsed = _load_checkpoint(out, self.model, self.ema, self.opt, config)
            print(f"resuming from step {self.step} ({self.elapsed / 60:.1f} min trained) in {out}")
        self.noising = noise_process(self.scheduler, device)

    def take_step(self) -> torch.Tensor:
        """One optimisation step (warm-up learning rate, seeded batch) and the EMA update."""
        config = self.config
        for group in self.opt.param_groups:
            group["lr"] = config.lr * min(1.0, (self.step + 1) / config.warmup)
        seed = config.seed * 1_000_003 + self.step
        torch.manual_seed(seed)  # dropout's masks: a resumed run draws the ones an uninterrupted run would
        loss = training_step(self.model, self.opt, self.images, self.noising, config.batch_size, seed,
                             config.bf16, self.labels, config.label_dropout)  # fmt: skip
        with torch.no_grad():
            for pe, pm in zip(self.ema.parameters(), self.model.parameters(), strict=True):
                pe.lerp_(pm, 1 - config.ema_decay)
        self.step += 1
        return loss

    def checkpoint(self) -> None:
        """Save the checkpoint, and a sample grid of the EMA model when one is due."""
        _save_checkpoint(self.out, self.model, self.ema, self.opt, self.step, self.elapsed, self.config)
        if self.config.grid_every and self.step % self.config.grid_every == 0 and self.config.grid > 0:
            path = self.out / "grids" / f"step-{self.step:06d}.png"
            path.parent.mkdir(exist_ok=True)
            sample_grid(self.ema.eval(), self.scheduler, self.config.grid, path, self.config, self.device)


def _train_loop(run: _Run) -> None:
    """Take steps until the configured number, or until ``max_minutes`` of this invocation have passed."""
    config = run.config
    log = (run.out / "train_log.jsonl").open("a")
    bar = tqdm(total=config.train_steps, initial=run.step, desc="backbone", unit="step")
    invoked = time.perf_counter()
    started = invoked - run.elapsed
    _training_mode(run.model)
    while run.step < config.train_steps:
        loss = run.take_step()
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        run.elapsed = time.perf_counter() - started
        out_of_time = (
            config.max_minutes is not None and time.perf_counter() - invoked > 60 * config.max_minutes
        )
        if run.step % 50 == 0 or run.step == config.train_steps or out_of_time:
            log.write(json.dumps({"step": run.step, "loss": loss.item(), "elapsed_s": round(run.elapsed, 1)}))
            log.write("\n")
            log.flush()
        if run.step % config.checkpoint_every == 0 or run.step == config.train_steps or out_of_time:
            run.checkpoint()
            started = time.perf_counter() - run.elapsed  # the grid's time is not training time
        if out_of_time:
            print(
                f"\nstopped at step {run.step} after {run.elapsed / 60:.1f} min (--max-minutes); "
                "run again to resume"
            )
            break
    bar.close()
    log.close()


def train_backbone(out: str | Path, config: BackboneTrainConfig, device: str = "cpu") -> Path:
    """Train (or resume) a backbone; write checkpoints, the EMA model as a diffusers folder and a grid.

    Args:
        out: the run's folder (checkpoints, ``train_log.jsonl``, ``grids/``, ``model/``).
        config: architecture, data and optimisation settings (``BackboneTrainConfig``).
        device: where to train (``cpu``, ``cuda``).

    Returns the model folder (``out/model``, a pipeline folder: ``unet/`` or ``transformer/`` +
    ``scheduler/``, fp32 EMA weights; ``export_backbone`` makes the half-precision copy to ship).

    Example:
        >>> config = BackboneTrainConfig(arch="embedded-dit", train_steps=10)
        >>> train_backbone("runs/dit", config)  # doctest: +SKIP
    """
    run = _Run(Path(out), config, device)
    run.out.mkdir(parents=True, exist_ok=True)
    _train_loop(run)
    ema = run.ema.eval()
    folder = run.out / "model"
    trained_pipeline(ema, run.scheduler).save_pretrained(folder)
    where = torch.device(device)
    hardware = torch.cuda.get_device_name(where) if where.type == "cuda" else where.type
    card = {
        "step": run.step,
        "elapsed_s": round(run.elapsed, 1),
        "device": hardware,
        "config": config.to_dict(),
    }
    atomic_write_text(folder / "training.json", json.dumps(card, indent=1))
    trained = f"step {run.step}, {run.elapsed / 60:.1f} min on {hardware}"
    if config.grid > 0:
        grid = sample_grid(ema, run.scheduler, config.grid, run.out / "samples.png", config, device)
        print(f"wrote {folder} (EMA weights, {trained}) and {grid}")
    else:
        print(f"wrote {folder} (EMA weights, {trained})")
    return folder


def export_backbone(model_folder: str | Path, out: str | Path, max_mb: float = 20.0) -> Path:
    """Copy a trained model folder (``train_backbone``'s ``out/model``) to ``out`` for shipping.

    The denoiser's weights are stored in half precision (safetensors fp16) if that keeps them at or
    under ``max_mb`` megabytes (10^6 bytes) and every weight stays finite, else in fp32 as trained.
    ``load_backbone(out)`` returns the model in fp32 either way. Returns ``out``.
    """
    src, out = Path(model_folder), Path(out)
    sub = "unet" if (src / "unet" / "config.json").is_file() else "transformer"
    config = diffusers.UNet2DModel.load_config(src, subfolder=sub)
    model = getattr(diffusers, config["_class_name"]).from_pretrained(
        src, subfolder=sub, low_cpu_mem_usage=False
    )
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    blob = save(half, metadata={"format": "pt"})
    finite = all(v.isfinite().all() for v in half.values() if v.is_floating_point())
    fits = finite and len(blob) <= max_mb * 1e6
    if not fits:
        blob = save(state, metadata={"format": "pt"})
    shutil.copytree(src, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    atomic_write_bytes(out / sub / "diffusion_pytorch_model.safetensors", blob)
    card = out / "training.json"
    if card.is_file():
        meta = json.loads(card.read_text()) | {"weights_dtype": "float16" if fits else "float32"}
        atomic_write_text(card, json.dumps(meta, indent=1))
    dtype = "fp16" if fits else "fp32"
    print(f"wrote {out} ({dtype} weights, {len(blob) / 1e6:.1f} MB, loaded as fp32)")
    return out
