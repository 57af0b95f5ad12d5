"""Make the reference statistics lees ships (src/lees/embedded/reference.safetensors): the mean and
covariance of the features of the real images that ``lees demo`` scores against (fd_clf: 10,000
Fashion-MNIST training images, Inception FID: 2,000, seed 0), so that a first demo computes none.

    .venv/bin/python scripts/reference_stats.py                # fd_clf's and Inception's
    .venv/bin/python scripts/reference_stats.py clf            # fd_clf's only (a minute)

Inception on 2,000 images takes ~10 min on 2 CPU cores. The features are computed as any command
computes them where they are not shipped (lees.evaluation.metrics.reference_features, cached in
$LEES_CACHE); tests/test_start.py checks the file against a recomputation.
"""

import sys

from lees.evaluation.metrics import REFERENCE_N, SHIPPED_REFERENCE, save_reference_gaussians

if __name__ == "__main__":
    metrics = sys.argv[1:] or ["clf", "inception"]
    path = save_reference_gaussians(SHIPPED_REFERENCE, {m: REFERENCE_N[m] for m in metrics})
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB): {', '.join(metrics)}")
