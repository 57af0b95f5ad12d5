import dataclasses

import numpy as np
import pytest
from diffusers import UNet2DModel

from lees import Schedule, find_blocks
from lees.engine.blocks import depth_order
from lees.models.architectures import EMBEDDED_UNET
from lees.schedules.baselines import ase_schedule, deepcache_schedule, random_schedule, reuse_baseline

DDPM50 = list(range(980, -1, -20))


def test_ase_matches_its_released_dit_schedule():
    names = [f"transformer_blocks.{i}" for i in range(28)]
    s = ase_schedule(names, list(range(999, -1, -1)))
    executed = s.table.sum(0)[::-1]  # by timestep 0..999
    expected = np.repeat([28, 28, 24, 24, 20, 20, 16, 16, 12, 12], 100)
    assert np.array_equal(executed, expected)
    assert s.executed_ratio == pytest.approx(200 / 280)
    assert not s.table[27, 0] and s.table[:12, 0].all()  # the last blocks exit first


def test_ase_shape_and_monotonicity(cifar_ddpm):
    blocks = find_blocks(cifar_ddpm)
    s = ase_schedule(blocks, DDPM50)
    assert s.table.shape == (28, 50) and s.source == "ase" and s.settings["drop_step"] == 4
    dropped = (~s.table).sum(0)
    assert all(a >= b for a, b in zip(dropped, dropped[1:], strict=False))  # more dropped at high noise
    assert dropped[-1] == 0 and dropped[0] == 16
    # a block dropped at some step is dropped at every noisier step
    for row in s.table:
        off = np.flatnonzero(~row)
        assert len(off) == 0 or not row[: off.max() + 1].any()
    first = [blocks.names[k] for k in np.flatnonzero(~s.table[:, 10])]
    assert "mid_block.attentions.0" in first and "up_blocks.3.resnets.2" not in first  # deepest first
    assert ase_schedule(blocks, DDPM50, drop_length=100).executed_ratio < s.executed_ratio


def test_depth_order_of_a_unet(tiny):
    names = find_blocks(tiny).names
    order = [names[k] for k in depth_order(names)]
    assert order[:3] == ["mid_block.resnets.1", "mid_block.attentions.0", "mid_block.resnets.0"]
    assert order[-3:] == ["up_blocks.1.resnets.1", "up_blocks.1.resnets.0", "down_blocks.0.resnets.0"]


@pytest.mark.parametrize("ratio", [0.1, 0.6, 0.93, 1.0])
def test_random_schedule_has_the_asked_ratio(cifar_ddpm, ratio):
    blocks = find_blocks(cifar_ddpm)
    s = random_schedule(blocks, DDPM50, ratio, seed=3)
    assert s.table.sum() == round(ratio * 28 * 50)
    for row in s.table:  # every block is on for one window touching an end, as a monotone gate would be
        on = np.flatnonzero(row)
        assert len(on) == 0 or (on.max() - on.min() + 1 == len(on) and (on[0] == 0 or on[-1] == 49))
    assert not np.array_equal(s.table, random_schedule(blocks, DDPM50, ratio, seed=4).table) or ratio == 1.0


def test_baselines_round_trip(tmp_path, tiny):
    blocks = find_blocks(tiny)
    for s in (
        ase_schedule(blocks, DDPM50),
        random_schedule(blocks, DDPM50, 0.5),
        Schedule.full(blocks, DDPM50),
    ):
        loaded = Schedule.load(s.save(tmp_path / f"{s.source}.json"), blocks)
        assert np.array_equal(loaded.table, s.table) and loaded.settings == s.settings
    with pytest.raises(ValueError, match="ratio must lie"):
        random_schedule(blocks, DDPM50, 0)


def test_reuse_baseline_spends_most_of_the_budget():
    blocks = find_blocks(UNet2DModel(**EMBEDDED_UNET))  # the embedded model's architecture
    picked = {
        target: (s.source, s.settings["levels"], s.settings["interval"], s.flop_ratio)
        for target in (None, 0.7, 0.5, 0.01)
        for s in [reuse_baseline(blocks, DDPM50, target)]
    }
    assert picked[None][:3] == ("deepcache", 1, 2)
    assert picked[0.7][:3] == ("deepcache", 1, 3) and picked[0.7][3] <= 0.7  # interval 2 runs 0.77
    assert picked[0.5][:3] == ("deepcache", 0, 3) and picked[0.5][3] <= 0.5  # the outer level alone is 0.54
    assert picked[0.01][:3] == ("deepcache", 0, 50)  # out of reach: the cheapest
    for target in (0.7, 0.5):  # nothing between the pick and the budget
        for levels, interval in ((1, 2), (1, 3), (0, 2), (0, 3)):
            ratio = deepcache_schedule(blocks, DDPM50, interval, levels=levels).flop_ratio
            assert ratio > target or ratio <= picked[target][3]


def test_reuse_baseline_of_other_blocks_is_uniform_reuse(cifar_ddpm):
    unet = find_blocks(cifar_ddpm)
    renamed = tuple(dataclasses.replace(b, name=f"transformer_blocks.{k}") for k, b in enumerate(unet))
    blocks = dataclasses.replace(unet, blocks=renamed)  # as a DiT's blocks read
    s = reuse_baseline(blocks, DDPM50, 0.7)
    assert s.source == "uniform" and s.settings["outer"] == 1 and s.flop_ratio <= 0.7


def test_ase_drops_by_segment_on_flow_matchings_float_timesteps():
    names = [f"transformer_blocks.{i}" for i in range(14)]  # drop_step round(14 / 7) = 2
    schedule = ase_schedule(names, [1000.0, 999.5, 800.25, 650.0, 199.9, 0.5])
    # t = 1000 is the 1000 training timesteps' last segment, as t = 999 (not a sixth one)
    assert schedule.table.sum(axis=0).tolist() == [14 - 8, 14 - 8, 14 - 8, 14 - 6, 14, 14]
