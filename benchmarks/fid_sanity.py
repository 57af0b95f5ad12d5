"""Is our Inception FID the standard one? Known pairs of real datasets, measured here.

500 vs 500 images (seeded subsets): MNIST train vs MNIST test, and MNIST train vs Fashion-MNIST
train. Reference values checked elsewhere with standard pipelines: about 21 and about 206.
Prints one JSON line per pair, with seconds spent.

    python benchmarks/fid_sanity.py --n 500
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from lees.evaluation.metrics import InceptionFeatures, fd, features, kid
from lees.models.data import load_images


def subset(data: str, split: str, n: int, seed: int) -> torch.Tensor:
    images, _ = load_images(data, split)
    return images[torch.from_numpy(np.random.default_rng(seed).permutation(len(images))[:n])]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    extractor = InceptionFeatures(args.device)
    started = time.perf_counter()
    feats = {
        name: features(extractor, subset(data, split, args.n, args.seed + i), progress=True)
        for i, (name, data, split) in enumerate(
            [
                ("mnist-train", "mnist", "train"),
                ("mnist-test", "mnist", "test"),
                ("fashion", "fashion-mnist", "train"),
            ]
        )
    }
    seconds = time.perf_counter() - started
    for a, b, expected in (("mnist-train", "mnist-test", 21), ("mnist-train", "fashion", 206)):
        kid_mean, kid_std = kid(feats[a], feats[b], subset_size=min(1000, args.n))
        row = {"pair": f"{a} vs {b}", "n": args.n, "fid": round(fd(feats[a], feats[b]), 2)}
        row |= {"reference_fid": expected, "kid": round(kid_mean, 4), "kid_std": round(kid_std, 4)}
        print(json.dumps(row))
    print(json.dumps({"feature_seconds": round(seconds, 1), "images": 3 * args.n}))


if __name__ == "__main__":
    main()
