"""Interrupted runs resume to the result of an uninterrupted one; bad input is one clear line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lees.cli import main
from lees.learn.gate_training import GateTrainConfig, train_gates
from lees.schedules.saving import load_gate

from .conftest import tiny_unet

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _train_argv(folder: str, data: str, out: Path, steps: int) -> list[str]:
    return [
        sys.executable, "-m", "lees.cli", "train", "--model", folder, "--data", data, "--resize",
        "--train-steps", str(steps), "--batch-size", "4", "--lambda", "0.5", "--out", str(out),
    ]  # fmt: skip


def test_gate_training_killed_and_resumed_equals_uninterrupted(folder, idx_data, tmp_path):
    steps = 100  # killed after 30 steps: far from the end, whatever the machine's speed
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_argv(folder, idx_data, killed, steps), env=ENV, stderr=subprocess.DEVNULL)
    log, checkpoint = killed / "train_log.jsonl", killed / "checkpoint.safetensors"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if checkpoint.is_file() and log.is_file() and len(log.read_text().splitlines()) >= 30:
            proc.send_signal(signal.SIGKILL)  # no chance to clean up, as when a machine dies
            break
        time.sleep(0.005)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "gates.safetensors").exists()
    done = len(log.read_text().splitlines())
    assert 0 < done < steps
    subprocess.run(_train_argv(folder, idx_data, killed, steps), env=ENV, check=True, capture_output=True)
    whole = tmp_path / "whole"
    subprocess.run(_train_argv(folder, idx_data, whole, steps), env=ENV, check=True, capture_output=True)
    (a, _), (b, _) = load_gate(killed / "gates.safetensors"), load_gate(whole / "gates.safetensors")
    assert torch.equal(a.a, b.a) and torch.equal(a.b, b.b)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, steps + 1))  # no step lost or repeated in the log
    assert rows == [json.loads(line) for line in (whole / "train_log.jsonl").read_text().splitlines()]
    assert not checkpoint.exists()  # removed once the run has finished


def test_nan_stops_with_a_message_and_keeps_the_last_good_gates(tmp_path):
    model = tiny_unet()
    data = torch.rand(16, 1, 16, 16) * 2 - 1
    data[5] = float("nan")  # one broken image, drawn at some step
    from diffusers import DDPMScheduler

    from lees.models.architectures import DDPM_NOISE

    noise = DDPMScheduler(**DDPM_NOISE)
    config = GateTrainConfig(lam=0.1, train_steps=50, batch_size=4)
    with pytest.raises(FloatingPointError, match="last good gates are in"):
        train_gates(model, data, noise, config, progress=False, checkpoint=tmp_path / "ck.safetensors")
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "ck.safetensors")
    assert torch.isfinite(saved["a"]).all() and torch.isfinite(saved["b"]).all()


def _one_line_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_corrupt_and_truncated_weights(folder, tmp_path, capsys):
    weights = next(Path(folder).glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated, as by a crashed copy
    assert "could not load weights" in _one_line_error(["blocks", "--model", folder], capsys)
    weights.write_bytes(b"\x00" * 64)
    assert "could not load weights" in _one_line_error(["blocks", "--model", folder], capsys)


def test_pickle_weights_are_refused(tmp_path, capsys):
    model = tiny_unet()
    model.save_pretrained(tmp_path / "m", safe_serialization=False)  # diffusion_pytorch_model.bin
    message = _one_line_error(["blocks", "--model", str(tmp_path / "m")], capsys)
    assert "only safetensors" in message


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["blocks", "--model", "no-such-model"], "unknown model"),
        (["train", "--model", "FOLDER", "--data", "/no/such/folder", "--out", "x"], "/no/such/folder"),
        (["train", "--lambda", "-0.1", "--out", "x"], "lambda must be >= 0"),
        (["train", "--target-ratio", "0", "--out", "x"], "must lie in (0, 1]"),
    ],
)
def test_bad_arguments(argv, message, folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = [folder if a == "FOLDER" else a for a in argv]
    assert message in _one_line_error(argv, capsys)


def test_schedule_for_another_model_or_other_steps(folder, tmp_path, capsys):
    from lees import Schedule, find_blocks, load_backbone

    blocks = find_blocks(load_backbone(folder))
    other = [n.replace("resnets", "renamed") for n in blocks.names]
    Schedule.full(other, list(range(49, -1, -1))).save(tmp_path / "names.json")
    Schedule.full(blocks.names[:-1], list(range(49, -1, -1))).save(tmp_path / "k.json")
    Schedule.full(blocks, [999, 500]).save(tmp_path / "t.json")
    argv = ["sample", "--model", folder, "-n", "1", "--out", str(tmp_path)]
    assert "the schedule expects" in _one_line_error(
        [*argv, "--schedule", str(tmp_path / "names.json")], capsys
    )
    assert "11 blocks, the model has 12" in _one_line_error(
        [*argv, "--schedule", str(tmp_path / "k.json")], capsys
    )
    steps = [*argv, "--schedule", str(tmp_path / "t.json"), "--steps", "50"]  # without --steps: its own 2
    assert "the schedule has 2 steps, not 50" in _one_line_error(steps, capsys)
