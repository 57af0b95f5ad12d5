import json

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from safetensors.torch import load_file, save_file

from lees.cli import build_parser
from lees.cli.reproduce import reproduce_config
from lees.models.architectures import DDPM_NOISE
from lees.reporting.protocol import FID_KEY_ROWS, METHODS
from lees.reporting.reproduce import ReproduceConfig, reproduce
from lees.schedules.saving import load_gate

from .conftest import tiny_unet
from .test_data import write_idx


class _StandIn:
    """A cheap feature extractor in Inception's place; counts the images of each call."""

    name = "stand-in"
    calls: list[int] = []

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        self.calls.append(len(images))
        return images.flatten(1)[:, :16].double().numpy()


def test_protocol_end_to_end_on_a_tiny_model(tmp_path, monkeypatch):
    monkeypatch.setenv("LEES_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 40), ("t10k", 12)):
        write_idx(data / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
    tiny_unet().save_pretrained(tmp_path / "model")
    DDPMScheduler(**DDPM_NOISE).save_pretrained(tmp_path / "model")  # the noise process it comes with
    config = ReproduceConfig(
        model=str(tmp_path / "model"), data=str(data), seeds=[0, 1], n=4, steps=3, train_steps=2, grid_n=4,
        gate_batch=8, held_out_n=6, fid="key",
    )  # fmt: skip
    # Inception FID's plumbing with a cheap stand-in extractor (the real one is tested in test_metrics)
    monkeypatch.setattr("lees.reporting.reproduce.inception_path", lambda: tmp_path)
    monkeypatch.setattr("lees.reporting.reproduce.InceptionFeatures", lambda device: _StandIn())
    config.resize = True  # 28x28 images come padded to 32x32; the tiny model takes 16x16
    report = reproduce(config, tmp_path / "report")
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert set(results["methods"]) == set(METHODS)
    assert "## The paper's claims, measured here" in report.read_text()
    assert "Not the full protocol: seeds 0,1 (full: 0,1,2,3,4); n 4 (full: 200)" in report.read_text()
    for name in ("pareto.png", "gates.png", "schedule-lees.png", "work/grids/lees-0.05.png"):
        assert (tmp_path / "report" / name).is_file(), name
    assert {m for m, r in results["methods"].items() if r["fid_pooled"] is not None} == set(FID_KEY_ROWS)
    assert _StandIn.calls.count(8) == len(FID_KEY_ROWS)  # each row once, both seeds' 4 samples pooled
    gates = tmp_path / "report" / "work" / "gates" / "lees-0.05"
    assert sorted(p.name for p in gates.iterdir()) == ["seed0", "seed1"]  # gates trained per seed
    seed0, seed1 = (load_gate(gates / s / "gates.safetensors")[0] for s in ("seed0", "seed1"))
    assert not torch.equal(seed0.b, seed1.b)
    runs = tmp_path / "report" / "work" / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["seed0", "seed0.json", "seed1", "seed1.json"]
    seed1 = json.loads((runs / "seed1.json").read_text())
    assert set(seed1) == set(METHODS) and all(r["seconds"] > 0 for r in seed1.values())
    # a second run reuses every finished piece and gives the same table; a seed cut off after its
    # samples were stored is scored again from them, to the same figures
    (runs / "seed1.json").unlink()
    again = reproduce(config, tmp_path / "report")
    assert json.loads((runs / "seed1.json").read_text()) == seed1
    resumed = json.loads((tmp_path / "report" / "results.json").read_text())
    assert resumed["methods"] == results["methods"]
    # the compute held in the pieces is counted once, whichever invocation made them
    spent = results["meta"]["piece_seconds"]
    assert set(spent) == {"gates", "sampling", "ASE grid"} and min(spent.values()) > 0
    assert resumed["meta"]["piece_seconds"] == spent
    assert "Compute held in the stored pieces: gates" in again.read_text()
    assert again == report
    # a folder written under the older row names (reuse-2, full-35, ...) resumes to the same table
    _rename_rows(tmp_path / "report" / "work", {"uniform-2": "reuse-2", "full@35": "full-35"})
    (runs / "seed1.json").unlink()
    reproduce(config, tmp_path / "report")
    assert json.loads((tmp_path / "report" / "results.json").read_text())["methods"] == results["methods"]
    other = ReproduceConfig(**{**config.__dict__, "n": 6})
    with pytest.raises(ValueError, match="other settings"):
        reproduce(other, tmp_path / "report")


def test_quick_keeps_every_row_and_says_what_it_shrinks():
    full, quick = ReproduceConfig(), ReproduceConfig.quick(n=24)
    assert full.departures() is None and quick.steps == full.steps
    said = quick.departures()
    for part in ("n 24 (full: 200)", "train_steps 15 (full: one epoch)", "gate_batch 16 (full: 64)"):
        assert part in said
    assert quick.n * len(quick.seeds) < full.n * len(full.seeds) and quick.gate_batch < full.gate_batch
    # on the command line --quick leaves Inception FID out unless --fid names rows
    parser = build_parser()
    assert reproduce_config(parser.parse_args(["reproduce", "--quick"])).fid == "none"
    assert reproduce_config(parser.parse_args(["reproduce", "--quick", "--fid", "key"])).fid == "key"
    assert reproduce_config(parser.parse_args(["reproduce", "-n", "50"])) == ReproduceConfig(n=50)


def test_settings_added_later_leave_an_earlier_folders_claim_as_it_was(tmp_path):
    """A reproduce folder's claim written before gate_batch and held_out_n existed is the same claim."""
    config = ReproduceConfig(seeds=[0, 1], n=8)
    older = {k: v for k, v in config.to_dict().items() if k not in ("gate_batch", "held_out_n")}
    assert config.claim() == older
    assert ReproduceConfig(seeds=[0, 1], n=8, gate_batch=16).claim()["gate_batch"] == 16


def _rename_rows(work, names: dict[str, str]) -> None:
    """Rename method rows in a stored reproduce folder, as an earlier lees wrote them."""

    def renamed(key: str) -> str:
        name, dot, part = key.rpartition(".")
        if dot and part in ("seconds", "cache_bytes"):
            return f"{names.get(name, name)}.{part}"
        return names.get(key, key)

    for path in [
        work / "fid.json",
        *(work / "runs").glob("seed*.json"),
        *(work / "runs").glob("*/settings.json"),
    ]:
        data = json.loads(path.read_text())
        if "methods" in data:
            data["methods"] = {renamed(k): v for k, v in data["methods"].items()}
        else:
            data = {renamed(k): v for k, v in data.items()}
        path.write_text(json.dumps(data, sort_keys=True))
    for path in (work / "runs").glob("*/from*.safetensors"):
        save_file({renamed(k): v for k, v in load_file(path).items()}, path)
