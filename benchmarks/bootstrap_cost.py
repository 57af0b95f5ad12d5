"""What one bootstrap resample of a Fréchet distance costs: the factored form lees uses against the
direct one (a d x d matrix square root per resample), on random features of Inception's and fd_clf's
sizes. Both give the same figure (tests/test_bootstrap.py checks it); this prints seconds per resample
and their ratio, measured in one run:

    .venv/bin/python benchmarks/bootstrap_cost.py --n 500 --resamples 3

(stored output: docs/results/bootstrap-cost/).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from lees.evaluation.bootstrap import FixedReference, fd_replicates, resample_indices
from lees.evaluation.metrics import fd


def seconds_per(fn, indices) -> float:
    started = time.perf_counter()
    fn(indices)
    return (time.perf_counter() - started) / len(indices)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="samples per row")
    parser.add_argument("--resamples", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for name, d in (("fd_clf", 128), ("fid", 2048)):
        feats, partner = rng.normal(size=(args.n, d)), rng.normal(size=(args.n, d))
        started = time.perf_counter()
        real = FixedReference.of(rng.normal(size=(2 * d, d)))
        once = time.perf_counter() - started
        indices = resample_indices(args.n, args.resamples, seed=0)
        fixed = seconds_per(lambda idx: fd_replicates(feats, real, idx), indices)  # noqa: B023
        paired = seconds_per(lambda idx: fd_replicates(feats, partner, idx), indices)  # noqa: B023
        direct = seconds_per(lambda idx: [fd(feats[i], partner[i]) for i in idx], indices)  # noqa: B023
        print(
            f"{name} (d={d}, n={args.n}): s per resample: to real data {fixed:.3f} "
            f"(its root once: {once:.1f}), paired {paired:.3f}, direct sqrtm {direct:.3f}; "
            f"direct / paired {direct / paired:.1f}x"
        )


if __name__ == "__main__":
    main()
