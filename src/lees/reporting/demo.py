"""The README's main job, in minutes on a CPU: the shipped learned run-or-reuse schedule (the step
router) beside the full model, the full model at fewer steps (the bar every method must clear),
uniform reuse, ASE's and the paper's (LEES) drop schedules, all sampled side by side."""

from __future__ import annotations

from pathlib import Path

from ..diffusion.samplers import sampler_timesteps
from ..engine.blocks import Blocks, find_blocks
from ..evaluation.metrics import METRIC_NAMES, fd, features, scorer
from ..models.backbones import EMBEDDED_DIR, load_backbone, load_noise_scheduler
from ..sampling.lockstep import sample_lockstep
from ..schedules.registry import build_schedule
from ..schedules.saving import load_gate
from ..utils.images import save_grid
from .plots import gate_heatmap, schedule_map

SHIPPED_GATES = EMBEDDED_DIR / "lees-0.05" / "gates.safetensors"


def demo_methods(blocks: Blocks, timesteps: list[int]) -> list[str]:
    """The demo's methods: the full model, the shipped router and the full model at fewer steps for
    the router's FLOPs (where the router is made for these timesteps, DDPM-50), uniform reuse, ASE and
    the paper's shipped gates."""
    router = build_schedule("router-0.70", blocks, timesteps)
    fewer = ["router-0.70", f"full@{round(len(timesteps) * router.flop_ratio)}"]
    return ["full", *(fewer if router.timesteps == timesteps else []), "uniform-2", "ase", "lees-0.05"]


def demo(
    out: str | Path, n: int = 128, steps: int = 50, seed: int = 0, device: str = "cpu",
    metrics: tuple[str, ...] = ("clf",),
) -> list[dict]:  # fmt: skip
    """Sample every method side by side; time and score under each of ``metrics`` (``clf``: fd_clf,
    ``inception``: Inception FID). FLOP ratios are against the full model at ``steps``; the
    fewer-steps row runs the full model for the router's share of those FLOPs."""
    out = Path(out)
    model = load_backbone("embedded", device=device)
    noise = load_noise_scheduler("embedded")
    blocks = find_blocks(model)
    timesteps = sampler_timesteps(noise, steps)
    gate, _ = load_gate(SHIPPED_GATES)
    methods = {
        name: build_schedule(name, blocks, timesteps, noise) for name in demo_methods(blocks, timesteps)
    }
    scorers = {METRIC_NAMES[metric]: scorer(metric, device=device) for metric in metrics}
    runs = sample_lockstep(model, methods, n, steps, seed=seed, scheduler=noise, device=device, progress=True)
    rows = []
    for name, schedule in methods.items():
        images = runs[name].images
        save_grid(images[:64], out / f"samples-{name}.png", nrow=8)
        rows.append({
            "method": name,
            **{name: fd(features(e, images), ref) for name, (e, ref) in scorers.items()},
            "seconds_per_100": 100 * runs[name].seconds / n,
            "executed_ratio": schedule.executed_ratio,
            "flop_ratio": schedule.flop_ratio_vs(steps),
            "steps": schedule.num_steps,
        })  # fmt: skip
    for row in rows:
        row["latency_cut"] = 1 - row["seconds_per_100"] / rows[0]["seconds_per_100"]
    gate_heatmap(
        gate, blocks.names, out / "gates.png", "shipped LEES gates of the embedded model (lambda=0.05)"
    )
    for name in ("router-0.70", "lees-0.05"):
        if name in methods:
            schedule_map(methods[name], out / f"schedule-{name}.png")
    return rows
