"""Each model call's seconds of the searched schedules, sampled alone (as lees tune times candidates).

The full model, search-0.50, search-0.35 and uniform-3-forecast each sample 16 samples alone per round,
in rounds whose order turns; every call is timed. Prints each schedule's measured ratio (the medians per
call summed) and, call by call, its actions per block (R run, u reuse, f forecast) and its median seconds
over a full call's.

    PYTHONPATH=src python docs/results/learned-dit/percall.py ROUNDS
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch

import lees
import lees.sampling.lockstep as lockstep
from lees.engine.actions import FORECAST, REUSE, RUN
from lees.models.backbones import load_backbone, load_noise_scheduler

HERE = Path(__file__).parent
NAMES = ("search-0.50", "search-0.35", "uniform-3-forecast")
model, noise = load_backbone("embedded-dit"), load_noise_scheduler("embedded-dit")
schedules = {n: lees.Schedule.load(HERE / n / "schedule.json") for n in NAMES}
names, rounds, log = ["full", *schedules], int(sys.argv[1]), {}


def timed_call(self, name, work, *args):
    """The sampler's clock, every call's seconds kept too."""
    self.sync()
    started = time.perf_counter()
    out = work(*args)
    self.sync()
    self.seconds[name] += time.perf_counter() - started
    log.setdefault(name, []).append(time.perf_counter() - started)
    return out


lockstep._Clock.__call__ = timed_call
per_call = {n: [] for n in names}
for r in range(rounds):
    for n in names[r % len(names) :] + names[: r % len(names)]:
        log.clear()
        lees.sample_lockstep(model, {n: schedules.get(n)}, 16, steps=30, sampler="euler", seed=71,
                             scheduler=noise, batch_size=16, first=16 * r, progress=False,
                             guidance_scale=2.0)  # fmt: skip
        per_call[n].append(log[n])
median = {n: np.median(np.array(per_call[n]), axis=0) for n in names}
full = median["full"].mean()
print("threads", torch.get_num_threads(), "full call median", round(full, 4))
letters = {RUN: "R", REUSE: "u", FORECAST: "f"}
for n, s in schedules.items():
    ratio = median[n].sum() / median["full"].sum()
    print(f"{n}: measured alone {ratio:.3f} (median per call over {rounds} rounds)")
    for j in range(s.actions.shape[1]):
        kinds = "".join(letters.get(int(a), "s") for a in s.actions[:, j])
        print(f"  call {j:2d} {kinds} {median[n][j] / full:.3f}")
