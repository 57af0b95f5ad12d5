"""The step router: a learned run-or-reuse schedule, trained on the sampler's own trajectory.

Where the paper's gate g_k(t) = sigmoid(a_k t + b_k) is monotone in t (a block it closes never
runs again, so there is nothing fresh to reuse), the router has one logit per block and sampler
step, K x S, input-invariant, as Learning-to-Cache's router (horseee/learning-to-cache). Block k
at step j *runs* where sigmoid(logit) >= 0.5 and otherwise *reuses* the residual it computed the
last time it ran; step 0 always runs (nothing is cached yet). A "step" is one model call of the
solver's run (any diffusers scheduler, stepped by :class:`lees.diffusion.samplers.SolverRun`; Heun
calls twice a step), at its timesteps as it gives them.

Objective (teacher = the frozen full model on its own trajectory): the full sampler is run once
for ``trajectories`` start noises, keeping every state x_j, the full model's prediction there and
every block's residual. A training step draws a step j and a batch; each block's cached residual
at j is what the schedule would hold there: the residual of the last step before j where the
block ran, relaxed as sum_i w_i prod_{i<m<j} (1 - w_m) R_i over the earlier steps i (step 0
always runs), with the teacher's residuals R_i. The student's prediction at the teacher's x_j,
each block carrying ``w_j * fresh + (1 - w_j) * cached`` (the engine's soft reuse), is compared
with the teacher's. So a block left unrefreshed for many steps is charged for its stale residual,
not just for one step of drift. Loss = MSE / (the same MSE with nothing refreshed since step 0)
+ lambda * the FLOP fraction the schedule runs. With ``estimator="ste"`` the weights are the hard
decisions in the forward pass (the loss is that of the schedule that will run), sigmoid gradients
in the backward. In budget mode lambda is a Lagrange multiplier raised while the hard schedule runs
more than ``target_flop_ratio`` of the full model's FLOPs (starting at 0 when the start runs within the
budget). Inside the budget the multiplier is 0 and the error term alone ranks the cells, so the final
table meets the budget from below to within one block-step, both ways, by the learned scores: the
least confident runs turn into reuses, or the most confident reuses into runs. (A two-sided multiplier,
negative below the budget, was tried: Adam's per-logit step scale turns its small uniform push into as
large a step as the error's, and on the tests' toy it added the runs to the block that does not change.)
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers import DDPMScheduler, SchedulerMixin
from torch import nn
from tqdm.auto import tqdm

from ..diffusion.noising import prediction_type, split
from ..diffusion.samplers import SolverRun, timestep_values
from ..diffusion.solvers import solver_name
from ..engine.actions import FORECAST, REUSE, RUN, straight_through
from ..engine.blocks import Blocks, find_blocks
from ..engine.forecast import extrapolate
from ..engine.hooks import Engine, ReuseCache
from ..models.denoisers import (
    check_context,
    check_guidance,
    draw_labels,
    frozen,
    guided_denoise,
    image_seq_len,
    latent_shape,
    model_device,
)
from ..schedules.baselines import reuse_baseline
from ..schedules.fitting import IMAGE_SEQ_LEN
from ..schedules.schedule import Schedule
from ..utils.config import Settings
from ..utils.files import atomic_write_text

OBJECTIVES = {
    "kl": "step, steps drawn by the KL weight of their Gaussian transition (the ELBO's): last steps most",
    "rollout": "distance of the student's own run from the teacher's (same noise): every state + final",
    "step": "eps MSE at the teacher's states, caches as the schedule would hold them",
}

KL_NEEDS_DDPM = (
    "the kl objective weighs DDPM's noisy transitions and needs the ddpm sampler (DDPMScheduler), not {} "
    "(DDIM adds no noise; other solvers step otherwise): use the step or rollout objective"
)

STARTS = ("baseline", "full")  # the named starts of train_router; anything else is a schedule


@dataclass
class RouterConfig(Settings):
    """Settings of one router training run (saved in the schedule's settings)."""

    RENAMED: ClassVar[dict[str, str]] = {"target_ratio": "target_flop_ratio"}

    steps: int = 50  # sampler steps the schedule is for (not optimisation steps: those are train_steps)
    sampler: str | None = (
        None  # a solver name (lees.diffusion.solvers); None: the given scheduler's own class
    )
    timesteps: list[int | float] | None = None  # a custom descending list instead of steps evenly spaced ones
    guidance_scale: float = 1.0  # classifier-free guidance of a class-conditional model with a null class
    # budget mode: the whole model's FLOPs over the sampling run, against the full model's (the ungated
    # rest included); None: lambda mode. Not gate training's target_gated_share.
    target_flop_ratio: float | None = 0.7
    lam: float = 0.5
    train_steps: int = 400  # optimisation steps
    batch_size: int = 16
    trajectories: int = 64
    lr: float = 0.05
    dual_lr: float = 0.05
    init_logit: float = 0.5
    estimator: str = "ste"  # straight-through: the forward uses the hard run/reuse decision; or "soft"
    objective: str = "step"  # or "rollout" (see OBJECTIVES)
    # 0: every cell runs or reuses; 1 or 2: a cell that does not run also chooses (learned) between reusing
    # and forecasting its residual with a polynomial of this degree through the block's last runs
    forecast_order: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.target_flop_ratio is not None and not 0 < self.target_flop_ratio <= 1:
            raise ValueError(f"the target FLOP ratio must lie in (0, 1], got {self.target_flop_ratio}")
        if not math.isfinite(self.lam) or self.lam < 0:
            raise ValueError(f"lambda must be >= 0, got {self.lam}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {sorted(OBJECTIVES)}, got {self.objective!r}")
        if self.forecast_order not in (0, 1, 2):
            raise ValueError(f"the forecast order is 0 (none), 1 or 2, got {self.forecast_order!r}")
        if self.forecast_order and self.objective == "rollout":
            raise ValueError("the forecast action is learned with the step or kl objective, not rollout")
        if self.objective == "kl" and self.sampler not in ("ddpm", None):
            raise ValueError(KL_NEEDS_DDPM.format(self.sampler))
        if self.timesteps is not None:
            self.timesteps, self.steps = list(self.timesteps), len(self.timesteps)
        if self.estimator not in ("soft", "ste"):
            raise ValueError(f"estimator must be soft or ste, got {self.estimator!r}")
        if min(self.steps, self.train_steps, self.batch_size, self.trajectories) < 1:
            raise ValueError("steps, train_steps, batch_size and trajectories must be positive")
        if self.steps < 2:
            raise ValueError("a schedule that reuses needs at least 2 steps")


@dataclass
class Trajectory:
    """The full model's sampling run, one entry per model call j: the solver's states x_j (S, N, ...),
    the model's inputs there (the states themselves unless the solver scales them), its (guided)
    predictions, each block's residual (``residuals[k]``: (S, rows, ...), or a tuple of them per stream
    for a multi-stream block; rows: N, or 2N for a guided run's [cond, null] call), and the conditions."""

    states: torch.Tensor
    inputs: torch.Tensor
    targets: torch.Tensor
    residuals: list[torch.Tensor | tuple]
    timesteps: list[int | float]
    cond: dict[str, Any]  # "context" is shared; every other tensor has one row per trajectory
    final: torch.Tensor  # the samples the full model ends at
    rng: list[torch.Tensor]  # each trajectory's generator state after its start noise (to replay its noise)
    guidance_scale: float = 1.0
    shared: dict[str, Any] = field(default_factory=dict)  # inputs every row takes as they are (Flux's ids)
    grid: list[int | float] | None = None  # the scheduler's timesteps, where the model gets others (t / 1000)

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """The rows of trajectories ``idx`` in a model call: theirs, and under guidance their null rows."""
        n = len(self.states[0])
        return torch.cat([idx, idx + n]) if self.guidance_scale != 1.0 else idx


def _solver_run(scheduler: SchedulerMixin, config: RouterConfig, device: torch.device) -> SolverRun:
    """A fresh run of the router's solver: ``config.sampler``, else ``scheduler``'s own class."""
    return SolverRun(scheduler, config.sampler, config.steps, config.timesteps, device)


def _predict(model: nn.Module, x: torch.Tensor, t: torch.Tensor, cond: dict, scale: float) -> torch.Tensor:
    """The model's prediction as the sampler takes it (guided by one batched [cond, null] call)."""
    return guided_denoise(model, x, t, **cond, guidance_scale=scale)


def _per_trajectory(conditions: Mapping[str, torch.Tensor] | None, n: int, device) -> dict[str, torch.Tensor]:
    """Each condition tensor with one row per trajectory: trajectory i takes row i mod its rows."""
    rows = {}
    for key, value in (conditions or {}).items():
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            raise ValueError(f"the condition {key!r} must be a tensor with a batch dimension")
        rows[key] = value.to(device)[torch.arange(n, device=device) % len(value)]
    return rows


def _stacked(slots: list[Any]) -> torch.Tensor | tuple:
    """One block's cache slots over the calls, stacked: a tensor, or per stream a tensor (None where the
    block returned no stream)."""
    if isinstance(slots[0], torch.Tensor):
        return torch.stack(slots)
    return tuple(
        None if first is None else torch.stack([s[i] for s in slots]) for i, first in enumerate(slots[0])
    )


def _streams(slot: Any, fn) -> Any:
    """``fn`` on a cache slot's tensor, or on each of its streams' (None stays None)."""
    if isinstance(slot, torch.Tensor):
        return fn(slot)
    return tuple(None if r is None else fn(r) for r in slot)


@torch.no_grad()
def teacher_trajectory(
    engine: Engine,
    scheduler: SchedulerMixin,
    config: RouterConfig,
    context: torch.Tensor | None = None,
    conditions: Mapping[str, torch.Tensor] | None = None,
) -> Trajectory:
    """Run the full model with the solver on ``config.trajectories`` seeded noises and keep every call
    (``engine`` attached: every block runs and its residual is recorded). Each trajectory draws its
    label, start noise and step noise from its own generator."""
    model = engine.model
    device = model_device(model)
    run = _solver_run(scheduler, config, device)
    n = config.trajectories
    gens = [torch.Generator(device).manual_seed(config.seed * 1_000_003 + 500_000 + i) for i in range(n)]
    cond = {"class_labels": draw_labels(model, gens, device), "context": context,
            **_per_trajectory(conditions, n, device)}  # fmt: skip
    x = run.start(torch.stack([torch.randn(latent_shape(model), generator=g, device=device) for g in gens]))
    rng = [g.get_state() for g in gens]
    states, inputs, targets, residuals = [], [], [], []
    cache = ReuseCache(engine.num_blocks)
    for j in tqdm(range(len(run.visited)), desc="teacher trajectory", leave=False):
        model_in, t = run.model_input(x, j)
        with engine.deciding([RUN] * engine.num_blocks, "hard", cache):
            out = _predict(model, model_in, t, cond, config.guidance_scale)
        states.append(x.cpu())
        inputs.append(None if model_in is x else model_in.cpu())
        targets.append(out.cpu())
        residuals.append([_streams(r, torch.Tensor.cpu) for r in cache.residuals])
        x = run.step(out, j, x, gens)
    per_block = [_stacked([step[k] for step in residuals]) for k in range(engine.num_blocks)]
    stacked = torch.stack(states)
    ins = (
        stacked
        if all(i is None for i in inputs)
        else torch.stack([i if i is not None else s for i, s in zip(inputs, states, strict=True)])
    )
    return Trajectory(stacked, ins, torch.stack(targets), per_block, run.visited, cond, x.cpu(), rng,
                      config.guidance_scale)  # fmt: skip


def transition_weights(scheduler: DDPMScheduler, visited: list[int]) -> torch.Tensor:
    """Per DDPM step j, the KL between two Gaussian transitions x_j -> x_{j+1} whose model outputs
    differ by a unit: (d mean / d output)^2 / (2 sigma_j^2), the weights of the diffusion ELBO.

    A step's error is hidden by the noise the step adds; the last steps add the least, so they
    weigh most. The last step adds none and takes the largest finite weight."""
    variance_type = scheduler.config.get("variance_type", "fixed_small")
    if variance_type not in ("fixed_small", "fixed_large"):
        raise ValueError(f"the kl objective needs a fixed DDPM variance, not {variance_type!r}")
    alphas = scheduler.alphas_cumprod.double()
    kind = prediction_type(scheduler)
    one, zero = torch.ones((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    weights = []
    for j, t in enumerate(visited):
        a_t = alphas[t]
        a_prev = alphas[visited[j + 1]] if j + 1 < len(visited) else one
        beta = 1 - a_t / a_prev
        dx0 = split(kind, one, zero, a_t)[0] - split(kind, zero, zero, a_t)[0]  # x0 is linear in the output
        slope = a_prev.sqrt() * beta / (1 - a_t) * dx0  # the posterior mean's coefficient of x0
        var = beta if variance_type == "fixed_large" else (1 - a_prev) / (1 - a_t) * beta
        weights.append(float(slope**2 / (2 * var)) if var > 0 else math.inf)
    w = torch.tensor(weights)
    finite = w[torch.isfinite(w)]
    return torch.where(torch.isfinite(w), w, finite.max() if len(finite) else torch.ones(()))


@dataclass
class RouterResult:
    """The trained logits, the hard schedule they give, and the training log."""

    logits: torch.Tensor
    schedule: Schedule
    log: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    forecast_logits: torch.Tensor | None = None  # forecast (>= 0) or reuse of the cells that do not run


def flop_weights(blocks: Blocks, steps: int) -> torch.Tensor:
    """(K, S) weights whose sum over a 0/1 run table is the FLOP fraction the gated blocks run."""
    shares = torch.tensor(blocks.shares, dtype=torch.float32)
    return shares.view(-1, 1).expand(-1, steps) / steps


def hard_actions(
    logits: torch.Tensor, weights: torch.Tensor, rest: float, target: float | None
) -> np.ndarray:
    """Run where sigmoid(logit) >= 0.5 (step 0 always), else reuse; then, under a FLOP ``target``, meet it
    from below: over it, turn the least confident runs into reuses until ``rest`` + the run share fits;
    under it, turn the most confident reuses into runs while each still fits. The result lies within
    one cell's FLOPs below the target wherever the target is reachable."""
    runs = logits.detach().cpu() >= 0
    runs[:, 0] = True
    if target is None:
        return np.where(runs.numpy(), RUN, REUSE).astype(np.int8)
    flat, cost = logits.detach().cpu().flatten(), weights.detach().cpu().flatten().double()
    spent = rest + float((runs.flatten().double() * cost).sum())
    steps = runs.shape[1]
    for index in torch.argsort(flat).tolist():  # least confident runs out first
        if spent <= target + 1e-9:
            break
        if index % steps and runs.view(-1)[index]:
            runs.view(-1)[index] = False
            spent -= float(cost[index])
    for index in torch.argsort(flat, descending=True).tolist():  # most confident reuses in first
        if not runs.view(-1)[index] and spent + float(cost[index]) <= target + 1e-9:
            runs.view(-1)[index] = True
            spent += float(cost[index])
    return np.where(runs.numpy(), RUN, REUSE).astype(np.int8)


def carry_weights(w: torch.Tensor, j: int) -> torch.Tensor:
    """(K, j) weights of steps 0..j-1 in block k's cached residual at step j: w_i prod_{i<m<j} (1 - w_m),
    with w (K, S) the run decisions and step 0 always run. For 0/1 decisions, one-hot at the last run."""
    w = torch.cat([torch.ones_like(w[:, :1]), w[:, 1:j]], dim=1)
    keep = torch.flip(torch.cumprod(torch.flip(1 - w, [1]), 1), [1])  # prod_{m >= i} (1 - w_m)
    after = torch.cat([keep[:, 1:], torch.ones_like(keep[:, :1])], dim=1)  # prod_{m > i}
    return w * after


def _batch_cond(traj: Trajectory, idx: torch.Tensor) -> dict[str, Any]:
    """The conditions of trajectories ``idx``: their rows of each condition (of each tensor in a dict of
    them); a context and the ``shared`` inputs are shared by all."""
    return {
        **{key: (v if key == "context" else _rows(v, idx)) for key, v in traj.cond.items()},
        **traj.shared,
    }


def _rows(value: Any, idx: torch.Tensor) -> Any:
    if isinstance(value, dict):
        return {k: _rows(v, idx) for k, v in value.items()}
    return None if value is None else value[idx]


def _step_loss(engine, w, traj, idx, j, config, device, forecast=None) -> torch.Tensor:
    """Squared error of the student at the teacher's model input of call j, caches as the schedule would
    hold them (each stream of a multi-stream block alike). With ``forecast`` = (u, runs): a block that
    does not run at j carries ``u[k, j] * forecast + (1 - u[k, j]) * reused``, the forecast being the
    polynomial of degree ``config.forecast_order`` through the teacher's residuals at the block's last
    hard runs before j (``runs``: (K, S) bool), as the engine extrapolates at call position j."""
    cache = ReuseCache(engine.num_blocks)
    carry = carry_weights(w, j)
    rows = traj.rows(idx)
    for k in range(engine.num_blocks):

        def carried(past: torch.Tensor, k: int = k) -> torch.Tensor:
            past = past[:j, rows].to(device)  # an fp32 sum, stored as the block's
            return torch.einsum("s,s...->...", carry[k], past.float()).to(past.dtype)

        cache.residuals[k] = _streams(traj.residuals[k], carried)
        if forecast is not None:
            u, runs = forecast
            ahead = forecast_residual(traj.residuals[k], runs[k], j, config.forecast_order, rows, device)
            cache.residuals[k] = _mixed(u[k, j], ahead, cache.residuals[k])
    cond = _batch_cond(traj, idx)
    t = torch.full((len(idx),), traj.timesteps[j], device=device)
    with engine.deciding(w[:, j], "soft", cache, fallback=REUSE):
        pred = _predict(engine.model, traj.inputs[j, idx].to(device), t, cond, traj.guidance_scale)
    return nn.functional.mse_loss(pred, traj.targets[j, idx].to(device))


def forecast_residual(residuals, runs: torch.Tensor, j: int, order: int, rows, device) -> Any:
    """A block's residual forecast at call j from the teacher's ``residuals`` at its last ``order + 1``
    runs before j (``runs``: (S,) bool, step 0 always run), on the trajectory ``rows``:
    :func:`lees.engine.forecast.extrapolate`, the engine's own sum."""
    positions = [i for i in range(j) if i == 0 or bool(runs[i])][-(order + 1) :]
    return extrapolate([(i, _streams(residuals, lambda r, i=i: r[i, rows].to(device))) for i in positions], j)


def _mixed(u: torch.Tensor, ahead: Any, reused: Any) -> Any:
    """``u * ahead + (1 - u) * reused``, per stream of a cache slot (None stays None)."""
    if isinstance(reused, torch.Tensor):
        return (u * ahead.float() + (1 - u) * reused.float()).to(reused.dtype)
    return tuple(None if r is None else _mixed(u, a, r) for a, r in zip(ahead, reused, strict=True))


def _rollout_loss(engine, w, traj, idx, run: SolverRun, device) -> torch.Tensor:
    """Squared distance of the student's own sampling run (the teacher's start noise and step noise,
    the schedule's decisions w, soft carried residuals, a fresh solver ``run``) from the teacher's: the
    mean over every state plus the final samples' own (so the last steps, which set the fine detail,
    weigh as much as all)."""
    cache = ReuseCache(engine.num_blocks)
    gens = []
    for i in idx.tolist():
        gens.append(torch.Generator(device))
        gens[-1].set_state(traj.rng[i])
    cond = _batch_cond(traj, idx)
    x, total = traj.states[0, idx].to(device), torch.zeros((), device=device)
    goals = torch.cat([traj.states[1:, idx], traj.final[idx][None]])
    for j in range(len(traj.timesteps)):
        model_in, t = run.model_input(x, j)
        with engine.deciding(w[:, j], "soft", cache, fallback=REUSE):
            out = _predict(engine.model, model_in, t, cond, traj.guidance_scale)
        x = run.step(out, j, x, gens)
        total = total + nn.functional.mse_loss(x, goals[j].to(device))
    return total / len(traj.timesteps) + nn.functional.mse_loss(x, goals[-1].to(device))


def start_logits(start: Schedule | None, blocks: Blocks, timesteps: list[int], size: float) -> torch.Tensor:
    """(K, S) initial logits: ``size`` everywhere (run all), or +/- ``size`` by ``start``'s runs."""
    if start is None:
        return torch.full((len(blocks), len(timesteps)), float(size))
    start.check_blocks(blocks)
    if start.timesteps != timesteps:
        raise ValueError(
            f"the start schedule's timesteps are not the router's ({start.num_steps} vs {len(timesteps)} "
            "steps): make it for the same steps and sampler"
        )
    return torch.from_numpy(np.where(start.actions == RUN, abs(size), -abs(size))).float()


def check_conditions(model: nn.Module, context, conditions, guidance_scale: float) -> None:
    """A clear error for conditions the model cannot take: a context and conditions both, guidance on a
    model without a null class, or guidance with prompt conditions (only class labels are guided)."""
    check_guidance(model, guidance_scale)
    if conditions is None:
        check_context(model, context, 1)
        return
    if context is not None:
        raise ValueError("give a context or conditions (encoder_hidden_states among them), not both")
    if guidance_scale != 1.0:
        raise ValueError("guidance is drawn over class labels; with prompt conditions use guidance scale 1")


BUDGET_SLACK = 0.02  # how far from the asked FLOP ratio a router's table may land without a warning


def warn_off_budget(schedule: Schedule, target: float | None, slack: float = BUDGET_SLACK) -> None:
    """Warn, with the figure, when the schedule's FLOP ratio lies more than ``slack`` from ``target``
    (the table meets a reachable budget from below within one block-step; what it cannot reach is a
    target under the cost of step 0 and the ungated rest, or cells coarser than the slack)."""
    if target is not None and abs(schedule.flop_ratio - target) > slack:
        warnings.warn(
            f"the router's schedule runs {schedule.flop_ratio:.3f} of the FLOPs, not the {target:.3f} "
            "asked for: its cells (a block at a step) are too coarse to land nearer below it, or the budget "
            "lies under step 0 (every block runs) and the ungated rest",
            stacklevel=3,
        )


def first_lambda(config: RouterConfig, start: Schedule | None, weights: torch.Tensor, rest: float) -> float:
    """The compute term's first weight: ``config.lam``, but 0 in budget mode when the start runs within
    the budget (a multiplier whose constraint holds is 0; ``lam`` would first push every logit towards
    reuse, far below the budget within a few dozen steps)."""
    target = config.target_flop_ratio
    if target is None:
        return config.lam
    runs = torch.ones_like(weights) if start is None else torch.from_numpy(start.actions == RUN)
    return config.lam if rest + float((runs.float() * weights).sum()) > target + 1e-9 else 0.0


def decision_weights(logits: torch.Tensor, estimator: str) -> torch.Tensor:
    """The run weights of the logits: sigmoid, or its straight-through hard decision (>= 0.5)."""
    soft = torch.sigmoid(logits)
    return straight_through(soft) if estimator == "ste" else soft


def train_router(
    model: nn.Module,
    scheduler: SchedulerMixin,
    config: RouterConfig | None = None,
    blocks: Blocks | None = None,
    progress: bool = True,
    context: torch.Tensor | None = None,
    log_path: str | Path | None = None,
    start: Schedule | str | None = "baseline",
    conditions: Mapping[str, torch.Tensor] | None = None,
    teacher: Callable[[Engine], Trajectory] | None = None,
) -> RouterResult:
    """Learn a K x S run-or-reuse table for ``model`` with its solver (backbone frozen, on its device).

    The S columns are the model calls of one sampling run in order, at the solver's timesteps as it
    gives them (:func:`lees.pipeline_timesteps`: floats for flow matching, a repeat per Heun half step),
    so ``lees.enable(pipe, result.schedule)`` runs the table in a pipeline with that scheduler. It spends
    a ``target_flop_ratio`` budget to within one block-step below; more than 0.02 off warns with the figure.

    Args:
        model: the denoiser (frozen for the run; its ``requires_grad`` flags are restored after).
        scheduler: the model's scheduler (any diffusers one): the teacher samples with a fresh one of its
            class per run, or with the solver ``config.sampler`` made from its config.
        config: steps (or timesteps), budget (``target_flop_ratio``) or lambda, guidance, optimisation.
        blocks: the blocks to route (default: :func:`lees.find_blocks`); progress: show a progress bar.
        context: what a cross-attention denoiser attends to, (1, tokens, width); log_path: the log (JSONL).
        conditions: keyword inputs of the denoiser (prompt embeddings, e.g. ``encoder_hidden_states``),
            each (1 or P, ...): trajectory i takes row i mod P. Under ``config.guidance_scale`` the
            targets are the guided predictions of class-conditional models, whose batched [cond, null]
            call the table routes (both halves alike, as ``lees.enable`` does at sampling time).
        start: the first logits are +/- ``init_logit`` where this schedule runs / does not run, so
            training refines it: ``"baseline"`` (DeepCache for a UNet, else uniform reuse, within the
            budget: ``reuse_baseline``), a schedule for the same blocks and timesteps, or
            ``None``/``"full"`` (run everything). From "run everything" the objectives leave the deep
            blocks stale over the first and last steps, which the samples punish (docs/reuse.md).
        teacher: draws the teacher's trajectory (engine attached) instead of lees' sampler: a pipeline's
            call (:mod:`lees.learn.pipeline_teacher`; ``scheduler`` is then the pipeline's; step objective).

    Returns the logits, the hard schedule (within the budget) and the log. Example:
        >>> config = RouterConfig(steps=50, target_flop_ratio=0.7)
        >>> result = train_router(model, scheduler, config)  # doctest: +SKIP
        >>> lees.enable(pipe, result.schedule)  # doctest: +SKIP
    """
    config, blocks = config or RouterConfig(), blocks or find_blocks(model)
    run = _RouterRun(model, scheduler, config, blocks, (context, conditions), start, teacher)
    with frozen(model, evaluate=False), run.engine.attached():
        run.calibrate()
        bar = tqdm(range(config.train_steps), desc="router", unit="step", disable=not progress)
        for step in bar:
            row = run.step(step)
            bar.set_postfix(
                error=f"{row['error']:.3f}", flops=f"{row['flop_ratio']:.2f}", lam=f"{row['lambda']:.2f}"
            )
    result = run.result()
    warn_off_budget(result.schedule, config.target_flop_ratio)
    if log_path is not None:
        atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in result.log))
    return result


class _RouterRun:
    """One router training run: the teacher's trajectory, the logits and their optimiser, the budget's
    multiplier, and one training step."""

    def __init__(self, model, scheduler, config: RouterConfig, blocks: Blocks, conditions, start,
                 teacher=None) -> None:  # fmt: skip
        self.started = time.perf_counter()
        if teacher is None:
            check_conditions(model, *conditions, config.guidance_scale)
        elif config.objective != "step":
            raise ValueError("a router on a pipeline's own trajectories trains the step objective only")
        self.model, self.scheduler, self.config, self.blocks = model, scheduler, config, blocks
        self.device = model_device(model)
        self.engine = Engine(model, blocks)
        if teacher is not None:  # the pipeline's run sets its scheduler's timesteps (Flux's for its size)
            with self.engine.attached():
                self.traj = teacher(self.engine)
        self.solver = _solver_run(scheduler, config, self.device).solver if teacher is None else scheduler
        visited = timestep_values(self.solver.timesteps)
        if config.objective == "kl" and not isinstance(self.solver, DDPMScheduler):
            raise ValueError(KL_NEEDS_DDPM.format(type(self.solver).__name__))
        if isinstance(start, str):
            if start not in STARTS:
                raise ValueError(f"start must be a schedule, 'baseline' or 'full', got {start!r}")
            start = reuse_baseline(blocks, visited, config.target_flop_ratio) if start == "baseline" else None
        self.start = start
        # a start schedule or a scheduler that does not fit is refused before lees' own teacher runs
        first_logits = start_logits(start, blocks, visited, config.init_logit)
        self.odds = transition_weights(self.solver, visited) if config.objective == "kl" else None
        if teacher is None:
            with self.engine.attached():
                self.traj = teacher_trajectory(self.engine, scheduler, config, *conditions)
        self.weights = flop_weights(blocks, len(self.traj.timesteps)).to(self.device)
        self.rest = 1.0 - sum(blocks.shares)
        self.logits = first_logits.to(self.device).requires_grad_()
        self.fore = None  # forecast-or-reuse logits of the cells that do not run: + where the start forecasts
        if config.forecast_order:
            forecasts = start is not None and start.actions == FORECAST
            self.fore = torch.where(torch.as_tensor(forecasts), config.init_logit, -config.init_logit)
            self.fore = self.fore.float().expand_as(first_logits).clone().to(self.device).requires_grad_()
        self.opt = torch.optim.Adam([t for t in (self.logits, self.fore) if t is not None], lr=config.lr)
        self.gen = torch.Generator().manual_seed(config.seed)
        self.lam, self.log, self.scale = first_lambda(config, start, self.weights.cpu(), self.rest), [], 1.0

    def error(self, w: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """The objective's error of the run decisions ``w`` (K, S) on a fresh batch (``u``: the forecast
        decisions of the cells that do not run, at the hard runs of the current logits)."""
        config, gen = self.config, self.gen
        idx = torch.randint(0, self.traj.states.shape[1], (config.batch_size,), generator=gen)
        if config.objective == "rollout":
            run = _solver_run(self.scheduler, config, self.device)  # fresh: multistep solvers keep state
            return _rollout_loss(self.engine, w, self.traj, idx, run, self.device)
        if self.odds is None:  # step j uniform over 1..S-1 (step 0 always runs)
            j = int(torch.randint(1, len(self.traj.timesteps), (1,), generator=gen))
        else:
            j = 1 + int(torch.multinomial(self.odds[1:], 1, generator=gen))
        forecast = None if u is None else (u, self.runs())
        return _step_loss(self.engine, w, self.traj, idx, j, config, self.device, forecast)

    def runs(self) -> torch.Tensor:
        """(K, S) bool: where the current logits run (step 0 always)."""
        runs = self.logits.detach() >= 0
        runs[:, 0] = True
        return runs

    @torch.no_grad()
    def calibrate(self) -> None:
        """The unit of the loss: the error with nothing refreshed since step 0."""
        self.scale = max(sum(float(self.error(torch.zeros_like(self.logits))) for _ in range(4)) / 4, 1e-12)

    def step(self, step: int) -> dict[str, float]:
        """One gradient step and the dual update of lambda; its log row."""
        config = self.config
        u = None if self.fore is None else decision_weights(self.fore, config.estimator)
        error = self.error(decision_weights(self.logits, config.estimator), u) / self.scale
        compute = self.rest + (torch.sigmoid(self.logits) * self.weights).sum()
        loss = error + self.lam * compute
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        flop_ratio = self.rest + float((self.runs().float() * self.weights).sum())
        if config.target_flop_ratio is not None:  # dual ascent: raise lambda while the table runs too much
            self.lam = max(0.0, self.lam + config.dual_lr * (flop_ratio - config.target_flop_ratio))
        row = {"step": step + 1, "error": error.item(), "compute": compute.item(), "flop_ratio": flop_ratio,
               "lambda": self.lam}  # fmt: skip
        self.log.append(row)
        return row

    def result(self) -> RouterResult:
        """The hard table (within the budget), with the run's settings, as a schedule."""
        config = self.config
        actions = hard_actions(self.logits, self.weights.cpu(), self.rest, config.target_flop_ratio)
        if self.fore is not None:  # a cell that does not run forecasts where its forecast logit is >= 0
            actions[(actions == REUSE) & (self.fore.detach().cpu() >= 0).numpy()] = FORECAST
        seconds = time.perf_counter() - self.started
        settings = {
            **config.to_dict(),
            "sampler": solver_name(self.solver) or config.sampler,
            "scheduler": type(self.solver).__name__,
            "objective": f"{config.objective}: {OBJECTIVES[config.objective]}",
            "train_seconds": round(seconds, 1),
            "final_lambda": self.lam,
            "reuse_error_scale": self.scale,
            "start": None if self.start is None else {"source": self.start.source, **self.start.settings},
        }
        if getattr(self.solver.config, "use_dynamic_shifting", False):  # its grid is this resolution's
            settings[IMAGE_SEQ_LEN] = image_seq_len(self.model, self.traj.states[0])
        grid = self.traj.grid or self.traj.timesteps
        schedule = Schedule(actions, self.blocks.names, grid, "router", settings,
                            self.blocks.shares, self.solver.config.num_train_timesteps,
                            forecast_order=config.forecast_order or 1)  # fmt: skip
        fore = None if self.fore is None else self.fore.detach().cpu()
        return RouterResult(self.logits.detach().cpu(), schedule, self.log, seconds, fore)
