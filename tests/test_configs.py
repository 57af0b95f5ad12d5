"""Configs check themselves when made, round-trip through JSON, and read the names an earlier lees
wrote; a frozen backbone is given back as it came."""

import json

import pytest
import torch

from lees.learn.backbone_training import BackboneTrainConfig
from lees.learn.gate_training import GateTrainConfig, train_gates
from lees.learn.router import RouterConfig
from lees.models.denoisers import frozen
from lees.reporting.frontier_run import FrontierConfig
from lees.reporting.reproduce import ReproduceConfig

CONFIGS = [
    GateTrainConfig(lam=0.1, train_steps=7, target_gated_share=0.6, betas=(0.8, 0.99)),
    RouterConfig(steps=20, target_flop_ratio=0.5, train_steps=30),
    BackboneTrainConfig(train_steps=10, arch="embedded-dit", grid_every=500),
    ReproduceConfig(seeds=[0, 1], n=8, train_steps=3),
    FrontierConfig(n=4, fewer=[25], rows="learned"),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
def test_configs_round_trip_through_json(config):
    data = json.loads(json.dumps(config.to_dict()))
    assert type(config).from_dict(data) == config
    with pytest.raises(ValueError, match="has no setting colour"):
        type(config).from_dict({**data, "colour": "red"})


def test_older_names_still_read():
    gate = GateTrainConfig.from_dict({"lam": 0.05, "steps": 12, "target_ratio": 0.6, "betas": [0.9, 0.999]})
    assert gate.train_steps == 12 and gate.target_gated_share == 0.6 and gate.betas == (0.9, 0.999)
    assert RouterConfig.from_dict({"steps": 50, "target_ratio": 0.7}).target_flop_ratio == 0.7
    assert BackboneTrainConfig.from_dict({"steps": 36000, "arch": "embedded-dit"}).train_steps == 36000


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: GateTrainConfig(target_gated_share=1.5), "target gated share must lie in"),
        (lambda: GateTrainConfig(train_steps=0), "must be positive"),
        (lambda: RouterConfig(target_flop_ratio=0.0), "target FLOP ratio must lie in"),
        (lambda: RouterConfig(steps=1), "at least 2 steps"),
        (lambda: BackboneTrainConfig(train_steps=0), "must be positive"),
        (lambda: BackboneTrainConfig(checkpoint_every=250, grid_every=100), "multiple of checkpoint_every"),
        (lambda: BackboneTrainConfig(label_dropout=1.5), "label_dropout must lie in"),
        (lambda: ReproduceConfig(n=1), "n >= 2 samples and at least 2 seeds"),
        (lambda: ReproduceConfig(fid="some"), "fid must be auto, key, all or none"),
        (lambda: FrontierConfig(rows="most"), "rows must be one of"),
    ],
)
def test_configs_refuse_bad_settings_when_made(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_frozen_gives_the_model_back_as_it_came(tiny):
    tiny.train()
    tiny.mid_block.eval()
    tiny.conv_in.requires_grad_(False)
    flags = [p.requires_grad for p in tiny.parameters()]
    modes = [m.training for m in tiny.modules()]
    with frozen(tiny):
        assert not tiny.training and not any(p.requires_grad for p in tiny.parameters())
    assert [p.requires_grad for p in tiny.parameters()] == flags
    assert [m.training for m in tiny.modules()] == modes
    with frozen(tiny, evaluate=False):
        assert tiny.training
    with pytest.raises(RuntimeError), frozen(tiny):
        raise RuntimeError("an error inside still gives the model back")
    assert [m.training for m in tiny.modules()] == modes


def test_gate_training_leaves_the_backbone_in_the_mode_it_had(tiny):
    from diffusers import DDPMScheduler

    data = torch.rand(8, 1, 16, 16) * 2 - 1
    tiny.train()
    train_gates(tiny, data, DDPMScheduler(), GateTrainConfig(train_steps=1, batch_size=4), progress=False)
    assert tiny.training  # gate training runs it in eval mode, then gives it back
