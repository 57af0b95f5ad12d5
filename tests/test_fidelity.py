"""Fidelity to the full model: PSNR, SSIM and the paired feature distance against hand computations
and scikit-image's implementation."""

import math

import numpy as np
import pytest
import torch

from lees.evaluation.fidelity import fidelity, psnr, ssim
from lees.evaluation.metrics import fd


def test_psnr_by_hand():
    x = torch.zeros(2, 1, 16, 16)
    y = x.clone()
    y[0] += 0.1  # MSE 0.01 -> 10 log10(4 / 0.01)
    got = psnr(y, x)
    assert got[0].item() == pytest.approx(10 * math.log10(4 / 0.01))
    assert math.isinf(got[1].item())


def test_ssim_by_hand():
    """Constant images: no variance, so SSIM is the luminance term (2 mx my + C1) / (mx^2 + my^2 + C1)."""
    x, y = torch.full((1, 1, 16, 16), 0.5), torch.full((1, 1, 16, 16), -0.25)
    c1 = (0.01 * 2) ** 2
    expected = (2 * 0.5 * -0.25 + c1) / (0.5**2 + 0.25**2 + c1)
    assert ssim(x, y).item() == pytest.approx(expected)
    noisy = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.allclose(ssim(noisy, noisy), torch.ones(2, dtype=torch.float64))


def _pairs():
    """The pairs scikit-image 0.26.0 scored (structural_similarity with gaussian_weights=True,
    sigma=1.5, use_sample_covariance=True, data_range=2; peak_signal_noise_ratio data_range=2)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (3, 1, 32, 32))
    y = np.clip(x + rng.normal(0, 0.3, x.shape), -1, 1)
    x[2] = np.clip(rng.normal(0, 0.5, (1, 32, 32)), -1, 1)
    y[2] = x[2] * 0.5 + 0.2
    c = rng.uniform(-1, 1, (2, 3, 24, 24))
    d = np.clip(c + rng.normal(0, 0.2, c.shape), -1, 1)
    return [torch.from_numpy(a) for a in (x, y, c, d)]


def test_ssim_and_psnr_equal_scikit_image():
    x, y, c, d = _pairs()
    assert ssim(x, y).numpy() == pytest.approx([0.61173329, 0.54256755, 0.09137291], abs=1e-7)
    assert ssim(c, d).numpy() == pytest.approx([0.78034946, 0.77465007], abs=1e-7)  # colour: channel mean
    assert psnr(x, y).numpy() == pytest.approx([17.0735755, 17.45896443, 16.16072885], abs=1e-6)


def test_fidelity_means_and_paired_feature_distance():
    x, y, _, _ = _pairs()
    extractor = lambda images: images.flatten(1)[:, :4].double().numpy()  # noqa: E731
    got = fidelity(x.float(), y.float(), extractor)
    assert got.psnr == pytest.approx(float(psnr(x, y).mean()), rel=1e-5)
    assert got.ssim == pytest.approx(float(ssim(x, y).mean()), rel=1e-5)
    assert got.fd == pytest.approx(fd(extractor(x.float()), extractor(y.float())))
    same = fidelity(x.float(), x.float())
    assert same.psnr == 100.0 and same.ssim == pytest.approx(1.0) and same.fd is None
    with pytest.raises(ValueError, match="pairs"):
        fidelity(x, y[:2])


def test_paired_feature_distance_by_hand():
    """The Fréchet distance of Gaussians N(m1, S1), N(m2, S2) is |m1 - m2|^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2).

    One feature: sets {0, 0.2} and {0.1, 0.5} have means 0.1 and 0.3 and (unbiased) variances 0.02 and
    0.08, so FD = 0.04 + 0.02 + 0.08 - 2 sqrt(0.0016) = 0.06. Two features, the second set the first
    shifted by (0.3, -0.4): equal covariances cancel in the trace, so FD = 0.3^2 + 0.4^2 = 0.25.
    """
    first_pixel = lambda images: images.flatten(1)[:, :2].double().numpy()  # noqa: E731
    a, b = torch.zeros(2, 1, 16, 16), torch.zeros(2, 1, 16, 16)
    a[:, 0, 0, 0] = torch.tensor([0.0, 0.2])
    b[:, 0, 0, 0] = torch.tensor([0.1, 0.5])
    one = fidelity(a, b, lambda images: first_pixel(images)[:, :1])
    assert one.fd == pytest.approx(0.06, abs=1e-7) and one.n == 2
    x = torch.zeros(3, 1, 16, 16)
    x[:, 0, 0, :2] = torch.tensor([[0.0, 0.1], [0.5, -0.2], [-0.3, 0.4]])
    y = x.clone()
    y[:, 0, 0, :2] += torch.tensor([0.3, -0.4])
    assert fidelity(y, x, first_pixel).fd == pytest.approx(0.25, abs=1e-6)
