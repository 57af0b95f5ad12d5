"""The searched schedules' latency on a quiet machine: the search's cost model, timed again, and the
schedules themselves timed against the full model, side by side.

The searches modelled 0.487 and 0.342 of the full model's latency from action costs timed once on a
loaded machine; `lees tune` then measured 0.506 and 0.369. This says which of the two figures a quiet
machine agrees with: it times the action costs again (``measure_costs``, 16 samples, the search's own
settings), prints each schedule's modelled ratio under the stored and the new costs, and then samples
the full model and both schedules side by side (``sample_lockstep``'s paired rounds, the evaluation's
seed 71) and prints their measured ratios.

    PYTHONPATH=src python docs/results/learned-dit/retime.py [--rounds 3]
"""

import argparse
import json
from pathlib import Path

import torch

import lees
from lees.diffusion.samplers import sampler_timesteps
from lees.engine.blocks import find_blocks
from lees.learn.search import LatencyCosts, SearchConfig, measure_costs
from lees.models.backbones import load_backbone, load_noise_scheduler

HERE = Path(__file__).parent
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--rounds", type=int, default=3, help="paired rounds of 16 samples (3)")
args = parser.parse_args()

model = load_backbone("embedded-dit")
noise = load_noise_scheduler("embedded-dit")
schedules = {
    name: lees.Schedule.load(HERE / name / "schedule.json") for name in ("search-0.50", "search-0.35")
}
state = json.loads((HERE / "search-0.50" / "search_state.json").read_text())
stored = LatencyCosts.from_dict(state["costs"])
config = SearchConfig(**{**state["config"], "samples": 16})
timesteps = sampler_timesteps(noise, config.steps, config.sampler)
fresh = measure_costs(model, noise, find_blocks(model), config, timesteps)
print(f"torch threads {torch.get_num_threads()}; a full call of 16 samples: {stored.full:.3f} s stored, "
      f"{fresh.full:.3f} s now")  # fmt: skip
for name, s in schedules.items():
    old, new = stored.ratio(s.actions, s.forecast_order), fresh.ratio(s.actions, s.forecast_order)
    print(f"{name}: modelled {old:.3f} with the stored costs, {new:.3f} with costs timed now")
seconds = dict.fromkeys(["full", *schedules], 0.0)
for r in range(args.rounds):
    runs = lees.sample_lockstep(
        model, {"full": None, **schedules}, 16, steps=config.steps, sampler=config.sampler, seed=71,
        scheduler=noise, batch_size=16, progress=False, guidance_scale=config.guidance_scale, first=16 * r,
    )  # fmt: skip
    seconds = {k: seconds[k] + runs[k].seconds for k in seconds}
for name in schedules:
    print(f"{name}: measured {seconds[name] / seconds['full']:.3f} of the full model's time "
          f"({args.rounds} paired rounds of 16 samples, seed 71)")  # fmt: skip
