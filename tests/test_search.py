"""The rollout search spends its budget, never ends worse than its start, resumes exactly, and its cost
model and moves are what they say (the forecast action itself: tests/test_forecast.py)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

import lees.learn.search as search
from lees import Schedule
from lees.cli import main
from lees.engine.actions import FORECAST, REUSE, RUN, SKIP
from lees.engine.blocks import find_blocks
from lees.learn.search import LatencyCosts, SearchConfig, neighbours, search_schedule
from lees.models.architectures import DDPM_NOISE
from lees.sampling.lockstep import TimedSamples, sample_lockstep

from .conftest import tiny_unet
from .test_tune import pipe_folder  # noqa: F401  (a fixture)

STEPS = 8


def _costs(k: int) -> LatencyCosts:
    """A call's latency is the share of its blocks that run: a full call 1/T of the run, a reuse or a
    forecast free (the starts' costs then step by 1/T and a half-run by 1/(2T))."""
    return LatencyCosts(full=1.0, fixed=0.0, run=[1 / k] * k, reuse=0.0, forecast={1: 0.0, 2: 0.0})


def _search(tmp_path, budget: float, **kwargs):
    model = tiny_unet()
    steps = kwargs.pop("steps", STEPS)
    config = SearchConfig(steps=steps, sampler="ddim", samples=3, target_latency_ratio=budget,
                          max_rollouts=kwargs.pop("max_rollouts", 60), starts=2,
                          check_rounds=kwargs.pop("check_rounds", 0),
                          guard_data=kwargs.pop("guard_data", None),
                          fd_weight=kwargs.pop("fd_weight", 0.0),
                          start=kwargs.pop("start", None))  # fmt: skip
    costs = _costs(len(find_blocks(model)))
    return search_schedule(model, DDPMScheduler(**DDPM_NOISE), config, progress=False, costs=costs, **kwargs)


def test_the_search_spends_a_budget_its_start_does_not_reach_and_never_ends_worse(tmp_path):
    budget = 3 / STEPS + 0.07  # the starts run whole calls: 3 of 8 is 0.07 below; a half-run fits
    result = _search(tmp_path, budget)
    start = result.log[0]["latency_ratio"]
    assert start < budget - 0.02  # the start does not reach it
    assert budget - 0.02 <= result.latency_ratio <= budget + 1e-9
    assert result.latency_ratio == pytest.approx(_costs(12).ratio(result.schedule.actions, 1))
    assert result.psnr >= result.start_psnr and len(result.log) > 1
    assert [r["psnr"] for r in result.log] == sorted(r["psnr"] for r in result.log)
    schedule = result.schedule
    assert schedule.source == "search" and (schedule.actions[:, 0] == RUN).all()
    assert schedule.settings["train_psnr"] == result.psnr and schedule.settings["sampler"] == "ddim"


def test_rollouts_are_scored_against_the_run_the_ode_solution_or_the_mean_of_both():
    model, scheduler = tiny_unet(), DDPMScheduler(**DDPM_NOISE)
    blocks = find_blocks(model)
    config = SearchConfig(steps=STEPS, sampler="ddim", samples=2)
    ode = Schedule.full(blocks, search.sampler_timesteps(scheduler, 100, "dpm++"))
    by_hand = {
        "run": sample_lockstep(model, {"r": None}, 2, steps=STEPS, sampler="ddim", seed=search.TRAIN_SEED,
                               scheduler=scheduler, progress=False)["r"].images,
        "ode": sample_lockstep(model, {"o": ode}, 2, steps=100, sampler="dpm++", seed=search.TRAIN_SEED,
                               scheduler=scheduler, progress=False)["o"].images,
    }  # fmt: skip
    for reference, expected in (("run", ["run"]), ("ode", ["ode"]), ("both", ["run", "ode"])):
        found = search.references(model, scheduler, blocks, config.from_dict(config.to_dict() | {
            "reference": reference}))  # fmt: skip
        assert list(found) == expected
        for name, images in found.items():
            torch.testing.assert_close(images, by_hand[name])
    assert not torch.allclose(by_hand["run"], by_hand["ode"])
    with pytest.raises(ValueError, match="stochastic"):  # said before the costs are timed
        search.search_schedule(model, scheduler, SearchConfig(steps=STEPS, sampler="ddpm", reference="ode"),
                               costs=None, progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="reference is one of run, ode, both"):
        SearchConfig(reference="data")


def test_the_search_resumes_exactly_after_an_interruption(tmp_path, monkeypatch):
    whole = _search(tmp_path, 0.5, state_path=tmp_path / "whole.json")
    taken, real = [], search.psnr

    def interrupted(images, reference):
        if len(taken) == 5:
            raise KeyboardInterrupt
        taken.append(1)
        return real(images, reference)

    monkeypatch.setattr(search, "psnr", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _search(tmp_path, 0.5, state_path=tmp_path / "part.json")
    monkeypatch.setattr(search, "psnr", real)
    resumed = _search(tmp_path, 0.5, state_path=tmp_path / "part.json")
    assert np.array_equal(resumed.schedule.actions, whole.schedule.actions)
    assert resumed.schedule.forecast_order == whole.schedule.forecast_order
    assert resumed.psnr == whole.psnr and resumed.log == whole.log
    assert resumed.rollouts == whole.rollouts - 5  # the 5 stored scores were not sampled again
    stored = json.loads((tmp_path / "part.json").read_text())
    stored["config"]["check_rounds"] = 3  # as states stored by lees 2026-12-07 hold it
    (tmp_path / "part.json").write_text(json.dumps(stored))
    checked = _search(tmp_path, 0.5, state_path=tmp_path / "part.json", check_rounds=1)  # changes no score
    assert checked.rollouts == 0 and np.array_equal(checked.schedule.actions, whole.schedule.actions)
    with pytest.raises(ValueError, match="other settings"):
        _search(tmp_path, 0.4, state_path=tmp_path / "part.json")


def test_the_latency_model_is_the_sum_of_the_timed_actions(monkeypatch):
    """Fake timed runs (seconds per method) give each action's per-block cost by hand; each run is timed at
    the batch the user samples (``timing_batch``), not the training batch."""
    t = 3
    per_call = {"full": 1.0, "run": 1.2, "reuse": 0.4, "forecast-1": 0.5, "forecast-2": 0.6, "skip": 0.2}

    def timed(model, scheduler, methods, config, samples=None):
        assert len(methods) == 1  # each method sampled alone, as lees tune times its candidates
        assert samples == 4 and config.samples == 16
        seconds = {n: per_call["run"] + (t - 1) * per_call[n] if n in search.TIMED else t * per_call[n]
                   for n in methods}  # fmt: skip
        if "run" in methods:  # every call runs but the last, which forecasts
            assert (methods["run"].actions[:, -1] == FORECAST).all()
            assert (methods["run"].actions[:, :-1] == RUN).all()
            seconds["run"] = (t - 1) * per_call["run"] + per_call["forecast-1"]
        return {n: TimedSamples(torch.zeros(1), seconds[n]) for n in methods}

    monkeypatch.setattr(search, "_sample", timed)
    blocks = find_blocks(tiny_unet())
    k = len(blocks)
    config = SearchConfig(steps=t, timing_repeats=2, timing_batch=4)
    costs = search.measure_costs(None, None, blocks, config, list(range(t)))
    assert costs.full == pytest.approx(1.0) and costs.fixed == pytest.approx(0.2)
    assert sum(costs.run) == pytest.approx(1.0)  # 1.2 - 0.2 over the blocks, by FLOP share
    assert costs.reuse == pytest.approx(0.2 / k) and costs.forecast[2] == pytest.approx(0.4 / k)
    first = [[RUN, REUSE, FORECAST], [RUN, RUN, SKIP], [RUN, FORECAST, FORECAST]]
    actions = np.array(first + [[RUN] * 3] * (k - 3))
    rest = sum(costs.run[3:])
    by_hand = 3 * 0.2 + sum(costs.run) + costs.run[1] + 2 * rest + costs.reuse + 3 * costs.forecast[1]
    assert costs.ratio(actions, 1) == pytest.approx(by_hand / 3)


def test_the_found_schedule_is_timed_alone_against_the_full_model_and_warns_over_budget(
    tmp_path, monkeypatch
):
    """The end check: the median over rounds of the schedule's seconds over the full model's, each sampled
    alone; a share measured more than 0.02 over the budget warns with the figure."""
    real, calls = search._sample, []

    def timed(model, scheduler, methods, config, steps=None, sampler=None, samples=None):
        ((name, method),) = methods.items()
        runs = real(model, scheduler, methods, config, steps, sampler, samples)
        if name in ("full", "schedule"):  # the end check's two methods (and first the search's reference)
            calls.append(name)
            r = calls.count(name) - 1
            seconds = [1.0, 2.0, 4.0, 2.0][r] if name == "full" else [1.2, 2.0, 1.8][r]
            runs[name] = TimedSamples(runs[name].images, seconds)
        return runs

    monkeypatch.setattr(search, "_sample", timed)
    with pytest.warns(UserWarning, match=r"takes 0\.600 .*measured against the full model.*over the 0\.500"):
        result = _search(tmp_path, 0.5, check_rounds=3, max_rollouts=3)
    assert calls.count("full") == 1 + 3 and calls.count("schedule") == 3
    assert result.measured_ratio == pytest.approx(0.6)  # the median of 0.6, 0.5 and 0.9
    assert result.schedule.settings["measured_latency_ratio"] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="check_rounds not negative"):
        SearchConfig(check_rounds=-1)


def test_the_moves_shift_runs_refine_halves_switch_segments_and_the_order():
    f, r, u = FORECAST, REUSE, RUN
    actions = np.array([[u, u, f, f, u, f]] * 4, dtype=np.int8)
    moves = dict(neighbours((actions, 1)))
    shifted, _ = moves["shift run 4->3"]
    assert shifted[0].tolist() == [u, u, f, u, f, f]
    half, _ = moves["run last half at 5"]
    assert half[:, 5].tolist() == [f, f, u, u]
    reused, order = moves["reuse 2-3"]
    assert reused[0].tolist() == [u, u, r, r, u, f] and order == 1
    assert moves["forecast order 2"][1] == 2 and np.array_equal(moves["forecast order 2"][0], actions)
    assert "shift run 1->0" not in moves  # call 0 always runs
    assert all((a[:, 0] == RUN).all() for a, _ in moves.values())


def test_route_search_writes_a_schedule_that_sample_runs(folder, idx_data, tmp_path, capsys):
    out = tmp_path / "s"
    argv = ["route", "--model", folder, "--sampler", "ddim", "--steps", "4", "--objective", "search",
            "--target-latency-ratio", "0.7", "--trajectories", "2", "--max-rollouts", "4",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'schedule.json'}" in printed and "asked 0.7" in printed
    schedule = Schedule.load(out / "schedule.json")
    assert schedule.source == "search" and (out / "search_state.json").is_file()
    assert main(["sample", "--model", folder, "-n", "2", "--schedule", str(out / "schedule.json"),
                 "--out", str(tmp_path / "g.png")]) == 0  # fmt: skip
    assert Path(tmp_path / "g.png").is_file()
    step = ["route", "--model", folder, "--steps", "4", "--out", str(tmp_path / "r")]
    assert main([*step, "--reference", "ode"]) == 2 and main([*step, "--data", "fashion-mnist"]) == 2
    assert "add --objective search" in capsys.readouterr().err and not (tmp_path / "r").exists()
    search_argv = [*step, "--objective", "search", "--sampler", "ddim"]
    assert main([*search_argv, "--data", "no-such-data"]) == 2
    assert "unknown dataset 'no-such-data'" in capsys.readouterr().err
    assert main([*search_argv, "--data", idx_data]) == 2  # installed, but the classifier takes 1x32x32
    assert "this model makes 1x16x16" in capsys.readouterr().err
    assert main([*search_argv, "--sampler", "ddpm", "--reference", "ode"]) == 2
    assert "stochastic" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_tune_measures_a_searched_schedule_beside_the_candidates_named(pipe_folder, tmp_path, capsys):  # noqa: F811
    searched = tmp_path / "search-0.6"
    assert main(["route", "--model", pipe_folder, "--steps", "6", "--sampler", "ddpm", "--objective",
                 "search", "--target-latency-ratio", "0.6", "--trajectories", "2", "--max-rollouts", "3",
                 "--out", str(searched)]) == 0  # fmt: skip
    argv = ["tune", "--model", pipe_folder, "--budget", "0.8", "-n", "4", "--steps", "6", "--batch-size", "2",
            "--schedules", str(searched / "schedule.json"), "--out", str(tmp_path / "out")]  # fmt: skip
    assert main([*argv, "--only", "ddpm@3"]) == 0
    report = json.loads((tmp_path / "out" / "tune.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert set(rows) == {"full", "ddpm@3", "search-0.6"} and rows["search-0.6"]["kind"] == "schedule"
    assert rows["search-0.6"]["psnr_interval"] is not None
    assert main([*argv, "--only", "ddpm@99"]) == 2
    assert "no candidate ddpm@99" in capsys.readouterr().err


def test_a_search_started_from_a_schedule_file_refines_its_table(tmp_path):
    blocks = find_blocks(tiny_unet())
    timesteps = search.sampler_timesteps(DDPMScheduler(**DDPM_NOISE), STEPS, "ddim")
    table = np.full((len(blocks), STEPS), REUSE, dtype=np.int8)
    table[:, [0, 3]] = RUN
    start = Schedule(table, blocks.names, timesteps, block_shares=blocks.shares).save(tmp_path / "start.json")
    budget = 3 / STEPS + 0.07
    result = _search(tmp_path, budget, start=str(start))
    assert result.log[0]["latency_ratio"] == pytest.approx(_costs(len(blocks)).ratio(table, 1))
    assert budget - 0.02 <= result.latency_ratio <= budget + 1e-9 and result.psnr > result.start_psnr
    with pytest.raises(ValueError, match="other calls"):
        _search(tmp_path, budget, start=str(start), steps=STEPS - 2)
    trimmed = _search(tmp_path, 1.5 / STEPS, start=str(start))  # over budget: call 3 is turned to reuse
    first = trimmed.log[0]["latency_ratio"]
    assert first == pytest.approx(1 / STEPS) and trimmed.latency_ratio <= 1.5 / STEPS + 1e-9


def test_a_search_on_another_solver_is_scored_and_timed_against_the_reference_run(monkeypatch):
    """The solver chosen with the table: a table on 4 DDIM steps, scored against the full model's run at 8
    and budgeted as a share of its 8 calls, spends that budget (a full call 1/8, a half 1/16), and the end
    check times the full model at 8 steps."""
    model, scheduler = tiny_unet(), DDPMScheduler(**DDPM_NOISE)
    blocks = find_blocks(model)
    config = SearchConfig(steps=4, sampler="ddim", samples=2, reference_run="ddim@8",
                          target_latency_ratio=0.44, max_rollouts=40, starts=2, check_rounds=1)  # fmt: skip
    by_hand = sample_lockstep(model, {"r": None}, 2, steps=8, sampler="ddim", seed=search.TRAIN_SEED,
                              scheduler=scheduler, progress=False)["r"].images  # fmt: skip
    torch.testing.assert_close(search.references(model, scheduler, blocks, config)["run"], by_hand)
    real, full_steps = search._sample, []

    def recorded(model, scheduler, methods, config, steps=None, sampler=None, samples=None):
        if "full" in methods:
            full_steps.append(steps or config.steps)
        return real(model, scheduler, methods, config, steps, sampler, samples)

    monkeypatch.setattr(search, "_sample", recorded)
    result = search_schedule(model, scheduler, config, progress=False, costs=_costs(len(blocks)))
    actions = result.schedule.actions
    assert actions.shape == (len(blocks), 4) and result.log[0]["latency_ratio"] == pytest.approx(3 / 8)
    by_hand = sum(_costs(len(blocks)).run[k] for k, j in zip(*np.nonzero(actions == RUN), strict=True)) / 8
    assert result.latency_ratio == pytest.approx(by_hand) and 0.42 <= result.latency_ratio <= 0.44 + 1e-9
    assert full_steps == [8, 8]  # the reference, then the end check's full model
    assert "ddim@8" in result.schedule.settings["objective"]
    assert result.schedule.settings["reference_run"] == "ddim@8"
    with pytest.raises(ValueError, match="timing_batch must be positive"):
        SearchConfig(timing_batch=0)
    for bad in ("ddim", "ddim@x", "@8", "ddim@1"):
        with pytest.raises(ValueError, match="SOLVER@STEPS"):
            SearchConfig(reference_run=bad)


def test_tune_runs_a_table_searched_on_another_solver_with_that_solver(pipe_folder, tmp_path, capsys):  # noqa: F811
    """lees route --reference-run: a table on 3 DDIM steps against DDPM's 6; lees tune, whose reference is
    DDPM at 6 steps, runs it as a row with DDIM at 3 (its FLOPs a share of the 6 calls)."""
    searched = tmp_path / "search-ddim"
    route = ["route", "--model", pipe_folder, "--steps", "3", "--sampler", "ddim", "--objective", "search",
             "--reference-run", "ddpm@6", "--target-latency-ratio", "0.4", "--trajectories", "2",
             "--max-rollouts", "3", "--out", str(searched)]  # fmt: skip
    assert main(route) == 0
    assert "of the full model's at ddpm@6" in capsys.readouterr().out
    schedule = Schedule.load(searched / "schedule.json")
    argv = ["tune", "--model", pipe_folder, "--budget", "0.8", "-n", "4", "--steps", "6", "--batch-size", "2",
            "--schedules", str(searched / "schedule.json"), "--only", "ddpm@3",
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    rows = {r["name"]: r for r in json.loads((tmp_path / "out" / "tune.json").read_text())["rows"]}
    assert (rows["search-ddim"]["solver"], rows["search-ddim"]["steps"]) == ("ddim", 3)
    assert rows["search-ddim"]["flop_ratio"] == pytest.approx(schedule.flop_ratio * 3 / 6)
    assert main(["route", "--model", pipe_folder, "--steps", "3", "--reference-run", "ddpm@6",
                 "--out", str(tmp_path / "r")]) == 2  # fmt: skip
    assert "--reference-run score a search's rollouts" in capsys.readouterr().err
