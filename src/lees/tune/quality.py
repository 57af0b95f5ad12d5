"""How good each run's samples are: fidelity to the full model's partners, and optionally to real data.

Fidelity (:mod:`lees.evaluation.fidelity`): PSNR, SSIM and the Fréchet distance to the full model's
samples in a feature space: the project's Fashion-MNIST classifier's (fd_clf's features) for 1-channel
32x32 images, else the FID Inception network's where its weights are installed, else none (PSNR and
SSIM alone). With a dataset, also fd_clf against its real images.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..evaluation.fidelity import fidelity
from ..evaluation.metrics import ClassifierFeatures, InceptionFeatures, fd, features, scorer

CLASSIFIER_SHAPE = (1, 32, 32)

Extractor = Callable[[torch.Tensor], np.ndarray]


def feature_space(shape: tuple[int, ...]) -> Extractor | None:
    """The feature extractor for images of ``shape`` (C, H, W): the classifier's for 1x32x32, else
    Inception where it loads offline, else None."""
    if tuple(shape) == CLASSIFIER_SHAPE:
        return ClassifierFeatures()
    try:
        return InceptionFeatures()
    except (FileNotFoundError, RuntimeError, ValueError):
        return None


def few_sample_fd(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """The Fréchet distance between the Gaussians fitted to two feature sets (:func:`fd`), through the
    n1 x n2 cross product of the centred features where there are fewer samples than dimensions:
    Tr sqrt(S1 S2) is then the nuclear norm of A^T B (S1 = A A^T, S2 = B B^T), exact, where the
    square root of a 2048 x 2048 product (Inception's) took minutes per tuned run."""
    n1, n2, dims = len(feats1), len(feats2), feats1.shape[1]
    if n1 + n2 >= dims or min(n1, n2) < 2:
        return fd(feats1, feats2)
    a = (feats1 - feats1.mean(0)) / np.sqrt(n1 - 1)
    b = (feats2 - feats2.mean(0)) / np.sqrt(n2 - 1)
    cross = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    mean = float(((feats1.mean(0) - feats2.mean(0)) ** 2).sum())
    return mean + float((a**2).sum() + (b**2).sum()) - 2 * float(cross)


class Scorer:
    """Scores runs' samples against the full model's (and ``data``'s real images, if given)."""

    def __init__(self, reference: torch.Tensor, data: str | None = None) -> None:
        self.reference = reference
        self.extractor = feature_space(tuple(reference.shape[1:]))
        self.reference_features: np.ndarray | None = None
        self.data: tuple[Extractor, np.ndarray] | None = None
        if data is not None:
            if tuple(reference.shape[1:]) != CLASSIFIER_SHAPE:
                raise ValueError(
                    f"--data scores fd_clf, for 1-channel 32x32 images, not {tuple(reference.shape[1:])}"
                )
            self.data = scorer("clf", data)

    def __call__(self, images: torch.Tensor) -> dict[str, float | None]:
        """PSNR, SSIM and FD to the full model's samples (``fd_full``), and ``fd_clf`` against the data."""
        scores = fidelity(images, self.reference).to_dict()
        if self.extractor is not None:  # the reference's features once, not once per run
            if self.reference_features is None:
                self.reference_features = features(self.extractor, self.reference)
            scores["fd_full"] = few_sample_fd(features(self.extractor, images), self.reference_features)
            scores["features"] = getattr(self.extractor, "name", type(self.extractor).__name__)
        if self.data is not None:
            extractor, real = self.data
            scores["fd_clf"] = fd(features(extractor, images), real)
        return scores
