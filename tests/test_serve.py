"""A pipeline with lees enabled in a server: a policy per step count, what an unfitted run does
(on_mismatch), runs broken off by an exception and started afresh, threads, and a short soak
(benchmarks/soak.py runs the long one)."""

import copy
import importlib.util
import threading
from pathlib import Path

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

import lees
from lees import ScheduleError
from lees.engine.actions import FORECAST
from lees.models.pipelines import ClassFlowPipeline
from lees.schedules.baselines import uniform_schedule
from lees.schedules.tuned import TunedScheduler, load_policies, load_tuned, save_policies

SPEC = importlib.util.spec_from_file_location("soak", Path(__file__).parents[1] / "benchmarks" / "soak.py")
soak = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(soak)


def request(steps: int, size: int = 8, batch: int = 2, guidance: str = "batched", seed: int = 0) -> dict:
    return {"steps": steps, "size": size, "batch": batch, "guidance": guidance, "seed": seed}


@pytest.fixture(scope="module")
def pristine():
    return soak.tiny_dit()


@pytest.fixture(scope="module")
def folder(pristine, tmp_path_factory):
    folder = tmp_path_factory.mktemp("policy")
    soak.save_policy(pristine, folder)
    return folder


def fresh(pristine) -> ClassFlowPipeline:
    return soak.quiet(ClassFlowPipeline(copy.deepcopy(pristine), FlowMatchEulerDiscreteScheduler()))


def schedule_pipe(pristine, steps: int, forecast: bool):
    """A fresh pipeline enabled with a reuse (or forecasting) schedule for ``steps``."""
    pipe = fresh(pristine)
    timesteps = lees.pipeline_timesteps(pipe.scheduler, steps)
    between = FORECAST if forecast else lees.REUSE
    lees.enable(pipe, uniform_schedule(lees.find_blocks(pipe.transformer), timesteps, 3, between=between))
    return pipe


# -- 1. a policy per step count --------------------------------------------------------------------


def test_a_policy_file_holds_a_winner_per_step_count(folder):
    policies = load_policies(folder)
    assert sorted(policies) == list(soak.POLICY_STEPS)
    assert [p.kind for p in policies.values()] == ["schedule", "schedule", "cache", "steps"]
    assert load_tuned(folder, 12).solver == "dpm++" and lees.tuned(folder, 12) == {"num_inference_steps": 12}
    with pytest.raises(ScheduleError, match="is for 6, 8, 10, 12 steps: name one"):
        lees.tuned(folder)


def test_each_call_runs_its_step_counts_winner(pristine, folder, capsys):
    pipe = fresh(pristine)
    lees.enable(pipe, folder)
    assert capsys.readouterr().out.count("lees: tuned policy") == 4  # one line per step count
    assert isinstance(pipe.scheduler, TunedScheduler)
    # 6 steps: the uniform-2 schedule, as enabling that schedule alone runs it
    alone = fresh(pristine)
    lees.enable(alone, load_tuned(folder, 6).schedule)
    assert torch.equal(soak.call(pipe, request(6)), soak.call(alone, request(6)))
    # 12 steps: DPM++ at 8 steps, the full model
    dpm = fresh(pristine)
    dpm.scheduler = lees.diffusion.solvers.make_solver(dpm.scheduler, "dpm++")
    assert torch.equal(soak.call(pipe, request(12)), soak.call(dpm, request(8)))
    assert len(pipe.scheduler.timesteps) == 8
    # back to 6 after 12: the schedule again; 8: the forecasting schedule, not the 6-step one
    assert torch.equal(soak.call(pipe, request(6)), soak.call(alone, request(6)))
    lees.disable(pipe)
    assert type(pipe.scheduler) is FlowMatchEulerDiscreteScheduler and soak.no_lees_left(pipe)


def test_tune_at_several_step_counts_saves_one_policy(tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler

    from lees.cli import main
    from lees.models.architectures import DDPM_NOISE

    from .test_tune import tiny_unet32

    model = tmp_path / "pipe"
    DDPMPipeline(unet=tiny_unet32(), scheduler=DDPMScheduler(**DDPM_NOISE)).save_pretrained(model)
    argv = ["tune", "--model", str(model), "--budget", "0.95", "-n", "2", "--steps", "4", "6", "--batch-size",
            "2", "--quick", "--router-train-steps", "2", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    assert (tmp_path / "out" / "steps-4" / "tune.json").is_file()
    assert (tmp_path / "out" / "steps-6" / "tune.json").is_file()
    policies = load_policies(model)
    assert policies is not None and set(policies) <= {4, 6}
    assert all(p.reference["steps"] == n for n, p in policies.items())


def test_route_at_several_step_counts_saves_a_policy_each_call_runs_its_schedule(pristine, tmp_path):
    from lees.cli import main

    model = tmp_path / "pipe"
    fresh(pristine).save_pretrained(model)
    argv = ["route", "--model", str(model), "--steps", "4", "6", "--sampler", "euler", "--train-steps", "2",
            "--trajectories", "2", "--batch-size", "2", "--guidance-scale", "1",
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    policies = load_policies(tmp_path / "out")
    assert sorted(policies) == [4, 6] and {p.kind for p in policies.values()} == {"schedule"}
    pipe = fresh(pristine)
    lees.enable(pipe, tmp_path / "out")
    for steps in (4, 6, 4):
        alone = fresh(pristine)
        lees.enable(alone, lees.Schedule.load(tmp_path / "out" / f"steps-{steps}" / "schedule.json"))
        assert torch.equal(soak.call(pipe, request(steps)), soak.call(alone, request(steps)))
    lees.disable(pipe)
    assert soak.no_lees_left(pipe)


# -- 2. on_mismatch ------------------------------------------------------------------------------------


def test_an_unfitted_call_raises_by_default_or_runs_plain(pristine, folder):
    pipe = fresh(pristine)
    soak.enable(pipe, folder)  # (soak.enable: with on_mismatch="full")
    lees.enable(pipe, folder)  # the default: "raise"
    with pytest.raises(ScheduleError, match="tuned policy is for 6, 8, 10, 12 steps, this call asks for 7 "):
        soak.call(pipe, request(7))
    lees.enable(pipe, folder, on_mismatch="full")
    plain = fresh(pristine)
    with pytest.warns(UserWarning, match="asks for 7 steps: it runs the pipeline's own scheduler") as caught:
        outs = [soak.call(pipe, request(7, seed=s)) for s in range(3)]
    assert len([w for w in caught if "asks for" in str(w.message)]) == 1  # once per step count, not per call
    assert all(torch.equal(o, soak.call(plain, request(7, seed=s))) for s, o in enumerate(outs))
    with pytest.warns(UserWarning, match="asks for 9 steps"):
        soak.call(pipe, request(9))
    with pytest.raises(ValueError, match="on_mismatch is one of raise, full"):
        lees.enable(pipe, folder, on_mismatch="plain")


def test_a_schedule_on_another_grid_raises_or_runs_plain_once_warned(pristine):
    pipe = fresh(pristine)
    timesteps = lees.pipeline_timesteps(pipe.scheduler, 6)
    schedule = uniform_schedule(lees.find_blocks(pipe.transformer), timesteps, 3)
    lees.enable(pipe, schedule)
    with pytest.raises(ScheduleError, match="the schedule does not fit this run"):
        soak.call(pipe, request(7))
    lees.enable(pipe, schedule, on_mismatch="full")
    plain = fresh(pristine)
    with pytest.warns(UserWarning, match="This run goes plain") as caught:
        assert torch.equal(soak.call(pipe, request(7)), soak.call(plain, request(7)))
        assert torch.equal(soak.call(pipe, request(7, batch=1)), soak.call(plain, request(7, batch=1)))
    assert len([w for w in caught if "goes plain" in str(w.message)]) == 1
    fitted = schedule_pipe(pristine, 6, forecast=False)
    assert torch.equal(soak.call(pipe, request(6)), soak.call(fitted, request(6)))  # then fits again


# -- 3. runs broken off start fresh ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("point", "at", "forecast"), [(p, 1, False) for p in soak.POINTS] + [(p, 4, True) for p in soak.POINTS]
)  # at call 1 (then a run broken off after exactly one call) and 4 (where block 1 runs again)
def test_a_run_broken_off_anywhere_then_a_new_call_equals_a_fresh_one(pristine, point, at, forecast):
    pipe = schedule_pipe(pristine, 6, forecast)
    faults = soak.Faults(pipe.transformer)
    soak.call(pipe, request(6, size=16, batch=3))  # a run of another resolution and batch size first
    faults.arm(point, at)
    with pytest.raises(soak.Injected):
        soak.call(pipe, request(6, size=8, batch=1, guidance="split" if at == 1 else "batched"))
    faults.remove()
    after = soak.call(pipe, request(6, size=12, batch=2))  # no message about guidance: a new run
    assert torch.equal(after, soak.call(schedule_pipe(pristine, 6, forecast), request(6, size=12, batch=2)))


def test_a_diffusers_cache_run_broken_off_after_one_call_starts_fresh(pristine, folder):
    pipe = fresh(pristine)
    soak.enable(pipe, folder)
    faults = soak.Faults(pipe.transformer)
    soak.call(pipe, request(10, size=16, batch=3))
    faults.arm("after-call", 1)
    with pytest.raises(soak.Injected):
        soak.call(pipe, request(10, size=8, batch=1))
    faults.remove()
    twin = fresh(pristine)
    soak.enable(twin, folder)
    assert torch.equal(soak.call(pipe, request(10, size=12)), soak.call(twin, request(10, size=12)))


def test_a_short_soak():
    result = soak.soak(calls=40, seed=1, process_twins=2)
    assert result["equal"] == result["calls"] > 0 and result["faults"] > 0
    assert result["process_equal"] == result["process_twins"] > 0  # a fresh Python process agrees too
    assert result["tuned"] > 0 and result["mismatched"] > 0


# -- 5. threads ------------------------------------------------------------------------------------------


def run_in_thread(fn) -> BaseException | None:
    caught = []

    def target():
        try:
            fn()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            caught.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    return caught[0] if caught else None


def test_a_second_thread_is_refused_at_its_enable_and_mid_run(pristine):
    pipe = schedule_pipe(pristine, 6, forecast=False)  # enabled in this thread
    other = soak.quiet(
        ClassFlowPipeline(pipe.transformer, FlowMatchEulerDiscreteScheduler())
    )  # same denoiser
    timesteps = lees.pipeline_timesteps(other.scheduler, 6)
    schedule = uniform_schedule(lees.find_blocks(pristine), timesteps, 2)  # (the same block names)
    error = run_in_thread(lambda: lees.enable(other, schedule))
    assert isinstance(error, RuntimeError) and "a second enable from another thread" in str(error)
    assert "\n" not in str(error)
    # a call from a second thread while this thread's run is in progress
    seen = []

    def midway(*args):
        if not seen:
            seen.append(run_in_thread(lambda: soak.call(other, request(6))))

    handle = pipe.transformer.register_forward_hook(midway)
    first = soak.call(pipe, request(6))
    handle.remove()
    assert isinstance(
        seen[0], RuntimeError
    ) and "a call from a second thread while a run is in progress" in str(seen[0])
    twin = schedule_pipe(pristine, 6, forecast=False)
    assert torch.equal(first, soak.call(twin, request(6)))  # this thread's run went on undisturbed
    # one thread after the other: the second takes the denoiser over between runs
    outs = []
    assert run_in_thread(lambda: outs.append(soak.call(pipe, request(6, seed=3)))) is None
    assert torch.equal(outs[0], soak.call(twin, request(6, seed=3)))


@pytest.mark.parametrize("kind", ["steps", "cache"])
def test_a_policy_without_a_schedule_also_refuses_a_second_thread(pristine, folder, tmp_path, kind):
    (winner,) = [p for p in load_policies(folder).values() if p.kind == kind]
    save_policies([winner], tmp_path)
    pipe = fresh(pristine)
    lees.enable(pipe, tmp_path)
    soak.call(pipe, request(winner.reference_steps))  # this thread runs it
    other = soak.quiet(ClassFlowPipeline(pipe.transformer, FlowMatchEulerDiscreteScheduler()))
    error = run_in_thread(lambda: lees.enable(other, tmp_path))
    assert isinstance(error, RuntimeError) and "a second enable from another thread" in str(error)
    lees.disable(pipe)
    assert soak.no_lees_left(pipe)
