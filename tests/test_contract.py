"""The lees.enable contract: in any diffusers pipeline's denoising loop, with any of its schedulers.

Every family of tests/families.py whose blocks lees supports (``SUPPORTED``: add a family's name there
once lees.find_blocks handles its blocks), plus three DiT variants sampled as Flux and Wan are (split
guidance under cache contexts, flow matching, t / 1000), times each of its schedulers:

* an all-run schedule equals the plain loop;
* a uniform-reuse schedule equals a reference that gates each guidance branch by hand (call count,
  its own reuse cache), and for split guidance a model copy per branch with its own ``lees.enable``;
  split guidance under contexts equals the batched loop of the same model;
* every block runs exactly as often as its schedule row says (in-block counters);
* ``disable`` leaves no hook behind and the loop is the plain one again.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from contextlib import contextmanager, nullcontext

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DiTTransformer2DModel,
    FirstBlockCacheConfig,
    FlowMatchEulerDiscreteScheduler,
    KDPM2DiscreteScheduler,
)
from diffusers.models.cache_utils import CacheMixin
from torch import nn

import lees
from lees import GatedModel, ReuseCache, Schedule, baselines

from .families import (
    DDPM_BETAS,
    FAMILIES,
    NUM_CLASSES,
    SD_BETAS,
    _ddpm_family,
    _flow_family,
    cache_context,
    count_block_calls,
    steps_for,
)

STEPS = 3
GUIDANCE = 4.0
TOL = 1e-5

# families of families.py whose blocks lees supports
SUPPORTED = ("unet2d", "sd", "dit", "dit-sigma", "pixart", "sd3", "flux", "ltx", "wan")


def _run_split(fam, model, scheduler, steps, generator, cond, guidance_scale, batch):
    """A DiT sampled as Flux and Wan pipelines sample (flux/pipeline_flux.py:890-933, wan/pipeline_wan.py:
    591-641): one call per guidance branch, each under ``fam.contexts`` (None: no context), at t divided
    by ``fam.timestep_divisor``. Its guided output equals the DiT family's batched loop."""
    latents = fam.make_noise(model, batch, generator)
    null = torch.full((batch,), NUM_CLASSES)
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        x = scheduler.scale_model_input(latents, t) if hasattr(scheduler, "scale_model_input") else latents
        timestep = t.expand(batch) if fam.timestep_divisor == 1 else t.expand(batch) / fam.timestep_divisor
        branches = []
        for name, labels in zip(
            fam.step_contexts(guidance_scale), (cond["class_labels"], null), strict=False
        ):
            with cache_context(model, name) if name else nullcontext():
                branches.append(model(x, timestep=timestep, class_labels=labels).sample)
        pred = (
            branches[0] if len(branches) == 1 else branches[1] + guidance_scale * (branches[0] - branches[1])
        )
        latents = scheduler.step(pred, t, latents).prev_sample
    return latents


SPLIT = dataclasses.replace(
    FAMILIES["dit"],
    name="dit-split",
    pipeline="flux/pipeline_flux.py:890-933 on a DiT",
    schedulers={
        **_ddpm_family(DDPM_BETAS, "ddim", "pndm-prk", "dpm++2m"),
        **_ddpm_family(SD_BETAS, "heun", "euler"),
        "kdpm2": lambda: KDPM2DiscreteScheduler(**SD_BETAS),  # two calls per step at interleaved timesteps
        **_flow_family(3.0, "flow-euler", "flow-heun"),
    },
    run=_run_split,
    guidance="split",
    contexts=("cond", "uncond"),
)
LOCAL = {
    f.name: f
    for f in (
        SPLIT,
        dataclasses.replace(
            SPLIT, name="dit-flux", schedulers=_flow_family(1.0, "flow-euler"), timestep_divisor=1000.0
        ),
        dataclasses.replace(SPLIT, name="dit-bare", contexts=(None, None)),  # split guidance, no contexts
    )
}
ALL = {**FAMILIES, **LOCAL}
BATCHED_TWIN = {"dit-split": "dit"}  # the same model and loop with batched guidance


def near(a, b) -> bool:
    """Equal within TOL of the larger of 1 and b's scale (random tiny models drift to |x| ~ 30 in a few
    steps, where float32 batch-size differences show at 1e-5)."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    return bool((a - b).abs().max() <= TOL * max(1.0, float(b.abs().max())))


def contract_cases() -> list[tuple[str, str]]:
    return [(f, s) for f in (*SUPPORTED, "dit-split", "dit-flux") for s in ALL[f].schedulers]


@functools.cache
def blocks_of(family: str) -> lees.Blocks:
    return lees.find_blocks(ALL[family].make_model())


def hooks_left(model: nn.Module) -> list[str]:
    """Modules with a registered hook or a forward other than their class's (an empty registry, or the
    plain bound forward diffusers' remove_hook leaves as an attribute, is nothing)."""
    return [
        name
        for name, m in model.named_modules()
        if getattr(m, "_diffusers_hook", None) is not None
        and m._diffusers_hook.hooks
        or getattr(m.__dict__.get("forward"), "__func__", type(m).forward) is not type(m).forward
    ]


class HandGated(nn.Module):
    """A reference for one guidance branch: the schedule's column j at its j-th call, its own cache."""

    def __init__(self, model: nn.Module, schedule: Schedule) -> None:
        super().__init__()
        self.gated, self.schedule = GatedModel(model, schedule.block_names), schedule
        self.cache, self.calls = ReuseCache(schedule.num_blocks), 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.gated(*args, mask=self.schedule.actions_at(self.calls - 1), cache=self.cache, **kwargs)


class PerBranch(nn.Module):
    """Stands in for the model in a family's loop and sends each call to the model of its cache context."""

    def __init__(self, model: nn.Module, branches: dict) -> None:
        super().__init__()
        self.model, self.branches, self.current = model, branches, None

    config = property(lambda self: self.model.config)
    dtype = property(lambda self: self.model.dtype)

    @contextmanager
    def cache_context(self, name: str, **kwargs):
        self.current = name
        try:
            yield
        finally:
            self.current = None

    def forward(self, *args, **kwargs):
        return self.branches[self.current](*args, **kwargs)


def loop(family: str, scheduler: str, model: nn.Module, schedule: Schedule | None = None, **kwargs):
    """The family's loop with a fresh scheduler; with ``schedule``, under lees.enable (then disabled)."""
    fam, sched = ALL[family], ALL[family].schedulers[scheduler]()
    steps = steps_for(scheduler, STEPS)
    if schedule is None:
        return fam.loop(model, sched, steps=steps, guidance_scale=GUIDANCE, **kwargs)
    lees.enable(model, schedule, scheduler=sched)
    try:
        return fam.loop(model, sched, steps=steps, guidance_scale=GUIDANCE, **kwargs)
    finally:
        lees.disable(model)


def grid_of(family: str, scheduler: str) -> list:
    """The timesteps the family's loop calls the model at (per branch), as the scheduler gives them."""
    sched = ALL[family].schedulers[scheduler]()
    sched.set_timesteps(steps_for(scheduler, STEPS))
    return lees.pipeline_timesteps(sched)


def reference(family: str, scheduler: str, model: nn.Module, schedule: Schedule, per_branch) -> torch.Tensor:
    """The loop with each guidance branch's calls sent to its own ``per_branch(model, schedule)``."""
    contexts = ALL[family].step_contexts(GUIDANCE)
    branches = {name: per_branch(model, schedule) for name in contexts}
    return loop(family, scheduler, PerBranch(model, branches))


def own_enable(model: nn.Module, schedule: Schedule) -> nn.Module:
    twin = copy.deepcopy(model)
    lees.enable(twin, schedule)
    return twin


@pytest.mark.parametrize(("family", "scheduler"), contract_cases())
def test_contract(family, scheduler):
    fam, model, blocks = ALL[family], ALL[family].make_model(), blocks_of(family)
    sched = fam.schedulers[scheduler]()
    plain = fam.loop(model, sched, steps=steps_for(scheduler, STEPS), guidance_scale=GUIDANCE)
    timesteps = lees.pipeline_timesteps(sched)  # as the loop set them (sigmas=, mu= included)
    assert near(loop(family, scheduler, model, Schedule.full(blocks, timesteps)), plain)
    uniform = baselines.uniform_schedule(blocks, timesteps, 2, int(len(blocks) > 2))  # some block reuses
    hand = reference(family, scheduler, model, uniform, HandGated)
    with count_block_calls(model, blocks.names) as counts:
        reused = loop(family, scheduler, model, uniform)
    runs = {
        name: int(row.sum()) * fam.calls_per_step(GUIDANCE)
        for name, row in zip(blocks.names, uniform.table, strict=True)
    }
    assert dict(counts) == runs
    assert near(reused, hand) and not torch.allclose(reused, plain, atol=1e-4)
    if fam.guidance == "split":
        assert near(reused, reference(family, scheduler, model, uniform, own_enable))
    if family in BATCHED_TWIN and scheduler in ALL[BATCHED_TWIN[family]].schedulers:
        assert near(reused, loop(BATCHED_TWIN[family], scheduler, model, uniform))
    assert not hooks_left(model)
    assert torch.equal(loop(family, scheduler, model), plain)


def test_a_schedule_for_another_grid_is_refused_before_any_block_runs():
    unet = FAMILIES["unet2d"].make_model()
    blocks = lees.find_blocks(unet)
    ddpm50 = Schedule.full(
        blocks, lees.pipeline_timesteps(DDPMScheduler(**DDPM_BETAS), 50), settings={"sampler": "ddpm"}
    )
    ddim10 = lees.pipeline_timesteps(DDIMScheduler(**DDPM_BETAS), 10)
    subset = Schedule.full(blocks, ddim10[::2])
    pipe = DDIMPipeline(unet, DDIMScheduler(**DDPM_BETAS))
    run = functools.partial(pipe, batch_size=1, num_inference_steps=10, output_type="np")
    with count_block_calls(unet, blocks.names) as counts:
        lees.enable(pipe, ddpm50)
        with pytest.raises(lees.ScheduleError) as refused:
            run()
        assert str(refused.value) == (
            "the schedule does not fit this run: the schedule has 50 columns (ddpm) at t = 980, 960, "
            "940, ..., DDIMScheduler calls the model 10 times at t = 900, 800, 700, ...; build the schedule "
            "for this scheduler's timesteps (lees.pipeline_timesteps(pipe.scheduler)) or re-route it for them"
        )
        lees.enable(pipe, subset)  # every other timestep of the same scheduler
        with pytest.raises(
            lees.ScheduleError, match="has 5 columns at t = 900, 700, 500, .*, DDIMScheduler calls"
        ):
            run()
        assert set(counts.values()) == {0}
        lees.enable(pipe, Schedule.full(blocks, ddim10))
        run()
        assert set(counts.values()) == {10}
    lees.disable(pipe)


def test_a_hand_loop_is_checked_call_by_call():
    fam = FAMILIES["dit"]
    model, blocks = fam.make_model(), blocks_of("dit")
    every_other = Schedule.full(blocks, grid_of("dit", "ddim")[::2])
    lees.enable(model, every_other)  # no scheduler: the grid is checked as the calls come
    with pytest.raises(lees.ScheduleError) as refused:
        loop("dit", "ddim", model)
    assert str(refused.value) == (
        "the schedule does not fit this run: call 1 is at t = 333, column 1 at t = 0 (the schedule has 2 "
        "columns at t = 666, 0); build the schedule for this scheduler's timesteps "
        "(lees.pipeline_timesteps(pipe.scheduler)) or re-route it for them"
    )
    lees.disable(model)


def test_split_guidance_without_contexts_is_refused():
    model, blocks = SPLIT.make_model(), blocks_of("dit")
    schedule = baselines.uniform_schedule(blocks, grid_of("dit-bare", "ddim"), 2, 1)
    with pytest.raises(lees.ScheduleError) as refused:
        loop("dit-bare", "ddim", model, schedule)
    assert str(refused.value) == (
        "two denoiser calls at t = 666 where the schedule has one column: split classifier-free "
        "guidance shares one reuse cache between its branches; wrap each branch's call in "
        'model.cache_context("cond") / model.cache_context("uncond") (lees.models.pipelines.cache_context '
        "for models without CacheMixin), or batch the guidance into one call"
    )
    assert not hooks_left(model)


def test_heun_gets_one_column_per_call():
    timesteps = grid_of("sd", "heun")
    assert len(timesteps) == 2 * STEPS - 1 and timesteps[1] == timesteps[2]
    model, blocks = FAMILIES["sd"].make_model(), blocks_of("sd")
    actions = np.full((len(blocks), len(timesteps)), lees.RUN, dtype=np.int8)
    actions[:, 2] = lees.SKIP  # only Heun's second call at the repeated timestep skips
    schedule = Schedule(actions, blocks.names, timesteps)
    with count_block_calls(model, blocks.names) as counts:
        gated = loop("sd", "heun", model, schedule)
    assert set(counts.values()) == {len(timesteps) - 1}
    assert near(gated, reference("sd", "heun", model, schedule, HandGated))


def test_an_integer_schedule_of_lees_before_fits_float_timesteps():
    timesteps = grid_of("dit-split", "kdpm2")  # 999, 788.84, 499.5, 46.73, 0
    assert any(t != round(t) for t in timesteps)
    model, blocks = SPLIT.make_model(), blocks_of("dit")
    floats = baselines.uniform_schedule(blocks, timesteps, 2, 1)
    rounded = baselines.uniform_schedule(blocks, [round(t) for t in timesteps], 2, 1)  # as lees < 0.3 saved
    assert torch.equal(loop("dit-split", "kdpm2", model, rounded), loop("dit-split", "kdpm2", model, floats))


def test_flow_matching_float_timesteps_round_trip(tmp_path):
    timesteps = grid_of("dit-split", "flow-euler")
    assert all(isinstance(t, float) for t in timesteps) and timesteps[0] == 1000.0
    assert any(t != round(t) for t in timesteps)
    model, blocks = SPLIT.make_model(), blocks_of("dit")
    schedule = baselines.uniform_schedule(blocks, timesteps, 2, 1)
    back = Schedule.load(schedule.save(tmp_path / "flow.json"))
    assert back.timesteps == timesteps
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    lees.enable(model, back)  # a hand loop: no scheduler given
    out = SPLIT.loop(model, sched, steps=STEPS, guidance_scale=GUIDANCE)
    lees.disable(model)
    assert near(out, loop("dit-split", "flow-euler", model, schedule))


def test_t_over_1000_is_recognised_by_schedules_and_gates():
    model, blocks = SPLIT.make_model(), blocks_of("dit")
    gate = lees.SigmoidTimeGate(len(blocks), blocks.names)
    with torch.no_grad():
        gate.a[1:], gate.b[1:] = 20.0, -10.0  # blocks 1.. closed while t < 0.5
    sched = FlowMatchEulerDiscreteScheduler(shift=1.0)
    counts = {}
    for family in ("dit-split", "dit-flux"):  # t, then t / 1000: the same decisions
        lees.enable(model, gate, scheduler=sched)
        with count_block_calls(model, blocks.names) as counts[family]:
            ALL[family].loop(model, sched, steps=4, guidance_scale=GUIDANCE)
        lees.disable(model)
    assert counts["dit-flux"] == counts["dit-split"] and 0 < min(counts["dit-flux"].values()) < 8
    schedule = Schedule.full(blocks, grid_of("dit-flux", "flow-euler"))
    assert near(loop("dit-flux", "flow-euler", model, schedule), loop("dit-flux", "flow-euler", model))


# -- beside diffusers' own hooks ----------------------------------------------------------------------------


def _ddpm_run(pipe) -> np.ndarray:
    return pipe(
        batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=4, output_type="np"
    ).images


@pytest.mark.parametrize("offload_first", [True, False])
def test_model_cpu_offload_in_either_order(offload_first):
    unet = FAMILIES["unet2d"].make_model()
    blocks = lees.find_blocks(unet)
    schedule = baselines.uniform_schedule(
        blocks, lees.pipeline_timesteps(DDPMScheduler(**DDPM_BETAS), 4), 2, 1
    )
    plain_pipe = DDPMPipeline(copy.deepcopy(unet), DDPMScheduler(**DDPM_BETAS))
    plain = _ddpm_run(plain_pipe)
    lees.enable(plain_pipe, schedule)
    expected = _ddpm_run(plain_pipe)
    pipe = DDPMPipeline(unet, DDPMScheduler(**DDPM_BETAS))
    if offload_first:
        pipe.enable_model_cpu_offload(device="cpu")
    lees.enable(pipe, schedule)
    if not offload_first:
        pipe.enable_model_cpu_offload(device="cpu")
    assert hasattr(unet, "_hf_hook")
    for _ in range(3):  # accelerate re-wraps the forward after every run
        assert near(_ddpm_run(pipe), expected)
    lees.disable(pipe)
    for _ in range(2):
        assert np.array_equal(_ddpm_run(pipe), plain)
    assert hasattr(unet, "_hf_hook") and not (
        unet._diffusers_hook.hooks if hasattr(unet, "_diffusers_hook") else {}
    )


@pytest.mark.parametrize("offload_type", ["block_level", "leaf_level"])
@pytest.mark.parametrize("offload_first", [True, False])
def test_group_offloading_in_either_order(offload_type, offload_first):
    model, blocks = FAMILIES["sd"].make_model(), blocks_of("sd")
    schedule = baselines.uniform_schedule(blocks, grid_of("sd", "ddim"), 2, 1)
    plain = loop("sd", "ddim", model)
    expected = loop("sd", "ddim", model, schedule)
    offload = functools.partial(
        model.enable_group_offload, torch.device("cpu"), offload_type=offload_type, num_blocks_per_group=1
    )
    if offload_first:
        offload()
    sched = ALL["sd"].schedulers["ddim"]()
    lees.enable(model, schedule, scheduler=sched)
    if not offload_first:
        offload()
    assert torch.equal(FAMILIES["sd"].loop(model, sched, steps=STEPS, guidance_scale=GUIDANCE), expected)
    lees.disable(model)
    assert torch.equal(loop("sd", "ddim", model), plain)


class CachedDiT(DiTTransformer2DModel, CacheMixin):
    """A DiT with diffusers' CacheMixin (enable_cache / cache_context), as Flux, LTX and Wan have."""


@pytest.mark.parametrize("threshold", [0.0, 1e9])  # FirstBlockCache never reuses / always reuses
def test_first_block_cache_stacks_in_any_order_and_each_disables(threshold):
    dit = SPLIT.make_model()
    model = CachedDiT.from_config(dit.config)
    model.load_state_dict(dit.state_dict())
    model.eval()
    schedule = baselines.uniform_schedule(blocks_of("dit"), grid_of("dit-split", "ddim"), 2, 1)
    switch = {
        "lees": (lambda: lees.enable(model, schedule), lambda: lees.disable(model)),
        "fbc": (lambda: model.enable_cache(FirstBlockCacheConfig(threshold=threshold)), model.disable_cache),
    }

    def run() -> torch.Tensor:
        out = SPLIT.loop(model, SPLIT.schedulers["ddim"](), steps=STEPS, guidance_scale=GUIDANCE)
        model._reset_stateful_cache()  # what the pipeline does at its end
        return out

    outputs = {(): run()}
    for name in switch:
        switch[name][0]()
        outputs[(name,)] = run()
        switch[name][1]()
    assert torch.equal(run(), outputs[()]) and not hooks_left(model)
    for first, second in (("lees", "fbc"), ("fbc", "lees")):
        for off in (first, second):  # enable both in this order, then disable one: the other is alone
            switch[first][0]()
            switch[second][0]()
            both = run()
            switch[off][1]()
            on = second if off == first else first
            assert torch.equal(run(), outputs[(on,)])
            switch[on][1]()
            assert torch.equal(run(), outputs[()]) and not hooks_left(model)
            if threshold == 0:  # FirstBlockCache computes every block: lees alone
                assert near(both, outputs[("lees",)])
            else:
                assert not torch.allclose(both, outputs[("lees",)])
            outputs.setdefault(("both",), both)
            assert torch.equal(both, outputs[("both",)])  # the same whichever was enabled first
