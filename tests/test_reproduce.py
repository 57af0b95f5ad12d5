import json

import numpy as np

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
    report = reproduce(config, tmp_path / "report")
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert set(results["methods"]) == set(METHODS)
    assert "## The paper's claims, measured here" in report.read_text()
    for name in ("pareto.png", "gates.png", "schedule-lees.png", "work/grids/lees-0.05.png"):
        assert (tmp_path / "report" / name).is_file(), name
    runs = sorted(p.name for p in (tmp_path / "report" / "work" / "runs").iterdir())
    assert len(runs) == 2 * len(METHODS)
    # a second run reuses every finished piece and gives the same table
    again = reproduce(config, tmp_path / "report")
    assert json.loads((tmp_path / "report" / "results.json").read_text())["methods"] == results["methods"]
    assert again == report
