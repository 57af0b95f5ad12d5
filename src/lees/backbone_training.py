"""Training a small DDPM backbone on local data: how the embedded default model is made.

A diffusers ``UNet2DModel`` with the DDPM recipe (linear betas, 1000 steps, epsilon prediction,
EMA of the weights). Every step's batch, timesteps and noise are drawn from a generator seeded by
(seed, step), so a run that is stopped and resumed from its checkpoint takes exactly the steps an
uninterrupted run would. Checkpoints (safetensors + JSON) are written atomically.
"""

from __future__ import annotations

import json
import statistics
import time
from copy import deepcopy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from safetensors.torch import load_file, save
from torch import nn
from tqdm.auto import tqdm

from .backbones import DDPM_NOISE
from .data import load_images
from .denoisers import denoise
from .files import atomic_write_bytes, atomic_write_text
from .images import save_grid
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
    grid: int = 64
    unet: dict[str, Any] | None = None


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


def _load_checkpoint(folder: Path, model, ema, opt) -> tuple[int, float]:
    meta = json.loads((folder / "checkpoint.json").read_text())
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
    model: nn.Module, opt: torch.optim.Optimizer, images: torch.Tensor, alphas: torch.Tensor, batch_size: int,
    seed: int,
) -> torch.Tensor:  # fmt: skip
    """One step of DDPM training (epsilon-MSE on a seeded random batch, clipped gradients); the loss."""
    device = alphas.device
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(images), (batch_size,), generator=gen)
    x0 = images[idx].to(device)
    t = torch.randint(0, len(alphas), (batch_size,), generator=gen).to(device)
    eps = torch.randn(x0.shape, generator=gen).to(device)
    a = alphas[t].view(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
    loss = torch.nn.functional.mse_loss(denoise(model, xt, t), eps)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss


def epoch_seconds(
    model: nn.Module, images: torch.Tensor, noise: DDPMScheduler, batch_size: int = 64, steps: int = 10,
    device: str | torch.device = "cpu",
) -> float:  # fmt: skip
    """Seconds one epoch of training ``model`` on ``images`` would take here, from ``steps`` timed steps.

    Trains a copy (Adam on every weight, as fine-tuning would), so the model itself is untouched;
    the first step is a warm-up and is not timed. This is the yardstick for gate training's cost.
    """
    copy = deepcopy(model).to(device).train().requires_grad_(True)
    opt = torch.optim.Adam(copy.parameters(), lr=1e-5)
    alphas = noise.alphas_cumprod.to(device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    times = []
    for step in range(steps + 1):
        sync()
        started = time.perf_counter()
        training_step(copy, opt, images, alphas, batch_size, step)
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:]) * len(images) / batch_size


def train_backbone(out: str | Path, config: BackboneTrainConfig, device: str = "cpu") -> Path:
    """Train (or resume) a DDPM UNet; write checkpoints, the EMA model as a diffusers folder and a grid.

    Returns the model folder (``out/model``, a DDPM pipeline folder: ``unet/`` + ``scheduler/``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images, _ = load_images(config.data, "train")
    torch.manual_seed(config.seed)
    model = UNet2DModel(**(config.unet or EMBEDDED_UNET)).to(device)
    ema = UNet2DModel(**(config.unet or EMBEDDED_UNET)).to(device)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    noise = DDPMScheduler(**DDPM_NOISE)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    step, elapsed = 0, 0.0
    if (out / "checkpoint.json").is_file():
        step, elapsed = _load_checkpoint(out, model, ema, opt)
        print(f"resuming from step {step} ({elapsed / 60:.1f} min trained) in {out}")
    alphas = noise.alphas_cumprod.to(device)
    log = (out / "train_log.jsonl").open("a")
    bar = tqdm(total=config.steps, initial=step, desc="backbone", unit="step")
    invoked = time.perf_counter()
    started = invoked - elapsed
    model.train()
    while step < config.steps:
        for group in opt.param_groups:
            group["lr"] = config.lr * min(1.0, (step + 1) / config.warmup)
        loss = training_step(model, opt, images, alphas, config.batch_size, config.seed * 1_000_003 + step)
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm, 1 - config.ema_decay)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        elapsed = time.perf_counter() - started
        if step % 50 == 0:
            log.write(json.dumps({"step": step, "loss": loss.item(), "elapsed_s": round(elapsed, 1)}) + "\n")
            log.flush()
        out_of_time = (
            config.max_minutes is not None and time.perf_counter() - invoked > 60 * config.max_minutes
        )
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
    DDPMPipeline(unet=ema, scheduler=noise).save_pretrained(folder)
    atomic_write_text(
        folder / "training.json",
        json.dumps({"step": step, "elapsed_s": round(elapsed, 1), "config": asdict(config)}, indent=1),
    )
    grid = sample(ema, None, config.grid, steps=50, seed=config.seed, noise=noise, device=device)
    save_grid(grid, out / "samples.png", nrow=8)
    print(f"wrote {folder} (EMA weights, step {step}) and {out / 'samples.png'}")
    return folder
