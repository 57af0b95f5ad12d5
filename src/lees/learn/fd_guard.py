"""A guard for the rollout search: the first-order change in fd_clf to the data that a schedule causes.

A schedule searched for fidelity to the full model's run can drift from the data in a direction the
run does not (issue 34: the run-scored DiT tables were 0.16-0.23 worse than the full model under fd_clf,
beyond the paired interval, while TaylorSeer, about as faithful, was better). fd_clf is a distance
between Gaussians and cannot be computed on a training batch of 8-64 samples; its *change* can, to first
order, because each candidate sample has a partner from the same noise in the full model's run. With the
full model's feature statistics (mean ``mu``, covariance ``S``, from ``n`` samples on seeds no
evaluation uses) and the data's (``mu_d``, ``S_d``), a small displacement ``d_i`` of sample i's features
changes fd_clf by about the mean over i of

    2 d_i . (mu - mu_d) + 2 (d_i - mean d) . G (f_i - mu),   G = I - S^-1/2 (S^1/2 S_d S^1/2)^1/2 S^-1/2

(``G`` is the derivative of ``tr(S + S_d - 2 (S S_d)^1/2)`` in ``S``). On the 1,000-sample DiT evaluation
the linear change had the measured one's sign and most of its size for every cache, solver and searched
row (+0.160 for +0.162, -0.237 for -0.215, +1.32 for +1.71 at the farthest), the paper's gates, which
destroy the samples, excepted: docs/results/learned-dit/guard-check.txt (guard_check.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from ..evaluation.classifier import CLASSIFIER_SHAPE
from ..evaluation.metrics import frechet_distance, gaussian, scorer
from ..models.data import dataset_folder, image_shape


@dataclass
class FdGuard:
    """The linear change of fd_clf from the full model's samples ``full`` (features ``f``) to others."""

    extractor: Callable[[torch.Tensor], np.ndarray]
    f: np.ndarray  # the full model's training-batch features (N x D)
    mean: np.ndarray  # the full model's feature mean over its statistics samples
    cov: np.ndarray  # and covariance
    direction: np.ndarray  # 2 (mu - mu_d)
    gradient: np.ndarray  # G (D x D)

    def change(self, images: torch.Tensor) -> float:
        """fd_clf's first-order change from the full model's training batch to ``images`` (its partners)."""
        d = self.extractor(images) - self.f
        centred = d - d.mean(0)
        spread = np.einsum("ij,jk,ik->i", centred, self.gradient, self.f - self.mean)
        per_sample = d @ self.direction + 2 * spread
        return float(per_sample.mean())

    def to_full(self, images: torch.Tensor) -> float:
        """FD to the full model's samples (the bar's "FD to full") estimated on the training batch from
        ``images``' pairs: the mean term with its sampling bias taken off, plus the covariance term between
        the full model's statistics covariance and the same moved by the batch's paired covariance change
        (which is 0 for the full model's own samples, where a batch's own Gaussian fit is not)."""
        g = self.extractor(images)
        d = g - self.f
        shift = d.mean(0)
        noise = float(((d - shift) ** 2).sum(1).mean()) / (len(d) - 1)
        moved = self.cov + np.cov(g, rowvar=False) - np.cov(self.f, rowvar=False)
        w, v = np.linalg.eigh((moved + moved.T) / 2)
        origin = np.zeros_like(shift)
        spread = frechet_distance(origin, self.cov, origin, (v * np.clip(w, 0, None)) @ v.T)
        return max(float(shift @ shift) - noise, 0.0) + spread


def fd_gradient(cov: np.ndarray, data_cov: np.ndarray) -> np.ndarray:
    """The derivative of ``tr(S + S_d - 2 (S S_d)^1/2)`` in ``S`` at ``S = cov`` (symmetric)."""
    w, v = np.linalg.eigh(cov)
    w = np.clip(w, 1e-12, None)
    root, inverse_root = (v * np.sqrt(w)) @ v.T, (v / np.sqrt(w)) @ v.T
    inner_w, inner_v = np.linalg.eigh(root @ data_cov @ root)
    inner = (inner_v * np.sqrt(np.clip(inner_w, 0, None))) @ inner_v.T
    return np.eye(len(w)) - inverse_root @ inner @ inverse_root


def check_guard(model: torch.nn.Module, data: str) -> None:
    """A clear error, before any sampling, unless ``data`` is installed here and ``model`` makes the
    images fd_clf's classifier takes (1 x 32 x 32)."""
    dataset_folder(data)
    shape = image_shape(model)
    if tuple(shape) != CLASSIFIER_SHAPE:
        raise ValueError(
            f"--data guards fd_clf, whose classifier takes {'x'.join(map(str, CLASSIFIER_SHAPE))} images; "
            f"this model makes {'x'.join(map(str, shape))}"
        )


def fd_guard(
    full_batch: torch.Tensor, full_stats: Callable[[], torch.Tensor], data: str, path: Path | None
) -> FdGuard:
    """The guard for the training batch ``full_batch`` (the full model's final samples), with the full
    model's statistics from ``full_stats()`` (samples; computed once and stored at ``path``) and the
    classifier features of ``data``'s training images."""
    extractor, real = scorer("clf", data)
    if path is not None and path.is_file():
        stored = load_file(str(path))
        mean, cov = stored["mean"], stored["cov"]
    else:
        mean, cov = gaussian(extractor(full_stats()))
        if path is not None:
            save_file({"mean": mean, "cov": cov}, str(path))
    data_mean, data_cov = gaussian(real)
    direction, gradient = 2 * (mean - data_mean), fd_gradient(cov, data_cov)
    return FdGuard(extractor, extractor(full_batch), mean, cov, direction, gradient)
