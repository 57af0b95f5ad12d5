"""Errors, early: a text-conditioned denoiser without its prompts is one line naming --prompts (or
--conditions), from the library and from each command that samples, on SD, PixArt, SD3 and Flux."""

import pytest
from diffusers import FlowMatchEulerDiscreteScheduler

import lees
from lees.cli import main

from .families import FAMILIES

TEXT_FAMILIES = ("sd", "pixart", "sd3", "flux")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Each text family's tiny denoiser and its pipeline's scheduler, saved as a pipeline folder."""
    root = tmp_path_factory.mktemp("text")
    for name in TEXT_FAMILIES:
        family = FAMILIES[name]
        family.make_model().save_pretrained(root / name / ("unet" if name == "sd" else "transformer"))
        next(iter(family.schedulers.values()))().save_pretrained(root / name / "scheduler")
    return root


@pytest.mark.parametrize("name", TEXT_FAMILIES)
def test_a_text_denoiser_without_prompts_is_one_line_naming_them(name, folders, tmp_path, capsys):
    model = FAMILIES[name].make_model()
    with pytest.raises(ValueError, match="conditioned on text .*--prompts.*--conditions"):
        lees.sample_lockstep(model, {"full": None}, 1, steps=2, scheduler=FlowMatchEulerDiscreteScheduler())
    model_flag = ["--model", str(folders / name)]
    for argv in (
        ["sample", *model_flag, "-n", "1", "--steps", "2", "--out", str(tmp_path / "s.png")],
        ["route", *model_flag, "--steps", "4", "--train-steps", "1", "--out", str(tmp_path)],
        ["frontier", *model_flag, "-n", "2", "--steps", "4", "--fewer", "2", "--out", str(tmp_path / "f")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--prompts" in err and "Traceback" not in err, err
