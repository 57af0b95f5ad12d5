"""fd_clf's first-order change (the search's --data guard) equals the finite difference of the Fréchet
distance it linearises, FD to the full model's samples estimated on a batch equals its hand computation,
and the search takes each off its score."""

import json

import numpy as np
import pytest
import torch

import lees.learn.search as search
from lees.cli import main
from lees.evaluation.metrics import frechet_distance, gaussian
from lees.learn.fd_guard import FdGuard, fd_gradient

from .test_search import _search


def _features(images: torch.Tensor) -> np.ndarray:
    return images.flatten(1).double().numpy()


def test_the_first_order_change_is_the_finite_difference_of_the_distance():
    rng = np.random.default_rng(0)
    full = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5))
    data = rng.normal(size=(2000, 5)) @ rng.normal(size=(5, 5)) + 0.3
    mean, cov = gaussian(full)
    data_stats = gaussian(data)
    guard = FdGuard(_features, full, mean, cov, 2 * (mean - data_stats[0]), fd_gradient(cov, data_stats[1]))
    step = rng.normal(size=full.shape) * 1e-4
    before = frechet_distance(mean, cov, *data_stats)
    measured = frechet_distance(*gaussian(full + step), *data_stats) - before
    predicted = guard.change(torch.from_numpy(full + step))
    assert abs(measured) > 1e-5 and abs(predicted - measured) < 1e-2 * abs(measured)


def test_fd_to_full_is_the_batch_distance_less_the_mean_terms_sampling_bias():
    rng = np.random.default_rng(1)
    full = rng.normal(size=(64, 4)) @ rng.normal(size=(4, 4))
    moved = full * 1.1 + 0.2 + rng.normal(size=full.shape) * 0.05
    mean, cov = gaussian(full)
    guard = FdGuard(_features, full, mean, cov, np.zeros(4), np.eye(4))  # statistics from the batch itself
    d = moved - full
    bias = ((d - d.mean(0)) ** 2).sum(1).mean() / (len(d) - 1)  # E ||mean d||^2 over ||E d||^2
    by_hand = frechet_distance(*gaussian(moved), mean, cov) - bias
    assert guard.to_full(torch.from_numpy(moved)) == pytest.approx(by_hand, rel=1e-6)
    assert guard.to_full(torch.from_numpy(full)) == pytest.approx(0.0, abs=1e-9)


def test_the_search_takes_the_weighted_rise_off_its_score_and_keeps_the_change(tmp_path, monkeypatch):
    class Rising:
        def change(self, images: torch.Tensor) -> float:
            return 0.1 if images.abs().mean() > 0 else -1.0

    plain = _search(tmp_path, 0.5, state_path=tmp_path / "plain.json")
    monkeypatch.setattr(search, "_guard", lambda *args: Rising())
    monkeypatch.setattr(search, "check_guard", lambda *args: None)  # the stand-in has no dataset
    guarded = _search(tmp_path, 0.5, state_path=tmp_path / "guarded.json", guard_data="stand-in")
    scores = [json.loads((tmp_path / name).read_text()) for name in ("plain.json", "guarded.json")]
    shared = set(scores[0]["scores"]) & set(scores[1]["scores"])
    assert shared and all(scores[1]["scores"][k] == scores[0]["scores"][k] - 50 * 0.1 for k in shared)
    assert set(scores[1]["fd_change"]) == set(scores[1]["scores"])
    settings = guarded.schedule.settings
    assert settings["train_fd_change"] == 0.1 and "fd_clf" in settings["objective"]
    assert plain.schedule.settings["train_fd_change"] is None


def test_the_search_takes_the_weighted_fd_to_full_off_its_score_and_refuses_it_without_data(
    tmp_path, monkeypatch, capsys
):
    class Far:
        def change(self, images: torch.Tensor) -> float:
            return 0.0

        def to_full(self, images: torch.Tensor) -> float:
            return float(images.abs().mean())

    monkeypatch.setattr(search, "_guard", lambda *args: Far())
    monkeypatch.setattr(search, "check_guard", lambda *args: None)
    _search(tmp_path, 0.5, state_path=tmp_path / "guarded.json", guard_data="stand-in")
    weighed = _search(tmp_path, 0.5, state_path=tmp_path / "fd.json", guard_data="stand-in", fd_weight=3.0)
    scores = [json.loads((tmp_path / name).read_text()) for name in ("guarded.json", "fd.json")]
    shared = set(scores[0]["scores"]) & set(scores[1]["scores"])
    distance = scores[1]["fd_full"]
    assert shared and all(
        scores[1]["scores"][k] == pytest.approx(scores[0]["scores"][k] - 3.0 * distance[k]) for k in shared
    )
    assert (
        weighed.schedule.settings["train_fd_full"] > 0
        and "FD to the full" in weighed.schedule.settings["objective"]
    )
    with pytest.raises(ValueError, match="needs guard_data"):
        search.SearchConfig(fd_weight=1.0)
    argv = [
        "route",
        "--model",
        "embedded-dit",
        "--steps",
        "3",
        "--fd-weight",
        "2",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(argv) == 2
    assert "--fd-weight score a search's rollouts" in capsys.readouterr().err
