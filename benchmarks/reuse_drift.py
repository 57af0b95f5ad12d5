"""Where reuse moves the samples: per-sample distance from the full model's samples vs drift of
the whole set (issue 12: what a router's objective should count).

Reuse makes a sampling run end somewhere else. Two different things can happen: the run can end at
another sample that is just as good (per-sample distance, which a per-sample objective punishes and a
distribution metric does not), or the whole set can shift (drift: the mean image or the mean
feature moves, which fd_clf and FID count). For each method, against a reference method sampled
from the same noise, this prints:

* ``sample_mse``: mean squared pixel distance of each sample from its paired reference sample;
* ``drift``: squared length of the mean pixel difference, minus its sampling noise (the
  per-pixel variance of the differences over n), so 0 means no shift of the mean image;
* ``feature_drift``: the same in fd_clf's features (their mean shift, noise taken out);
* ``brightness``: mean pixel value minus the reference's (in [-1, 1] units);
* ``fd_clf`` against real training images, and ``fd_clf_mean``, the part of it that is the shift
  of the mean feature (the rest is the covariance term: spread and shape of the set).

Two modes:

    # every method of a finished lees frontier run, against its full model (seconds)
    python benchmarks/reuse_drift.py --pieces runs/rvs/pieces -n 1000 --against full-50
    # uniform reuse (every 2nd step) in one block group and one 10-step window at a time
    # (42 methods side by side: about 20 min on 2 CPU cores at -n 64)
    python benchmarks/reuse_drift.py --windows -n 64 --out runs/reuse-drift

Only methods at the reference's timesteps share its noise step by step (DDPM draws fresh noise at
every step), so ``sample_mse`` compares like with like only for them; drift is valid for all.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import lees
from lees.diffusion.samplers import sampler_timesteps
from lees.engine.actions import REUSE, RUN
from lees.engine.blocks import unet_stage
from lees.evaluation.metrics import REFERENCE_N, ClassifierFeatures, fd, features, reference_features
from lees.models.backbones import load_noise_scheduler
from lees.sampling.stored import sample_stored, stored_images
from lees.schedules.baselines import uniform_schedule
from lees.schedules.registry import canonical


def bias_corrected_shift(diff: np.ndarray) -> float:
    """||mean(diff)||^2 minus its expected value under no shift (trace of the covariance / n)."""
    n = len(diff)
    mean = diff.mean(0)
    return float(mean @ mean - diff.var(0, ddof=1).sum() / n)


def drift(
    images: torch.Tensor, reference: torch.Tensor, feats: np.ndarray, ref_feats: np.ndarray, real: np.ndarray
) -> dict[str, float]:
    """The figures of the module docstring for one method's images and their fd_clf features against
    the paired reference's, and the ``real`` images' features."""
    diff = (images - reference).flatten(1).double().numpy()
    shift = feats.mean(0) - real.mean(0)
    return {
        "sample_mse": round(float((diff**2).mean()), 5),
        "drift": round(bias_corrected_shift(diff), 4),
        "feature_drift": round(bias_corrected_shift(feats - ref_feats), 4),
        "brightness": round(float(images.mean() - reference.mean()), 4),
        "fd_clf": round(fd(feats, real), 3),
        "fd_clf_mean": round(float(shift @ shift), 3),
    }


def block_groups(names: list[str]) -> dict[str, list[int]]:
    """Blocks grouped by UNet stage (``down_blocks.1``, ``mid_block``, ...); else one group each."""
    groups: dict[str, list[int]] = {}
    for k, name in enumerate(names):
        groups.setdefault(unet_stage(name) or name, []).append(k)
    return groups


def window_schedules(model, noise, steps: int, window: int) -> dict[str, lees.Schedule]:
    """The full model, uniform reuse (every 2nd step, outer pair always), and that reuse confined to
    one block group and one window of steps at a time (the groups the uniform table closes)."""
    blocks = lees.find_blocks(model)
    ts = sampler_timesteps(noise, steps)
    uniform = uniform_schedule(blocks, ts, 2, outer=1)
    rows = {"full": lees.Schedule.full(blocks, ts), "uniform-2-reuse": uniform}
    for group, members in block_groups(blocks.names).items():
        if not (uniform.actions[members] == REUSE).any():
            continue
        for start in range(0, steps, window):
            actions = np.full_like(uniform.actions, RUN)
            span = slice(start, start + window)
            actions[members, span] = uniform.actions[members, span]
            rows[f"{group}@{start}-{min(start + window, steps) - 1}"] = lees.Schedule(
                actions,
                blocks.names,
                ts,
                "manual",
                {"group": group, "window": [start, window]},
                blocks.shares,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=64, help="samples per method")
    parser.add_argument("--pieces", type=Path, help="a finished lees frontier run's pieces folder")
    parser.add_argument("--against", default="full", help="the reference method in --pieces (full)")
    parser.add_argument("--windows", action="store_true", help="sample reuse per block group and window")
    parser.add_argument("--window", type=int, default=10, help="steps per window (10)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("runs/reuse-drift"))
    args = parser.parse_args()
    if args.windows == (args.pieces is not None):
        parser.error("give --pieces DIR or --windows")
    if args.windows:
        model, noise = lees.load_backbone("embedded"), load_noise_scheduler("embedded")
        rows = window_schedules(model, noise, args.steps, args.window)
        runs = sample_stored(model, rows, args.n, args.out / "pieces", settings={"seed": args.seed},
                             seed=args.seed, scheduler=noise, progress=False)  # fmt: skip
        images = {name: run.images for name, run in runs.items()}
        reference = images["full"]
    else:
        if not (args.pieces / "settings.json").is_file():
            parser.error(
                f"{args.pieces} holds no stored run (no settings.json): give a lees frontier pieces folder"
            )
        names = [canonical(n) for n in json.loads((args.pieces / "settings.json").read_text())["methods"]]
        if canonical(args.against) not in names:
            parser.error(f"--against {args.against!r} is not among the stored methods: {', '.join(names)}")
        images = {name: stored_images(args.pieces, args.n, name) for name in names}
        reference = images[canonical(args.against)]
    extractor = ClassifierFeatures()
    real = reference_features(extractor, n=REFERENCE_N["clf"], progress=False)
    feats = {name: features(extractor, x) for name, x in images.items()}
    ref_feats = features(extractor, reference)
    for name, x in images.items():
        row = drift(x, reference, feats[name], ref_feats, real)
        print(json.dumps({"method": name, "n": args.n, **row}), flush=True)


if __name__ == "__main__":
    main()
