"""diffusers' TaylorSeer on a UNet under an ancestral and a deterministic sampler (found by lees tune).

TaylorSeer predicts a hooked module's *output* from its outputs at the last computed steps and does
not read the module's input at a predicted step. Under a deterministic sampler (DDIM) the input moves
smoothly and the prediction holds; under DDPM's ancestral sampler fresh noise enters x_t at every step,
a predicted step's output does not respond to it, and the samples leave the full model's. lees' own
reuse and forecast act on a block's *residual*, added to the block's current input, so they see it.

Per sampler, the full model, uniform reuse every 2nd step and TaylorSeer at two settings (lees tune's
quick ones), through lees tune's glue, from the same noise; one JSON line per run: its fidelity to the
full model of the same sampler (FD in the classifier's features, PSNR).

    python benchmarks/taylorseer_sampler.py -n 64 --steps 20
"""

from __future__ import annotations

import argparse
import json

import torch

from lees.models.backbones import load_backbone, load_noise_scheduler
from lees.tune.candidates import candidates
from lees.tune.quality import Scorer
from lees.tune.runs import FULL, build_runs, quiet_diffusers


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--samplers", nargs="+", default=["ddpm", "ddim"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("-n", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model, noise = load_backbone(args.model), load_noise_scheduler(args.model)
    for solver in args.samplers:
        found = [
            c
            for c in candidates(args.steps, (solver,), quick=True)
            if c.name.startswith(("TaylorSeer", "uniform-2"))
        ]
        with quiet_diffusers(), torch.inference_mode():
            runs, _ = build_runs(found, model, noise, solver, args.steps, seed=args.seed)
            batches = [(f, min(args.batch_size, args.n - f)) for f in range(0, args.n, args.batch_size)]
            images = {
                name: torch.cat([run.sample(model, noise, f, k, args.seed).images for f, k in batches])
                for name, run in runs.items()
            }
        score = Scorer(images[FULL])
        for name, x in images.items():
            s = score(x.clamp(-1, 1))
            row = {
                "sampler": solver,
                "run": name,
                "fd_full": round(s["fd_full"], 3),
                "psnr": round(s["psnr"], 2),
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
