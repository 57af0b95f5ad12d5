"""The README's main job, in minutes on a CPU: the shipped learned run-or-reuse schedule (the step
router) beside the full model, the full model at fewer steps (the bar every method must clear),
uniform reuse, ASE's and the paper's (LEES) drop schedules, all sampled side by side, on the embedded
UNet or the embedded DiT."""

from __future__ import annotations

from pathlib import Path

from ..diffusion.samplers import sampler_timesteps
from ..diffusion.solvers import default_solver
from ..engine.blocks import Blocks, find_blocks
from ..evaluation.metrics import (
    EXTRACTORS,
    METRIC_NAMES,
    REFERENCE_N,
    InceptionFeatures,
    features,
    frechet_distance,
    gaussian,
    reference_at_hand,
    reference_gaussian,
)
from ..models.backbones import EMBEDDED_DIR, load_backbone, load_noise_scheduler
from ..models.denoisers import default_guidance_scale
from ..sampling.lockstep import sample_lockstep
from ..schedules.registry import build_schedule, shipped
from ..schedules.saving import GATE_FILE, load_gate
from ..schedules.schedule import Schedule
from ..utils.images import save_grid
from .frontier_run import applicable
from .plots import gate_heatmap, schedule_map

SHIPPED_GATES = EMBEDDED_DIR / "lees-0.05" / "gates.safetensors"


def demo_methods(blocks: Blocks, timesteps: list, noise, sampler: str = "ddpm") -> dict[str, Schedule]:
    """The demo's methods: the full model; each shipped router made for this model and these timesteps,
    with the full model at fewer steps for its FLOPs beside it; uniform reuse; ASE; and the shipped
    LEES gates made for this model (``router-0.70`` and ``lees-0.05`` for the embedded UNet at DDPM-50,
    ``dit-router-0.70`` and ``dit-lees-0.05`` for embedded-dit at Euler-50)."""
    quiet = lambda *_: None  # noqa: E731  (a shipped schedule made for the other model is no news)
    learned = {name: applicable(name, blocks, timesteps, noise, sampler, quiet) for name in shipped()}
    learned = {name: s for name, s in learned.items() if s is not None and s.timesteps == timesteps}
    rows = {"full": build_schedule("full", blocks, timesteps)}
    for name in (n for n in learned if "router" in n):
        fewer = f"full@{round(len(timesteps) * learned[name].flop_ratio)}"
        rows |= {name: learned[name], fewer: build_schedule(fewer, blocks, timesteps, noise, sampler)}
    rows |= {name: build_schedule(name, blocks, timesteps, noise, sampler) for name in ("uniform-2", "ase")}
    return rows | {name: s for name, s in learned.items() if name not in rows}


def demo_metrics(metrics: list[str], say=print) -> list[str]:
    """The demo's default ``metrics`` less Inception FID where its reference statistics are neither
    shipped nor cached: a first demo computes no reference (2,000 images through Inception take ~10 min
    on 2 CPU cores); ``--metric clf inception`` computes them, once."""
    if "inception" not in metrics or reference_at_hand(InceptionFeatures, REFERENCE_N["inception"]):
        return metrics
    say(
        f"no Inception FID: its reference ({REFERENCE_N['inception']:,} Fashion-MNIST images) is neither "
        "shipped nor cached; --metric clf inception computes it once (~10 min on 2 CPU cores)"
    )
    return [m for m in metrics if m != "inception"]


def demo(
    out: str | Path, n: int = 128, steps: int = 50, seed: int = 0, device: str = "cpu",
    metrics: tuple[str, ...] = ("clf",), model_name: str = "embedded", guidance_scale: float | None = None,
) -> list[dict]:  # fmt: skip
    """Sample every method side by side; time and score under each of ``metrics`` (``clf``: fd_clf,
    ``inception``: Inception FID). FLOP ratios are against the full model at ``steps``; the
    fewer-steps row runs the full model for the router's share of those FLOPs. ``model_name``: embedded
    (DDPM) or embedded-dit (Euler, classifier-free guidance ``guidance_scale``, 2 by default)."""
    out = Path(out)
    model = load_backbone(model_name, device=device)
    noise = load_noise_scheduler(model_name)
    blocks, sampler = find_blocks(model), default_solver(noise)
    timesteps = sampler_timesteps(noise, steps, sampler)
    methods = demo_methods(blocks, timesteps, noise, sampler)
    extractors = {metric: EXTRACTORS[metric](device) for metric in metrics}
    scorers = {  # the references' statistics ship with lees: a first demo computes none
        METRIC_NAMES[m]: (e, reference_gaussian(e, n=REFERENCE_N[m])) for m, e in extractors.items()
    }
    scale = default_guidance_scale(model, guidance_scale)
    runs = sample_lockstep(
        model, methods, n, steps, sampler, seed, noise, device=device, guidance_scale=scale
    )
    rows = []
    for name, schedule in methods.items():
        images = runs[name].images
        save_grid(images[:64], out / f"samples-{name}.png", nrow=8)
        rows.append({
            "method": name,
            **{name: _fd(extractor, ref, images) for name, (extractor, ref) in scorers.items()},
            "seconds_per_100": 100 * runs[name].seconds / n,
            "executed_ratio": schedule.executed_ratio,
            "flop_ratio": schedule.flop_ratio_vs(steps),
            "steps": schedule.num_steps,
        })  # fmt: skip
    for row in rows:
        row["latency_cut"] = 1 - row["seconds_per_100"] / rows[0]["seconds_per_100"]
    stored = shipped()
    for name in (name for name in methods if name in stored):  # the learned ones
        gates = stored[name] / GATE_FILE
        if gates.is_file():
            gate_heatmap(load_gate(gates)[0], blocks.names, out / "gates.png", f"shipped LEES gates ({name})")
        schedule_map(methods[name], out / f"schedule-{name}.png")
    return rows


def _fd(extractor, reference: tuple, images) -> float:
    """The Fréchet distance of ``images``' features to the reference's mean and covariance."""
    return frechet_distance(*gaussian(features(extractor, images)), *reference)
