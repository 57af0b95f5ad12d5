"""Training the gates: 2K scalars against the diffusion loss plus a compute penalty; backbone frozen.

Loss = E[||eps - eps_theta(x_t, t; gates)||^2] + lambda * C(t), with x_t noised by the backbone's own
scheduler at uniformly drawn timesteps, the straight-through gate (forward: hard 0/1 mask, backward:
gradient of the sigmoid) and C(t) either the mean gate value (``cost="blocks"``, the paper's
executed-block proxy) or the FLOP-weighted one (``cost="flops"``: each gate weighted by the FLOP
share its block saves). With ``target_ratio`` lambda becomes a Lagrange multiplier updated by dual
ascent on the measured ratio, so the user names the compute they want instead of a lambda.

Every ``kl_every`` steps the gates are compared with the previous check by the mean Bernoulli KL
over blocks and a grid of t (the paper's convergence measure); ``early_stop_kl`` stops training once
it stays below that value for ``patience`` checks.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler
from safetensors.torch import load_file, save
from torch import nn
from tqdm.auto import tqdm

from .blocks import Blocks, find_blocks
from .denoisers import denoise, num_classes
from .files import atomic_write_bytes
from .gates import SigmoidTimeGate, normalised_time, open_mask
from .latents import encode
from .skipping import GatedModel

T_GRID = torch.linspace(0.001, 1.0, 100)  # where gates are compared (KL) and ratios measured


@dataclass
class GateTrainConfig:
    """Settings of one gate training run (saved in its log)."""

    lam: float = 0.05
    steps: int | None = None  # default: one epoch of the data
    batch_size: int = 64
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    cost: str = "blocks"  # or "flops"
    target_ratio: float | None = None
    dual_lr: float = 0.05
    kl_every: int = 50
    early_stop_kl: float | None = None
    patience: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if not math.isfinite(self.lam) or self.lam < 0:
            raise ValueError(f"lambda must be >= 0, got {self.lam}")
        if self.target_ratio is not None and not 0 < self.target_ratio <= 1:
            raise ValueError(f"the target ratio must lie in (0, 1], got {self.target_ratio}")
        if self.cost not in ("blocks", "flops"):
            raise ValueError(f"cost must be blocks or flops, got {self.cost!r}")
        if self.batch_size < 1 or (self.steps is not None and self.steps < 1):
            raise ValueError("batch size and steps must be positive")


@dataclass
class GateTrainResult:
    """The trained gate, the blocks it gates, and what happened on the way."""

    gate: SigmoidTimeGate
    blocks: Blocks
    config: GateTrainConfig
    log: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False


def cost_weights(blocks: Blocks, cost: str) -> torch.Tensor:
    """Weights of the compute term over the K gates; they sum to 1, so the term is a ratio."""
    if cost == "flops":
        shares = torch.tensor(blocks.shares, dtype=torch.float32)
        return shares / shares.sum()
    return torch.full((len(blocks),), 1.0 / len(blocks))


def ratio(gate: SigmoidTimeGate, weights: torch.Tensor, t: torch.Tensor = T_GRID) -> float:
    """Weighted share of open gates over t (executed-block ratio, or FLOP share of the blocks)."""
    with torch.no_grad():
        return float((open_mask(gate(t.to(gate.a.device))).float() @ weights.to(gate.a.device)).mean())


def gate_kl(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-6) -> float:
    """Mean Bernoulli KL(p || q) over all entries."""
    p, q = p.clamp(eps, 1 - eps), q.clamp(eps, 1 - eps)
    return float((p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()).mean())


def _batch(
    backbone: nn.Module,
    data: torch.Tensor,
    labels: torch.Tensor | None,
    idx: torch.Tensor,
    autoencoder: nn.Module | None,
    gen: torch.Generator,
    device: str | torch.device,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Clean inputs of one batch (latents if there is an autoencoder) and their class labels."""
    x0 = data[idx].to(device)
    if autoencoder is not None:
        x0 = encode(autoencoder, x0)
    classes = num_classes(backbone)
    if classes is None:
        return x0, None
    y = labels[idx] if labels is not None else torch.randint(0, classes, (len(idx),), generator=gen)
    return x0, y.to(device)


def _fingerprint(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.state_dict().values()]


def train_gates(
    backbone: nn.Module,
    data: torch.Tensor,
    noise: DDPMScheduler,
    config: GateTrainConfig | None = None,
    blocks: Blocks | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    log_path: str | Path | None = None,
    labels: torch.Tensor | None = None,
    autoencoder: nn.Module | None = None,
) -> GateTrainResult:
    """Learn the 2K gate parameters of ``backbone`` on ``data`` (images in [-1, 1]), backbone frozen.

    ``labels`` are the class labels of ``data`` for a class-conditional backbone (uniform random
    labels when not given); ``autoencoder`` encodes each batch for a latent denoiser.
    """
    config = config or GateTrainConfig()
    blocks = blocks or find_blocks(backbone)
    backbone = backbone.to(device)
    gated = GatedModel(backbone, blocks)
    gate = SigmoidTimeGate(len(blocks)).to(device)
    weights = cost_weights(blocks, config.cost).to(device)
    opt = torch.optim.Adam(gate.parameters(), lr=config.lr, betas=config.betas)
    steps = config.steps or max(1, len(data) // config.batch_size)
    alphas = noise.alphas_cumprod.to(device)
    num_train = noise.config.num_train_timesteps
    lam = config.lam
    before = _fingerprint(backbone)
    was_training = [p.requires_grad for p in backbone.parameters()]
    backbone.requires_grad_(False)
    backbone.eval()
    result = GateTrainResult(gate, blocks, config)
    t_grid = T_GRID.to(device)
    previous = gate(t_grid).detach()
    calm = 0
    gen = torch.Generator().manual_seed(config.seed)
    started = time.perf_counter()
    bar = tqdm(range(steps), desc=f"gates (lambda={lam:g})", unit="step", disable=not progress)
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    log_file = Path(log_path).open("w") if log_path is not None else None  # noqa: SIM115 - closed in finally
    try:
        for step in bar:
            idx = torch.randint(0, len(data), (config.batch_size,), generator=gen)
            x0, y = _batch(backbone, data, labels, idx, autoencoder, gen, device)
            t = torch.randint(0, num_train, (config.batch_size,), generator=gen).to(device)
            eps = torch.randn(x0.shape, generator=gen).to(device)
            a = alphas[t].view(-1, *([1] * (x0.dim() - 1)))
            xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
            g = gate(normalised_time(t.cpu(), num_train).to(device))
            diffusion = nn.functional.mse_loss(denoise(gated, xt, t, y, mask=g, mode="ste"), eps)
            compute = (g @ weights).mean()
            loss = diffusion + lam * compute
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {loss.item()} at step {step}; the gates stop here")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            executed = float((open_mask(g.detach()).float() @ weights).mean())
            if config.target_ratio is not None:  # dual ascent: raise lambda while we run too much
                lam = max(0.0, lam + config.dual_lr * (executed - config.target_ratio))
            row = {
                "step": step + 1,
                "loss": diffusion.item(),
                "compute": compute.item(),
                "ratio": executed,
                "lambda": lam,
            }
            if (step + 1) % config.kl_every == 0 or step + 1 == steps:
                current = gate(t_grid).detach()
                row["kl"] = gate_kl(current, previous)
                row["grid_ratio"] = ratio(gate, weights)
                previous = current
                calm = (
                    calm + 1 if config.early_stop_kl is not None and row["kl"] < config.early_stop_kl else 0
                )
            result.log.append(row)
            if log_file is not None:
                log_file.write(json.dumps(row) + "\n")
                log_file.flush()
            bar.set_postfix(
                loss=f"{row['loss']:.4f}", compute=f"{row['compute']:.3f}", ratio=f"{executed:.2f}"
            )
            if calm >= config.patience:
                result.stopped_early = True
                break
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()
        for p, flag in zip(backbone.parameters(), was_training, strict=True):
            p.requires_grad_(flag)
    after = _fingerprint(backbone)
    if not all(torch.equal(x, y) for x, y in zip(before, after, strict=True)):
        raise RuntimeError("a backbone parameter changed during gate training")
    result.seconds = time.perf_counter() - started
    return result


@torch.no_grad()
def held_out_loss(
    backbone: nn.Module,
    blocks: Blocks,
    data: torch.Tensor,
    noise: DDPMScheduler,
    gate: SigmoidTimeGate | None = None,
    n: int = 2000,
    batch_size: int = 100,
    seed: int = 1234,
    device: str | torch.device = "cpu",
    labels: torch.Tensor | None = None,
    autoencoder: nn.Module | None = None,
) -> float:
    """Mean epsilon-MSE on the first ``n`` images (fixed noise and t); with ``gate``, under its hard masks."""
    gated = GatedModel(backbone.to(device), blocks)
    gen = torch.Generator().manual_seed(seed)
    num_train = noise.config.num_train_timesteps
    alphas = noise.alphas_cumprod.to(device)
    total, count = 0.0, 0
    for i in range(0, min(n, len(data)), batch_size):
        idx = torch.arange(i, min(n, len(data), i + batch_size))
        x0, y = _batch(backbone, data, labels, idx, autoencoder, gen, device)
        t = torch.randint(0, num_train, (len(x0),), generator=gen)
        eps = torch.randn(x0.shape, generator=gen).to(device)
        a = alphas[t.to(device)].view(-1, *([1] * (x0.dim() - 1)))
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        if gate is None:
            pred = denoise(backbone, xt, t.to(device), y)
        else:  # one hard decision per sample: the straight-through forward value is exactly the hard mask
            g = gate(normalised_time(t, num_train).to(device))
            pred = denoise(gated, xt, t.to(device), y, mask=g, mode="ste")
        total += nn.functional.mse_loss(pred, eps, reduction="sum").item()
        count += eps.numel()
    return total / count


def save_gate(gate: SigmoidTimeGate, block_names: Sequence[str], path: str | Path, **info: Any) -> Path:
    """Write the gate parameters as safetensors, with the block names and ``info`` as metadata."""
    metadata = {"block_names": json.dumps(list(block_names)), **{k: json.dumps(v) for k, v in info.items()}}
    tensors = {"a": gate.a.detach().cpu().contiguous(), "b": gate.b.detach().cpu().contiguous()}
    return atomic_write_bytes(path, save(tensors, metadata=metadata))


def load_gate(path: str | Path) -> tuple[SigmoidTimeGate, list[str]]:
    """Read a gate written by :func:`save_gate`: the gate and the block names it was trained for."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            names = json.loads((f.metadata() or {}).get("block_names", "null"))
        tensors = load_file(path)
    except (SafetensorError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a readable gate file: {err}") from None
    if names is None or set(tensors) != {"a", "b"} or tensors["a"].shape != (len(names),):
        raise ValueError(f"{path} is not a lees gate file")
    gate = SigmoidTimeGate(len(names))
    with torch.no_grad():
        gate.a.copy_(tensors["a"])
        gate.b.copy_(tensors["b"])
    return gate, names


def config_dict(config: GateTrainConfig) -> dict[str, Any]:
    """The config as JSON-ready settings for schedules and logs."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}
