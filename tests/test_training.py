import pytest
import torch
from diffusers import DDPMScheduler

from lees import find_blocks
from lees.learn.gate_training import (
    GateTrainConfig,
    cost_weights,
    gate_kl,
    gated_share,
    meet_gated_share,
    train_gates,
)
from lees.models.architectures import DDPM_NOISE
from lees.schedules.gates import SigmoidTimeGate
from lees.schedules.saving import load_gate, save_gate

from .conftest import tiny_unet


@pytest.fixture(scope="module")
def setup():
    model = tiny_unet()
    data = torch.rand(64, 1, 16, 16) * 2 - 1
    return model, data, DDPMScheduler(**DDPM_NOISE), find_blocks(model)


def test_only_gates_train_and_backbone_stays_frozen(setup):
    model, data, noise, blocks = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    result = train_gates(
        model, data, noise, GateTrainConfig(train_steps=5, batch_size=8), blocks, progress=False
    )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    params = list(result.gate.parameters())
    assert sum(p.numel() for p in params) == 2 * len(blocks)
    assert all(torch.isfinite(p).all() and (p != 0).any() for p in params)  # gates moved from a = b = 0
    assert [r["step"] for r in result.log] == [1, 2, 3, 4, 5] and "kl" in result.log[-1]


def test_larger_lambda_runs_fewer_blocks(setup):
    model, data, noise, blocks = setup
    ratios = []
    for lam in (0.01, 0.05, 0.1, 1.0):
        config = GateTrainConfig(lam=lam, train_steps=40, batch_size=8, lr=0.05, seed=1)
        result = train_gates(model, data, noise, config, blocks, progress=False)
        ratios.append(gated_share(result.gate, cost_weights(blocks, "blocks")))
    assert all(a >= b for a, b in zip(ratios, ratios[1:], strict=False)), ratios
    assert ratios[0] > ratios[-1]


def test_budget_mode_steers_the_ratio_to_the_target(setup):
    model, data, noise, blocks = setup
    settings = {"lam": 0.0, "train_steps": 60, "batch_size": 8, "lr": 0.05, "cost": "flops"}
    free = train_gates(model, data, noise, GateTrainConfig(**settings), blocks, progress=False)
    config = GateTrainConfig(**settings, target_gated_share=0.2, dual_lr=0.05)
    budget = train_gates(model, data, noise, config, blocks, progress=False)
    lam = 0.0
    for row in budget.log:  # dual ascent: lambda rises while the gates run more than the target
        lam = max(0.0, lam + 0.05 * (row["gated_share"] - 0.2))
        assert row["lambda"] == pytest.approx(lam)
    assert free.log[-1]["grid_gated_share"] > 0.3  # without a budget the gates settle well above 0.2 ...
    assert budget.log[-1]["grid_gated_share"] == pytest.approx(0.2, abs=0.05)  # ... with it, near 0.2


@pytest.mark.parametrize("target", [0.1, 0.35, 0.6, 0.93])
def test_meeting_a_gated_share_shifts_every_bias_alike_and_keeps_the_gates_order(target):
    """4 gates sloped in time on 20 times (cells of 1/80): one common bias offset opens the share asked
    for to within half a cell, the cells opened are exactly the highest logits of the gates as trained
    (nearest from below), and the FLOP-weighted count meets its own target the same way."""
    gen = torch.Generator().manual_seed(0)
    gate = SigmoidTimeGate(4)
    with torch.no_grad():
        gate.a.copy_(torch.randn(4, generator=gen) * 4)
        gate.b.copy_(torch.randn(4, generator=gen))
    t = torch.linspace(0.05, 1.0, 20)
    before, logits = gate.b.clone(), gate.logits(t)
    weights = torch.full((4,), 0.25)
    offset = meet_gated_share(gate, weights, t, target)
    assert torch.allclose(gate.b - before, torch.full((4,), offset))
    share = gated_share(gate, weights, t)
    assert abs(share - target) <= 0.5 / 80 + 1e-9
    opened = gate.hard(t)
    assert logits[opened].min() > logits[~opened].max()  # the trained order decides
    flops = torch.tensor([0.1, 0.2, 0.3, 0.4])
    meet_gated_share(gate, flops, t, target)
    assert abs(gated_share(gate, flops, t) - target) <= 0.4 / 20  # within a cell of the costliest block


def test_gates_flat_in_time_meet_a_share_as_near_as_whole_blocks_allow():
    """Untrained gates (a = 0) open or close a whole block at once: the nearest whole-block share."""
    gate = SigmoidTimeGate(4)
    with torch.no_grad():
        gate.b.copy_(torch.tensor([0.3, -1.0, 2.0, 0.1]))
    t = torch.linspace(0.05, 1.0, 10)
    meet_gated_share(gate, torch.full((4,), 0.25), t, 0.6)
    assert gate.hard(t).all(0).tolist() == [True, False, True, False]  # 0.5, the nearest
    assert gated_share(gate, torch.full((4,), 0.25), t) == 0.5


def test_early_stop_and_kl(setup):
    model, data, noise, blocks = setup
    p = torch.tensor([0.2, 0.9])
    assert gate_kl(p, p) == pytest.approx(0, abs=1e-9) and gate_kl(p, p.flip(0)) > 0
    config = GateTrainConfig(
        train_steps=50, batch_size=4, kl_every=1, early_stop_kl=10.0, patience=2, lr=1e-6
    )
    result = train_gates(model, data, noise, config, blocks, progress=False)
    assert result.stopped_early and len(result.log) == 2


def test_gate_file_round_trip(tmp_path, setup):
    _, _, _, blocks = setup
    gate = SigmoidTimeGate(len(blocks), blocks.names)
    with torch.no_grad():
        gate.a.normal_()
        gate.b.normal_()
    save_gate(gate, blocks.names, tmp_path / "g.safetensors", settings={"lam": 0.05})
    loaded, names = load_gate(tmp_path / "g.safetensors")
    assert names == blocks.names and torch.equal(loaded.a, gate.a) and torch.equal(loaded.b, gate.b)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="not a readable gate file"):
        load_gate(tmp_path / "bad.safetensors")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lam": -0.1}, "lambda must be >= 0"),
        ({"lam": float("nan")}, "lambda must be >= 0"),
        ({"target_gated_share": 0.0}, r"must lie in \(0, 1\]"),
        ({"target_gated_share": 1.5}, r"must lie in \(0, 1\]"),
        ({"cost": "time"}, "cost must be"),
        ({"estimator": "gumbel"}, "estimator must be"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GateTrainConfig(**kwargs)


@pytest.mark.parametrize("estimator", ["ste", "soft"])
def test_both_estimators_give_gates_finite_nonzero_gradients(setup, estimator):
    model, data, noise, blocks = setup
    config = GateTrainConfig(train_steps=1, batch_size=8, estimator=estimator)
    result = train_gates(model, data, noise, config, blocks, progress=False)
    grads = [result.gate.a.grad, result.gate.b.grad]
    assert all(torch.isfinite(g).all() and (g != 0).all() for g in grads)


def test_device_comes_from_the_model_which_is_never_moved(setup):
    from lees.evaluation.held_out import held_out_loss

    model, data, noise = setup[:3]
    blocks = find_blocks(model)
    result = train_gates(
        model, data, noise, GateTrainConfig(train_steps=1, batch_size=4), blocks, progress=False
    )
    assert result.gate.a.device == next(model.parameters()).device
    assert held_out_loss(model, blocks, data, noise, n=4, batch_size=4) > 0
    with pytest.raises(ValueError, match="the model is on cpu, not cuda: move it first"):
        train_gates(
            model,
            data,
            noise,
            GateTrainConfig(train_steps=1, batch_size=4),
            blocks,
            device="cuda",
            progress=False,
        )
    with pytest.raises(ValueError, match="the model is on cpu, not meta"):
        held_out_loss(model, blocks, data, noise, n=4, device="meta")
    assert next(model.parameters()).device.type == "cpu"
