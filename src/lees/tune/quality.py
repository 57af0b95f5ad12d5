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


class Scorer:
    """Scores runs' samples against the full model's (and ``data``'s real images, if given)."""

    def __init__(self, reference: torch.Tensor, data: str | None = None) -> None:
        self.reference = reference
        self.extractor = feature_space(tuple(reference.shape[1:]))
        self.data: tuple[Extractor, np.ndarray] | None = None
        if data is not None:
            if tuple(reference.shape[1:]) != CLASSIFIER_SHAPE:
                raise ValueError(
                    f"--data scores fd_clf, for 1-channel 32x32 images, not {tuple(reference.shape[1:])}"
                )
            self.data = scorer("clf", data)

    def __call__(self, images: torch.Tensor) -> dict[str, float | None]:
        """PSNR, SSIM and FD to the full model's samples (``fd_full``), and ``fd_clf`` against the data."""
        scores = fidelity(images, self.reference, self.extractor).to_dict()
        if self.data is not None:
            extractor, real = self.data
            scores["fd_clf"] = fd(features(extractor, images), real)
        return scores
