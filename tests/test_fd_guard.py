"""fd_clf's first-order change (the search's --data guard) equals the finite difference of the Fréchet
distance it linearises, and the search takes it off its score."""

import json

import numpy as np
import torch

import lees.learn.search as search
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
    guard = FdGuard(_features, full, mean, 2 * (mean - data_stats[0]), fd_gradient(cov, data_stats[1]))
    step = rng.normal(size=full.shape) * 1e-4
    before = frechet_distance(mean, cov, *data_stats)
    measured = frechet_distance(*gaussian(full + step), *data_stats) - before
    predicted = guard.change(torch.from_numpy(full + step))
    assert abs(measured) > 1e-5 and abs(predicted - measured) < 1e-2 * abs(measured)


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
