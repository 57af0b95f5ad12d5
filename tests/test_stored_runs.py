import pytest
import torch
from diffusers import DDPMScheduler

import lees.sampling.stored
from lees import find_blocks, sample_lockstep
from lees.diffusion.samplers import sampler_timesteps
from lees.models.architectures import DDPM_NOISE
from lees.sampling.stored import method_digest, sample_stored, stored_images
from lees.schedules.baselines import uniform_schedule


@pytest.fixture
def noise():
    return DDPMScheduler(**DDPM_NOISE)


# Sampled in one batch, the same seeds differ from pieces of 2 by float rounding alone: with more
# than one thread the kernels' summation order depends on the batch size. Measured by
# benchmarks/batch_spread.py on this run over 20 seeds at 1, 2 and 4 threads: at most 1.6e-05
# (docs/results/batch-spread/stdout.txt); the tolerance is six times that.
ROUNDING_ACROSS_BATCH_SIZES = 1e-4


def test_an_interrupted_run_resumes_to_the_images_of_one_go(tiny, noise, tmp_path, monkeypatch):
    blocks = find_blocks(tiny)
    methods = {"full": None, "reuse": uniform_schedule(blocks, sampler_timesteps(noise, 4), 2, outer=1)}
    kwargs = {"steps": 4, "scheduler": noise, "seed": 3, "progress": False}
    uninterrupted = sample_stored(tiny, methods, 5, tmp_path / "uninterrupted", chunk=2, **kwargs)
    whole = sample_lockstep(tiny, methods, 5, **kwargs)
    calls = []
    real = lees.sampling.stored.sample_lockstep

    def dies_on_the_second_piece(*args, **kw):
        calls.append(kw["first"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(lees.sampling.stored, "sample_lockstep", dies_on_the_second_piece)
    with pytest.raises(KeyboardInterrupt):
        sample_stored(tiny, methods, 5, tmp_path / "resumed", chunk=2, **kwargs)
    runs = sample_stored(tiny, methods, 5, tmp_path / "resumed", chunk=2, **kwargs)
    assert calls == [0, 2, 2, 4]  # the finished first piece was not sampled again
    for name in methods:
        assert torch.equal(runs[name].images, uninterrupted[name].images)  # the same pieces: exactly
        assert torch.allclose(runs[name].images, whole[name].images, atol=ROUNDING_ACROSS_BATCH_SIZES)
        assert torch.equal(stored_images(tmp_path / "resumed", 5, name, chunk=2), runs[name].images)
        assert runs[name].seconds > 0
    assert runs["reuse"].cache_bytes_per_sample == whole["reuse"].cache_bytes_per_sample > 0
    with pytest.raises(ValueError, match="other settings"):
        sample_stored(tiny, methods, 6, tmp_path / "resumed", chunk=2, **kwargs)


def test_a_method_changed_under_the_same_name_is_refused_not_mixed(tiny, noise, tmp_path):
    blocks = find_blocks(tiny)
    timesteps = sampler_timesteps(noise, 4)
    kwargs = {"steps": 4, "scheduler": noise, "seed": 3, "progress": False}
    sample_stored(tiny, {"reuse": uniform_schedule(blocks, timesteps, 2, outer=1)}, 2, tmp_path, **kwargs)
    retrained = {"reuse": uniform_schedule(blocks, timesteps, 3, outer=1)}  # same name, other table
    with pytest.raises(ValueError, match="other settings"):
        sample_stored(tiny, retrained, 2, tmp_path, **kwargs)
    assert method_digest(None) == "full"
    assert method_digest(retrained["reuse"]) == method_digest(uniform_schedule(blocks, timesteps, 3, outer=1))
