import time

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from PIL import Image

from lees import Schedule, find_blocks
from lees.diffusion.samplers import sampler_timesteps
from lees.models.architectures import DDPM_NOISE
from lees.sampling.lockstep import sample, sample_lockstep
from lees.schedules.gates import SigmoidTimeGate
from lees.utils.images import save_grid


@pytest.fixture
def noise():
    return DDPMScheduler(**DDPM_NOISE)


def test_samples_do_not_depend_on_batching(tiny, noise):
    a = sample(tiny, None, 5, steps=4, seed=3, scheduler=noise, batch_size=5, progress=False)
    b = sample(tiny, None, 5, steps=4, seed=3, scheduler=noise, batch_size=2, progress=False)
    assert a.shape == (5, 1, 16, 16)
    assert torch.allclose(a, b, atol=1e-4)  # same noise per sample; only batched-conv rounding differs
    c = sample(tiny, None, 5, steps=4, seed=4, scheduler=noise, batch_size=5, progress=False)
    assert not torch.allclose(a, c)


def test_schedule_applies_step_by_step(tiny, noise):
    blocks = find_blocks(tiny)
    timesteps = sampler_timesteps(noise, 4)
    full = sample(tiny, None, 2, steps=4, scheduler=noise, progress=False)
    same = sample(tiny, Schedule.full(blocks, timesteps), 2, steps=4, scheduler=noise, progress=False)
    assert torch.equal(full, same)
    table = np.ones((len(blocks), 4), dtype=bool)
    table[:, -1] = False  # skip everything at the last step only
    skipped = sample(
        tiny, Schedule(table, blocks.names, timesteps), 2, steps=4, scheduler=noise, progress=False
    )
    assert not torch.allclose(full, skipped)
    # a schedule carries its own timesteps: steps= does not apply to it
    assert torch.equal(
        same, sample(tiny, Schedule.full(blocks, timesteps), 2, steps=5, scheduler=noise, progress=False)
    )
    ddim = Schedule.full(blocks, timesteps, settings={"sampler": "ddim"})
    with pytest.raises(ValueError, match="made for the ddim sampler, not ddpm"):
        sample(tiny, ddim, 2, scheduler=noise, progress=False)


def test_lockstep_samples_fewer_steps_beside_more(tiny, noise):
    blocks = find_blocks(tiny)
    fewer = Schedule.full(blocks, sampler_timesteps(noise, 2))
    runs = sample_lockstep(
        tiny, {"full-4": None, "full-2": fewer}, 3, steps=4, scheduler=noise, progress=False
    )
    assert torch.equal(runs["full-4"].images, sample(tiny, None, 3, steps=4, scheduler=noise, progress=False))
    assert torch.equal(runs["full-2"].images, sample(tiny, None, 3, steps=2, scheduler=noise, progress=False))
    assert runs["full-2"].seconds < runs["full-4"].seconds


def test_ddim_is_deterministic_and_takes_any_step_count(tiny, noise):
    a = sample(tiny, None, 3, steps=7, sampler="ddim", seed=1, scheduler=noise, progress=False)
    b = sample(tiny, None, 3, steps=7, sampler="ddim", seed=1, scheduler=noise, progress=False)
    assert torch.equal(a, b) and a.shape == (3, 1, 16, 16)
    timesteps = sampler_timesteps(noise, 7, "ddim")
    assert len(timesteps) == 7 and timesteps == sorted(timesteps, reverse=True)
    blocks = find_blocks(tiny)
    same = sample(
        tiny,
        Schedule.full(blocks, timesteps),
        3,
        steps=7,
        sampler="ddim",
        seed=1,
        scheduler=noise,
        progress=False,
    )
    assert torch.equal(a, same)
    with pytest.raises(ValueError, match="no solver 'lms' for a DDPM-family model; available: ddpm, ddim"):
        sample(tiny, None, 1, steps=2, sampler="lms", scheduler=noise, progress=False)


def test_soft_gate_at_one_is_the_full_model(tiny, noise):
    from lees import SigmoidTimeGate

    names = find_blocks(tiny).names
    gate = SigmoidTimeGate(len(names), names)
    with torch.no_grad():
        gate.b.fill_(30.0)  # g = 1 everywhere (to float precision)
    full = sample(tiny, None, 2, steps=3, scheduler=noise, progress=False)
    soft = sample(tiny, None, 2, steps=3, scheduler=noise, progress=False, soft_gate=gate)
    assert torch.allclose(full, soft, atol=1e-5)
    with torch.no_grad():
        gate.b.fill_(0.0)  # g = 0.5: every block half-mixed, so the samples change
    assert not torch.allclose(
        full, sample(tiny, None, 2, steps=3, scheduler=noise, progress=False, soft_gate=gate)
    )


def test_grid_png(tmp_path):
    images = torch.linspace(-1, 1, 6 * 16 * 16).view(6, 1, 16, 16)
    path = save_grid(images, tmp_path / "g.png", nrow=3, scale=1)
    with Image.open(path) as im:
        assert im.size == (3 * 18 + 2, 2 * 18 + 2) and im.mode == "L"


def test_ddim_step_matches_diffusers(tiny, noise):
    """Our pure DDIM step (used for any timestep list) equals diffusers' DDIM on its own timesteps."""
    from diffusers import DDIMScheduler

    ours = sample(tiny, None, 2, steps=5, sampler="ddim", seed=1, scheduler=noise, progress=False)
    ddim = DDIMScheduler.from_config(noise.config)
    ddim.set_timesteps(5)
    gens = [torch.Generator().manual_seed(1 * 1_000_003 + i) for i in range(2)]  # sample i's own noise
    x = torch.stack([torch.randn(1, 16, 16, generator=g) for g in gens])
    with torch.no_grad():
        for t in ddim.timesteps:
            x = ddim.step(tiny(x, t.expand(2)).sample, t, x, eta=0.0).prev_sample
    assert torch.allclose(ours, x, atol=1e-5)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_custom_timesteps_with_a_schedule(tiny, noise, sampler):
    custom = [999, 700, 400, 150, 20]  # uneven, as a step-schedule optimiser would give
    assert sampler_timesteps(noise, 0, sampler, timesteps=custom) == custom
    blocks = find_blocks(tiny)
    table = np.ones((len(blocks), 5), dtype=bool)
    table[0, :2] = False
    schedule = Schedule(table, blocks.names, custom)
    out = sample(tiny, schedule, 2, sampler=sampler, timesteps=custom, scheduler=noise, progress=False)
    full = sample(tiny, None, 2, sampler=sampler, timesteps=custom, scheduler=noise, progress=False)
    assert out.shape == (2, 1, 16, 16) and torch.isfinite(out).all()
    assert not torch.allclose(out, full)
    even = sample(tiny, None, 2, steps=5, sampler=sampler, scheduler=noise, progress=False)
    assert not torch.allclose(even, full)
    for bad, message in [([5, 10], "descending"), ([1000, 5], r"\[0, 1000\)"), ([], "empty")]:
        with pytest.raises(ValueError, match=message):
            sample(tiny, None, 1, sampler=sampler, timesteps=bad, scheduler=noise, progress=False)


def test_lockstep_gives_each_method_its_own_samples_and_time(tiny, noise):
    blocks = find_blocks(tiny)
    timesteps = sampler_timesteps(noise, 4)
    table = np.ones((len(blocks), 4), dtype=bool)
    table[0] = False  # never runs block 0
    skip0 = Schedule(table, blocks.names, timesteps)
    gate = SigmoidTimeGate(len(blocks), blocks.names)
    with torch.no_grad():
        gate.b.fill_(1.0)
    methods = {"full": None, "skip0": skip0, "soft": gate}
    inner = next(dict(tiny.named_modules())[blocks.names[0]].children())  # runs only inside block 0
    inner.register_forward_pre_hook(lambda *_: time.sleep(0.05))  # 50 ms whenever block 0 runs
    runs = sample_lockstep(tiny, methods, 3, steps=4, seed=2, scheduler=noise, batch_size=2, progress=False)
    alone = {
        "full": sample(tiny, None, 3, steps=4, seed=2, scheduler=noise, batch_size=2, progress=False),
        "skip0": sample(tiny, skip0, 3, steps=4, seed=2, scheduler=noise, batch_size=2, progress=False),
        "soft": sample(
            tiny, None, 3, steps=4, seed=2, scheduler=noise, batch_size=2, progress=False, soft_gate=gate
        ),
    }
    for name in methods:
        assert torch.equal(runs[name].images, alone[name]), name
    assert not torch.allclose(runs["full"].images, runs["skip0"].images)
    # 2 batches x 4 steps x 50 ms = 0.4 s ran for "full" and "soft", never for "skip0"
    assert runs["full"].seconds > runs["skip0"].seconds + 0.3
    assert runs["soft"].seconds > runs["skip0"].seconds + 0.3


def test_lockstep_refuses_bad_methods(tiny, noise):
    with pytest.raises(ValueError, match="at least one method"):
        sample_lockstep(tiny, {}, 2, steps=2, scheduler=noise, progress=False)
    with pytest.raises(TypeError, match="not str"):
        sample_lockstep(tiny, {"x": "lees"}, 2, steps=2, scheduler=noise, progress=False)


def test_soft_gate_mixes_the_blocks_it_names(tiny, noise):
    """Ablation A1: gate k mixes the block named k, whatever the module registration order."""
    from lees import SigmoidTimeGate

    names = find_blocks(tiny).names  # execution order
    assert names != [n for n, m in tiny.named_modules() if n in names]  # differs from registration order
    gate = SigmoidTimeGate(len(names), names)
    with torch.no_grad():
        gate.b.fill_(30.0)
        gate.b[names.index("up_blocks.1.resnets.0")] = -30.0  # this one block fully closed
    table = np.ones((len(names), 3), dtype=bool)
    table[names.index("up_blocks.1.resnets.0")] = False
    hard = Schedule(table, names, sampler_timesteps(noise, 3))
    soft = sample(tiny, None, 2, steps=3, scheduler=noise, progress=False, soft_gate=gate)
    assert torch.allclose(soft, sample(tiny, hard, 2, steps=3, scheduler=noise, progress=False), atol=1e-5)
    with pytest.raises(ValueError, match="no block names"):
        sample(tiny, None, 1, steps=2, scheduler=noise, progress=False, soft_gate=SigmoidTimeGate(len(names)))
