"""Does skipping blocks save the time its FLOPs promise? One denoiser call, measured in one run.

Builds a published architecture (random weights: timing does not depend on them) and, for each
target FLOP ratio (default 75 %, 50 %, 25 %), several one-step schedules that keep just above that
share of the FLOPs: one skipping the largest blocks first, the others skipping blocks in seeded
random orders. Every schedule, the full model through the engine and the plain model without it
are timed in interleaved rounds (so machine noise hits all alike); medians are compared.

Prints one JSON line per target: FLOP ratio and latency ratio against the full model, averaged over
its schedules, with the spread of the per-schedule gap (latency ratio / FLOP ratio - 1). A header
line on stderr gives the engine's own overhead (all blocks on vs the plain model).

    python benchmarks/skip_speed.py --arch ddpm-cifar10 --batch 16 --repeats 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial

import numpy as np
import torch

from lees import GatedModel, Schedule, find_blocks
from lees.engine.blocks import Blocks
from lees.models.architectures import ARCHITECTURES
from lees.models.backbones import build_architecture
from lees.models.denoisers import example_inputs


def schedule_for(blocks: Blocks, target: float, order: list[int], label: str) -> Schedule:
    """A one-step schedule skipping blocks in ``order`` while the FLOP ratio stays >= ``target``."""
    keep = np.ones((len(blocks), 1), dtype=bool)
    saved = 0.0
    for k in order:
        if saved + blocks[k].share <= 1.0 - target:
            keep[k, 0] = False
            saved += blocks[k].share
    settings = {"target_flop_ratio": target, "order": label}
    return Schedule(keep, blocks.names, [500], "manual", settings, blocks.shares)


def schedules_for(blocks: Blocks, target: float, random_orders: int, seed: int) -> list[Schedule]:
    """Largest-first plus ``random_orders`` seeded random skip orders, all near ``target``."""
    largest = sorted(range(len(blocks)), key=lambda k: -blocks[k].share)
    rng = np.random.default_rng(seed)
    orders = [(largest, "largest-first")]
    orders += [(rng.permutation(len(blocks)).tolist(), f"random-{i}") for i in range(random_orders)]
    return [schedule_for(blocks, target, order, label) for order, label in orders]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="ddpm-cifar10", choices=sorted(ARCHITECTURES))
    parser.add_argument("--batch", type=int, default=16, help="images per denoiser call")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per schedule")
    parser.add_argument(
        "--targets", type=float, nargs="+", default=[0.75, 0.5, 0.25], help="FLOP ratios to time"
    )
    parser.add_argument("--random-orders", type=int, default=3, help="random skip sets per target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    model = build_architecture(args.arch).to(args.device)
    blocks = find_blocks(model)
    gated = GatedModel(model, blocks)
    inputs, kwargs = example_inputs(model, batch=args.batch)
    full = Schedule.full(blocks, [500])
    groups = [schedules_for(blocks, t, args.random_orders, args.seed) for t in args.targets]
    schedules = [full] + [s for group in groups for s in group]
    sync = torch.cuda.synchronize if torch.device(args.device).type == "cuda" else (lambda: None)

    # The plain model (no engine) is timed too, to show what the engine itself costs.
    calls = [partial(model, *inputs, **kwargs)]
    calls += [partial(gated, *inputs, mask=s.actions_at(0), **kwargs) for s in schedules]
    times: list[list[float]] = [[] for _ in calls]
    with torch.inference_mode():
        for _ in range(2):  # warm-up
            for call in calls:
                call()
        for _ in range(args.repeats):
            for i, call in enumerate(calls):
                sync()
                start = time.perf_counter()
                call()
                sync()
                times[i].append(time.perf_counter() - start)
    plain, full_time, *rest = (statistics.median(t) for t in times)
    latency = dict(zip((id(s) for s in schedules[1:]), rest, strict=True))

    print(
        f"# {args.arch}, batch {args.batch}, {args.repeats} interleaved calls each, median, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}; engine overhead "
        f"(all blocks on vs the plain model): {100 * (full_time / plain - 1):+.2f} %",
        file=sys.stderr,
    )
    for target, group in zip(args.targets, groups, strict=True):
        flop = [s.flop_ratio for s in group]
        lat = [latency[id(s)] / full_time for s in group]
        gaps = {
            s.settings["order"]: round(la / fl - 1, 4) for s, fl, la in zip(group, flop, lat, strict=True)
        }
        row = {
            "arch": args.arch,
            "target": target,
            "flop_ratio": round(statistics.mean(flop), 4),
            "latency_ratio": round(statistics.mean(lat), 4),
            "gap": round(statistics.mean(lat) / statistics.mean(flop) - 1, 4),
            "gap_per_schedule": gaps,
            "full_ms": round(1000 * full_time, 2),
        }
        print(json.dumps(row))


if __name__ == "__main__":
    main()
