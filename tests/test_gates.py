import pytest
import torch

from lees import SigmoidTimeGate, open_mask
from lees.diffusion.samplers import normalised_time
from lees.engine.actions import straight_through


def test_init_is_neutral_and_open():
    gate = SigmoidTimeGate(5)
    assert sum(p.numel() for p in gate.parameters()) == 10
    t = torch.tensor([0.001, 0.5, 1.0])
    assert torch.equal(gate(t), torch.full((3, 5), 0.5))
    assert gate.hard(t).all()  # ties open: training starts from the full model


def test_threshold_rule():
    g = torch.tensor([0.0, 0.4999, 0.5, 0.5001, 1.0])
    assert open_mask(g).tolist() == [False, False, True, True, True]


def test_gate_shape_and_direction():
    gate = SigmoidTimeGate(2)
    with torch.no_grad():
        gate.a.copy_(torch.tensor([10.0, -10.0]))
        gate.b.copy_(torch.tensor([-5.0, 5.0]))
    t = torch.tensor([0.1, 0.9])
    assert gate.hard(t).tolist() == [[False, True], [True, False]]  # opens late / closes late
    assert gate(torch.tensor(0.3)).shape == (2,)


def test_straight_through_value_and_gradient():
    g = torch.tensor([0.2, 0.7], requires_grad=True)
    out = straight_through(g)
    assert out.tolist() == [0.0, 1.0]
    (out * torch.tensor([3.0, 5.0])).sum().backward()
    assert g.grad.tolist() == [3.0, 5.0]


def test_normalised_time():
    assert normalised_time(torch.tensor([0, 999]), 1000).tolist() == pytest.approx([0.001, 1.0])
    with pytest.raises(ValueError, match="timesteps must lie"):
        normalised_time(1000, 1000)
    with pytest.raises(ValueError, match="at least one block"):
        SigmoidTimeGate(0)
