import gzip

import numpy as np
import pytest

from lees.data import DataError, dataset_folder, load_images, read_idx


def write_idx(path, array):
    """Write ``array`` (uint8) in the idx format, gzipped when the name ends in .gz."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


@pytest.fixture
def idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(10, dtype=np.uint8))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images[:4])
    return tmp_path, images


def test_read_and_pad(idx_folder):
    folder, images = idx_folder
    x, y = load_images(str(folder), "train")
    assert x.shape == (10, 1, 32, 32) and y.tolist() == list(range(10))
    assert x.min() >= -1 and x.max() <= 1
    assert (x[:, :, :2] == -1).all() and (x[:, :, :, -2:] == -1).all()  # 2-pixel black border
    assert np.allclose((x[:, 0, 2:30, 2:30].numpy() + 1) * 127.5, images, atol=1e-3)
    test_x, test_y = load_images(str(folder), "test")  # no label file: labels are -1
    assert test_x.shape == (4, 1, 32, 32) and (test_y == -1).all()


def test_bad_files(idx_folder, tmp_path):
    folder, _ = idx_folder
    raw = gzip.decompress((folder / "train-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "cut").write_bytes(raw[:-5])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "cut")
    (tmp_path / "junk").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(DataError, match="not an idx file"):
        read_idx(tmp_path / "junk")
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
        load_images("cifar")
    with pytest.raises(DataError, match="split must be"):
        load_images(str(folder), "val")


def test_missing_dataset_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("lees.data").data.SEARCH_PATHS, "mnist", (str(tmp_path / "none"),))
    monkeypatch.setenv("LEES_DATA", str(tmp_path))
    with pytest.raises(
        DataError, match="mnist is not installed here; install it with: bash scripts/setup.sh"
    ):
        dataset_folder("mnist")


def test_cifar10_binary_folder(tmp_path):
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}.bin", 3) for i in range(1, 6)] + [("test_batch.bin", 2)]:
        records = np.concatenate([rng.integers(0, 10, (n, 1)), rng.integers(0, 256, (n, 3072))], axis=1)
        records.astype(np.uint8).tofile(tmp_path / name)
    x, y = load_images(str(tmp_path), "train")
    assert x.shape == (15, 3, 32, 32) and y.shape == (15,) and x.min() >= -1 and x.max() <= 1
    raw = np.fromfile(tmp_path / "data_batch_1.bin", dtype=np.uint8).reshape(-1, 3073)
    assert y[0] == raw[0, 0] and abs(float(x[0, 0, 0, 0]) - (raw[0, 1] / 127.5 - 1.0)) < 1e-6
    assert load_images(str(tmp_path), "test")[0].shape == (2, 3, 32, 32)
