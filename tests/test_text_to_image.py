"""``lees tune`` and ``lees route`` on text-to-image pipeline folders, through the pipeline's own call.

Tiny random-weight pipelines (``tests/t2i_pipelines.py``: SD with a CLIP text encoder and a VAE,
PixArt-alpha with T5, SD3, Flux) are built offline once per session. On each: ``lees tune --quick``
finishes, prints its verdict and saves a policy that ``lees.enable(pipe, FOLDER)`` applies inside
``pipe(prompt=...)``, reproducing the tuned run's images exactly; ``lees route --prompts`` learns a
schedule on the pipeline's own runs that ``lees.enable`` runs inside ``pipe(prompt=...)``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from diffusers import DiffusionPipeline  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

import lees  # noqa: E402
from lees.cli import main  # noqa: E402
from lees.evaluation.fidelity import paired_fidelity  # noqa: E402
from lees.evaluation.metrics import fd  # noqa: E402
from lees.sampling.pipeline_call import PipelineMethod, Prompting, sample_pipeline  # noqa: E402
from lees.schedules.tuned import load_tuned  # noqa: E402
from tests.t2i_pipelines import KINDS, build_pipeline  # noqa: E402

PROMPTS = ["a red car", "a cat on a sofa"]
SIZE = {"flux": ["--height", "16", "--width", "16"]}  # Flux's default size is 1024 / 8 latents a side


@pytest.fixture(scope="session")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("t2i")
    return {kind: build_pipeline(kind, root / kind) for kind in KINDS}


@pytest.fixture(autouse=True)
def no_inception(monkeypatch):
    """PSNR and SSIM only: Inception features of every run's images would take most of a test's time."""
    monkeypatch.setattr("lees.tune.quality.feature_space", lambda shape: None)


def _fresh(folders: dict[str, Path], kind: str, tmp_path: Path) -> Path:
    """A copy of the tiny folder of ``kind`` (tune writes its policy into the folder's lees/)."""
    return Path(shutil.copytree(folders[kind], tmp_path / kind))


def _piece(out: Path, run: str) -> dict[str, torch.Tensor]:
    """The stored images of run ``run`` in a tune's ``out`` (its pieces are named after it)."""
    name = re.sub(r"[^A-Za-z0-9@.+-]+", "_", run).strip("_")
    (folder,) = [p for p in (out / "pieces").iterdir() if p.is_dir() and p.name.rsplit("-", 1)[0] == name]
    return load_file(folder / "from0.safetensors")


def _user_call(kind: str) -> dict:
    """What the user passes besides the prompts: Flux's size; PixArt's binning off (no bins for 8x8)."""
    return {"flux": {"height": 16, "width": 16}, "pixart": {"use_resolution_binning": False}}.get(kind, {})


@pytest.mark.parametrize("kind", KINDS)
def test_tune_through_the_pipeline_saves_a_policy_that_reproduces_its_run(folders, kind, tmp_path, capsys):
    folder, out = _fresh(folders, kind, tmp_path), tmp_path / "tune"
    main(["tune", "--model", str(folder), "--prompts", *PROMPTS, "--budget", "0.9", "--quick", "-n", "2",
          "--steps", "4", "--batch-size", "2", "--router-train-steps", "5", "--out", str(out),
          *SIZE.get(kind, [])])  # fmt: skip
    printed = capsys.readouterr().out
    assert f"own call, prompts: {PROMPTS[0]}; {PROMPTS[1]}" in printed
    policy = load_tuned(folder)
    assert f"policy ({policy.name} for 4 steps; budget 0.9) saved to" in printed
    assert policy.reference["call"]["prompts"] == PROMPTS
    stored = _piece(out, policy.name)

    pipe = DiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    lees.enable(pipe, folder)
    generators = [torch.Generator().manual_seed(i) for i in range(2)]
    images = pipe(
        prompt=PROMPTS, generator=generators, output_type="pt", **lees.tuned(folder), **_user_call(kind)
    ).images
    lees.disable(pipe)
    assert torch.equal(images * 2 - 1, stored["images"])
    assert float(stored["denoiser_seconds"]) < float(stored["seconds"])


@pytest.mark.parametrize("kind", KINDS)
def test_route_learns_on_the_pipeline_call_and_runs_inside_it(folders, kind, tmp_path, capsys):
    folder = _fresh(folders, kind, tmp_path)
    main(["route", "--model", str(folder), "--prompts", *PROMPTS, "--steps", "4", "--target-flop-ratio",
          "0.6", "--train-steps", "5", "--trajectories", "2", "--batch-size", "2",
          *SIZE.get(kind, [])])  # fmt: skip
    printed = capsys.readouterr().out
    assert "teacher runs through the pipeline's own call" in printed
    schedule = lees.Schedule.load(folder / "lees" / "schedule.json")
    pipe = DiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    plain = pipe(prompt=PROMPTS[:1], num_inference_steps=4, generator=torch.manual_seed(0), output_type="pt",
                 **_user_call(kind)).images  # fmt: skip
    lees.enable(pipe, schedule)
    routed = pipe(prompt=PROMPTS[:1], num_inference_steps=4, generator=torch.manual_seed(0), output_type="pt",
                  **_user_call(kind)).images  # fmt: skip
    lees.disable(pipe)
    assert schedule.num_steps == 4 and schedule.flop_ratio <= 0.6 + 1e-6
    assert routed.shape == plain.shape and torch.isfinite(routed).all()
    assert not torch.equal(routed, plain)  # it reuses, so the image differs
    if pipe.scheduler.config.get("use_dynamic_shifting"):  # Flux: its grid is this resolution's
        assert schedule.settings["image_seq_len"] > 0
        lees.enable(pipe, schedule)
        with pytest.raises(lees.ScheduleError, match="latent tokens"):
            pipe(prompt=PROMPTS[:1], num_inference_steps=4, height=32, width=32, output_type="pt")
        lees.disable(pipe)


def test_sampling_through_the_pipeline_depends_on_the_sample_index_only(folders):
    pipe = DiffusionPipeline.from_pretrained(folders["sd"])
    prompting = Prompting(PROMPTS)
    method = {"full": PipelineMethod(3)}
    whole = sample_pipeline(pipe, method, prompting, n=3, batch_size=3, progress=False)["full"]
    last = sample_pipeline(pipe, method, prompting, n=1, first=2, batch_size=1, progress=False)["full"]
    assert whole.images.shape == (3, 3, 16, 16) and whole.images.min() >= -1 and whole.images.max() <= 1
    assert torch.allclose(whole.images[2:], last.images, atol=1e-5)
    assert 0 < whole.denoiser_seconds < whole.seconds


def test_the_fidelity_fd_of_few_samples_in_many_dimensions_is_the_frechet_distance():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 256)), rng.normal(size=(5, 256)) + 0.3
    images = torch.zeros(5, 1, 16, 16)
    values, _ = paired_fidelity(images, images + 0.1, np.zeros((1, 5), dtype=int), a, b)
    assert values["fd"] == pytest.approx(fd(a, b), rel=1e-6)


@pytest.mark.parametrize("command", ["tune", "route"])
def test_a_denoiser_that_needs_prompts_without_them_is_one_line_naming_prompts(
    folders, command, tmp_path, capsys
):
    code = main([command, "--model", str(folders["sd"] / "unet"), "--steps", "4", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--prompts" in err and "UNet2DConditionModel" in err


def test_frontier_on_a_text_to_image_folder_is_one_line_pointing_to_tune(folders, tmp_path, capsys):
    code = main(["frontier", "--model", str(folders["sd"]), "-n", "2", "--out", str(tmp_path / "f")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "lees tune" in err and "--prompts" in err
    assert not (tmp_path / "f").exists()  # refused before anything is written
