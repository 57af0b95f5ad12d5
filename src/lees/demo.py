"""The README's main job: the shipped learned schedule against the full model and ASE, in minutes."""

from __future__ import annotations

from pathlib import Path

from .backbones import EMBEDDED_DIR, load_backbone, load_noise_scheduler
from .baselines import ase_schedule
from .blocks import find_blocks
from .images import save_grid
from .metrics import ClassifierFeatures, fd, features, reference_features
from .plots import gate_heatmap, schedule_map
from .sampling import sample_lockstep, sampler_timesteps
from .schedules import Schedule
from .training import load_gate

SHIPPED_GATES = EMBEDDED_DIR / "lees-0.05" / "gates.safetensors"


def demo(out: str | Path, n: int = 128, steps: int = 50, seed: int = 0, device: str = "cpu") -> list[dict]:
    """Sample with the full model, ASE's default and the shipped LEES gates side by side; time and score."""
    out = Path(out)
    model = load_backbone("embedded", device=device)
    noise = load_noise_scheduler("embedded")
    blocks = find_blocks(model)
    timesteps = sampler_timesteps(noise, steps)
    gate, _ = load_gate(SHIPPED_GATES)
    methods = {
        "full": Schedule.full(blocks, timesteps),
        "ase": ase_schedule(blocks, timesteps),
        "lees": Schedule.from_gate(gate, blocks, timesteps, noise.config.num_train_timesteps),
    }
    extractor = ClassifierFeatures(device)
    reference = reference_features(extractor, "fashion-mnist", "train", n=10_000)
    runs = sample_lockstep(model, methods, n, steps, seed=seed, noise=noise, device=device, progress=True)
    rows = []
    for name, schedule in methods.items():
        images = runs[name].images
        save_grid(images[:64], out / f"samples-{name}.png", nrow=8)
        rows.append({
            "method": name,
            "fd_clf": fd(features(extractor, images), reference),
            "seconds_per_100": 100 * runs[name].seconds / n,
            "executed_ratio": schedule.executed_ratio,
            "flop_ratio": schedule.flop_ratio,
        })  # fmt: skip
    for row in rows:
        row["latency_cut"] = 1 - row["seconds_per_100"] / rows[0]["seconds_per_100"]
    gate_heatmap(
        gate, blocks.names, out / "gates.png", "shipped LEES gates of the embedded model (lambda=0.05)"
    )
    schedule_map(methods["lees"], out / "schedule-lees.png")
    return rows
