"""Which gradient estimator trains the gates? The paper's STE against the soft relaxation.

Trains the gates of the embedded model for a few hundred steps with each (estimator, lambda,
threshold) setting and prints, for each, the schedule it gives on the 50-step DDPM sampler
(executed-block and FLOP ratio) and the held-out epsilon-MSE under its hard masks, beside the full
model's. docs/method.md quotes its output.

    python benchmarks/estimators.py --steps 200
"""

from __future__ import annotations

import argparse
import json
import time

import lees.schedules.gates
from lees import Schedule, find_blocks, load_backbone
from lees.diffusion.samplers import sampler_timesteps
from lees.evaluation.held_out import held_out_loss
from lees.learn.gate_training import GateTrainConfig, train_gates
from lees.models.backbones import load_noise_scheduler
from lees.models.data import load_images

SETTINGS = [("ste", 0.05, 0.5), ("ste", 0.005, 0.5), ("ste", 0.05, 0.4), ("soft", 0.05, 0.5)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--held-out", type=int, default=500, help="test images for the epsilon-MSE")
    args = parser.parse_args()
    model, noise = load_backbone("embedded"), load_noise_scheduler("embedded")
    blocks = find_blocks(model)
    train, _ = load_images("fashion-mnist", "train")
    test, _ = load_images("fashion-mnist", "test")
    timesteps = sampler_timesteps(noise, 50)
    full = held_out_loss(model, blocks, test, noise, n=args.held_out)
    print(f"# full model held-out eps-MSE {full:.5f} ({args.held_out} test images)")
    for estimator, lam, threshold in SETTINGS:
        lees.engine.actions.OPEN_THRESHOLD = (
            threshold  # every hard decision reads it (training, schedule, loss)
        )
        started = time.perf_counter()
        config = GateTrainConfig(lam=lam, train_steps=args.steps, estimator=estimator)
        result = train_gates(model, train, noise, config, blocks, progress=False)
        schedule = Schedule.from_gate(result.gate, blocks, timesteps)
        row = {
            "estimator": estimator,
            "lambda": lam,
            "threshold": threshold,
            "executed_ratio": round(schedule.executed_ratio, 3),
            "flop_ratio": round(schedule.flop_ratio, 3),
            "held_out_mse": round(held_out_loss(model, blocks, test, noise, result.gate, n=args.held_out), 5),
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(json.dumps(row), flush=True)
    lees.engine.actions.OPEN_THRESHOLD = 0.5


if __name__ == "__main__":
    main()
