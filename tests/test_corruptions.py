import numpy as np
import pytest
import torch

from lees.evaluation.corruptions import CORRUPTIONS, SEVERITY, corrupt


def _flat(value: float, n: int = 8, c: int = 1, size: int = 32) -> torch.Tensor:
    return torch.full((n, c, size, size), value * 2 - 1)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return (x + 1) / 2


def test_gaussian_noise_has_the_severity_std():
    for severity in (1, 3, 5):
        diff = _unit(corrupt(_flat(0.5), "gaussian_noise", severity)) - 0.5
        assert diff.std().item() == pytest.approx(SEVERITY["gaussian_noise"][severity - 1], rel=0.05)


def test_shot_noise_variance_is_x_over_c():
    diff = _unit(corrupt(_flat(0.5), "shot_noise", 3)) - 0.5
    assert diff.var().item() == pytest.approx(0.5 / 100, rel=0.1)


def test_impulse_noise_hits_the_severity_share():
    out = _unit(corrupt(_flat(0.5, n=32), "impulse_noise", 3))
    hit = (out != 0.5).float().mean().item()
    assert hit == pytest.approx(0.03, rel=0.15)
    assert set(out[out != 0.5].unique().tolist()) == {0.0, 1.0}


def test_contrast_and_brightness():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(0.3, 0.7, (4, 1, 32, 32)).astype(np.float32))
    out = _unit(corrupt(x * 2 - 1, "contrast", 3))
    mean = x.mean(dim=(2, 3), keepdim=True)
    assert torch.allclose(out - mean, 0.4 * (x - mean), atol=1e-5)
    assert torch.allclose(_unit(corrupt(x * 2 - 1, "brightness", 3)), x + 0.15, atol=1e-5)
    rgb = torch.tensor([0.2, 0.4, 0.5]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    bright = _unit(corrupt(rgb * 2 - 1, "brightness", 3))[0, :, 0, 0]
    assert bright.tolist() == pytest.approx([0.26, 0.52, 0.65], abs=1e-5)  # value 0.5 -> 0.65, hue kept


def test_blur_pixelate_jpeg_keep_flat_images_and_change_edges():
    for name in ("defocus_blur", "pixelate", "jpeg_compression"):
        flat = _flat(0.5)
        assert torch.allclose(corrupt(flat, name), flat, atol=2 / 255), name
    edge = -torch.ones(2, 1, 32, 32)
    edge[..., ::2, ::2] = 1  # a fine checkerboard-like pattern: blurred and pixelated away
    for name in ("defocus_blur", "pixelate", "jpeg_compression"):
        changed = corrupt(edge, name)
        assert changed.shape == edge.shape and not torch.allclose(changed, edge), name
    assert not torch.allclose(corrupt(edge, "defocus_blur", 5), corrupt(edge, "defocus_blur", 1))


def test_all_are_seeded_and_bounded():
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    for name in CORRUPTIONS:
        a, b = corrupt(x, name, seed=1), corrupt(x, name, seed=1)
        assert torch.equal(a, b) and a.min() >= -1 and a.max() <= 1 and a.shape == x.shape, name
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(x, "fog")
    with pytest.raises(ValueError, match="severity must be"):
        corrupt(x, "contrast", 6)
