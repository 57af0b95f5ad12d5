"""Forecast: a block not run at a call adds the residual extrapolated from its last runs (TaylorSeer-like).

Each check captures a block's inputs and outputs by hand (a forward hook on it, outside lees), takes
its residuals at the calls it ran, and compares the output of every forecast call with the input plus
the line (order 1) or parabola (order 2) through the last runs, written out here in Newton's form.
"""

from __future__ import annotations

import inspect
import json
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from torch import nn

import lees
from lees import GatedModel, Schedule, find_blocks
from lees.diffusion.samplers import sampler_timesteps
from lees.engine.actions import FORECAST, REUSE, RUN, SKIP
from lees.engine.hooks import Engine, ReuseCache
from lees.models.architectures import DDPM_NOISE
from lees.sampling.lockstep import sample_lockstep
from lees.schedules.baselines import uniform_schedule
from lees.schedules.registry import build_schedule
from lees.schedules.schedule import ScheduleError

from .families import FAMILIES
from .test_contract import LOCAL, PerBranch

CODES = {"1": RUN, "r": REUSE, "f": FORECAST, "0": SKIP}
ALL = {**FAMILIES, **LOCAL}
GUIDANCE = 4.0
HIDDEN = ("hidden_states",)
JOINT = ("encoder_hidden_states", "hidden_states")  # a Flux block returns (text, image)


def grid(family: str, model: nn.Module, steps: int) -> list:
    """The timesteps the family's loop calls ``model`` at with its first scheduler, as the loop sets them
    (Flux's sigmas and shift included)."""
    sched = next(iter(ALL[family].schedulers.values()))()
    ALL[family].loop(model, sched, steps=steps, guidance_scale=1.0)
    return lees.pipeline_timesteps(sched)


def loop(family: str, model: nn.Module, schedule: Schedule, guidance: float = GUIDANCE) -> torch.Tensor:
    """The family's loop under ``lees.enable(model, schedule)`` (its first scheduler), then disabled."""
    fam = ALL[family]
    sched = next(iter(fam.schedulers.values()))()
    lees.enable(model, schedule, scheduler=sched)
    try:
        return fam.loop(model, sched, steps=schedule.num_steps, guidance_scale=guidance)
    finally:
        lees.disable(model)


def one_row(family: str, model: nn.Module, name: str, row: str, order: int = 1) -> Schedule:
    """Every block runs at every call but ``name``, which follows ``row`` (1 run, r reuse, f forecast)."""
    names = find_blocks(model).names
    actions = np.full((len(names), len(row)), RUN, dtype=np.int8)
    actions[names.index(name)] = [CODES[c] for c in row]
    return Schedule(actions, names, grid(family, model, len(row)), forecast_order=order)


@contextmanager
def recorded(model: nn.Module, name: str, returns: tuple[str, ...]):
    """Each call of block ``name``: {stream: (its input, its output)}, read by a hook outside lees."""
    module = dict(model.named_modules())[name]
    signature = inspect.signature(type(module).forward)
    calls: list[dict] = []

    def hook(mod, args, kwargs, out):
        inputs = signature.bind(mod, *args, **kwargs).arguments
        outs = (out,) if isinstance(out, torch.Tensor) else out
        streams = zip(returns, outs, strict=True)  # a stream the block returns as None is not read
        calls.append({s: (inputs[s].clone(), o.clone()) for s, o in streams if o is not None})

    handle = module.register_forward_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def by_hand(runs: list[tuple[int, torch.Tensor]], p: int) -> torch.Tensor:
    """The residual at call p: the last run's, the line through two runs, or the parabola through three."""
    if len(runs) == 1:
        return runs[0][1]
    if len(runs) == 2:
        (p0, r0), (p1, r1) = runs
        return r1 + (r1 - r0) * (p - p1) / (p1 - p0)
    (p0, r0), (p1, r1), (p2, r2) = runs
    d0, d1 = (r1 - r0) / (p1 - p0), (r2 - r1) / (p2 - p1)
    return r2 + d1 * (p - p2) + (d1 - d0) / (p2 - p0) * (p - p2) * (p - p1)


def check_forecasts(calls: list[dict], row: str, order: int) -> int:
    """Every forecast call's output is its input plus the hand extrapolation from the last order + 1
    runs (identity shortcuts: a run's residual is output - input); how many forecasts differ from reuse."""
    assert len(calls) == len(row)
    runs: list[tuple[int, dict]] = []
    differ = 0
    for j, (action, call) in enumerate(zip(row, calls, strict=True)):
        if action == "1":
            runs.append((j, {s: out - x for s, (x, out) in call.items()}))
            continue
        used = runs[-(order + 1) :]
        for s, (x, out) in call.items():
            expected = x + by_hand([(p, r[s]) for p, r in used], j)
            scale = max(1.0, float(expected.abs().max()))
            assert torch.allclose(out, expected, rtol=1e-4, atol=1e-5 * scale), (j, s)
            differ += not torch.allclose(out, x + used[-1][1][s], rtol=1e-4, atol=1e-5 * scale)
    return differ


@pytest.mark.parametrize(("row", "order"), [("11ff1f", 1), ("11f1ff", 2)])
def test_forecast_is_the_hand_extrapolation_of_the_last_runs(row, order):
    """Order 1: the line through the last two runs (also at unevenly spaced runs, 1 and 4); order 2: the
    parabola through the last three (0, 1, 3), the line while only two are stored (call 2)."""
    model, name = ALL["dit"].make_model(), "transformer_blocks.1"
    schedule = one_row("dit", model, name, row, order)
    with recorded(model, name, HIDDEN) as calls:
        forecast = loop("dit", model, schedule)
    assert check_forecasts(calls, row, order) > 0
    reuse = loop("dit", model, one_row("dit", model, name, row.replace("f", "r")))
    assert not torch.allclose(forecast, reuse)


def test_order_0_and_a_single_stored_run_are_reuse_exactly():
    model, name = ALL["dit"].make_model(), "transformer_blocks.0"
    reuse = loop("dit", model, one_row("dit", model, name, "11rr1r"))
    assert torch.equal(loop("dit", model, one_row("dit", model, name, "11ff1f", order=0)), reuse)
    once = loop("dit", model, one_row("dit", model, name, "1rrrr"))
    assert torch.equal(loop("dit", model, one_row("dit", model, name, "1ffff", order=2)), once)


class HandForecast(nn.Module):
    """A reference for one guidance branch: column j of the schedule at its j-th call, its own cache."""

    def __init__(self, model: nn.Module, schedule: Schedule) -> None:
        super().__init__()
        self.gated, self.schedule = GatedModel(model, schedule.block_names), schedule
        self.cache, self.calls = schedule.new_cache(), 0

    def forward(self, *args, **kwargs):
        j, self.calls = self.calls, self.calls + 1
        return self.gated(*args, mask=self.schedule.actions_at(j), cache=self.cache, position=j, **kwargs)


def test_each_guidance_branch_forecasts_from_its_own_runs():
    """Split guidance under cache contexts: each branch's calls are positions 0, 1, ... of its own run
    and extrapolate its own residuals, as a model copy per branch with its own cache does."""
    fam, model = LOCAL["dit-split"], LOCAL["dit-split"].make_model()
    blocks = find_blocks(model)
    schedule = uniform_schedule(blocks, grid("dit-split", model, 7), interval=2, outer=1, between=FORECAST)
    got = loop("dit-split", model, schedule)
    branches = {name: HandForecast(model, schedule) for name in fam.step_contexts(GUIDANCE)}
    sched = next(iter(fam.schedulers.values()))()
    expected = fam.loop(PerBranch(model, branches), sched, steps=7, guidance_scale=GUIDANCE)
    assert torch.allclose(got, expected, atol=1e-5 * max(1.0, float(expected.abs().max())))
    assert all(b.calls == 7 for b in branches.values())
    reuse = uniform_schedule(blocks, schedule.timesteps, interval=2, outer=1, between=REUSE)
    assert not torch.allclose(got, loop("dit-split", model, reuse))


def test_every_run_starts_with_empty_forecast_caches():
    model = ALL["dit-split"].make_model()
    schedule = uniform_schedule(find_blocks(model), grid("dit-split", model, 6), interval=2, between=FORECAST)
    first = loop("dit-split", model, schedule)
    assert torch.equal(loop("dit-split", model, schedule), first)
    cache = schedule.new_cache()
    cache.store(1, torch.ones(2, 3), position=0)
    cache.clear()
    assert cache.residuals[1] is None and cache.history[1] == [] and cache.forecast_at(1, 2) is None


@pytest.mark.parametrize(
    ("family", "name", "streams"),
    [
        ("flux", "transformer_blocks.0", 2),
        ("flux", "single_transformer_blocks.1", 2),
        ("sd3", "transformer_blocks.0", 2),  # SD3.5's dual attention
        ("sd3", "transformer_blocks.2", 1),  # context_pre_only: its text stream is None
    ],
)
def test_a_two_stream_block_forecasts_both_streams(family, name, streams):
    model = ALL[family].make_model()
    row = "11f1ff"
    schedule = one_row(family, model, name, row, order=1)
    with recorded(model, name, JOINT) as calls:
        loop(family, model, schedule, guidance=1.0)  # no guidance: one call per step
    assert all(len(call) == streams for call in calls)
    assert check_forecasts(calls, row, order=1) > 0


def test_the_cache_keeps_the_last_runs_of_forecast_blocks_only():
    cache = ReuseCache(3, keep=[True, True, False], forecast=[True, False, False], order=1)
    runs = [torch.full((2, 4), float(p)) for p in range(4)]
    for p, r in enumerate(runs):
        cache.store(0, r, position=p)
        cache.store(1, r.clone(), position=p)
    assert [p for p, _ in cache.history[0]] == [2.0, 3.0] and cache.history[1] == []
    assert torch.equal(cache.forecast_at(0, 5), torch.full((2, 4), 5.0))  # the line p -> p
    assert torch.equal(cache.forecast_at(1, 5), runs[-1])  # a block not forecast: its last residual
    assert cache.peak_bytes == 3 * runs[0].numel() * 4  # two runs of block 0, one of block 1
    cache.store(0, torch.zeros(1, 4), position=4)  # another batch shape: earlier runs no longer apply
    assert [p for p, _ in cache.history[0]] == [4.0]
    with pytest.raises(ValueError, match="position"):
        cache.store(0, runs[0])
    with pytest.raises(ValueError, match="order"):
        ReuseCache(2, order=3)


def test_forecasting_needs_the_call_position(tiny):
    engine = Engine(tiny, find_blocks(tiny))
    cache = ReuseCache(engine.num_blocks, forecast=[True] * engine.num_blocks)
    with (
        pytest.raises(ValueError, match="position"),
        engine.deciding([FORECAST] * engine.num_blocks, cache=cache),
    ):
        pass
    with pytest.raises(ValueError, match="forecast \\(3\\)"):
        engine.check_decisions([5] * engine.num_blocks, "hard")


def test_lockstep_sampling_forecasts_and_reports_its_memory(tiny):
    noise = DDPMScheduler(**DDPM_NOISE)
    blocks = find_blocks(tiny)
    timesteps = sampler_timesteps(noise, 5)
    forecast = uniform_schedule(blocks, timesteps, interval=2, between=FORECAST)
    reuse = uniform_schedule(blocks, timesteps, interval=2, between=REUSE)
    runs = sample_lockstep(tiny, {"f": forecast, "r": reuse}, 2, steps=5, scheduler=noise, progress=False)
    assert torch.isfinite(runs["f"].images).all() and not torch.equal(runs["f"].images, runs["r"].images)
    assert runs["f"].cache_bytes_per_sample == forecast.cache_bytes_per_sample(blocks)
    assert runs["f"].cache_bytes_per_sample == 2 * runs["r"].cache_bytes_per_sample  # order 1: two runs


def test_a_forecasting_schedule_saves_and_loads(tmp_path):
    names, timesteps = ["a", "b"], [900, 600, 300, 0]
    actions = np.array([[RUN, RUN, FORECAST, RUN], [RUN, REUSE, SKIP, RUN]])
    schedule = Schedule(actions, names, timesteps, forecast_order=2)
    data = json.loads(schedule.save(tmp_path / "f.json").read_text())
    assert data["version"] == 3 and data["table"] == ["11f1", "1r01"] and data["forecast_order"] == 2
    loaded = Schedule.load(tmp_path / "f.json")
    assert np.array_equal(loaded.actions, actions) and loaded.forecast_order == 2
    assert loaded.forecast_blocks() == [True, False] and loaded.kept_blocks() == [True, True]
    plain = Schedule(np.where(actions == FORECAST, REUSE, actions), names, timesteps)
    data = plain.to_dict()
    assert data["version"] == 2 and "forecast_order" not in data  # older lees still reads it
    assert Schedule.from_dict(data).forecast_order == 1
    with pytest.raises(ScheduleError, match="forecast_order"):
        Schedule.from_dict({**schedule.to_dict(), "forecast_order": 5})


def test_uniform_forecast_names(tiny):
    blocks, timesteps = find_blocks(tiny), [900, 700, 500, 300, 100]
    first = build_schedule("uniform-2-forecast", blocks, timesteps)
    assert first.forecasts and first.forecast_order == 1 and first.settings["between"] == "forecast"
    assert not (first.actions == REUSE).any()
    second = build_schedule("uniform-2-forecast-2", blocks, timesteps)
    assert second.forecast_order == 2 and np.array_equal(second.actions, first.actions)
    assert build_schedule("uniform-2", blocks, timesteps, between="forecast", order=2).forecast_order == 2
    assert not build_schedule("uniform-2", blocks, timesteps).forecasts
    for name, options in (("uniform-2-skip-2", {}), ("uniform-2", {"order": 2})):
        with pytest.raises(ValueError, match="order is for forecasting"):
            build_schedule(name, blocks, timesteps, **options)


def test_a_compiled_denoiser_needs_a_graph_per_forecast_history_length():
    run, fc, reuse = RUN, FORECAST, REUSE
    forecasting = Schedule(
        np.array([[run, fc, run, fc, run, fc, run, fc]]), ["b"], list(range(8)), forecast_order=1
    )
    reusing = Schedule(np.array([[run, reuse, run, reuse, run, reuse, run, reuse]]), ["b"], list(range(8)))
    assert reusing.run_sets() == 2  # run, reuse
    assert forecasting.run_sets() == 3  # run, forecast from one stored run (as reuse), forecast from two
