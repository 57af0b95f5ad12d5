"""Reuse: a block's shortcut plus the residual it computed the last time it ran in this run."""

import json

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from lees import Schedule, find_blocks, sample
from lees.diffusion.samplers import sampler_timesteps
from lees.engine.actions import REUSE, RUN, SKIP
from lees.engine.hooks import GatedModel, ReuseCache
from lees.models.architectures import DDPM_NOISE


@pytest.fixture
def noise():
    return DDPMScheduler(**DDPM_NOISE)


def _inputs(model, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    c, s = model.config.in_channels, model.config.sample_size
    return torch.randn(batch, c, s, s, generator=g), torch.tensor([3, 700][:batch])


def _io(model, name):
    seen = []
    module = dict(model.named_modules())[name]
    handle = module.register_forward_hook(lambda _, args, out: seen.append((args[0], out)))
    return seen, handle


@torch.no_grad()
def test_run_everywhere_with_a_cache_is_the_plain_model(tiny):
    gated = GatedModel(tiny, find_blocks(tiny))
    cache = ReuseCache(gated.num_blocks)
    for seed in range(3):  # a cache filled by earlier calls changes nothing while every block runs
        x, t = _inputs(tiny, seed=seed)
        assert torch.equal(gated(x, t, mask=[RUN] * gated.num_blocks, cache=cache).sample, tiny(x, t).sample)
    assert all(r is not None for r in cache.residuals)


@torch.no_grad()
def test_reuse_is_the_current_shortcut_plus_the_last_residual(tiny):
    blocks = find_blocks(tiny)
    gated = GatedModel(tiny, blocks)
    name = "up_blocks.1.resnets.0"  # a projecting shortcut: reuse is not the cached output
    k = blocks.names.index(name)
    module = dict(tiny.named_modules())[name]
    cache = ReuseCache(len(blocks))
    seen, handle = _io(tiny, name)
    branch, branch_handle = _io(tiny, f"{name}.conv2")  # the residual branch's output
    x1, t1 = _inputs(tiny, seed=1)
    gated(x1, t1, mask=[RUN] * len(blocks), cache=cache)  # step 0: block k runs
    x_in, y_out = seen[-1]
    assert torch.allclose(branch[-1][1], y_out - module.conv_shortcut(x_in), atol=1e-6)
    x2, t2 = _inputs(tiny, seed=2)
    gated(x2, t2, mask=[RUN] * len(blocks), cache=cache)  # step 1: runs again: a newer residual
    residual = branch[-1][1]
    assert torch.equal(cache.residuals[k], residual)
    x3, t3 = _inputs(tiny, seed=3)
    mask = [REUSE if i == k else RUN for i in range(len(blocks))]
    calls = len(branch)
    gated(x3, t3, mask=mask, cache=cache)  # step 2: reuse: the branch does not run
    assert len(branch) == calls
    x_in, y_out = seen[-1]
    assert torch.equal(y_out, module.conv_shortcut(x_in) + residual)
    skip = [SKIP if i == k else RUN for i in range(len(blocks))]
    gated(x3, t3, mask=skip, cache=cache)
    assert torch.equal(seen[-1][1], module.conv_shortcut(seen[-1][0]))
    handle.remove()
    branch_handle.remove()


@torch.no_grad()
def test_reuse_leaves_every_block_input_as_it_was(tiny):
    """Reuse adds the residual in place only to a fresh shortcut tensor, never to a block's input
    (which the UNet also keeps for its skip connections)."""
    blocks = find_blocks(tiny)
    gated = GatedModel(tiny, blocks)
    cache = ReuseCache(len(blocks))
    x, t = _inputs(tiny)
    gated(x, t, mask=[RUN] * len(blocks), cache=cache)
    inputs = []
    handles = [
        dict(tiny.named_modules())[name].register_forward_pre_hook(
            lambda _, args: inputs.append((args[0], args[0].clone()))
        )
        for name in blocks.names
    ]
    gated(x, t, mask=[REUSE] * len(blocks), cache=cache)
    for h in handles:
        h.remove()
    assert len(inputs) == len(blocks)
    assert all(torch.equal(seen, copy) for seen, copy in inputs)


@torch.no_grad()
def test_reuse_without_a_residual_runs_the_block(tiny):
    gated = GatedModel(tiny, find_blocks(tiny))
    x, t = _inputs(tiny)
    reuse = gated(x, t, mask=[REUSE] * gated.num_blocks, cache=ReuseCache(gated.num_blocks)).sample
    assert torch.equal(reuse, tiny(x, t).sample)
    no_cache = gated(x, t, mask=[REUSE] * gated.num_blocks).sample
    assert torch.equal(no_cache, tiny(x, t).sample)


def _every_other(blocks, timesteps):
    """All blocks at even steps; the outermost pair (first and last block) every step; the rest reuse."""
    actions = np.full((len(blocks), len(timesteps)), REUSE, dtype=np.int8)
    actions[:, ::2] = RUN
    actions[[0, -1]] = RUN
    return Schedule(actions, blocks.names, timesteps, block_shares=blocks.shares)


def test_reuse_schedule_costs_and_samples(tiny, noise):
    blocks = find_blocks(tiny)
    timesteps = sampler_timesteps(noise, 6)
    reuse = _every_other(blocks, timesteps)
    skip = Schedule(np.where(reuse.actions == REUSE, SKIP, reuse.actions), blocks.names, timesteps,
                    block_shares=blocks.shares)  # fmt: skip
    assert reuse.flop_ratio == pytest.approx(skip.flop_ratio) and reuse.flop_ratio < 1
    assert reuse.kept_blocks() == [0 < k < len(blocks) - 1 for k in range(len(blocks))]
    full = sample(tiny, None, 3, steps=6, scheduler=noise, progress=False)
    a = sample(tiny, reuse, 3, steps=6, scheduler=noise, progress=False)
    b = sample(tiny, skip, 3, steps=6, scheduler=noise, progress=False)
    assert not torch.equal(a, b) and not torch.equal(a, full)
    assert (a - full).abs().mean() < (b - full).abs().mean()  # reuse stays nearer the full model


def test_no_cache_crosses_runs_or_batches(tiny, noise):
    blocks = find_blocks(tiny)
    reuse = _every_other(blocks, sampler_timesteps(noise, 5))
    first = sample(tiny, reuse, 4, steps=5, scheduler=noise, seed=0, progress=False)
    second = sample(tiny, reuse, 4, steps=5, scheduler=noise, seed=1, progress=False)
    assert torch.equal(second, sample(tiny, reuse, 4, steps=5, scheduler=noise, seed=1, progress=False))
    assert torch.equal(first, sample(tiny, reuse, 4, steps=5, scheduler=noise, seed=0, progress=False))
    batched = sample(tiny, reuse, 4, steps=5, scheduler=noise, seed=0, batch_size=3, progress=False)
    assert torch.allclose(first, batched, atol=1e-5)


def test_cache_memory_is_reported(tiny, noise):
    from lees import sample_lockstep

    blocks = find_blocks(tiny)
    reuse = _every_other(blocks, sampler_timesteps(noise, 4))
    runs = sample_lockstep(tiny, {"full": None, "reuse": reuse}, 2, steps=4, scheduler=noise, progress=False)
    assert runs["full"].cache_bytes_per_sample == 0
    modules = dict(tiny.named_modules())
    x, t = _inputs(tiny, batch=1)
    sizes = {}
    handles = [modules[n].register_forward_hook(lambda m, a, o, n=n: sizes.update({n: o.numel()}))
               for n in blocks.names]  # fmt: skip
    with torch.no_grad():
        tiny(x, t)
    for h in handles:
        h.remove()
    kept = [n for n, keep in zip(blocks.names, reuse.kept_blocks(), strict=True) if keep]
    assert runs["reuse"].cache_bytes_per_sample == 4 * sum(sizes[n] for n in kept)
    assert reuse.cache_bytes_per_sample(blocks) == runs["reuse"].cache_bytes_per_sample  # known before a run


def test_schedule_json_keeps_actions_and_reads_version_1(tiny, noise, tmp_path):
    blocks = find_blocks(tiny)
    reuse = _every_other(blocks, sampler_timesteps(noise, 4))
    path = reuse.save(tmp_path / "reuse.json")
    data = json.loads(path.read_text())
    assert data["version"] == 2 and set("".join(data["table"])) == {"1", "r"}
    assert np.array_equal(Schedule.load(path).actions, reuse.actions)
    old = {  # as lees 0.1 wrote it
        "format": "lees.schedule", "version": 1, "source": "learned", "settings": {},
        "num_train_timesteps": 1000, "timesteps": [900, 500], "block_names": ["a", "b"],
        "block_shares": [0.2, 0.3], "executed_ratio": 0.75, "flop_ratio": 0.85, "table": ["10", "11"],
    }  # fmt: skip
    (tmp_path / "old.json").write_text(json.dumps(old))
    loaded = Schedule.load(tmp_path / "old.json")
    assert loaded.table.tolist() == [[True, False], [True, True]] and not loaded.reuses
    assert loaded.flop_ratio == pytest.approx(0.9)


class _ScaledResnet(torch.nn.Module):
    """One diffusers ResnetBlock2D with a projecting shortcut and output_scale_factor 2."""

    def __init__(self) -> None:
        super().__init__()
        from diffusers.models.resnet import ResnetBlock2D

        torch.manual_seed(0)
        self.block = ResnetBlock2D(in_channels=8, out_channels=4, temb_channels=None, groups=4,
                                   output_scale_factor=2.0)  # fmt: skip

    def forward(self, x, t=None):
        return self.block(x, None)


@torch.no_grad()
def test_a_scaled_resnet_keeps_its_residual_branch_over_the_scale():
    model = _ScaledResnet().eval()
    blocks = find_blocks(model, names=["block"], example_inputs=(torch.zeros(1, 8, 4, 4),))
    gated = GatedModel(model, blocks)
    cache = ReuseCache(1)
    block = model.block
    x1, x2 = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    y1 = gated(x1, mask=[RUN], cache=cache)
    shortcut = lambda x: block.conv_shortcut(x) / 2  # noqa: E731
    assert torch.allclose(cache.residuals[0], y1 - shortcut(x1), atol=1e-6)
    assert torch.equal(gated(x2, mask=[REUSE], cache=cache), shortcut(x2) + cache.residuals[0])
