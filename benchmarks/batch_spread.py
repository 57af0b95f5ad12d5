"""How far apart are the same seeds sampled in batches of different sizes? (float rounding, not a bug)

Sample i depends only on (seed, i), but with more than one thread the kernels' summation order
depends on the batch size, so images sampled in pieces of 2 differ from the same images sampled in
one batch by a rounding spread that the sampler then carries through its steps. This script
measures that spread on the tests' tiny UNet (the run of tests/test_stored_runs.py: DDPM, 4 steps,
the full model and uniform reuse every 2 steps) for 20 seeds, at each thread count asked for
(``torch.set_num_threads``: OMP_NUM_THREADS is capped at the machine's cores, this is not):

    .venv/bin/python benchmarks/batch_spread.py --threads 1 2 4

It prints the largest absolute difference over seeds and methods; the test's tolerance is justified
by it (stored output: docs/results/batch-spread/).
"""

from __future__ import annotations

import argparse
import sys

import torch
from diffusers import DDPMScheduler

sys.path.insert(0, "tests")
from conftest import tiny_unet  # noqa: E402

from lees import find_blocks, sample_lockstep  # noqa: E402
from lees.diffusion.samplers import sampler_timesteps  # noqa: E402
from lees.models.architectures import DDPM_NOISE  # noqa: E402
from lees.schedules.baselines import uniform_schedule  # noqa: E402


def spread(seed: int, n: int = 5, piece: int = 2) -> float:
    """The largest |one batch of n - pieces of `piece`| over both methods' images for one seed."""
    model, noise = tiny_unet(), DDPMScheduler(**DDPM_NOISE)
    methods = {
        "full": None,
        "reuse": uniform_schedule(find_blocks(model), sampler_timesteps(noise, 4), 2, outer=1),
    }
    kwargs = {"steps": 4, "scheduler": noise, "seed": seed, "progress": False}
    whole = sample_lockstep(model, methods, n, **kwargs)
    parts = [
        sample_lockstep(model, methods, min(piece, n - f), first=f, **kwargs) for f in range(0, n, piece)
    ]
    return max(
        (whole[m].images - torch.cat([p[m].images for p in parts])).abs().max().item() for m in methods
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    for threads in parser.parse_args().threads:
        torch.set_num_threads(threads)
        spreads = sorted(spread(seed) for seed in range(20))
        print(
            f"threads {torch.get_num_threads()}: max |one batch - pieces| over 20 seeds, 2 methods: "
            f"{spreads[-1]:.2e} (median per seed {spreads[10]:.2e}, images in [-1, 1])"
        )


if __name__ == "__main__":
    main()
