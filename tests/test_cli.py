import json
import subprocess
import sys

import pytest

from lees.cli import main

from .conftest import tiny_unet


@pytest.fixture
def folder(tmp_path):
    tiny_unet().save_pretrained(tmp_path / "unet")
    return str(tmp_path / "unet")


def test_blocks_json_and_out(folder, tmp_path, capsys):
    assert main(["blocks", "--model", folder, "--json", "--out", str(tmp_path / "res")]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert len(data["blocks"]) == 12 and data["model_class"] == "UNet2DModel"
    assert json.loads((tmp_path / "res" / "blocks.json").read_text()) == data
    assert f"wrote {tmp_path / 'res' / 'blocks.json'}" in err


def test_blocks_table_positional(folder, capsys):
    assert main(["blocks", folder]) == 0
    out = capsys.readouterr().out
    assert "12 skippable blocks" in out and "up_blocks.1.resnets.1" in out


@pytest.mark.parametrize("argv", [["blocks", "--model", "not-a-model"], ["blocks"]])
def test_bad_input_is_one_line(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lees blocks: error:")


def test_console_script_help_has_example():
    result = subprocess.run(
        [sys.executable, "-m", "lees.cli", "blocks", "--help"], capture_output=True, text=True, check=True
    )
    assert "example:" in result.stdout and "lees blocks --model" in result.stdout


def test_sample_writes_grid_and_npz(folder, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["sample", "--model", folder, "-n", "3", "--steps", "2", "--out", str(out)]) == 0
    assert out.is_file()
    import numpy as np

    images = np.load(tmp_path / "grid.npz")["images"]
    assert images.shape == (3, 16, 16, 1) and images.dtype == np.uint8
    assert f"wrote {out}" in capsys.readouterr().out


def test_sample_refuses_a_schedule_for_another_model(folder, tmp_path, capsys):
    from lees import Schedule

    Schedule.full(["a", "b"], [1, 0]).save(tmp_path / "s.json")
    argv = ["sample", "--model", folder, "--schedule", str(tmp_path / "s.json"), "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "the schedule is for 2 blocks, the model has 12" in capsys.readouterr().err
