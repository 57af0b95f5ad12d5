"""lees' DDIM against diffusers' own DDIMPipeline on the embedded model, same seeds, same start noise.

Issue 13 found lees' DDIM scoring worse at 50 steps than at 20 on the embedded model (fd_clf 17.6 vs
11.7 on 1,000 samples) while DDPM improves with steps. This asks whether lees' DDIM is at fault: for
each step count, lees' DDIM (``lees.sample``) and diffusers' ``DDIMPipeline`` (eta 0, the model's
scheduler config: leading spacing, steps_offset 0, clip_sample, set_alpha_to_one) sample the same
``n`` start noises (each pipeline sample drawn from lees' generator for that sample); printed are
the fd_clf of each against 10k real training images and the largest absolute difference between
their images. DDPM at the same step counts is the control.

    python benchmarks/ddim_vs_diffusers.py --n 400
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from diffusers import DDIMPipeline, DDIMScheduler

from lees import load_backbone
from lees.diffusion.samplers import sample_generators
from lees.evaluation.metrics import ClassifierFeatures, fd, features, reference_features
from lees.models.backbones import load_noise_scheduler
from lees.sampling.lockstep import sample


def diffusers_ddim(model, noise, n: int, steps: int, seed: int, batch_size: int) -> torch.Tensor:
    """``n`` images in [-1, 1] from diffusers' DDIMPipeline, sample i started from lees' noise for i."""
    pipe = DDIMPipeline(unet=model, scheduler=DDIMScheduler.from_config(noise.config))
    pipe.set_progress_bar_config(disable=True)
    chunks = []
    for start in range(0, n, batch_size):
        idx = range(start, min(n, start + batch_size))
        gens = sample_generators(seed, idx, model.device)
        out = pipe(batch_size=len(idx), generator=gens, num_inference_steps=steps, eta=0.0, output_type="np")
        chunks.append(torch.from_numpy(out.images).permute(0, 3, 1, 2) * 2 - 1)  # [0, 1] -> [-1, 1]
    return torch.cat(chunks)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 50], help="step counts")
    parser.add_argument("--n", type=int, default=400, help="samples per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    model = load_backbone("embedded", device=args.device)
    noise = load_noise_scheduler("embedded")
    extractor = ClassifierFeatures(args.device)
    reference = reference_features(extractor, "fashion-mnist", "train", n=10_000, progress=False)
    keys = ("timestep_spacing", "steps_offset", "clip_sample", "prediction_type")
    config = {k: noise.config[k] for k in keys}
    ddim = DDIMScheduler.from_config(noise.config).config
    print(f"# embedded model, {args.n} samples, seed {args.seed}; scheduler {config}, "
          f"set_alpha_to_one {ddim.set_alpha_to_one}, eta 0")  # fmt: skip
    header = ("steps", 5), ("lees DDIM", 10), ("diffusers DDIM", 15), ("max |diff|", 11), ("lees DDPM", 10)
    print(" ".join(f"{name:>{width}}" for name, width in header), f"{'s':>6}")
    for steps in args.steps:
        started = time.perf_counter()
        common = {"n": args.n, "steps": steps, "seed": args.seed, "scheduler": noise, "progress": False}
        ours = sample(model, None, sampler="ddim", batch_size=args.batch_size, **common)
        theirs = diffusers_ddim(model, noise, args.n, steps, args.seed, args.batch_size)
        ddpm = sample(model, None, sampler="ddpm", batch_size=args.batch_size, **common)
        row = {
            "steps": steps,
            "lees_ddim_fd_clf": fd(features(extractor, ours), reference),
            "diffusers_ddim_fd_clf": fd(features(extractor, theirs), reference),
            "max_abs_diff": float((ours.clamp(-1, 1) - theirs).abs().max()),
            "lees_ddpm_fd_clf": fd(features(extractor, ddpm), reference),
            "seconds": time.perf_counter() - started,
        }
        print(
            f"{steps:>5} {row['lees_ddim_fd_clf']:>10.3f} {row['diffusers_ddim_fd_clf']:>15.3f} "
            f"{row['max_abs_diff']:>11.2e} {row['lees_ddpm_fd_clf']:>10.3f} {row['seconds']:>6.0f}",
            flush=True,
        )
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
