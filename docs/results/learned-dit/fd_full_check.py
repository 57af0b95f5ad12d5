"""How well FD to the full model's samples estimated on a training batch (lees.learn.fd_guard's
`FdGuard.to_full`, the search's --fd-weight) follows the FD measured on a stored tune's whole sample set:
for each row, the estimate on 8 random batches of B samples (the full model's statistics: all of its
samples, as the search's 640) beside the FD of the row's samples to the full model's.

    PYTHONPATH=../../../src python fd_full_check.py tune-dpm-on 96 > fd-full-check.txt
"""

import sys
from pathlib import Path

import numpy as np
import torch
from pairs import load

from lees.evaluation.metrics import frechet_distance, gaussian
from lees.learn.fd_guard import fd_guard

runs = {name: torch.cat(images) for name, (images, _) in load(Path(sys.argv[1])).items()}
full, batch = runs["full"], int(sys.argv[2])
rng = np.random.default_rng(0)
batches = [rng.choice(len(full), batch, replace=False) for _ in range(8)]
guards = [fd_guard(full[i], lambda: full, "fashion-mnist", None) for i in batches]
reference = gaussian(guards[0].extractor(full))
print(f"FD to the full model on {len(full)} samples, and estimated on 8 batches of {batch} (mean +- sd)")
for name, images in runs.items():
    measured = frechet_distance(*gaussian(guards[0].extractor(images)), *reference)
    estimates = [guard.to_full(images[i]) for guard, i in zip(guards, batches, strict=True)]
    print(f"{name:60s} {measured:7.3f} {np.mean(estimates):7.3f} +- {np.std(estimates):.3f}")
