"""Training a small DDPM backbone on local data: how the embedded models are made.

A diffusers ``UNet2DModel`` with the DDPM recipe (linear betas, 1000 steps, epsilon prediction,
EMA of the weights): the embedded default architecture, or a named one (``arch="embedded-base"``).
Every step's batch, timesteps and noise are drawn from a generator seeded by (seed, step), so a run
that is stopped and resumed from its checkpoint takes exactly the steps an uninterrupted run would.
Checkpoints (safetensors + JSON) are written atomically. ``export_backbone`` stores a trained model
folder with half-precision weights where that keeps it small enough to ship.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from copy import deepcopy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMPipeline, DDPMScheduler, SchedulerMixin, UNet2DModel
from safetensors.torch import load_file, save
from torch import nn
from tqdm.auto import tqdm

from .backbones import ARCHITECTURES, DDPM_NOISE
from .data import fit_images, load_images
from .denoisers import denoise
from .files import atomic_write_bytes, atomic_write_text
from .images import save_grid
from .noising import Noising
from .sampling import sample

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


@dataclass
class BackboneTrainConfig:
    """Settings of one backbone training run (saved beside its checkpoints)."""

    data: str = "fashion-mnist"
    steps: int = 5000
    batch_size: int = 64
    lr: float = 5e-4
    warmup: int = 200
    ema_decay: float = 0.999
    seed: int = 0
    checkpoint_every: int = 250
    max_minutes: float | None = None  # of this invocation; a resumed run gets its own
    grid: int = 64  # samples (50 DDPM steps) in out/samples.png at the end; 0: none
    unet: dict[str, Any] | None = None  # UNet2DModel keyword arguments; replaces ``arch`` where given
    arch: str = "embedded"  # EMBEDDED_UNET, or an ARCHITECTURES entry that is a UNet2DModel
    bf16: bool = False  # bfloat16 autocast of the forward pass (CUDA only); weights and EMA stay fp32


def unet_config(config: BackboneTrainConfig) -> dict[str, Any]:
    """The ``UNet2DModel`` keyword arguments a training run builds: ``unet``, else ``arch``'s config."""
    if config.unet is not None:
        return dict(config.unet)
    if config.arch == "embedded":
        return dict(EMBEDDED_UNET)
    known = ["embedded"] + [k for k, v in ARCHITECTURES.items() if v["_class_name"] == "UNet2DModel"]
    if config.arch not in known:
        raise ValueError(f"cannot train architecture {config.arch!r}; trainable: {', '.join(known)}")
    return {k: v for k, v in ARCHITECTURES[config.arch].items() if k != "_class_name"}


def _save_checkpoint(folder: Path, model, ema, opt, step: int, elapsed: float, config) -> None:
    tensors = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    tensors |= {f"ema.{k}": v.contiguous() for k, v in ema.state_dict().items()}
    opt_state = opt.state_dict()
    for idx, state in opt_state["state"].items():
        for key, value in state.items():
            tensors[f"opt.{idx}.{key}"] = torch.as_tensor(value).contiguous()
    atomic_write_bytes(folder / "checkpoint.safetensors", save(tensors))
    meta = {
        "step": step,
        "elapsed_s": elapsed,
        "config": asdict(config),
        "param_groups": opt_state["param_groups"],
    }
    atomic_write_text(folder / "checkpoint.json", json.dumps(meta, indent=1))


def _load_checkpoint(folder: Path, model, ema, opt, config) -> tuple[int, float]:
    meta = json.loads((folder / "checkpoint.json").read_text())
    saved = BackboneTrainConfig(**{"arch": "embedded", **meta["config"]})  # older checkpoints lack arch
    if json.dumps(unet_config(saved), sort_keys=True) != json.dumps(unet_config(config), sort_keys=True):
        arch = "a custom unet" if saved.unet is not None else f"arch {saved.arch}"
        raise ValueError(
            f"{folder} holds a checkpoint of another architecture ({arch}); "
            "resume it with the same --arch, or give another --out"
        )
    tensors = load_file(folder / "checkpoint.safetensors")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta["step"], meta["elapsed_s"]


def training_step(
    model: nn.Module, opt: torch.optim.Optimizer, images: torch.Tensor, noising: Noising, batch_size: int,
    seed: int, bf16: bool = False,
) -> torch.Tensor:  # fmt: skip
    """One step of diffusion training (MSE against the scheduler's target, on a seeded random batch,
    clipped gradients); the loss.

    ``bf16`` runs the forward pass under bfloat16 autocast (CUDA); the loss is taken in fp32.
    """
    device = noising.alphas.device
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(images), (batch_size,), generator=gen)
    x0 = images[idx].to(device)
    t = torch.randint(0, noising.num_train, (batch_size,), generator=gen).to(device)
    eps = torch.randn(x0.shape, generator=gen).to(device)
    xt, target = noising(x0, eps, t)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        pred = denoise(model, xt, t)
    loss = torch.nn.functional.mse_loss(pred.float(), target)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss


def epoch_seconds(
    model: nn.Module, images: torch.Tensor, scheduler: SchedulerMixin, batch_size: int = 64, steps: int = 10,
    device: str | torch.device = "cpu",
) -> float:  # fmt: skip
    """Seconds one epoch of training ``model`` on ``images`` would take here, from ``steps`` timed steps.

    Trains a copy (Adam on every weight, as fine-tuning would), so the model itself is untouched;
    the first step is a warm-up and is not timed. This is the yardstick for gate training's cost.
    """
    copy = deepcopy(model).to(device).train().requires_grad_(True)
    opt = torch.optim.Adam(copy.parameters(), lr=1e-5)
    noising = Noising(scheduler, device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    times = []
    for step in range(steps + 1):
        sync()
        started = time.perf_counter()
        training_step(copy, opt, images, noising, batch_size, step)
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:]) * len(images) / batch_size


def train_backbone(out: str | Path, config: BackboneTrainConfig, device: str = "cpu") -> Path:
    """Train (or resume) a DDPM UNet; write checkpoints, the EMA model as a diffusers folder and a grid.

    Returns the model folder (``out/model``, a DDPM pipeline folder: ``unet/`` + ``scheduler/``, fp32
    EMA weights; ``export_backbone`` makes the half-precision copy to ship).
    """
    kwargs = unet_config(config)
    if config.bf16 and torch.device(device).type != "cuda":
        raise ValueError(f"bf16 autocast is for CUDA devices; train on {device} without --bf16")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images, _ = load_images(config.data, "train")
    torch.manual_seed(config.seed)
    model = UNet2DModel(**kwargs).to(device)
    images = fit_images(images, model)  # the architecture's channels and size, never silently resized
    ema = UNet2DModel(**kwargs).to(device)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    scheduler = DDPMScheduler(**DDPM_NOISE)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    step, elapsed = 0, 0.0
    if (out / "checkpoint.json").is_file():
        step, elapsed = _load_checkpoint(out, model, ema, opt, config)
        print(f"resuming from step {step} ({elapsed / 60:.1f} min trained) in {out}")
    noising = Noising(scheduler, device)
    log = (out / "train_log.jsonl").open("a")
    bar = tqdm(total=config.steps, initial=step, desc="backbone", unit="step")
    invoked = time.perf_counter()
    started = invoked - elapsed
    model.train()
    while step < config.steps:
        for group in opt.param_groups:
            group["lr"] = config.lr * min(1.0, (step + 1) / config.warmup)
        seed = config.seed * 1_000_003 + step
        torch.manual_seed(seed)  # dropout's masks: a resumed run draws the ones an uninterrupted run would
        loss = training_step(model, opt, images, noising, config.batch_size, seed, config.bf16)
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm, 1 - config.ema_decay)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        elapsed = time.perf_counter() - started
        out_of_time = (
            config.max_minutes is not None and time.perf_counter() - invoked > 60 * config.max_minutes
        )
        if step % 50 == 0 or step == config.steps or out_of_time:
            log.write(json.dumps({"step": step, "loss": loss.item(), "elapsed_s": round(elapsed, 1)}) + "\n")
            log.flush()
        if step % config.checkpoint_every == 0 or step == config.steps or out_of_time:
            _save_checkpoint(out, model, ema, opt, step, elapsed, config)
        if out_of_time:
            print(
                f"\nstopped at step {step} after {elapsed / 60:.1f} min (--max-minutes); run again to resume"
            )
            break
    bar.close()
    log.close()
    ema.eval()
    folder = out / "model"
    DDPMPipeline(unet=ema, scheduler=scheduler).save_pretrained(folder)
    where = torch.device(device)
    hardware = torch.cuda.get_device_name(where) if where.type == "cuda" else where.type
    card = {"step": step, "elapsed_s": round(elapsed, 1), "device": hardware, "config": asdict(config)}
    atomic_write_text(folder / "training.json", json.dumps(card, indent=1))
    trained = f"step {step}, {elapsed / 60:.1f} min on {hardware}"
    if config.grid > 0:
        grid = sample(ema, None, config.grid, steps=50, seed=config.seed, scheduler=scheduler, device=device)
        save_grid(grid, out / "samples.png", nrow=8)
        print(f"wrote {folder} (EMA weights, {trained}) and {out / 'samples.png'}")
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
    unet = UNet2DModel.from_pretrained(src, subfolder="unet", low_cpu_mem_usage=False)
    state = {k: v.detach().contiguous() for k, v in unet.state_dict().items()}
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    blob = save(half, metadata={"format": "pt"})
    finite = all(v.isfinite().all() for v in half.values() if v.is_floating_point())
    fits = finite and len(blob) <= max_mb * 1e6
    if not fits:
        blob = save(state, metadata={"format": "pt"})
    shutil.copytree(src, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    atomic_write_bytes(out / "unet" / "diffusion_pytorch_model.safetensors", blob)
    card = out / "training.json"
    if card.is_file():
        meta = json.loads(card.read_text()) | {"weights_dtype": "float16" if fits else "float32"}
        atomic_write_text(card, json.dumps(meta, indent=1))
    dtype = "fp16" if fits else "fp32"
    print(f"wrote {out} ({dtype} weights, {len(blob) / 1e6:.1f} MB, loaded as fp32)")
    return out
