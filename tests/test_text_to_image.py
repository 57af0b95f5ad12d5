"""``lees tune`` and ``lees route`` on text-to-image pipeline folders, through the pipeline's own call.

Tiny random-weight pipelines (``tests/t2i_pipelines.py``: SD with a CLIP text encoder and a VAE,
PixArt-alpha with T5, SD3, Flux) are built offline once per session. On each: ``lees tune --quick``
finishes, prints its verdict and saves a policy that ``lees.enable(pipe, FOLDER)`` applies inside
``pipe(prompt=...)``, reproducing the tuned run's images exactly; ``lees route --prompts`` learns a
schedule on the pipeline's own runs that ``lees.enable`` runs inside ``pipe(prompt=...)``; ``lees
frontier --prompts`` samples, scores and judges every row through the pipeline's call (SD and Flux).
"""

from __future__ import annotations

import json
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
from lees.sampling.pipeline_call import (  # noqa: E402
    PipelineMethod,
    PipelineSource,
    Prompting,
    probe,
    sample_pipeline,
)
from lees.schedules.registry import build_schedule  # noqa: E402
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


OTHER_SOLVER = {"sd": "dpm++", "flux": "unipc"}  # beside DDIM and Euler (Flux passes sigmas: not to dpm++)


def _schedule_file(folder: Path, kind: str, out: Path) -> Path:
    """Uniform reuse every 3rd step, made for the pipeline's own 4 timesteps at the user's size."""
    pipe = DiffusionPipeline.from_pretrained(folder)
    source = PipelineSource(pipe, Prompting(PROMPTS, **{k: v for k, v in _user_call(kind).items()
                                                        if k in ("height", "width")}))  # fmt: skip
    timesteps, _ = probe(source, 4)
    path = out / "every-3rd" / "schedule.json"
    build_schedule("uniform-3", lees.find_blocks(source.denoiser), timesteps).save(path)
    return path


@pytest.mark.parametrize("kind", ["sd", "flux"])
def test_frontier_samples_every_row_through_the_pipeline_and_judges_it(
    folders, kind, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "frontier"
    schedule = _schedule_file(folders[kind], kind, tmp_path)
    argv = ["frontier", "--model", str(folders[kind]), "--prompts", *PROMPTS, "-n", "2", "--batch-size", "1",
            "--steps", "4", "--fewer", "2", "--solvers", OTHER_SOLVER[kind], "--solver-steps", "4", "2",
            "--reuse-steps", "2", "--schedules", str(schedule), "--resamples", "20", "--out", str(out),
            *SIZE.get(kind, [])]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "own call, prompts: a red car; a cat on a sofa" in printed and "no fd_clf or data FID" in printed
    assert f"wrote {out / 'frontier.jsonl'}" in printed
    rows = {
        (r["method"], r["solver"], r["steps"]): r for r in map(json.loads, (out / "frontier.jsonl").open())
    }
    other = OTHER_SOLVER[kind]
    expected = {("full", None, 4), ("full", None, 2), ("full", other, 4), ("full", other, 2),
                ("every-3rd", None, 4), ("uniform-2", None, 4), ("uniform-2@2", None, 2)}  # fmt: skip
    assert expected <= set(rows)
    for key, row in rows.items():
        assert row["dssim_interval"][0] <= row["dssim"] <= row["dssim_interval"][1], key
        assert row["psnr_interval"][0] <= row["psnr"] <= row["psnr_interval"][1], key
        assert row["n"] == 2 and row["sampler"] and 0 < row["denoiser_share"] < 1
    assert rows[("full", None, 4)]["dssim"] == 0 and rows[("full", None, 4)]["latency_ratio"] == 1
    judged = rows[("every-3rd", None, 4)]["versus_fewer_steps"]["dssim"]
    assert judged["verdict"] in ("above", "on", "below", "outside the measured range")
    assert "versus_best_solver" in rows[("uniform-2", None, 4)]
    for png in out.glob("*.png"):
        png.unlink()
    assert main(["frontier", "--plot-only", "--out", str(out)]) == 0
    assert (out / "frontier-dssim.png").is_file()
    first = (out / "frontier.jsonl").read_text()
    monkeypatch.setattr("lees.tune.runs.Run.sample", lambda *a, **k: pytest.fail("sampled a stored piece"))
    assert main(argv) == 0  # run again: every piece is read back, none sampled
    dssim = lambda text: [json.loads(line)["dssim"] for line in text.splitlines()]  # noqa: E731
    assert dssim((out / "frontier.jsonl").read_text()) == dssim(first)


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--rows", "reuse"], ["--rows", "not for a text-to-image pipeline folder"]),
        (["--fid-rows", "full", "--clf-raw"], ["--fid-rows, --clf-raw", "no dataset"]),
        (["--reference", "ode"], ["--reference ode", "no ODE reference"]),
        (["--solvers", "ddpm"], ["no solver 'ddpm' for a flow-matching model; available: euler"]),
    ],
)
def test_frontier_refuses_what_a_pipeline_folder_cannot_take_in_one_line(
    folders, extra, words, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr("lees.tune.runs.Run.sample", lambda *a, **k: pytest.fail("sampled"))
    out = tmp_path / "f"
    code = main(["frontier", "--model", str(folders["flux"]), "-n", "2", *extra, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and all(w in err for w in words), err
    assert not out.exists()  # refused before anything is written


def test_tune_takes_a_sampler_for_a_pipeline_folder_as_its_reference(folders, tmp_path, capsys):
    """--sampler on a pipeline folder: the full run is the pipeline's own call with that solver swapped in."""
    out = tmp_path / "t"
    argv = ["tune", "--model", str(folders["sd"]), "--sampler", "dpm++", "-n", "2", "--batch-size", "2",
            "--steps", "4", "--only", "ddim@2", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert "candidates against dpm++ at 4 steps" in capsys.readouterr().out
    rows = {r["name"]: r for r in json.loads((out / "tune.json").read_text())["rows"]}
    assert rows["full"]["solver"] == "dpm++" and rows["ddim@2"]["solver"] == "ddim"
    bad = ["tune", "--model", str(folders["flux"]), "--sampler", "ddim", "--out", str(tmp_path / "b")]
    assert main(bad) == 2 and not (tmp_path / "b").exists()
    err = capsys.readouterr().err.strip()  # before the pipeline loads: no progress bar, one line
    assert err.splitlines() == [err] and "no solver 'ddim' for a flow-matching model" in err


def test_frontier_takes_prompts_only_for_a_pipeline_folder(tmp_path, capsys):
    code = main(["frontier", "--prompts", "a cat", "--height", "32", "--out", str(tmp_path / "f")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--prompts, --height need a pipeline folder" in err
    assert not (tmp_path / "f").exists()
