"""Two processes (torchrun, gloo on CPU) give the images and gates of one process."""

import os
import subprocess
import sys

import numpy as np
import torch

from lees.training import load_gate

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(nproc: int, argv: list[str]) -> str:
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    result = subprocess.run([*launch, "-m", "lees.cli", *argv], env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (", on 2 processes" in result.stdout) == (nproc == 2)  # really sharded, and only rank 0 reports
    assert len(result.stdout.strip().splitlines()) == (1 if argv[0] == "sample" else 2)
    return result.stdout


def test_two_process_sampling_equals_one(folder, tmp_path):
    common = ["sample", "--model", folder, "-n", "7", "--steps", "3", "--batch-size", "2", "--seed", "5"]
    _run(1, [*common, "--out", str(tmp_path / "one.png")])
    _run(2, [*common, "--out", str(tmp_path / "two.png")])
    one = np.load(tmp_path / "one.npz")["images"]
    two = np.load(tmp_path / "two.npz")["images"]
    assert one.shape == two.shape == (7, 16, 16, 1)  # 7 over 2 ranks: shards of 3 and 4, no gap, no repeat
    assert np.abs(one.astype(int) - two.astype(int)).max() <= 1  # uint8 images; batched-conv rounding only


def test_two_process_gate_training_equals_one(folder, idx_data, tmp_path):
    common = ["train", "--model", folder, "--data", idx_data, "--train-steps", "6", "--batch-size", "8"]
    _run(1, [*common, "--out", str(tmp_path / "one")])
    _run(2, [*common, "--out", str(tmp_path / "two")])
    (one, names1), (two, names2) = (
        load_gate(tmp_path / "one" / "gates.safetensors"),
        load_gate(tmp_path / "two" / "gates.safetensors"),
    )
    assert names1 == names2
    assert torch.allclose(one.a, two.a, atol=1e-5) and torch.allclose(one.b, two.b, atol=1e-5)
    assert one.a.abs().sum() > 0  # the gates did move
