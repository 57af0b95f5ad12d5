"""lees.enable inside the user's own sampling loop and diffusers pipelines, for any scheduler."""

import inspect

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DiTPipeline,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
)
from torch import nn

import lees
from lees import REUSE, RUN, SKIP, GatedModel, ReuseCache, Schedule, find_blocks

from .conftest import tiny_unet
from .test_backbone_families import tiny_cross_attention_unet, tiny_dit, tiny_vae

SCHEDULERS = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpm": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler,
}
MODELS = {"unet": tiny_unet, "dit": tiny_dit, "cross": tiny_cross_attention_unet}
STEPS = 5


def mixed_schedule(model: nn.Module, timesteps: list[int]) -> Schedule:
    """Every action: all run at even steps; in between block 0 runs, block 1 skips, the rest reuse."""
    blocks = find_blocks(model)
    actions = np.full((len(blocks), len(timesteps)), REUSE, dtype=np.int8)
    actions[:, ::2] = RUN
    actions[0], actions[1, 1::2] = RUN, SKIP
    return Schedule(actions, blocks.names, timesteps, block_shares=blocks.shares)


def conditions(model: nn.Module, batch: int) -> dict:
    if isinstance(model, type(tiny_dit())):
        return {"class_labels": torch.arange(batch) % 10}
    if type(model).__name__ == "UNet2DConditionModel":
        return {
            "encoder_hidden_states": torch.randn(batch, 3, 12, generator=torch.Generator().manual_seed(5))
        }
    return {}


def own_loop(call, model: nn.Module, scheduler, steps: int = STEPS, batch: int = 2) -> torch.Tensor:
    """A user's sampling loop (classifier-free guidance for the DiT: both halves in one call)."""
    scheduler.set_timesteps(steps)
    gen = torch.Generator().manual_seed(0)
    c, s = model.config.in_channels, model.config.sample_size
    x = torch.randn(batch, c, s, s, generator=gen) * scheduler.init_noise_sigma
    cfg = "class_labels" in conditions(model, 1)
    cond = conditions(model, 2 * batch if cfg else batch)
    if cfg:
        cond["class_labels"][batch:] = 10  # the null class
    for j, t in enumerate(scheduler.timesteps):
        inp = scheduler.scale_model_input(torch.cat([x, x]) if cfg else x, t)
        out = call(inp, t.expand(len(inp)), j, cond).sample[:, :c]
        if cfg:
            out = out[batch:] + 1.5 * (out[:batch] - out[batch:])
        extra = {"generator": gen} if "generator" in inspect.signature(scheduler.step).parameters else {}
        x = scheduler.step(out, t, x, **extra).prev_sample
    return x


@pytest.mark.parametrize("kind", list(SCHEDULERS))
@pytest.mark.parametrize("family", list(MODELS))
def test_enable_equals_a_hand_loop_and_disable_the_plain_model(kind, family):
    model = MODELS[family]()
    scheduler = SCHEDULERS[kind](num_train_timesteps=1000)
    schedule = mixed_schedule(model, lees.pipeline_timesteps(scheduler, STEPS))
    plain = own_loop(lambda x, t, j, cond: model(x, t, **cond), model, scheduler)
    gated, cache = GatedModel(model, schedule.block_names), ReuseCache(schedule.num_blocks)
    hand = own_loop(
        lambda x, t, j, cond: gated(x, t, mask=schedule.actions_at(j), cache=cache, **cond), model, scheduler
    )
    lees.enable(model, schedule)
    enabled = own_loop(lambda x, t, j, cond: model(x, t, **cond), model, scheduler)
    again = own_loop(lambda x, t, j, cond: model(x, t, **cond), model, scheduler)  # no cache crosses runs
    lees.disable(model)
    after = own_loop(lambda x, t, j, cond: model(x, t, **cond), model, scheduler)
    assert (enabled - hand).abs().max() <= 1e-5 and torch.equal(enabled, again)
    assert not torch.allclose(enabled, plain, atol=1e-3)
    assert torch.equal(after, plain)
    assert not any("_diffusers_hook" in m.__dict__ or "forward" in m.__dict__ for m in model.modules())


class _HandGated(nn.Module):
    """A pipeline's denoiser that applies the schedule by call count (one call per step)."""

    def __init__(self, model: nn.Module, schedule: Schedule) -> None:
        super().__init__()
        self.inner, self.schedule = model, schedule
        self.gated = GatedModel(model, schedule.block_names)
        self.cache, self.j = ReuseCache(schedule.num_blocks), 0

    config = property(lambda self: self.inner.config)
    dtype = property(lambda self: self.inner.dtype)
    device = property(lambda self: self.inner.device)

    def forward(self, *args, **kwargs):
        self.j += 1
        return self.gated(*args, mask=self.schedule.actions_at(self.j - 1), cache=self.cache, **kwargs)


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "dpm"])
def test_ddpm_pipeline(kind):
    unet = tiny_unet()
    scheduler = SCHEDULERS[kind](num_train_timesteps=1000)
    schedule = mixed_schedule(unet, lees.pipeline_timesteps(scheduler, STEPS))

    def run(pipe):
        out = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=STEPS,
                   output_type="np")  # fmt: skip
        return out.images

    plain = run(DDPMPipeline(unet, scheduler))
    hand = run(DDPMPipeline(_HandGated(unet, schedule), scheduler))
    pipe = DDPMPipeline(unet, scheduler)
    lees.enable(pipe, schedule)
    enabled, again = run(pipe), run(pipe)
    lees.disable(pipe)
    assert np.abs(enabled - hand).max() <= 1e-5 and np.array_equal(enabled, again)
    assert np.array_equal(run(pipe), plain)


def test_dit_pipeline_with_guidance():
    dit = tiny_dit(classes=1000)  # DiTPipeline's null class is 1000
    scheduler = DDIMScheduler(num_train_timesteps=1000)
    schedule = mixed_schedule(dit, lees.pipeline_timesteps(scheduler, STEPS))
    vae = tiny_vae()

    def run(pipe):
        out = pipe(class_labels=[1, 2], guidance_scale=2.0, generator=torch.Generator().manual_seed(0),
                   num_inference_steps=STEPS, output_type="np")  # fmt: skip
        return out.images

    plain = run(DiTPipeline(dit, vae, scheduler))
    hand = run(DiTPipeline(_HandGated(dit, schedule), vae, scheduler))
    pipe = DiTPipeline(dit, vae, scheduler)
    lees.enable(pipe, schedule)
    enabled = run(pipe)
    lees.disable(pipe)
    assert np.abs(enabled - hand).max() <= 1e-5 and not np.allclose(enabled, plain, atol=1e-4)
    assert np.array_equal(run(pipe), plain)


def test_gate_follows_float_timesteps_and_pndm_repeats():
    unet = tiny_unet()
    blocks = find_blocks(unet)
    gate = lees.SigmoidTimeGate(len(blocks), blocks.names)
    with torch.no_grad():
        gate.a[:3], gate.b[:3] = 20.0, -10.0  # closed while t < 0.5
    scheduler = EulerDiscreteScheduler(num_train_timesteps=1000)
    plain = own_loop(lambda x, t, j, cond: unet(x, t), unet, scheduler)
    lees.enable(unet, gate)
    gated = own_loop(lambda x, t, j, cond: unet(x, t), unet, scheduler)
    lees.disable(unet)
    assert not torch.allclose(gated, plain)
    pndm = PNDMScheduler(num_train_timesteps=1000)
    schedule = mixed_schedule(unet, lees.pipeline_timesteps(pndm, STEPS))  # one column per call
    distinct = mixed_schedule(unet, sorted(set(schedule.timesteps), reverse=True))
    lees.enable(unet, schedule)
    try:
        own_loop(lambda x, t, j, cond: unet(x, t), unet, pndm)  # repeated timesteps: a column each
        lees.enable(unet, distinct)
        with pytest.raises(lees.ScheduleError, match="two denoiser calls at t = "):
            own_loop(lambda x, t, j, cond: unet(x, t), unet, pndm)  # one column per timestep: refused
    finally:
        lees.disable(unet)


def test_clear_errors():
    unet = tiny_unet()
    blocks = find_blocks(unet)
    schedule = Schedule.full(blocks, [900, 500, 100])
    lees.enable(unet, schedule)
    with pytest.raises(lees.ScheduleError, match="does not fit this run: .* its first call is at t = 700"):
        unet(torch.zeros(1, 1, 16, 16), torch.tensor([700]))
    with pytest.raises(ValueError, match="one timestep per call"):
        unet(torch.zeros(2, 1, 16, 16), torch.tensor([900, 500]))
    lees.disable(unet)
    with pytest.raises(TypeError, match="neither a model nor a pipeline"):
        lees.enable(object(), schedule)
    with pytest.raises(ValueError, match="no block names"):
        lees.enable(unet, lees.SigmoidTimeGate(len(blocks)))


def test_two_wrappers_at_once_leave_the_model_plain():
    unet = tiny_unet()
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([10, 10])
    with torch.no_grad():
        before = unet(x, t).sample
        names = find_blocks(unet).names
        a, b = GatedModel(unet, names), GatedModel(unet, names[:4])
        a.engine.attach()
        b.engine.attach()
        with a.engine.deciding([SKIP] * len(names)):
            changed = unet(x, t).sample
        a.engine.detach()  # out of order
        b.engine.detach()
        assert not torch.allclose(changed, before)
        assert torch.equal(unet(x, t).sample, before)
    assert not any("_diffusers_hook" in m.__dict__ or "forward" in m.__dict__ for m in unet.modules())


def test_save_pretrained_round_trip(tmp_path):
    unet = tiny_unet()
    unet.save_pretrained(tmp_path / "model")
    schedule = mixed_schedule(unet, [900, 600, 300, 100])
    path = lees.save_pretrained(schedule, tmp_path / "model", model=unet, sampler="ddpm", steps=4, seed=0)
    assert path == tmp_path / "model" / "lees" / "schedule.json"
    loaded = lees.load_policy(tmp_path / "model")
    assert np.array_equal(loaded.actions, schedule.actions)
    found = loaded.settings["provenance"]
    assert found["model_fingerprint"] == lees.schedules.saving.model_fingerprint(unet) and found["steps"] == 4
    gate = lees.SigmoidTimeGate(schedule.num_blocks, schedule.block_names)
    lees.save_pretrained(gate, tmp_path / "gates", model=unet, lam=0.05)
    back = lees.load_policy(tmp_path / "gates")
    assert back.block_names == gate.block_names
