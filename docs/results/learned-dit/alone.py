"""The searched schedules' latency sampled alone (as lees tune times candidates) and side by side.

Each of the full model, search-0.50, search-0.35 and uniform-3-forecast is sampled alone, 16 samples a
round, in rounds whose order turns; then all four side by side, step by step (``sample_lockstep``). Prints
each schedule's median ratio to the full model alone and its summed ratio side by side.

    PYTHONPATH=src python docs/results/learned-dit/alone.py [ROUNDS]
"""

import statistics
import sys
from pathlib import Path

import torch

import lees
from lees.models.backbones import load_backbone, load_noise_scheduler

HERE = Path(__file__).parent
NAMES = ("search-0.50", "search-0.35", "uniform-3-forecast")
model, noise = load_backbone("embedded-dit"), load_noise_scheduler("embedded-dit")
schedules = {n: lees.Schedule.load(HERE / n / "schedule.json") for n in NAMES}
names, rounds = ["full", *schedules], int(sys.argv[1]) if len(sys.argv) > 1 else 4
settings = {"steps": 30, "sampler": "euler", "seed": 71, "scheduler": noise, "batch_size": 16,
            "progress": False, "guidance_scale": 2.0}  # fmt: skip
alone = {n: [] for n in names}
for r in range(rounds):
    for n in names[r % len(names) :] + names[: r % len(names)]:
        runs = lees.sample_lockstep(model, {n: schedules.get(n)}, 16, first=16 * r, **settings)
        alone[n].append(runs[n].seconds)
print("threads", torch.get_num_threads())
for n in names:
    ratio = statistics.median(s / f for s, f in zip(alone[n], alone["full"], strict=True))
    print(n, "alone: median ratio", round(ratio, 3), [round(x, 3) for x in alone[n]])
together = dict.fromkeys(names, 0.0)
for r in range(rounds):
    runs = lees.sample_lockstep(model, {"full": None, **schedules}, 16, first=16 * r, **settings)
    together = {n: together[n] + runs[n].seconds for n in names}
for n in names:
    print(n, "lockstep ratio", round(together[n] / together["full"], 3), round(together[n], 3))
