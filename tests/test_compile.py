"""torch.compile with lees: a compiled model follows a schedule exactly as the eager one does.

Compiles are counted with dynamo's counting backend (``aot_eager`` underneath, enough on a CPU).
A uniform reuse schedule over 6 steps has two run-sets (all blocks; the outer pair with the rest
reused) and compiles 3 graphs, whatever its length: the first step (all run, empty cache), the
reuse step, and the full steps with a filled cache (see docs/reuse.md).
"""

import warnings

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler
from torch._dynamo.testing import CompileCounterWithBackend

import lees
from lees import GatedModel, find_blocks
from lees.engine.hooks import CompiledModelError
from lees.sampling.lockstep import sample
from lees.schedules.baselines import random_schedule, uniform_schedule

from .conftest import tiny_unet

STEPS = 6


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def reuse_schedule(scheduler):
    schedule = uniform_schedule(find_blocks(tiny_unet()), lees.pipeline_timesteps(scheduler, STEPS), 2, 1)
    assert schedule.reuses and len({tuple(schedule.actions_at(j)) for j in range(STEPS)}) == 2
    return schedule


def test_pipeline_with_a_compiled_unet_equals_eager_and_compiles_once_per_block_set():
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    schedule = reuse_schedule(scheduler)

    def run(unet, counter=None):
        pipe, images, compiles = DDPMPipeline(unet, scheduler), [], []
        lees.enable(pipe, schedule)
        for _ in range(3):
            images.append(pipe(batch_size=2, generator=torch.Generator().manual_seed(0),
                               num_inference_steps=STEPS, output_type="pt").images)  # fmt: skip
            compiles.append(counter.frame_count if counter else 0)
        lees.disable(pipe)
        return images, compiles

    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(tiny_unet(), backend=counter)
    (eager, _), (again, compiles) = run(tiny_unet()), run(compiled, counter)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(eager, again, strict=True))
    # 3 graphs in the first run: the first step (all run, empty cache), the reuse set, the full set
    # with a filled cache; at most one more in the second (the cache's peak-memory count is no longer
    # 0 at its first step), none after.
    assert compiles[0] == 3 and compiles[1] <= 4 and compiles[2] == compiles[1]
    assert "_diffusers_hook" not in compiled._orig_mod.down_blocks[0].resnets[0].__dict__


def test_in_place_compile_samples_as_eager():
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    schedule = reuse_schedule(scheduler)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = tiny_unet()
    compiled.compile(backend=counter)
    eager = sample(tiny_unet(), schedule, n=2, scheduler=scheduler, progress=False)
    assert torch.allclose(
        sample(compiled, schedule, n=2, scheduler=scheduler, progress=False), eager, atol=1e-6
    )
    assert counter.frame_count == 3  # the timestep is read outside the graph: not one graph per step


def test_gated_model_refuses_compiled_forms_in_one_line():
    blocks = find_blocks(tiny_unet())
    x, t, mask = torch.randn(1, 1, 16, 16), torch.full((1,), 500), [1] * len(blocks)
    in_place = tiny_unet()
    in_place.compile(backend="aot_eager")
    forms = [
        torch.compile(GatedModel(tiny_unet(), blocks), backend="aot_eager"),
        GatedModel(torch.compile(tiny_unet(), backend="aot_eager"), blocks),
        GatedModel(in_place, blocks),
    ]
    for gated in forms:
        with pytest.raises(CompiledModelError, match=r"lees.enable\(torch.compile\(model\), schedule\)"):
            gated(x, t, mask=mask)
    assert find_blocks(torch.compile(tiny_unet())).names == blocks.names  # found through _orig_mod


def test_enable_warns_when_a_schedule_needs_more_graphs_than_dynamo_keeps(monkeypatch):
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    blocks = find_blocks(tiny_unet())
    schedule = random_schedule(blocks, lees.pipeline_timesteps(scheduler, 12), 0.5, seed=0)
    graphs = len({tuple(schedule.actions_at(j)) for j in range(12)}) + 1
    assert graphs > torch._dynamo.config.recompile_limit
    compiled = torch.compile(tiny_unet(), backend="aot_eager")
    with pytest.warns(UserWarning, match=f"about {graphs} graphs, more than .*recompile_limit"):
        lees.enable(compiled, schedule)
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", graphs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lees.enable(compiled, schedule)  # raised limit: no warning
        lees.enable(tiny_unet(), schedule)  # an eager model compiles nothing
