"""Training the gates: 2K scalars against the diffusion loss plus a compute penalty; backbone frozen.

Loss = E[||target - f_theta(x_t, t; gates)||^2] + lambda * C(t), with x_t noised by the backbone's own
scheduler at uniformly drawn timesteps and the target its ``prediction_type`` names (eps, v or x0;
:mod:`lees.diffusion.noising`), the straight-through gate (forward: hard 0/1 mask, backward:
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import SchedulerMixin
from safetensors.torch import save
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..diffusion.noising import noise_process
from ..diffusion.samplers import normalised_time
from ..engine.actions import open_mask
from ..engine.blocks import Blocks, find_blocks
from ..engine.hooks import GatedModel
from ..models.data import fit_images
from ..models.denoisers import (
    batch_labels,
    check_context,
    context_rows,
    denoise,
    frozen,
    latent_shape,
    model_device_checked,
    on_device,
)
from ..models.latents import denoiser_input
from ..schedules.gates import SigmoidTimeGate
from ..schedules.saving import read_safetensors
from ..utils.config import Settings
from ..utils.distributed import all_mean, world
from ..utils.files import atomic_write_bytes, atomic_write_text
from .checkpoint import load_optimizer, optimizer_tensors

T_GRID = torch.linspace(0.001, 1.0, 100)  # where gates are compared (KL) and ratios measured


@dataclass
class GateTrainConfig(Settings):
    """Settings of one gate training run (saved in its log and checkpoint)."""

    RENAMED: ClassVar[dict[str, str]] = {"steps": "train_steps", "target_ratio": "target_gated_share"}

    lam: float = 0.05
    train_steps: int | None = None  # optimisation steps; default: one epoch of the data
    batch_size: int = 64
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    cost: str = "blocks"  # or "flops"
    estimator: str = "soft"  # or "ste" (the paper's straight-through estimator; see docs/method.md)
    # budget mode: the share of the gated blocks that should run, counted as the compute term counts
    # them (each block alike, or by its FLOPs with cost="flops"); not a FLOP ratio of the whole model
    target_gated_share: float | None = None
    dual_lr: float = 0.05
    kl_every: int = 50
    early_stop_kl: float | None = None
    patience: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if not math.isfinite(self.lam) or self.lam < 0:
            raise ValueError(f"lambda must be >= 0, got {self.lam}")
        if self.target_gated_share is not None and not 0 < self.target_gated_share <= 1:
            raise ValueError(f"the target gated share must lie in (0, 1], got {self.target_gated_share}")
        self.betas = tuple(self.betas)
        if self.estimator not in ("ste", "soft"):
            raise ValueError(f"estimator must be ste or soft, got {self.estimator!r}")
        if self.cost not in ("blocks", "flops"):
            raise ValueError(f"cost must be blocks or flops, got {self.cost!r}")
        if self.batch_size < 1 or (self.train_steps is not None and self.train_steps < 1):
            raise ValueError("batch size and train steps must be positive")


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


def gated_share(gate: SigmoidTimeGate, weights: torch.Tensor, t: torch.Tensor = T_GRID) -> float:
    """Weighted share of open gates over t (executed-block ratio, or FLOP share of the gated blocks)."""
    with torch.no_grad():
        return float((open_mask(gate(t.to(gate.a.device))).float() @ weights.to(gate.a.device)).mean())


def meet_gated_share(
    gate: SigmoidTimeGate,
    weights: torch.Tensor,
    t: torch.Tensor,
    target: float,
) -> float:
    """Shift every gate's bias by one offset (in place) so that the gates open the share ``target`` of
    the gated cells at the times ``t``, as near as their cells allow; the offset is returned.

    A common offset of the logits a_k t + b_k keeps the order the training gave every (block, time)
    cell and only moves the threshold between open and closed: the gates' own ranking decides which
    cells give way or are added. Budget mode steers the share over training's random times; this meets
    it on the sampler's times, so the schedule that runs is judged at the budget asked for.

    Args:
        gate: the trained gates (their ``b`` is changed).
        weights: (K,) weight of each block's cell, summing to 1 (:func:`cost_weights`).
        t: the sampler's times as the gates take them (:func:`lees.diffusion.samplers.gate_time`).
        target: the share in (0, 1] to meet.
    """
    with torch.no_grad():
        logits = gate.logits(t.to(gate.a.device)).flatten().double().cpu()
        cell = (weights.double().cpu() / len(t)).repeat(len(t))
        values, group = torch.unique(logits, sorted=True, return_inverse=True)
        values = values.flip(0)  # open from the largest logit down, tied cells together
        opened = torch.zeros(len(values) + 1, dtype=torch.float64)
        opened[1:] = torch.cumsum(torch.zeros(len(values), dtype=torch.float64).index_add_(
            0, len(values) - 1 - group, cell), 0)  # fmt: skip
        n = int(torch.argmin((opened - target).abs()))  # the first of two as near: from below
        upper = values[n - 1] if n > 0 else values[0] + 2.0  # the last cell to open, the first to stay shut
        lower = values[n] if n < len(values) else values[-1] - 2.0
        offset = -float(upper + lower) / 2
        gate.b.add_(offset)
    return offset


def gate_kl(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-6) -> float:
    """Mean Bernoulli KL(p || q) over all entries."""
    p, q = p.clamp(eps, 1 - eps), q.clamp(eps, 1 - eps)
    return float((p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()).mean())


def _fingerprint(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.state_dict().values()]


def train_gates(
    backbone: nn.Module,
    data: torch.Tensor,
    scheduler: SchedulerMixin,
    config: GateTrainConfig | None = None,
    blocks: Blocks | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    log_path: str | Path | None = None,
    labels: torch.Tensor | None = None,
    autoencoder: nn.Module | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 25,
    context: torch.Tensor | None = None,
    resize: bool = False,
) -> GateTrainResult:
    """Learn the 2K gate parameters of ``backbone`` on ``data`` (images in [-1, 1]), backbone frozen.

    Args:
        backbone: the denoiser, on the device it trains on (frozen, and in eval mode, for the run; its
            ``requires_grad`` flags and training mode are restored after).
        data: training images in [-1, 1], with the channels and size the backbone takes
            (:func:`lees.models.data.fit_images`; ``resize`` fits them).
        scheduler: the backbone's noise scheduler (its noise process and ``prediction_type``).
        config: lambda or a budget (``target_gated_share``), optimisation and early-stop settings.
        blocks: the blocks to gate (default: :func:`lees.find_blocks`).
        device: must be the backbone's own, if given (a model is never moved).
        progress: show a progress bar.
        log_path: write each step's log row there as JSON lines.
        labels: class labels of ``data`` for a class-conditional backbone (uniform random when not given).
        autoencoder: encodes each batch for a latent denoiser.
        checkpoint: save the run's whole state there every ``checkpoint_every`` steps, and resume from
            it when started again, ending with the gates of an uninterrupted run.
        checkpoint_every: steps between checkpoints.
        context: what a cross-attention backbone attends to, one row for all of ``data`` or one per image.
        resize: fit ``data`` to the backbone's channels and size instead of refusing a mismatch.

    Under torchrun each rank trains on its slice of the same global batch (:mod:`lees.utils.distributed`).

    Example:
        >>> result = train_gates(model, images, scheduler, GateTrainConfig(lam=0.05))  # doctest: +SKIP
        >>> schedule = Schedule.from_gate(result.gate, result.blocks, timesteps)  # doctest: +SKIP
    """
    check_context(backbone, context, len(data))
    data = fit_images(data, backbone, autoencoder, resize)
    inputs = {"labels": labels, "autoencoder": autoencoder, "context": context}
    run = _GateRun(backbone, data, scheduler, config or GateTrainConfig(), blocks, device, checkpoint, inputs)
    before = _fingerprint(backbone)
    with frozen(backbone):
        _train_loop(run, progress, log_path, checkpoint_every)
    if not all(torch.equal(x, y) for x, y in zip(before, _fingerprint(backbone), strict=True)):
        raise RuntimeError("a backbone parameter changed during gate training")
    run.result.stopped_early = run.settled
    run.result.seconds = time.perf_counter() - run.started
    return run.result


def _train_loop(run: _GateRun, progress: bool, log_path: str | Path | None, checkpoint_every: int) -> None:
    """Steps from where the run stands to its last one (or until the gates settle), logged by rank 0
    and checkpointed every ``checkpoint_every`` steps."""
    main, first = run.rank == 0, run.state["step"]
    last = first if run.settled else run.steps  # a resumed run that had stopped takes no step
    bar = tqdm(
        range(first, last), initial=first, total=run.steps, desc=f"gates (lambda={run.config.lam:g})",
        unit="step", disable=not (progress and main),
    )  # fmt: skip
    log_file = _open_log(log_path, run.result.log) if main else None
    try:
        for step in bar:
            row = run.step(step)
            run.result.log.append(row)
            if log_file is not None:
                log_file.write(json.dumps(row) + "\n")
                log_file.flush()
            bar.set_postfix(
                loss=f"{row['loss']:.4f}", compute=f"{row['compute']:.3f}", share=f"{row['gated_share']:.2f}"
            )
            if main and ((step + 1) % checkpoint_every == 0 or step + 1 == run.steps or run.settled):
                run.save(step + 1, run.gen.get_state())
            if run.settled:
                break
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()


class _GateRun:
    """The moving parts of one gate training run: the gate and its optimizer, the random draws, the
    state a checkpoint keeps, and one training step."""

    def __init__(self, backbone, data, scheduler, config, blocks, device, checkpoint, inputs) -> None:
        self.backbone, self.data, self.config, self.checkpoint = backbone, data, config, checkpoint
        self.inputs = inputs  # labels, autoencoder, context (see train_gates)
        blocks = blocks or find_blocks(backbone)
        self.device = model_device_checked(backbone, device)
        self.rank, world_size = world()
        if config.batch_size % world_size:
            raise ValueError(f"the batch size {config.batch_size} must divide among {world_size} processes")
        self.local = slice(
            self.rank * config.batch_size // world_size, (self.rank + 1) * config.batch_size // world_size
        )
        self.gated = GatedModel(backbone, blocks)
        self.gate = SigmoidTimeGate(len(blocks), blocks.names).to(self.device)
        self.trained = DistributedDataParallel(self.gate) if world_size > 1 else self.gate
        self.weights = cost_weights(blocks, config.cost).to(self.device)
        self.opt = torch.optim.Adam(self.gate.parameters(), lr=config.lr, betas=config.betas)
        self.steps = config.train_steps or max(1, len(data) // config.batch_size)
        self.noising = noise_process(scheduler, self.device)
        self.result = GateTrainResult(self.gate, blocks, config)
        self.t_grid = T_GRID.to(self.device)
        self.state = {"step": 0, "lam": config.lam, "calm": 0, "seconds": 0.0}
        self.previous = self.gate(self.t_grid).detach()
        self.gen = torch.Generator().manual_seed(config.seed)
        if checkpoint is not None and Path(checkpoint).is_file():
            self.state, self.previous, self.result.log = _resume(
                checkpoint, config, self.gate, self.opt, self.gen, self.device
            )
        self.started = time.perf_counter() - self.state["seconds"]

    @property
    def settled(self) -> bool:
        """Whether the gates stayed settled (KL below ``early_stop_kl``) for ``patience`` checks."""
        return self.state["calm"] >= self.config.patience

    def draw(self) -> tuple[torch.Tensor, ...]:
        """This step's batch on the model's device: noised inputs, timesteps, the model's target
        there (:mod:`lees.diffusion.noising`), labels, context."""
        config, gen, autoencoder = self.config, self.gen, self.inputs["autoencoder"]
        shape = tuple(self.data.shape[1:]) if autoencoder is None else latent_shape(self.backbone)
        idx = torch.randint(0, len(self.data), (config.batch_size,), generator=gen)
        y = batch_labels(self.backbone, self.inputs["labels"], idx, gen)
        t = self.noising.draw_timesteps(config.batch_size, gen)
        eps = torch.randn((config.batch_size, *shape), generator=gen)
        idx, t, eps = idx[self.local], t[self.local].to(self.device), eps[self.local].to(self.device)
        x0 = denoiser_input(self.data[idx].to(self.device), autoencoder)
        y = None if y is None else y[self.local].to(self.device)
        ctx = on_device(context_rows(self.inputs["context"], idx), self.device)
        xt, target = self.noising(x0, eps, t)
        return xt, t, target, y, ctx

    def step(self, step: int) -> dict[str, float]:
        """One gradient step on a fresh batch, the dual update of lambda and the KL check; its log row."""
        rng = self.gen.get_state()  # this step's draws start here (what a checkpoint before it keeps)
        xt, t, target, y, ctx = self.draw()
        g = self.trained(normalised_time(t.cpu(), self.noising.num_train).to(self.device))
        pred = denoise(self.gated, xt, t, y, ctx, mask=g, mode=self.config.estimator)
        diffusion = nn.functional.mse_loss(pred, target)
        compute = (g @ self.weights).mean()
        loss = diffusion + self.state["lam"] * compute
        if not torch.isfinite(loss):  # the gates are still those of the last good step
            where = ""
            if self.checkpoint is not None and self.rank == 0:
                self.save(step, rng)
                where = f"; the last good gates are in {self.checkpoint}"
            raise FloatingPointError(f"the loss became {loss.item()} at step {step + 1}{where}")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        executed = float((open_mask(g.detach()).float() @ self.weights).mean())
        executed, diffusion_mean, compute_mean = all_mean(executed, diffusion.item(), compute.item())
        target = self.config.target_gated_share
        if target is not None:  # dual ascent: raise lambda while we run too much
            self.state["lam"] = max(0.0, self.state["lam"] + self.config.dual_lr * (executed - target))
        row = {"step": step + 1, "loss": diffusion_mean, "compute": compute_mean, "gated_share": executed,
               "lambda": self.state["lam"]}  # fmt: skip
        if (step + 1) % self.config.kl_every == 0 or step + 1 == self.steps:
            self._check(row)
        return row

    def _check(self, row: dict[str, float]) -> None:
        """The paper's convergence measure: KL between this check's gates and the last one's."""
        current = self.gate(self.t_grid).detach()
        row["kl"] = gate_kl(current, self.previous)
        row["grid_gated_share"] = gated_share(self.gate, self.weights)
        self.previous = current
        settled = self.config.early_stop_kl is not None and row["kl"] < self.config.early_stop_kl
        self.state["calm"] = self.state["calm"] + 1 if settled else 0

    def save(self, step: int, rng: torch.Tensor) -> None:
        """Checkpoint the run as of ``step`` (``rng``: the generator state to go on from)."""
        if self.checkpoint is None:
            return
        self.state.update(step=step, seconds=time.perf_counter() - self.started)
        _save_checkpoint(
            self.checkpoint, self.config, self.gate, self.opt, rng, self.previous, self.state, self.result.log
        )


def _open_log(log_path: str | Path | None, rows: list[dict]):
    """The JSONL log, rewritten with the rows a resumed run keeps, open for appending."""
    if log_path is None:
        return None
    atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in rows))
    return Path(log_path).open("a")


CHECKPOINT_FORMAT = "lees.gate-checkpoint"
LOG_RENAMED = {"ratio": "gated_share", "grid_ratio": "grid_gated_share"}  # log keys of an earlier lees


def _save_checkpoint(path, config, gate, opt, rng, previous, state, log) -> None:
    """Everything a resumed run needs (``rng``: the generator state to go on from), written atomically."""
    tensors = {"a": gate.a.detach().cpu(), "b": gate.b.detach().cpu(), "rng": rng}
    tensors["previous"] = previous.cpu()
    tensors |= optimizer_tensors(opt, "adam")
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "config": json.dumps(config.to_dict()),
        "state": json.dumps(state),
        "log": json.dumps(log),
    }
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata))


def _resume(path, config, gate, opt, gen, device):
    """Load a checkpoint written by :func:`_save_checkpoint` into the fresh gate, optimizer and RNG."""
    tensors, metadata = read_safetensors(path, "gate checkpoint (delete it to start over)")
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a lees gate checkpoint; delete it to start over")
    if GateTrainConfig.from_dict(json.loads(metadata["config"])) != config:
        raise ValueError(
            f"{path} was written by a run with other settings; delete it or choose another folder"
        )
    with torch.no_grad():
        gate.a.copy_(tensors["a"])
        gate.b.copy_(tensors["b"])
    load_optimizer(opt, tensors, "adam")
    gen.set_state(tensors["rng"])
    log = [{LOG_RENAMED.get(k, k): v for k, v in row.items()} for row in json.loads(metadata["log"])]
    return json.loads(metadata["state"]), tensors["previous"].to(device), log
