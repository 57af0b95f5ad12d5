"""The step router learns where to refresh, and its pieces do what they say."""

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from torch import nn

from lees import REUSE, RUN, RouterConfig, find_blocks, train_router
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
