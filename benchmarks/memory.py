"""Peak memory of scoring many samples: streamed (lees) against sampling everything first.

Each measurement runs in a fresh process and reads its peak resident memory (ru_maxrss), for a
small UNet (random weights, 2 DDPM steps, 32x32 images) and a pooled-pixel feature extractor: what
is measured is the pipeline's own memory, not a network's. ``lees.evaluation.scoring.score_schedule``
streams (sample a batch, extract its features, keep running moments, drop the images); the
"all at once" row keeps every image before extracting features, as a naive pipeline would.

    python benchmarks/memory.py --n 1000 10000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import numpy as np
import torch


def small_unet():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=32, in_channels=1, out_channels=1, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=8,
    ).eval()  # fmt: skip


def pooled(images: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.adaptive_avg_pool2d(images, (4, 4)).flatten(1).double().numpy()


def child(n: int, mode: str) -> None:
    from diffusers import DDPMScheduler

    from lees.evaluation.metrics import fd
    from lees.evaluation.scoring import score_schedule
    from lees.models.architectures import DDPM_NOISE
    from lees.sampling.lockstep import sample

    model, noise = small_unet(), DDPMScheduler(**DDPM_NOISE)
    reference = pooled(torch.rand(1000, 1, 32, 32) * 2 - 1)
    if mode == "streamed":
        value = score_schedule(model, noise, None, pooled, reference, n=n, steps=2, batch_size=100).fd
    else:
        images = sample(model, None, n, 2, scheduler=noise, batch_size=100, progress=False)
        value = fd(pooled(images), reference)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "n": n, "peak_rss_mib": round(peak_mib, 1), "fd": round(value, 4)}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--child", nargs=2, metavar=("N", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(int(args.child[0]), args.child[1])
        return
    for mode in ("streamed", "all-at-once"):
        for n in args.n:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(n), mode],
                capture_output=True,
                text=True,
                check=True,
            )
            print(out.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
