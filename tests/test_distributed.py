"""Two processes (torchrun, gloo on CPU) give the images and gates of one process."""

import os
import subprocess
import sys

import numpy as np
import torch

from lees.schedules.saving import load_gate

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(nproc: int, argv: list[str], env: dict | None = None) -> str:
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    env = {**ENV, **(env or {})}
    result = subprocess.run([*launch, "-m", "lees.cli", *argv], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[:3000] + "\n[...]\n" + result.stderr[-2000:]
    assert (", on 2 processes" in result.stdout) == (nproc == 2)  # really sharded, and only rank 0 reports
    assert len(result.stdout.strip().splitlines()) == {"sample": 1, "train": 2, "eval": 2}[argv[0]]
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
    common = ["train", "--model", folder, "--data", idx_data, "--resize"]  # the tiny model takes 16x16
    common += ["--train-steps", "6", "--batch-size", "8"]
    _run(1, [*common, "--out", str(tmp_path / "one")])
    _run(2, [*common, "--out", str(tmp_path / "two")])
    (one, names1), (two, names2) = (
        load_gate(tmp_path / "one" / "gates.safetensors"),
        load_gate(tmp_path / "two" / "gates.safetensors"),
    )
    assert names1 == names2
    assert torch.allclose(one.a, two.a, atol=1e-5) and torch.allclose(one.b, two.b, atol=1e-5)
    assert one.a.abs().sum() > 0  # the gates did move


def _stand_in_inception(path) -> str:
    """A TorchScript file in the FID Inception's place (299 x 299 in, features out): 48 average-pooled
    pixels, so the sharded Inception FID and KID run end to end without the 2048-d network and its
    2048 x 2048 matrix root (the real network is tested in test_metrics)."""
    pool = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten())
    torch.jit.trace(pool, torch.zeros(1, 3, 299, 299)).save(str(path))
    return str(path)


def test_two_process_evaluation_equals_one(folder, idx_data, tmp_path):
    import json

    common = ["eval", "--model", folder, "--data", idx_data, "-n", "9", "--steps", "2", "--seeds", "0", "1"]
    cache = {"LEES_CACHE": str(tmp_path / "cache"),
             "LEES_INCEPTION_PATH": _stand_in_inception(tmp_path / "inception.pt")}  # fmt: skip
    _run(1, [*common, "--out", str(tmp_path / "one")], cache)
    _run(2, [*common, "--out", str(tmp_path / "two")], cache)
    one = json.loads((tmp_path / "one" / "eval.json").read_text())["results"]["full"]
    two = json.loads((tmp_path / "two" / "eval.json").read_text())["results"]["full"]
    assert np.allclose(one["fd"], two["fd"], rtol=1e-5) and np.allclose(one["kid"], two["kid"], rtol=1e-4)
