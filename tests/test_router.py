"""The step router learns where to refresh, and its pieces do what they say."""

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from torch import nn

from lees import FORECAST, REUSE, RUN, RouterConfig, find_blocks, train_router
from lees.learn.router import carry_weights, hard_actions
from lees.schedules.baselines import reuse_baseline


class _Residual(nn.Module):
    """x + conv(c): a constant residual (steady) or x + conv(x) * cos(t / 30) (moving with time)."""

    def __init__(self, moving: bool) -> None:
        super().__init__()
        self.moving = moving
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.register_buffer("const", torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(3)))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if not self.moving:
            return x + self.conv(self.const).expand_as(x)
        return x + self.conv(x) * torch.cos(t.float() / 30).view(-1, 1, 1, 1)


class _Toy(nn.Module):
    config = {"in_channels": 1, "sample_size": 4}

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.steady, self.moving = _Residual(False), _Residual(True)

    def forward(self, x, t, **_):
        return self.moving(self.steady(x, t), t) * 0.1


def test_router_refreshes_the_block_that_changes_and_reuses_the_one_that_does_not():
    model = _Toy().eval()
    blocks = find_blocks(
        model, names=["steady", "moving"], example_inputs=(torch.zeros(1, 1, 4, 4), torch.tensor([5]))
    )
    rest = 1 - sum(blocks.shares)
    target = rest + blocks[1].share + 0.02  # room for the moving block at every step, not for both
    config = RouterConfig(
        steps=10, target_flop_ratio=target, train_steps=150, batch_size=4, trajectories=8, lr=0.1
    )
    result = train_router(model, DDPMScheduler(num_train_timesteps=1000), config, blocks, progress=False)
    actions = result.schedule.actions
    assert result.schedule.flop_ratio <= target + 1e-9
    assert (actions[:, 0] == RUN).all()
    assert (actions[0, 1:] == REUSE).mean() >= 0.8  # the steady block reuses
    assert (actions[1, 1:] == RUN).mean() >= 0.8  # the moving block keeps refreshing
    assert result.schedule.source == "router" and result.schedule.settings["target_flop_ratio"] == target


def test_carry_weights_pick_the_last_run():
    w = torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0, 0.0]])
    carry = carry_weights(w, 4)
    assert carry.tolist() == [[0, 0, 1, 0], [0, 0, 0, 1]]
    soft = carry_weights(torch.full((1, 4), 0.5), 3)
    assert torch.allclose(soft, torch.tensor([[0.25, 0.25, 0.5]])) and soft.sum() == pytest.approx(1)


def test_hard_actions_meet_the_budget_by_the_least_confident_runs():
    logits = torch.tensor([[5.0, 3.0, 0.2, 4.0], [5.0, 0.1, 2.0, 0.3]])
    weights = torch.full((2, 4), 0.5 / 4)
    free = hard_actions(logits, weights, rest=0.0, target=None)
    assert (free == RUN).all()
    budget = hard_actions(logits, weights, rest=0.0, target=0.75)
    assert (budget == RUN).sum() == 6 and budget[1, 1] == REUSE and budget[0, 2] == REUSE
    assert np.all(budget[:, 0] == RUN)


def test_hard_actions_spend_a_budget_above_the_runs_by_the_most_confident_reuses():
    """Logits that run 3 cells of 8 (step 0 and one more) under a budget of 6: the 3 reuses with the
    highest logits turn into runs and no more. With uneven block costs a cell that would overshoot is
    left out while a cheaper, less confident one that fits goes in."""
    logits = torch.tensor([[-9.0, -3.0, -0.2, 4.0], [-9.0, -0.1, -2.0, -5.0]])
    weights = torch.full((2, 4), 0.5 / 4)
    budget = hard_actions(logits, weights, rest=0.1, target=0.1 + 6 * 0.125)
    expected = np.array([[RUN, REUSE, RUN, RUN], [RUN, RUN, RUN, REUSE]])
    assert np.array_equal(budget == RUN, expected == RUN)
    uneven = torch.tensor([[0.25] * 4, [0.0625] * 4])  # block 0 costs 4 x block 1
    budget = hard_actions(-logits, uneven, rest=0.0, target=0.3125 + 0.125)  # room for 0.125 past step 0
    assert (budget[0, 1:] == REUSE).all() and (budget[1, 1:] == RUN).sum() == 2
    assert budget[1, 3] == RUN and budget[1, 2] == RUN  # the two most confident of block 1's cells


def test_the_router_spends_a_budget_unreachable_from_its_start():
    """Asked for 0.8 of the FLOPs from a start that runs 0.5 (both blocks every 2nd step): the table
    lands within 0.02 below 0.8, and the runs it adds go to the block whose output moves (it runs at
    almost every step), not to the steady one, whose reuse costs nothing. The multiplier stays at 0
    (the start is within the budget), so the error term alone ranks the cells."""
    from lees import pipeline_timesteps
    from lees.schedules.baselines import uniform_schedule

    model = _Toy().eval()
    blocks = find_blocks(
        model, names=["steady", "moving"], example_inputs=(torch.zeros(1, 1, 4, 4), torch.tensor([5]))
    )
    noise = DDPMScheduler(num_train_timesteps=1000)
    start = uniform_schedule(blocks, pipeline_timesteps(DDPMScheduler(num_train_timesteps=1000), 30), 2)
    assert start.flop_ratio == pytest.approx(0.5, abs=0.02)
    config = RouterConfig(
        steps=30, target_flop_ratio=0.8, train_steps=40, batch_size=4, trajectories=4, lr=0.1
    )
    result = train_router(model, noise, config, blocks, progress=False, start=start)
    schedule = result.schedule
    assert 0.8 - 0.02 <= schedule.flop_ratio <= 0.8 + 1e-9
    assert all(row["lambda"] == 0 for row in result.log)
    steady, moving = (schedule.actions == RUN).mean(axis=1)
    assert moving >= 0.9 and moving > steady + 0.2


def test_a_start_schedule_sets_the_first_logits_and_must_fit():
    from lees import Schedule
    from lees.learn.router import start_logits

    blocks = find_blocks(
        _Toy().eval(), names=["steady", "moving"], example_inputs=(torch.zeros(1, 1, 4, 4), torch.tensor([5]))
    )
    actions = np.array([[RUN, REUSE, RUN], [RUN, RUN, REUSE]], dtype=np.int8)
    start = Schedule(actions, blocks.names, [900, 500, 100], "manual", {}, blocks.shares)
    logits = start_logits(start, blocks, [900, 500, 100], 2.0)
    assert torch.equal(logits, torch.tensor([[2.0, -2.0, 2.0], [2.0, 2.0, -2.0]]))
    assert torch.equal(start_logits(None, blocks, [900, 500, 100], 0.5), torch.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="not the router's"):
        start_logits(start, blocks, [900, 400, 100], 2.0)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_transition_weights_are_the_kl_of_diffusers_own_ddpm_step(kind, variance):
    """(d mean / d output)^2 / (2 var), with the mean's slope and the noise measured on diffusers'
    DDPMScheduler.step itself (same generator: the added noise cancels in the difference)."""
    from lees.diffusion.samplers import make_sampler
    from lees.learn.router import transition_weights

    scheduler = DDPMScheduler(prediction_type=kind, variance_type=variance, clip_sample=False)
    sampler = make_sampler(scheduler, "ddpm", 10)
    visited = [int(t) for t in sampler.timesteps]
    weights = transition_weights(sampler, visited)
    x, out = torch.zeros(1, 1, 1, 1, dtype=torch.float64), torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    drawn = float(torch.randn(1, generator=torch.Generator().manual_seed(0), dtype=x.dtype))
    for j, t in enumerate(sampler.timesteps[:-1]):

        def step(o, t=t):
            return sampler.step(o, t, x, generator=torch.Generator().manual_seed(0)).prev_sample

        slope = float(step(out + 1) - step(out))
        noise = float(step(out)) / drawn
        assert float(weights[j]) == pytest.approx(slope**2 / (2 * noise**2), rel=1e-6)
    if variance == "fixed_small":  # the last step's posterior variance is 0: the largest finite weight
        assert weights[-1] == weights[:-1].max()
        assert weights[-2] > 10 * weights[len(weights) // 2]  # the last steps weigh most


def test_the_kl_objective_needs_ddpm():
    with pytest.raises(ValueError, match="DDIM adds no noise"):
        RouterConfig(objective="kl", sampler="ddim")


def test_a_start_or_scheduler_that_does_not_fit_is_refused_before_the_teacher_runs(monkeypatch):
    import lees.learn.router
    from lees import Schedule

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher ran before the input was checked")

    monkeypatch.setattr(lees.learn.router, "teacher_trajectory", no_teacher)
    model = _Toy().eval()
    blocks = find_blocks(
        model, names=["steady", "moving"], example_inputs=(torch.zeros(1, 1, 4, 4), torch.tensor([5]))
    )
    start = Schedule.full(blocks, [900, 500, 100])
    with pytest.raises(ValueError, match="not the router's"):
        train_router(model, DDPMScheduler(), RouterConfig(steps=10), blocks, progress=False, start=start)
    learned = DDPMScheduler(variance_type="learned")
    with pytest.raises(ValueError, match="fixed DDPM variance"):
        train_router(model, learned, RouterConfig(steps=10, objective="kl"), blocks, progress=False)


def test_the_default_start_is_the_baseline_within_the_budget(tiny):
    blocks = find_blocks(tiny)
    config = RouterConfig(steps=6, target_flop_ratio=0.75, train_steps=1, batch_size=2, trajectories=2)
    noise = DDPMScheduler(num_train_timesteps=1000)
    result = train_router(tiny, noise, config, blocks, progress=False)
    start = result.schedule.settings["start"]
    assert (
        start["source"] == "deepcache"
        and start["interval"] == reuse_baseline(blocks, result.schedule.timesteps, 0.75).settings["interval"]
    )
    full = train_router(tiny, noise, config, blocks, progress=False, start="full")
    assert full.schedule.settings["start"] is None
    with pytest.raises(ValueError, match="start must be a schedule, 'baseline' or 'full'"):
        train_router(tiny, noise, config, blocks, progress=False, start="uniform")


# --- any diffusers scheduler: the columns are the model calls of one run -------------------------------


def _few(**settings) -> RouterConfig:
    return RouterConfig(**{"steps": 4, "train_steps": 2, "batch_size": 2, "trajectories": 2, **settings})


def _teacher(model, scheduler, config, **conditions):
    from lees.engine.hooks import Engine
    from lees.learn.router import teacher_trajectory

    engine = Engine(model, find_blocks(model))
    with engine.attached():
        return engine, teacher_trajectory(engine, scheduler, config, conditions=conditions or None)


def _student_is_the_teacher_with_every_block_run(engine, traj, scheduler, config):
    """With every block run (w = 1) the student's step and its own rollout (a fresh solver) are the
    teacher's up to float rounding: what the losses measure is the schedule's reuse alone."""
    from lees.learn import router

    ones = torch.ones(engine.num_blocks, len(traj.timesteps))
    idx = torch.arange(config.trajectories)
    with engine.attached():
        for j in range(1, len(traj.timesteps)):
            loss = router._step_loss(engine, ones, traj, idx, j, config, "cpu")
            assert loss < 1e-10 * traj.targets[j].pow(2).mean()
        run = router._solver_run(scheduler, config, torch.device("cpu"))
        loss = router._rollout_loss(engine, ones, traj, idx, run, "cpu")
        assert loss < 1e-8 * traj.states.pow(2).mean()


def test_a_flow_dit_router_runs_in_its_pipeline_at_the_pipeline_timesteps(tmp_path):
    """Flow matching: float columns equal to pipeline_timesteps; the guided teacher's [cond, null] call
    is routed as lees.enable routes it in ClassFlowPipeline, which then samples what lees.sample does."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    import lees
    from lees.diffusion.samplers import sample_generators
    from lees.models.architectures import FLOW_NOISE
    from lees.models.denoisers import draw_labels
    from lees.models.pipelines import ClassFlowPipeline
    from lees.schedules.saving import save_pretrained

    from .test_solvers import small_dit

    model, scheduler = small_dit(), FlowMatchEulerDiscreteScheduler(**FLOW_NOISE)
    config = _few(guidance_scale=2.0, target_flop_ratio=0.8, objective="rollout")
    schedule = train_router(model, scheduler, config, progress=False).schedule
    assert schedule.timesteps == lees.pipeline_timesteps(FlowMatchEulerDiscreteScheduler(**FLOW_NOISE), 4)
    assert all(isinstance(t, float) for t in schedule.timesteps) and schedule.settings["sampler"] == "euler"
    assert schedule.reuses and schedule.flop_ratio <= 0.8 + 1e-9
    save_pretrained(schedule, tmp_path, model=model)
    gens = sample_generators(0, range(2), torch.device("cpu"))
    labels = draw_labels(model, gens, torch.device("cpu"))
    latents = torch.stack([torch.randn(1, 16, 16, generator=g) for g in gens])
    pipe = ClassFlowPipeline(model, scheduler)
    pipe.set_progress_bar_config(disable=True)
    lees.enable(pipe, tmp_path)
    try:
        piped = pipe(labels, 2.0, 4, latents=latents, output_type="pt").images
    finally:
        lees.disable(pipe)
    own = lees.sample(model, schedule, 2, scheduler=scheduler, guidance_scale=2.0, progress=False)
    assert torch.allclose((own / 2 + 0.5).clamp(0, 1), piped, atol=1e-5)
    engine, traj = _teacher(model, scheduler, config)
    assert traj.residuals[0].shape[1] == 2 * config.trajectories  # [cond, null] rows
    _student_is_the_teacher_with_every_block_run(engine, traj, scheduler, config)


def test_a_multistep_solver_steps_afresh_in_every_rollout(tiny):
    from diffusers import DPMSolverMultistepScheduler

    import lees

    scheduler = DPMSolverMultistepScheduler(num_train_timesteps=1000)
    config = _few(objective="rollout", target_flop_ratio=0.8)
    schedule = train_router(tiny, scheduler, config, progress=False).schedule
    assert schedule.timesteps == lees.pipeline_timesteps(DPMSolverMultistepScheduler(), 4)
    assert schedule.settings["sampler"] == "dpm++"
    assert schedule.settings["scheduler"] == "DPMSolverMultistepScheduler"
    engine, traj = _teacher(tiny, scheduler, config)
    _student_is_the_teacher_with_every_block_run(engine, traj, scheduler, config)
    with pytest.raises(ValueError, match="needs the ddpm sampler .DDPMScheduler., not DPMSolverMultistep"):
        train_router(tiny, scheduler, _few(objective="kl"), progress=False)


def test_heun_gets_one_column_per_model_call(tiny):
    from diffusers import HeunDiscreteScheduler

    import lees

    scheduler = HeunDiscreteScheduler(num_train_timesteps=1000)
    calls = []
    tiny.register_forward_pre_hook(lambda module, args: calls.append(args[1][0].item()))
    config = _few(steps=3, trajectories=1, batch_size=1)
    engine, traj = _teacher(tiny, scheduler, config)
    expected = lees.pipeline_timesteps(HeunDiscreteScheduler(num_train_timesteps=1000), 3)
    assert traj.timesteps == expected == calls[-len(expected) :]
    assert len(expected) == 5  # two calls a step but the last
    _student_is_the_teacher_with_every_block_run(engine, traj, scheduler, config)
    schedule = train_router(tiny, scheduler, config, progress=False).schedule
    assert schedule.timesteps == expected and schedule.settings["sampler"] == "heun"


def test_prompt_conditions_go_to_the_denoiser_one_row_per_trajectory(tmp_path):
    from safetensors.torch import save_file

    from lees.cli import main
    from lees.schedules.schedule import Schedule

    from .families import FAMILIES

    model = FAMILIES["sd"].make_model()
    prompts = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(0))
    seen = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["encoder_hidden_states"]), with_kwargs=True
    )
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    config = _few(trajectories=3, train_steps=1)
    engine, traj = _teacher(model, scheduler, config, encoder_hidden_states=prompts)
    assert all(torch.equal(s, prompts[[0, 1, 0]]) for s in seen[-4:])  # trajectory i: row i mod 2
    _student_is_the_teacher_with_every_block_run(engine, traj, scheduler, config)
    handle.remove()
    with pytest.raises(ValueError, match="conditioned on text .* --prompts"):
        train_router(model, scheduler, config, progress=False)
    model.save_pretrained(tmp_path / "sd" / "unet")
    scheduler.save_pretrained(tmp_path / "sd" / "scheduler")
    save_file({"encoder_hidden_states": prompts}, tmp_path / "prompts.safetensors")
    argv = ["route", "--model", str(tmp_path / "sd"), "--steps", "3", "--train-steps", "1", "--trajectories",
            "2", "--batch-size", "2", "--conditions", str(tmp_path / "prompts.safetensors"),
            "--out", str(tmp_path / "r")]  # fmt: skip
    assert main(argv) == 0
    schedule = Schedule.load(tmp_path / "r" / "schedule.json")
    assert schedule.num_steps == 3 and schedule.settings["scheduler"] == "DDPMScheduler"


def test_joint_blocks_route_both_streams():
    """SD3's joint blocks keep a residual per stream (the last block's text stream is dropped: None)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from .families import FAMILIES

    model = FAMILIES["sd3"].make_model()
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    gen = torch.Generator().manual_seed(0)
    conditions = {"encoder_hidden_states": torch.randn(2, 6, 16, generator=gen),
                  "pooled_projections": torch.randn(2, 16, generator=gen)}  # fmt: skip
    config = _few(target_flop_ratio=0.8)
    engine, traj = _teacher(model, scheduler, config, **conditions)
    assert all(isinstance(r, tuple) and len(r) == 2 for r in traj.residuals)
    assert traj.residuals[-1][1] is None and traj.residuals[0][1].shape[:2] == (4, 2)
    _student_is_the_teacher_with_every_block_run(engine, traj, scheduler, config)
    schedule = train_router(model, scheduler, config, progress=False, conditions=conditions).schedule
    assert schedule.block_names == find_blocks(model).names and schedule.flop_ratio <= 0.8 + 1e-9


def test_a_schedule_far_from_the_budget_warns_with_its_figure():
    import warnings

    from lees import Schedule
    from lees.learn.router import warn_off_budget

    blocks = find_blocks(
        _Toy().eval(), names=["steady", "moving"], example_inputs=(torch.zeros(1, 1, 4, 4), torch.tensor([5]))
    )
    full = Schedule.full(blocks, [900, 500, 100])
    with pytest.warns(UserWarning, match="runs 1.000 of the FLOPs, not the 0.700 asked for"):
        warn_off_budget(full, 0.7)
    with pytest.warns(UserWarning, match="not the 0.970 asked for"):
        warn_off_budget(full, 0.97)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_off_budget(full, 0.985)  # within 0.02
        warn_off_budget(full, None)  # lambda mode: no budget


def test_route_takes_a_diffusers_scheduler_by_class_name(folder, tmp_path, capsys):
    from lees.cli import main
    from lees.schedules.schedule import Schedule

    base = ["route", "--model", folder, "--steps", "3", "--train-steps", "1", "--trajectories", "2",
            "--batch-size", "2", "--out", str(tmp_path / "r")]  # fmt: skip
    assert main([*base, "--scheduler", "DPMSolverMultistepScheduler"]) == 0
    schedule = Schedule.load(tmp_path / "r" / "schedule.json")
    assert schedule.settings["scheduler"] == "DPMSolverMultistepScheduler" and schedule.num_steps == 3
    assert "model calls of dpm++" in capsys.readouterr().out
    assert main([*base, "--scheduler", "DPMSolverMultistepScheduler", "--sampler", "ddim"]) != 0
    assert "not both" in capsys.readouterr().err
    assert main([*base, "--scheduler", "Nope"]) != 0
    assert "is no diffusers scheduler" in capsys.readouterr().err


def test_custom_timesteps_and_a_scheduler_no_solver_names(tiny):
    from diffusers import DPMSolverMultistepScheduler

    from lees.sampling.lockstep import schedule_sampler

    noise = DDPMScheduler(num_train_timesteps=1000)
    schedule = train_router(tiny, noise, _few(timesteps=[900, 600, 300, 100]), progress=False).schedule
    assert schedule.timesteps == [900, 600, 300, 100] and schedule.settings["steps"] == 4
    third = DPMSolverMultistepScheduler(num_train_timesteps=1000, solver_order=3)
    schedule = train_router(tiny, third, _few(), progress=False).schedule
    assert schedule.settings["sampler"] is None and schedule.settings["scheduler"] == type(third).__name__
    with pytest.raises(ValueError, match="made for a DPMSolverMultistepScheduler no lees solver names"):
        schedule_sampler(schedule, None, noise)


# --- the forecast action, learned ------------------------------------------------------------------------


def test_a_forecast_cell_is_the_polynomial_through_the_blocks_last_runs():
    """Order 1: the line through the last two runs before j; order 2: the parabola through three;
    step 0 counts as a run; by hand."""
    from lees.learn.router import forecast_residual

    residuals = torch.randn(6, 3, 2, generator=torch.Generator().manual_seed(0))  # (calls, rows, ...)
    runs = torch.tensor([False, True, False, True, False, False])  # step 0 and 1 and 3 run
    rows = torch.tensor([0, 2])
    r0, r1, r3 = (residuals[i, rows] for i in (0, 1, 3))
    line = forecast_residual(residuals, runs, 5, 1, rows, "cpu")
    assert torch.allclose(line, r3 + (r3 - r1) * (5 - 3) / (3 - 1))
    parabola = forecast_residual(residuals, runs, 5, 2, rows, "cpu")
    l0, l1, l3 = (5 - 1) * (5 - 3) / ((0 - 1) * (0 - 3)), (5 - 0) * (5 - 3) / ((1 - 0) * (1 - 3)), (5 - 0) * (
        5 - 1) / ((3 - 0) * (3 - 1))  # fmt: skip
    assert torch.allclose(parabola, l0 * r0 + l1 * r1 + l3 * r3, atol=1e-5)
    assert torch.equal(forecast_residual(residuals, runs, 1, 2, rows, "cpu"), r0)  # one run: reuse


@pytest.mark.parametrize("order", [1, 2])
def test_the_step_loss_of_hard_decisions_is_the_engines_run_of_that_column(order):
    """At hard decisions (w, u in {0, 1}) the student the step objective trains is the engine running the
    schedule's column j: run, reuse the last run's residual, or forecast from the last runs at position j
    (a cache filled by hand with the teacher's residuals)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from lees.engine.hooks import ReuseCache
    from lees.learn import router
    from lees.models.architectures import FLOW_NOISE

    from .test_solvers import small_dit

    model = small_dit()
    config = _few(steps=6, trajectories=2, guidance_scale=2.0, forecast_order=order)
    engine, traj = _teacher(model, FlowMatchEulerDiscreteScheduler(**FLOW_NOISE), config)
    k = engine.num_blocks
    actions = torch.tensor([[RUN, REUSE, RUN, RUN, RUN, FORECAST],  # the small DiT's 2 blocks
                            [RUN, RUN, REUSE, RUN, FORECAST, REUSE]])  # fmt: skip
    runs = actions == RUN
    w, u = runs.float(), (actions == FORECAST).float()
    idx = torch.arange(2)
    rows = traj.rows(idx)
    for j in (4, 5):
        with engine.attached():
            loss = router._step_loss(engine, w, traj, idx, j, config, "cpu", (u, runs))
            cache = ReuseCache(k, forecast=[True] * k, order=order)
            for b in range(k):
                done = [i for i in range(j) if runs[b, i]][-(order + 1) :]
                cache.history[b] = [(i, traj.residuals[b][i, rows]) for i in done]
                cache.residuals[b] = traj.residuals[b][done[-1], rows]
            t = torch.full((2,), traj.timesteps[j])
            with engine.deciding(actions[:, j].tolist(), "hard", cache, position=j):
                pred = router._predict(model, traj.inputs[j, idx], t, router._batch_cond(traj, idx), 2.0)
        expected = float(nn.functional.mse_loss(pred, traj.targets[j, idx]))
        assert float(loss) == pytest.approx(expected, rel=1e-4)


class _Linear(_Residual):
    """x + conv(c) * t / 1000: a residual on a line in the timestep (evenly spaced: in the call)."""

    def __init__(self) -> None:
        super().__init__(False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x + self.conv(self.const) * (t.float() / 1000).view(-1, 1, 1, 1)


class _LinearToy(nn.Module):
    config = {"in_channels": 1, "sample_size": 4}

    def __init__(self) -> None:
        super().__init__()
        self.steady, self.linear = _Residual(False), _Linear()

    def forward(self, x, t, **_):
        return self.linear(self.steady(x, t), t) * 0.1


def test_the_router_learns_to_forecast_the_block_whose_residual_moves_on_a_line():
    """Under a third of the FLOPs the runs go to the linear block (the steady one's reuse is exact), and
    between its runs the line through the last two is exact, reuse is not: the learner forecasts every
    cell of it that does not run (but a first one with one run before it, where the two are the same),
    the schedule keeps the order, and the table meets the budget."""
    from lees import pipeline_timesteps
    from lees.schedules.baselines import uniform_schedule

    model = _LinearToy().eval()
    blocks = find_blocks(
        model, names=["steady", "linear"], example_inputs=(torch.zeros(1, 1, 4, 4), torch.tensor([5]))
    )
    noise = DDPMScheduler(num_train_timesteps=1000)
    start = uniform_schedule(blocks, pipeline_timesteps(DDPMScheduler(num_train_timesteps=1000), 12), 3)
    config = RouterConfig(steps=12, target_flop_ratio=start.flop_ratio + 1e-6, train_steps=80, batch_size=4,
                          trajectories=4, lr=0.1, forecast_order=1)  # fmt: skip
    result = train_router(model, noise, config, blocks, progress=False, start=start)
    schedule = result.schedule
    assert schedule.forecast_order == 1 and schedule.flop_ratio <= config.target_flop_ratio
    linear = schedule.actions[1]
    after_two_runs = np.cumsum(linear == RUN) >= 2
    between = linear[(linear != RUN) & after_two_runs]
    assert len(between) >= 3 and (between == FORECAST).all()
    assert result.forecast_logits.shape == result.logits.shape


def test_the_forecast_action_needs_an_order_and_the_step_objective():
    with pytest.raises(ValueError, match="0 .none., 1 or 2"):
        RouterConfig(forecast_order=3)
    with pytest.raises(ValueError, match="step or kl objective"):
        RouterConfig(forecast_order=1, objective="rollout")
