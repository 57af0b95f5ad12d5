"""What reuse costs beside skip: one denoiser call with the same blocks reused or skipped (one run).

A uniform schedule's cheap step (all blocks but the outer pair closed) is timed as SKIP and as
REUSE (cache filled by a full step first), and the full step as RUN with and without storing the
residuals the next steps reuse, in interleaved rounds (noise falls on all alike); medians are
compared. Also prints the cache's memory at the batch size.

    python benchmarks/reuse_overhead.py --batch 64 --repeats 50
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import lees
from lees.engine.actions import RUN
from lees.engine.hooks import Engine, ReuseCache
from lees.models.denoisers import example_inputs
from lees.schedules.baselines import uniform_schedule


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    model = lees.load_backbone(args.model)
    blocks = lees.find_blocks(model)
    schedule = uniform_schedule(blocks, [900, 800], interval=2, outer=1)  # step 0 full, step 1 reuses
    reuse = schedule.actions_at(1)
    skip = [RUN if a == RUN else lees.SKIP for a in reuse]
    (x, t), kwargs = example_inputs(model, batch=args.batch)
    x = torch.randn_like(x)
    engine = Engine(model, blocks)
    cache = ReuseCache(len(blocks), schedule.kept_blocks())

    def call(decisions, with_cache):
        with engine.deciding(decisions, "hard", cache if with_cache else None):
            model(x, t, **kwargs)

    cases = {
        "skip": lambda: call(skip, False),
        "reuse": lambda: call(reuse, True),
        "run": lambda: call([RUN] * len(blocks), False),
        "run+store": lambda: call([RUN] * len(blocks), True),
    }
    times = {name: [] for name in cases}
    with torch.inference_mode(), engine.attached():
        call([RUN] * len(blocks), True)  # fill the cache
        for name in cases:  # warm-up
            cases[name]()
        for r in range(args.repeats):
            for name in list(cases)[r % 4 :] + list(cases)[: r % 4]:
                started = time.perf_counter()
                cases[name]()
                times[name].append(time.perf_counter() - started)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(json.dumps({
        "model": args.model, "batch": args.batch, "repeats": args.repeats,
        "ms": {k: round(1000 * v, 2) for k, v in med.items()},
        "reuse_over_skip": round(med["reuse"] / med["skip"] - 1, 4),
        "store_over_run": round(med["run+store"] / med["run"] - 1, 4),
        "cache_bytes_per_sample": cache.peak_bytes_per_sample,
        "cache_mib_at_batch": round(cache.peak_bytes / 2**20, 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
