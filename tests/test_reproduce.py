import json

import numpy as np
import pytest

from lees.reports import METHODS
from lees.reproduce import ReproduceConfig, reproduce

from .conftest import tiny_unet
from .test_data import write_idx


def test_protocol_end_to_end_on_a_tiny_model(tmp_path, monkeypatch):
    monkeypatch.setenv("LEES_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 40), ("t10k", 12)):
        write_idx(data / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
    tiny_unet().save_pretrained(tmp_path / "model")
    config = ReproduceConfig(
        model=str(tmp_path / "model"), data=str(data), seeds=[0, 1], n=4, steps=3, train_steps=2, grid_n=4
    )
    config.resize = True  # 28x28 images come padded to 32x32; the tiny model takes 16x16
    report = reproduce(config, tmp_path / "report")
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert set(results["methods"]) == set(METHODS)
    assert "## The paper's claims, measured here" in report.read_text()
    for name in ("pareto.png", "gates.png", "schedule-lees.png", "work/grids/lees-0.05.png"):
        assert (tmp_path / "report" / name).is_file(), name
    runs = tmp_path / "report" / "work" / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["seed0", "seed0.json", "seed1", "seed1.json"]
    seed1 = json.loads((runs / "seed1.json").read_text())
    assert set(seed1) == set(METHODS) and all(r["seconds"] > 0 for r in seed1.values())
    # a second run reuses every finished piece and gives the same table; a seed cut off after its
    # samples were stored is scored again from them, to the same figures
    (runs / "seed1.json").unlink()
    again = reproduce(config, tmp_path / "report")
    assert json.loads((runs / "seed1.json").read_text()) == seed1
    assert json.loads((tmp_path / "report" / "results.json").read_text())["methods"] == results["methods"]
    assert again == report
    other = ReproduceConfig(**{**config.__dict__, "n": 6})
    with pytest.raises(ValueError, match="other settings"):
        reproduce(other, tmp_path / "report")
