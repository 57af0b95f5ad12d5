"""How good each run's samples are: fidelity to the full model's partners, and optionally to real data.

Fidelity (:mod:`lees.evaluation.fidelity`): PSNR, SSIM and the Fréchet distance to the full model's
samples in a feature space: the project's Fashion-MNIST classifier's (fd_clf's features) for 1-channel
32x32 images, else the FID Inception network's where its weights are installed, else none (PSNR and
SSIM alone). With a dataset, also fd_clf against its real images. Every figure also on each paired
bootstrap resample of the sample indices (the same for every run, and for the partners), so that two
runs' difference has an interval (:mod:`lees.evaluation.bootstrap`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..evaluation.bootstrap import FixedReference, fd_replicates, percentile_interval
from ..evaluation.classifier import CLASSIFIER_SHAPE
from ..evaluation.fidelity import paired_fidelity
from ..evaluation.metrics import (
    ClassifierFeatures,
    InceptionFeatures,
    features,
    frechet_distance,
    gaussian,
    scorer,
)

Extractor = Callable[[torch.Tensor], np.ndarray]
Replicates = dict[str, np.ndarray]  # by figure: its value on each bootstrap resample


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
    """Scores runs' samples against the partners in ``reference`` (the full model's, or the ODE
    solution's; figures named with ``suffix``), and ``data``'s real images if given, on all samples
    and on each resample of ``indices``."""

    def __init__(
        self, reference: torch.Tensor, indices: np.ndarray, data: str | None = None, suffix: str = "full"
    ) -> None:
        self.reference, self.indices, self.suffix = reference, indices, suffix
        self.extractor = feature_space(tuple(reference.shape[1:]))
        self.reference_feats = None if self.extractor is None else features(self.extractor, reference)
        self.data: tuple[Extractor, FixedReference] | None = None
        if data is not None:
            if tuple(reference.shape[1:]) != CLASSIFIER_SHAPE:
                raise ValueError(
                    f"--data scores fd_clf, for 1-channel 32x32 images, not {tuple(reference.shape[1:])}"
                )
            extractor, real = scorer("clf", data)
            self.data = extractor, FixedReference.of(real)

    def __call__(self, images: torch.Tensor) -> tuple[dict[str, object], Replicates]:
        """PSNR, SSIM and FD to the partners (``psnr``, ``ssim``, ``fd_full`` for the full model's;
        ``psnr_ode``... for the ODE solution's), ``fd_clf`` against the data, each with its interval;
        and every figure's replicates."""
        feats = None if self.extractor is None else features(self.extractor, images)
        values, replicates = paired_fidelity(
            images, self.reference, self.indices, feats, self.reference_feats
        )
        tail = "" if self.suffix == "full" else f"_{self.suffix}"
        names = {"psnr": f"psnr{tail}", "ssim": f"ssim{tail}", "fd": f"fd_{self.suffix}"}
        scores: dict[str, object] = {names[k]: v for k, v in values.items()}
        scores.setdefault(names["fd"], None)
        replicates = {names[k]: r for k, r in replicates.items()}
        if self.suffix == "full":
            scores |= {"features": getattr(self.extractor, "name", None), "n": len(images)}
        if self.data is not None:
            extractor, real = self.data
            data_feats = (
                feats if isinstance(self.extractor, ClassifierFeatures) else features(extractor, images)
            )
            scores["fd_clf"] = frechet_distance(*gaussian(data_feats), real.mean, real.cov)
            replicates["fd_clf"] = fd_replicates(data_feats, real, self.indices)
        scores |= {f"{m}_interval": list(percentile_interval(r)) for m, r in replicates.items()}
        return scores, replicates
