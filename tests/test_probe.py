"""Adaptive schedules: cells that run where the probe's accumulated change exceeds a learned threshold."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, EulerDiscreteScheduler

import lees
from lees import GatedModel, ReuseCache, Schedule, find_blocks
from lees.cli import main
from lees.diffusion.samplers import sampler_timesteps
from lees.engine.actions import FORECAST, REUSE, RUN
from lees.engine.probe import Probe, relative_change
from lees.learn.probe_search import ProbeConfig, base_table, probe_schedule, search_probe, thresholds_of
from lees.learn.search import LatencyCosts
from lees.models.architectures import DDPM_NOISE
from lees.sampling.lockstep import sample_lockstep
from lees.schedules.schedule import ScheduleError

from .conftest import tiny_unet
from .test_backbone_families import tiny_dit
from .test_enable import own_loop

STEPS = 6


def adaptive(model, timesteps, threshold: float, warmup: int = 2) -> Schedule:
    """Block 0 and the warm-up run, the rest forecast unless the probe says run (one threshold)."""
    blocks = find_blocks(model)
    actions = base_table(len(blocks), len(timesteps), warmup)
    thresholds = np.where(actions == FORECAST, threshold, np.inf)
    return Schedule(actions, blocks.names, timesteps, block_shares=blocks.shares, thresholds=thresholds)


def test_relative_change_is_firstblockcaches_measure():
    old, new = torch.tensor([[1.0, -2.0], [3.0, 0.0]]), torch.tensor([[1.5, -2.0], [2.0, 1.0]])
    assert relative_change(new, old) == pytest.approx((0.5 + 0 + 1 + 1) / (1 + 2 + 3 + 0))


def test_a_block_runs_where_its_change_since_its_last_run_exceeds_its_threshold():
    thresholds = np.full((3, 4), np.inf)
    thresholds[1, 1:], thresholds[2, 1:] = 0.25, 0.46
    probe = Probe(thresholds)
    decided = []
    for j, value in enumerate([1.0, 1.2, 1.5, 1.6]):  # changes 0.2, 0.25, 1/15
        probe.observe(torch.full((2,), value))
        decided.append([probe.action(k, FORECAST if j else RUN, j) for k in (1, 2)])
    # block 1: 0.2 (no), 0.45 > 0.25 (run, reset), 0.067 (no); block 2: 0.2, 0.45, 0.517 > 0.46 (run)
    assert decided == [[RUN, RUN], [FORECAST, FORECAST], [RUN, FORECAST], [FORECAST, RUN]]
    assert probe.ran.tolist() == [[0] * 4, [0, 0, 1, 0], [0, 0, 0, 1]] and probe.runs == 1
    assert probe.changes == pytest.approx([0.0, 0.2, 0.25, 0.1 / 1.5])


def test_the_engine_follows_the_rule_a_hand_computation_gives():
    model = tiny_dit()
    scheduler = EulerDiscreteScheduler(num_train_timesteps=1000)
    schedule = adaptive(model, lees.pipeline_timesteps(scheduler, STEPS), threshold=0.4)
    blocks = [model.transformer_blocks[k] for k in range(3)]
    residuals, ran = [], []
    first = lambda m, args, kw, out: residuals.append(out - (args[0] if args else kw["hidden_states"]))  # noqa: E731
    blocks[0].register_forward_hook(first, with_kwargs=True)
    for k in (1, 2):
        blocks[k].norm1.register_forward_hook(lambda m, i, o, k=k: ran.append((len(residuals) - 1, k)))
    lees.enable(model, schedule)
    with torch.no_grad():
        own_loop(lambda x, t, j, cond: model(x, t, **cond), model, scheduler, steps=STEPS)
    lees.disable(model)
    accumulated, expected = np.zeros(3), set()
    for j in range(STEPS):
        accumulated += 0 if j == 0 else relative_change(residuals[j], residuals[j - 1])
        for k in (1, 2):
            if schedule.actions[k, j] == RUN or accumulated[k] > schedule.thresholds[k, j]:
                expected.add((j, k))
                accumulated[k] = 0
    adaptive_runs = expected - {(j, k) for j in range(2) for k in (1, 2)}
    assert set(ran) == expected and 0 < len(adaptive_runs) < 2 * (STEPS - 2)  # some cells ran, not all


def test_thresholds_zero_are_the_full_model_and_infinite_ones_the_table():
    model, noise = tiny_unet(), DDPMScheduler(**DDPM_NOISE)
    timesteps = sampler_timesteps(noise, STEPS, "ddim")
    blocks = find_blocks(model)
    table = base_table(len(blocks), STEPS, 2)
    static = Schedule(table, blocks.names, timesteps, block_shares=blocks.shares)
    methods = {"full": None, "static": static, "never": adaptive(model, timesteps, 1e9),
               "always": adaptive(model, timesteps, 0.0)}  # fmt: skip
    runs = sample_lockstep(model, methods, 3, STEPS, "ddim", scheduler=noise, progress=False)
    assert torch.equal(runs["never"].images, runs["static"].images)
    assert (runs["always"].images - runs["full"].images).abs().max() < 1e-5
    assert not torch.allclose(runs["static"].images, runs["full"].images, atol=1e-3)
    assert runs["never"].adaptive_share.sum() == 0 and runs["static"].adaptive_share is None
    assert (runs["always"].adaptive_share == (table == FORECAST)).all()


def test_the_latency_of_what_ran_counts_the_adaptive_runs_as_runs():
    costs = LatencyCosts(full=1.0, fixed=0.1, run=[0.3, 0.5], reuse=0.02, forecast={1: 0.04, 2: 0.05})
    actions = np.array([[RUN, RUN, RUN], [RUN, FORECAST, REUSE]])
    ran = np.array([[0, 0, 0], [0, 0.5, 1.0]])
    by_hand = (3 * 0.1 + 3 * 0.3 + 0.5 + (0.5 * 0.5 + 0.5 * 0.04) + 0.5) / 3
    assert costs.ratio(actions, 1, ran) == pytest.approx(by_hand)
    assert costs.ratio(actions, 1, np.zeros((2, 3))) == pytest.approx(costs.ratio(actions, 1))


def test_an_adaptive_schedule_saves_loads_and_refuses_thresholds_it_cannot_follow(tmp_path):
    model = tiny_unet()
    schedule = adaptive(model, sampler_timesteps(DDPMScheduler(**DDPM_NOISE), STEPS, "ddim"), 0.1)
    loaded = Schedule.load(schedule.save(tmp_path / "s.json"))
    assert schedule.to_dict()["version"] == 4 and loaded.adaptive
    assert np.array_equal(loaded.thresholds, schedule.thresholds) and math.isinf(loaded.thresholds[0, 3])
    bad = schedule.thresholds.copy()
    bad[1, 0] = 0.1  # a run cell
    with pytest.raises(ScheduleError, match="reuses or forecasts"):
        Schedule(schedule.actions, schedule.block_names, schedule.timesteps, thresholds=bad)
    actions = schedule.actions.copy()
    actions[0, 3] = FORECAST
    with pytest.raises(ScheduleError, match="probe block 0 at every step"):
        Schedule(actions, schedule.block_names, schedule.timesteps, thresholds=schedule.thresholds)


def test_thresholds_differ_per_segment_of_calls_and_group_of_blocks():
    actions = base_table(5, 8, warmup=2)
    theta = np.log(np.array([[1.0, 2.0], [3.0, 4.0]]))
    found = thresholds_of(theta, actions, warmup=2)
    assert np.isinf(found[0]).all() and np.isinf(found[:, :2]).all()
    assert found[1:3, 2:5].tolist() == [[1.0] * 3] * 2 and found[3:, 5:].tolist() == [[4.0] * 3] * 2
    assert found[3:, 2:5].tolist() == [[2.0] * 3] * 2


def _costs(k: int) -> LatencyCosts:
    """A call's latency is the share of its k blocks that run (a reuse or a forecast free)."""
    return LatencyCosts(full=1.0, fixed=0.0, run=[1 / k] * k, reuse=0.0, forecast={1: 0.0, 2: 0.0})


def _probe_search(tmp_path, budget: float, **kwargs):
    model = tiny_unet()
    costs = _costs(len(find_blocks(model)))
    config = ProbeConfig(steps=8, sampler="ddim", samples=3, target_latency_ratio=budget, warmup=2,
                         segments=2, groups=2, max_rollouts=40, check_rounds=0)  # fmt: skip
    return search_probe(model, DDPMScheduler(**DDPM_NOISE), config, progress=False, costs=costs, **kwargs)


def test_the_probe_search_spends_its_budget_never_ends_worse_and_resumes(tmp_path):
    budget = 0.55  # the warm-up and the probe block take 2/8 + 6/8/12: the probe's runs spend the rest
    result = _probe_search(tmp_path, budget, state_path=tmp_path / "state.json")
    assert budget - 0.02 <= result.latency_ratio <= budget + 1e-9
    assert result.psnr >= result.start_psnr and result.schedule.adaptive
    again = _probe_search(tmp_path, budget, state_path=tmp_path / "state.json")
    assert again.rollouts == 0 and np.array_equal(again.schedule.thresholds, result.schedule.thresholds)


def test_a_budget_the_warm_up_alone_exceeds_is_refused_in_one_line(tmp_path):
    with pytest.raises(ValueError, match="warm-up and probe alone take"):
        _probe_search(tmp_path, 0.2)


def test_each_guidance_branch_keeps_its_own_probe():
    model = tiny_dit()
    schedule = adaptive(model, lees.pipeline_timesteps(EulerDiscreteScheduler(), STEPS), 0.05)
    gated = GatedModel(model, schedule.block_names)
    caches = [schedule.new_cache(), schedule.new_cache()]
    assert isinstance(caches[0], ReuseCache) and caches[0].probe is not caches[1].probe
    assert caches[0].keep[0]  # the probe block's residual is kept to measure its change
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        gated(x, torch.tensor([900, 900]), class_labels=torch.tensor([1, 2]), mask=schedule.actions_at(0),
              cache=caches[0], position=0)  # fmt: skip
    assert caches[0].probe.changes == [0.0] and caches[1].probe.changes == []


def test_a_base_table_is_the_floor_the_probe_adds_runs_to(tmp_path):
    model = tiny_unet()
    blocks = find_blocks(model)
    timesteps = sampler_timesteps(DDPMScheduler(**DDPM_NOISE), 8, "ddim")
    actions = np.full((len(blocks), 8), REUSE, dtype=np.int8)
    actions[:, [0, 4]] = RUN
    base = Schedule(actions, blocks.names, timesteps, block_shares=blocks.shares).save(tmp_path / "base.json")
    config = ProbeConfig(steps=8, sampler="ddim", warmup=1, segments=1, groups=1, base=str(base))
    found = probe_schedule(blocks, timesteps, np.zeros((1, 1)), config)
    assert (found.actions[0] == RUN).all() and (found.actions[1:] == actions[1:]).all()
    assert (np.isfinite(found.thresholds) == (found.actions == REUSE)).all()
    other = ProbeConfig(steps=6, sampler="ddim", warmup=1, base=str(base))
    with pytest.raises(ValueError, match="other calls"):
        probe_schedule(
            blocks, sampler_timesteps(DDPMScheduler(**DDPM_NOISE), 6, "ddim"), np.zeros((5, 2)), other
        )


def test_route_probe_writes_an_adaptive_schedule_that_sample_runs(folder, tmp_path, capsys, monkeypatch):
    """The command's wiring (its actions' costs fixed: timed on a loaded machine, a tiny model's fixed cost
    per call can take the whole budget, and the refusal is another test's)."""
    import lees.learn.search as search

    monkeypatch.setattr(search, "measure_costs", lambda model, *_: _costs(len(find_blocks(model))))
    out = tmp_path / "p"
    argv = ["route", "--model", folder, "--sampler", "ddim", "--steps", "6", "--objective", "probe",
            "--target-latency-ratio", "0.8", "--trajectories", "2", "--max-rollouts", "12",
            "--probe-warmup", "2", "--probe-segments", "2", "1", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'schedule.json'}" in printed and "an adaptive table" in printed
    schedule = Schedule.load(out / "schedule.json")
    assert schedule.adaptive and (out / "probe_state.json").is_file()
    assert main(["sample", "--model", folder, "-n", "2", "--schedule", str(out / "schedule.json"),
                 "--out", str(tmp_path / "g.png")]) == 0  # fmt: skip
    assert main([*argv[:-2], "--schedule", "full", "--out", str(tmp_path / "q")]) == 2
    assert "--probe-base" in capsys.readouterr().err and not (tmp_path / "q").exists()
