import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from lees import find_blocks
from lees.diffusion.samplers import sampler_timesteps
from lees.evaluation.scoring import metric_name, score_schedule, score_under
from lees.learn.ase_grid import ase_grid
from lees.models.architectures import DDPM_NOISE
from lees.sampling.lockstep import sample


def pixels(images: torch.Tensor) -> np.ndarray:
    """A stand-in feature extractor: 6 pooled pixel values."""
    return torch.nn.functional.adaptive_avg_pool2d(images, (2, 3)).flatten(1).double().numpy()


def test_score_and_grid(tiny):
    noise = DDPMScheduler(**DDPM_NOISE)
    blocks = find_blocks(tiny)
    reference = pixels(torch.rand(64, 1, 16, 16) * 2 - 1)
    score = score_schedule(tiny, noise, None, pixels, reference, n=8, steps=3)
    assert (
        score.fd > 0 and score.seconds > 0 and score.seconds_per_100 == pytest.approx(100 * score.seconds / 8)
    )
    timesteps = sampler_timesteps(noise, 3)
    grid = ase_grid(
        tiny, noise, blocks, timesteps, pixels, reference, budget=0.9, drop_lengths=(200, 400), starts=(0,),
        n=8, progress=False,
    )  # fmt: skip
    assert grid.rows and all(r["flop_ratio"] <= 0.9 for r in grid.rows)
    assert grid.best.flop_ratio <= 0.9 and grid.seconds > 0
    best = min(grid.rows, key=lambda r: r["fd"])
    assert grid.best.settings["drop_length"] == best["drop_length"] and grid.best.source == "ase"
    with pytest.raises(ValueError, match="no ASE schedule"):
        ase_grid(tiny, noise, blocks, timesteps, pixels, reference, budget=0.01, n=8, progress=False)


class Named:
    """``pixels`` under an extractor's name, as the real extractors carry one."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        return pixels(images)


def test_metric_names():
    assert metric_name(Named("clf")) == "fd_clf" and metric_name(Named("inception")) == "fid"
    assert metric_name(Named("dino")) == "fd_dino" and metric_name(pixels) == "fd"


def test_grid_names_its_metric_and_its_choice_is_scored_under_another(tiny, capsys):
    noise = DDPMScheduler(**DDPM_NOISE)
    blocks = find_blocks(tiny)
    timesteps = sampler_timesteps(noise, 3)
    reference = pixels(torch.rand(64, 1, 16, 16) * 2 - 1)
    grid = ase_grid(
        tiny, noise, blocks, timesteps, Named("clf"), reference, budget=0.9, drop_lengths=(200, 400),
        starts=(0,), n=8,
    )  # fmt: skip
    assert grid.metric == "fd_clf" and grid.best.settings["grid_metric"] == "fd_clf"
    assert all(r["metric"] == "fd_clf" for r in grid.rows)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(grid.rows) and all(" fd_clf " in line for line in printed)

    other = (Named("inception"), reference[:, ::-1] ** 2)
    scores = score_under(
        tiny, noise, {"best": grid.best}, {"fd_clf": (Named("clf"), reference), "fid": other}, n=8
    )
    assert scores["best"]["fd_clf"] == pytest.approx(min(r["fd"] for r in grid.rows), rel=1e-4)  # same seeds
    assert scores["best"]["fid"] != pytest.approx(scores["best"]["fd_clf"])


def test_running_gaussian_equals_numpy():
    from lees.evaluation.metrics import RunningGaussian

    feats = np.random.default_rng(0).normal(3.0, 2.0, (103, 5))
    moments = RunningGaussian()
    for i in range(0, 103, 10):
        moments.update(feats[i : i + 10])
    assert moments.count == 103
    assert np.allclose(moments.mean, feats.mean(0)) and np.allclose(moments.cov, np.cov(feats, rowvar=False))


def test_streamed_score_is_the_same_whatever_the_batch_and_survives_interruption(tiny, tmp_path):
    from lees.evaluation.metrics import fd

    noise = DDPMScheduler(**DDPM_NOISE)
    reference = pixels(torch.rand(64, 1, 16, 16) * 2 - 1)
    whole = score_schedule(tiny, noise, None, pixels, reference, n=20, steps=2, batch_size=20)
    images = sample(tiny, None, 20, 2, scheduler=noise, progress=False)
    assert whole.fd == pytest.approx(fd(pixels(images), reference), rel=1e-6)  # streamed == all at once
    small = score_schedule(tiny, noise, None, pixels, reference, n=20, steps=2, batch_size=6)
    assert small.fd == pytest.approx(whole.fd, rel=1e-4) and small.kid == pytest.approx(whole.kid, rel=1e-3)

    calls = 0

    def dies_on_third_batch(batch):
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt  # as when a long FID run is stopped
        return pixels(batch)

    state = tmp_path / "score.npz"
    with pytest.raises(KeyboardInterrupt):
        score_schedule(
            tiny, noise, None, dies_on_third_batch, reference, n=20, steps=2, batch_size=6, state=state
        )
    assert state.is_file()
    resumed = score_schedule(
        tiny, noise, None, dies_on_third_batch, reference, n=20, steps=2, batch_size=6, state=state
    )
    assert calls == 3 + 2  # the two finished batches were not redone
    assert resumed.fd == pytest.approx(small.fd, rel=1e-9) and resumed.kid == pytest.approx(
        small.kid, rel=1e-9
    )
    with pytest.raises(ValueError, match="another scoring run"):
        score_schedule(tiny, noise, None, pixels, reference, n=21, steps=2, batch_size=6, state=state)


class _Defined:
    """``pixels`` under a named definition, as ClassifierFeatures names raw and scaled features."""

    def __init__(self, definition: str) -> None:
        self.definition = definition

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        return pixels(images)


def test_a_scoring_state_never_mixes_feature_definitions(tiny, tmp_path):
    noise = DDPMScheduler(**DDPM_NOISE)
    reference = pixels(torch.rand(64, 1, 16, 16) * 2 - 1)
    state = tmp_path / "score.npz"
    score_schedule(tiny, noise, None, _Defined("raw"), reference, n=6, steps=2, batch_size=6, state=state)
    again = score_schedule(
        tiny, noise, None, _Defined("raw"), reference, n=6, steps=2, batch_size=6, state=state
    )
    assert np.isfinite(again.fd)  # the same definition resumes
    with pytest.raises(ValueError, match="another scoring run"):
        score_schedule(
            tiny, noise, None, _Defined("scaled"), reference, n=6, steps=2, batch_size=6, state=state
        )


def corners(images: torch.Tensor) -> np.ndarray:
    """A second stand-in metric: 4 corner pixels."""
    return images[:, 0, [0, 0, -1, -1], [0, -1, 0, -1]].double().numpy()


def test_further_metrics_score_the_same_samples_and_resume(tiny, tmp_path):
    noise = DDPMScheduler(**DDPM_NOISE)
    reference = pixels(torch.rand(64, 1, 16, 16) * 2 - 1)
    other = corners(torch.rand(64, 1, 16, 16) * 2 - 1)
    alone = score_schedule(tiny, noise, None, corners, other, n=12, steps=2, batch_size=5)
    both = score_schedule(tiny, noise, None, pixels, reference, n=12, steps=2, batch_size=5,
                          also={"corners": (corners, other)})  # fmt: skip
    assert both.also["corners"] == pytest.approx(alone.fd, rel=1e-9)
    state = tmp_path / "s.npz"
    calls = 0

    def stops(batch):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt
        return corners(batch)

    kwargs = {"n": 12, "steps": 2, "batch_size": 5, "state": state, "also": {"corners": (stops, other)}}
    with pytest.raises(KeyboardInterrupt):
        score_schedule(tiny, noise, None, pixels, reference, **kwargs)
    resumed = score_schedule(tiny, noise, None, pixels, reference, **kwargs)
    assert resumed.also["corners"] == pytest.approx(alone.fd, rel=1e-9) and resumed.fd == pytest.approx(
        both.fd
    )
