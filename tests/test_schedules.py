import json

import numpy as np
import pytest
import torch

from lees import RUN, Schedule, ScheduleError, ScheduleMismatchError, SigmoidTimeGate, find_blocks


@pytest.fixture
def blocks(tiny):
    return find_blocks(tiny)


def test_full_schedule(blocks):
    s = Schedule.full(blocks, [999, 500, 0])
    assert s.table.shape == (len(blocks), 3) and s.source == "full"
    assert s.executed_ratio == 1.0 and s.flop_ratio == pytest.approx(1.0)
    assert s.actions_at(1) == [RUN] * len(blocks)


def test_ratios_by_hand():
    table = np.array([[True, False], [False, False], [True, True]])
    s = Schedule(table, ["a", "b", "c"], [900, 100], block_shares=[0.5, 0.2, 0.1])
    assert s.executed_ratio == pytest.approx(3 / 6)
    # step 0 skips b (0.2); step 1 skips a and b (0.7)
    assert s.step_flop_ratios() == pytest.approx([0.8, 0.3])
    assert s.flop_ratio == pytest.approx(0.55)
    with pytest.raises(ScheduleError, match="no block FLOP shares"):
        _ = Schedule(table, ["a", "b", "c"], [900, 100]).flop_ratio


def test_learned_gate_to_any_timesteps(blocks):
    gate = SigmoidTimeGate(len(blocks), blocks.names)
    with torch.no_grad():
        gate.a[0], gate.b[0] = -10.0, 5.0  # block 0 runs only for t <= 0.5
    for timesteps in ([999, 749, 499, 249, 0], list(range(999, -1, -20))):
        s = Schedule.from_gate(gate, blocks, timesteps, settings={"lambda": 0.05})
        assert s.source == "learned" and s.table.shape == (len(blocks), len(timesteps))
        assert s.table[0].tolist() == [(ts + 1) / 1000 <= 0.5 for ts in timesteps]
        assert s.table[1:].all()
    with pytest.raises(ScheduleMismatchError):
        Schedule.from_gate(SigmoidTimeGate(3), blocks, [1])


def test_json_round_trip(blocks, tmp_path):
    rng = np.random.default_rng(0)
    table = rng.random((len(blocks), 7)) < 0.6
    s = Schedule(table, blocks.names, list(range(900, 0, -130)), "random", {"ratio": 0.6}, blocks.shares)
    path = s.save(tmp_path / "sub" / "s.json")
    loaded = Schedule.load(path, blocks)
    assert np.array_equal(loaded.table, s.table)
    assert loaded.block_names == s.block_names and loaded.timesteps == s.timesteps
    assert loaded.source == "random" and loaded.settings == {"ratio": 0.6}
    assert loaded.block_shares == pytest.approx(s.block_shares)
    assert loaded.flop_ratio == pytest.approx(s.flop_ratio)
    assert json.loads(path.read_text())["executed_ratio"] == pytest.approx(s.executed_ratio)
    assert [p.name for p in path.parent.iterdir()] == ["s.json"]  # no temp file left behind


def test_mismatch_is_a_clear_error(blocks, tmp_path, cifar_ddpm):
    path = Schedule.full(blocks, [10, 5]).save(tmp_path / "s.json")
    with pytest.raises(ScheduleMismatchError, match="12 blocks, the model has 28"):
        Schedule.load(path, find_blocks(cifar_ddpm))
    renamed = list(blocks.names)
    renamed[4] = "mid_block.attentions.9"
    with pytest.raises(ScheduleMismatchError, match="block 4 of the model is 'mid_block.attentions.9'"):
        Schedule.load(path, renamed)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("format"), "not a lees schedule"),
        (lambda d: d.update(version=7), "version 7"),
        (lambda d: d.pop("table"), "missing"),
        (lambda d: d.update(table=["10", "1"]), "equal length"),
        (lambda d: d.update(table=["1x"] * 2), r"strings of 1 \(run\), r \(reuse\), f \(forecast\) and 0"),
        (lambda d: d.update(timesteps=[1]), "2 columns for 1 timesteps"),
        (lambda d: d.update(timesteps=[1, 1000]), "timesteps must lie"),
        (lambda d: d.update(block_names=["a"]), "2 rows for 1 block names"),
        (lambda d: d.update(block_names=["a", "a"]), "distinct"),
        (lambda d: d.update(block_shares=[0.9, 0.9]), "more than the whole model"),
        (lambda d: d.update(block_shares=[0.1]), "1 block shares for 2 blocks"),
        (lambda d: d.update(source="guess"), "source must be one of"),
    ],
)
def test_malformed_schedules(tmp_path, edit, message):
    s = Schedule(np.ones((2, 2), dtype=bool), ["a", "b"], [10, 5], block_shares=[0.3, 0.2])
    data = s.to_dict()
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ScheduleError, match=message):
        Schedule.load(path)


def test_unreadable_files(tmp_path):
    with pytest.raises(ScheduleError, match="no schedule file"):
        Schedule.load(tmp_path / "missing.json")
    (tmp_path / "trunc.json").write_text('{"format": "lees.sch')
    with pytest.raises(ScheduleError, match="not valid JSON"):
        Schedule.load(tmp_path / "trunc.json")
