"""Forecast against reuse (issue 27): how far each lands from the full model's samples, same noise.

Uniform schedules (every block every N-th step, the outer pair always) with the blocks in between
reusing their last residual, or forecasting it from their last two (order 1) or three (order 2) runs,
are sampled side by side with the full model from the same noise; per method this prints one JSON
line: its FLOP ratio, the mean squared pixel distance of its samples from the full model's (``mse``),
and the peak cache memory per sample. DDPM draws fresh noise at every step, so its residuals jitter
from step to step; DDIM's do not.

    python benchmarks/forecast_vs_reuse.py --sampler ddim --steps 50 -n 16
    python benchmarks/forecast_vs_reuse.py --sampler ddpm --steps 50 -n 16
"""

from __future__ import annotations

import argparse
import json

import lees
from lees.diffusion.samplers import sampler_timesteps
from lees.schedules.registry import build_schedule


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--intervals", default="2,3", help="full steps every N steps, comma-separated")
    parser.add_argument("-n", type=int, default=16)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    model, noise = lees.load_backbone(args.model), lees.load_noise_scheduler(args.model)
    blocks = lees.find_blocks(model)
    timesteps = sampler_timesteps(noise, args.steps, args.sampler)
    kinds = ("", "-forecast", "-forecast-2")
    names = [f"uniform-{n}{kind}" for n in args.intervals.split(",") for kind in kinds]
    methods = {"full": None, **{name: build_schedule(name, blocks, timesteps) for name in names}}
    runs = lees.sample_lockstep(model, methods, args.n, steps=args.steps, scheduler=noise,
                                sampler=args.sampler, seed=args.seed)  # fmt: skip
    full = runs["full"].images.float()
    for name in names:
        row = {
            "method": name,
            "sampler": args.sampler,
            "steps": args.steps,
            "flop_ratio": round(methods[name].flop_ratio, 3),
            "mse": float(((runs[name].images.float() - full) ** 2).mean()),
            "cache_kib_per_sample": runs[name].cache_bytes_per_sample / 1024,
        }
        print(json.dumps(row))


if __name__ == "__main__":
    main()
