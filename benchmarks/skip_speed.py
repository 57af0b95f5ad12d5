"""Does skipping blocks save the time its FLOPs promise? One denoiser call, measured in one run.

Builds a published architecture (random weights: timing does not depend on them), makes one-step
schedules that keep the full model and about 75 %, 50 % and 25 % of its FLOPs (skipping the largest blocks
first), times the gated call for each, interleaved so that machine noise hits all alike, and
prints one JSON line per schedule with its FLOP ratio and its latency ratio against the full model.

    python benchmarks/skip_speed.py --arch ddpm-cifar10 --batch 16 --repeats 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch

from lees import GatedModel, Schedule, find_blocks
from lees.backbones import ARCHITECTURES, build_architecture
from lees.blocks import default_inputs


def schedule_for(blocks, target: float) -> Schedule:
    """A one-step schedule skipping the largest blocks first while the FLOP ratio stays >= ``target``."""
    keep = np.ones((len(blocks), 1), dtype=bool)
    saved = 0.0
    for k in sorted(range(len(blocks)), key=lambda k: -blocks[k].share):
        if saved + blocks[k].share <= 1.0 - target:
            keep[k, 0] = False
            saved += blocks[k].share
    return Schedule(keep, blocks.names, [500], "manual", {"target_flop_ratio": target}, blocks.shares)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="ddpm-cifar10", choices=sorted(ARCHITECTURES))
    parser.add_argument("--batch", type=int, default=16, help="images per denoiser call")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per schedule")
    parser.add_argument(
        "--targets",
        type=float,
        nargs="+",
        default=[0.75, 0.5, 0.25],
        help="FLOP ratios to time beside the full model",
    )
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    model = build_architecture(args.arch).to(args.device)
    blocks = find_blocks(model)
    gated = GatedModel(model, blocks)
    sample, timestep = default_inputs(model, batch=args.batch)
    schedules = [schedule_for(blocks, t) for t in [1.0, *args.targets]]
    sync = torch.cuda.synchronize if torch.device(args.device).type == "cuda" else (lambda: None)

    times: list[list[float]] = [[] for _ in schedules]
    with torch.inference_mode():
        for _ in range(2):  # warm-up
            for s in schedules:
                gated(sample, timestep, mask=s.mask(0))
        for _ in range(args.repeats):
            for i, s in enumerate(schedules):
                sync()
                start = time.perf_counter()
                gated(sample, timestep, mask=s.mask(0))
                sync()
                times[i].append(time.perf_counter() - start)

    full = statistics.median(times[0])
    print(
        f"# {args.arch}, batch {args.batch}, {args.repeats} interleaved calls each, median, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}",
        file=sys.stderr,
    )
    for s, ts in zip(schedules, times, strict=True):
        latency = statistics.median(ts)
        row = {
            "arch": args.arch,
            "target": s.settings["target_flop_ratio"],
            "flop_ratio": round(s.flop_ratio, 4),
            "executed_ratio": round(s.executed_ratio, 4),
            "latency_ms": round(1000 * latency, 2),
            "latency_ratio": round(latency / full, 4),
            "gap": round(latency / full / s.flop_ratio - 1, 4),
        }
        print(json.dumps(row))


if __name__ == "__main__":
    main()
