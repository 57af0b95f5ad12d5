"""Half precision against fp32 on the embedded model, and how many graphs a schedule compiles.

For bf16 and fp16 copies of the embedded model: the relative L2 error of one noise prediction at a
few timesteps, and the distance of the samples of the shipped router schedule (run or reuse, DDPM
50 steps, the same seeds) from fp32's. Then, for each shipped schedule, its distinct run-sets: a
compiled model makes one graph per run-set, plus one for the first step (empty reuse cache), and
dynamo keeps at most ``torch._dynamo.config.recompile_limit`` of them per model.

    python benchmarks/precision.py -n 8 > docs/results/precision/stdout.txt
"""

from __future__ import annotations

import argparse
import json

import torch

import lees
from lees.models.backbones import EMBEDDED_DIR, load_noise_scheduler
from lees.models.denoisers import denoise
from lees.schedules.saving import load_policy
from lees.schedules.schedule import Schedule

DTYPES = (torch.bfloat16, torch.float16)


@torch.no_grad()
def prediction_errors(model, low, timesteps=(999, 500, 100, 10)) -> dict[int, float]:
    """Relative L2 error of the half-precision copy's noise prediction, per timestep (batch of 16)."""
    x = torch.randn(16, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    errors = {}
    for t in timesteps:
        step = torch.full((16,), t)
        full, half = denoise(model, x, step), denoise(low, x, step)
        errors[t] = round(float((half - full).norm() / full.norm()), 5)
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=8, help="samples per dtype (8)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model, noise = lees.load_backbone("embedded"), load_noise_scheduler("embedded")
    router = load_policy(EMBEDDED_DIR / "router-0.70")
    full = lees.sample(model, router, args.n, seed=args.seed, scheduler=noise, progress=False)
    for dtype in DTYPES:
        low = lees.load_backbone("embedded").to(dtype)
        images = lees.sample(low, router, args.n, seed=args.seed, scheduler=noise, progress=False)
        gap = (images - full).abs()
        row = {"dtype": str(dtype).removeprefix("torch."), "n": args.n, "seed": args.seed}
        row["prediction_rel_l2"] = prediction_errors(model, low)
        row |= {"router_samples_max_abs": round(float(gap.max()), 4)}
        row |= {"router_samples_mean_abs": round(float(gap.mean()), 5)}
        print(json.dumps(row))
    print(json.dumps({"recompile_limit": torch._dynamo.config.recompile_limit}))
    for name in ("router-0.70", "lees-0.05"):
        policy = load_policy(EMBEDDED_DIR / name)
        if isinstance(policy, Schedule):
            print(json.dumps({"schedule": name, "steps": policy.num_steps, "run_sets": policy.run_sets()}))


if __name__ == "__main__":
    main()
