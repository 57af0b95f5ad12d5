"""How well fd_clf's first-order change (lees.learn.fd_guard, the search's --data guard) predicts the
measured change, on the rows of a stored 1,000-sample tune: the full model's statistics and partners are
its 1,000 samples, each row's change is predicted from its samples and compared with fd_clf measured.

    PYTHONPATH=../../../src python guard_check.py tune-ode > guard-check.txt
"""

import sys
from pathlib import Path

import numpy as np
import torch
from pairs import load

from lees.evaluation.metrics import frechet_distance, gaussian, scorer
from lees.learn.fd_guard import fd_guard

runs = {name: torch.cat(images) for name, (images, _) in load(Path(sys.argv[1])).items()}
full = runs["full"]
guard = fd_guard(full, lambda: full, "fashion-mnist", None)
data = gaussian(scorer("clf", "fashion-mnist")[1])
base = frechet_distance(*gaussian(guard.f), *data)
print(f"fd_clf change from the full model ({base:.3f}), {len(full)} samples: measured vs first-order")
for name, images in runs.items():
    measured = frechet_distance(*gaussian(guard.extractor(images)), *data) - base
    print(f"{name:60s} {measured:+8.3f} {guard.change(images):+8.3f}")
np.testing.assert_allclose(guard.change(full), 0.0, atol=1e-9)
