import gzip

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from lees import find_blocks
from lees.cli import build_parser, main
from lees.evaluation.held_out import held_out_loss
from lees.learn.gate_training import GateTrainConfig, train_gates
from lees.models.architectures import DDPM_NOISE
from lees.models.data import DataError, dataset_folder, fit_images, image_shape, load_images, read_idx

from .conftest import tiny_unet


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
    monkeypatch.setitem(
        __import__("lees.models.data").models.data.SEARCH_PATHS, "mnist", (str(tmp_path / "none"),)
    )
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


def test_idx_images_other_than_28x28_keep_their_size(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 16, 16), dtype=np.uint8))
    assert load_images(str(tmp_path))[0].shape == (3, 1, 16, 16)  # was padded to 32x32 without a word


def test_images_must_be_floats_in_minus_one_to_one(tiny):
    for images, message in (
        (torch.zeros(2, 1, 16, 16, dtype=torch.uint8), r"torch.uint8; lees takes floats in \[-1, 1\]"),
        (torch.full((2, 1, 16, 16), 255.0), r"lie in \[255, 255\]; lees takes \[-1, 1\].*/ 127.5 - 1"),
        (torch.rand(2, 1, 16, 16) * 2, r"\[0, 1\] images with images \* 2 - 1"),
    ):
        with pytest.raises(DataError, match=message):
            fit_images(images, tiny)
    ok = torch.rand(2, 1, 16, 16) * 2 - 1
    assert fit_images(ok, tiny) is ok


def test_shape_is_checked_against_the_model_and_resized_only_when_asked(tiny):
    padded = torch.rand(4, 1, 32, 32) * 2 - 1
    with pytest.raises(
        DataError, match=r"UNet2DModel takes 1x16x16 images .* the data are 1x32x32.*--resize"
    ):
        fit_images(padded, tiny)
    assert fit_images(padded, tiny, resize=True).shape == (4, 1, 16, 16)
    colour = torch.rand(4, 3, 16, 16) * 2 - 1
    with pytest.raises(DataError, match="takes 1x16x16 images .* the data are 3x16x16"):
        fit_images(colour, tiny)
    gray = fit_images(colour, tiny, resize=True)
    assert torch.allclose(gray, colour.mean(1, keepdim=True))
    rgb = tiny_unet()
    rgb.register_to_config(in_channels=3)  # only the config is read
    assert torch.equal(fit_images(gray, rgb, resize=True), gray.expand(-1, 3, -1, -1))


def test_latent_models_take_the_autoencoders_images():
    from .test_backbone_families import tiny_latent_unet, tiny_vae

    model, vae = tiny_latent_unet(), tiny_vae()
    assert image_shape(model) == (4, 8, 8) and image_shape(model, vae) == (1, 16, 16)
    with pytest.raises(DataError, match="takes 1x16x16 images"):
        fit_images(torch.zeros(2, 1, 8, 8), model, vae)


def test_train_gates_and_held_out_loss_check_their_data(tiny):
    noise = DDPMScheduler(**DDPM_NOISE)
    padded = torch.rand(8, 1, 32, 32) * 2 - 1
    config = GateTrainConfig(train_steps=1, batch_size=4)
    with pytest.raises(DataError, match="the data are 1x32x32"):
        train_gates(tiny, padded, noise, config, progress=False)
    with pytest.raises(DataError, match="uint8"):
        held_out_loss(tiny, find_blocks(tiny), padded.to(torch.uint8), noise)
    calls = []
    tiny.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[-1]))
    train_gates(tiny, padded, noise, config, progress=False, resize=True)
    assert held_out_loss(tiny, find_blocks(tiny), padded, noise, n=4, resize=True) > 0
    assert set(calls) == {16}


def test_cli_train_refuses_data_of_another_size(folder, idx_data, tmp_path, capsys):
    assert build_parser().parse_args(["reproduce", "--resize"]).resize
    argv = ["train", "--model", folder, "--data", idx_data, "--train-steps", "1", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "takes 1x16x16 images" in err[0] and "--resize" in err[0]
