"""The searched schedules' latency sampled alone (as lees tune times candidates) and side by side.

The full model and each schedule named (default: search-0.50, search-0.35 and uniform-3-forecast) are
sampled alone, 16 samples a round, in rounds whose order turns; then, with --lockstep, all side by side,
step by step (``sample_lockstep``). Prints each schedule's median ratio to the full model alone (with the
quartiles over the rounds) and its summed ratio side by side; for an adaptive schedule (``lees route
--objective probe``) also the cells it ran beyond its table in each round (each round is another batch of
16 samples: how much the probe's decisions vary with the batch). A schedule searched on another solver
than the reference's (``lees route --reference-run``) samples with its own solver and steps.

    PYTHONPATH=src python docs/results/learned-dit/alone.py [--rounds 4] [--lockstep] [--sampler euler]
        [--steps 30] [--hooked-full] [NAME ...]
"""

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

import lees
from lees.diffusion.samplers import sampler_timesteps
from lees.engine.blocks import find_blocks
from lees.models.backbones import load_backbone, load_noise_scheduler

HERE = Path(__file__).parent
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("names", nargs="*", default=["search-0.50", "search-0.35", "uniform-3-forecast"])
parser.add_argument("--rounds", type=int, default=4, help="rounds of 16 samples (4)")
parser.add_argument("--lockstep", action="store_true", help="then time all side by side, step by step")
parser.add_argument("--sampler", default="euler", help="the solver the schedules were searched on (euler)")
parser.add_argument("--steps", type=int, default=30, help="its steps (30)")
parser.add_argument(
    "--hooked-full",
    action="store_true",
    help="also the full model through lees' hooks, every block run (full-hooked)",
)
args = parser.parse_args()
model, noise = load_backbone("embedded-dit"), load_noise_scheduler("embedded-dit")
schedules = {n: lees.Schedule.load(HERE / n / "schedule.json") for n in args.names}
if args.hooked_full:  # the hooks' own cost, and whether it moves with the machine as the plain model does
    timesteps = sampler_timesteps(noise, args.steps, args.sampler)
    schedules["full-hooked"] = lees.Schedule.full(find_blocks(model), timesteps)
names, rounds = ["full", *schedules], args.rounds
settings = {"steps": args.steps, "sampler": args.sampler, "seed": 71, "scheduler": noise, "batch_size": 16,
            "progress": False, "guidance_scale": 2.0}  # fmt: skip
own = {n: {"steps": s.settings["steps"], "sampler": s.settings["sampler"]} for n, s in schedules.items()
       if s.settings.get("reference_run")}  # fmt: skip
alone, extra = {n: [] for n in names}, {n: [] for n in names}
for r in range(rounds):
    for n in names[r % len(names) :] + names[: r % len(names)]:
        at = settings | own.get(n, {})
        runs = lees.sample_lockstep(model, {n: schedules.get(n)}, 16, first=16 * r, **at)
        alone[n].append(runs[n].seconds)
        if runs[n].adaptive_share is not None:
            extra[n].append(int(runs[n].adaptive_share.sum()))
print("threads", torch.get_num_threads())
for n in names:
    if extra[n]:
        print(n, "cells run beyond the table, round by round:", extra[n])
for n in names:
    ratios = [s / f for s, f in zip(alone[n], alone["full"], strict=True)]
    q1, q3 = np.percentile(ratios, [25, 75])
    print(n, "alone: median ratio", round(statistics.median(ratios), 3), f"quartiles {q1:.3f}-{q3:.3f}",
          [round(x, 3) for x in alone[n]])  # fmt: skip
if not args.lockstep or own:
    raise SystemExit  # side by side, step by step, needs the one solver
together = dict.fromkeys(names, 0.0)
for r in range(rounds):
    runs = lees.sample_lockstep(model, {"full": None, **schedules}, 16, first=16 * r, **settings)
    together = {n: together[n] + runs[n].seconds for n in names}
for n in names:
    print(n, "lockstep ratio", round(together[n] / together["full"], 3), round(together[n], 3))
