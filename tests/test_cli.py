import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lees.evaluation.metrics
from lees import Schedule
from lees.cli import build_parser, main
from lees.models.backbones import EMBEDDED_DIR

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


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
    images = np.load(tmp_path / "grid.npz")["images"]
    assert images.shape == (3, 16, 16, 1) and images.dtype == np.uint8
    assert f"wrote {out}" in capsys.readouterr().out


def test_sample_refuses_a_schedule_for_another_model(folder, tmp_path, capsys):
    Schedule.full(["a", "b"], [1, 0]).save(tmp_path / "s.json")
    argv = ["sample", "--model", folder, "--schedule", str(tmp_path / "s.json"), "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "the schedule is for 2 blocks, the model has 12" in capsys.readouterr().err


def test_train_at_a_target_gated_share_writes_a_schedule_that_runs_it(folder, idx_data, tmp_path, capsys):
    """Budget mode's gates are shifted alike so that the written schedule, on the sampler's own steps,
    runs the share asked for (here each block alike: the executed ratio), and the gates file gives it."""
    from lees.schedules.saving import load_gate

    argv = ["train", "--model", folder, "--data", idx_data, "--resize", "--train-steps", "2", "--batch-size",
            "4", "--no-held-out", "--steps", "10", "--target-gated-share", "0.45"]  # fmt: skip
    argv += ["--out", str(tmp_path)]
    assert main(argv) == 0
    assert "bias shifted by" in capsys.readouterr().out
    schedule = Schedule.load(tmp_path / "schedule.json")
    assert abs(schedule.executed_ratio - 0.45) <= 0.02
    assert schedule.settings["schedule_gated_share"] == pytest.approx(schedule.executed_ratio)
    gate, names = load_gate(tmp_path / "gates.safetensors")
    again = Schedule.from_gate(gate, names, schedule.timesteps)
    assert np.array_equal(again.actions, schedule.actions)


def test_train_then_schedules(folder, idx_data, tmp_path, capsys):
    out = tmp_path / "lees"
    argv = ["train", "--model", folder, "--data", idx_data, "--resize"]  # the tiny model takes 16x16
    argv += ["--train-steps", "3", "--batch-size", "4"]
    assert main([*argv, "--steps", "10", "--out", str(out)]) == 0
    for name in ("gates.safetensors", "schedule.json", "train_log.jsonl", "gates.png", "schedule.png"):
        assert (out / name).is_file(), name
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 3
    assert "held-out loss" in capsys.readouterr().out
    learned = Schedule.load(out / "schedule.json")
    assert learned.source == "learned" and learned.num_steps == 10
    assert learned.settings["held_out_loss_full"] > 0
    for kind, extra in (("full", []), ("ase", ["--drop-length", "100"]), ("random", ["--ratio", "0.5"])):
        assert main(["schedule", kind, "--model", folder, "--out", str(tmp_path / kind), *extra]) == 0
        assert Schedule.load(tmp_path / kind / "schedule.json").source == kind
    argv = [
        "schedule",
        "learned",
        "--model",
        folder,
        "--gates",
        str(out / "gates.safetensors"),
        "--steps",
        "7",
    ]
    assert main([*argv, "--out", str(tmp_path / "l7")]) == 0
    assert Schedule.load(tmp_path / "l7" / "schedule.json").num_steps == 7


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--lambda", "-1"], "lambda must be >= 0"),
        (["train", "--target-ratio", "1.5"], "must lie in (0, 1]"),
        (["schedule", "learned"], "needs --gates"),
        (["schedule", "random", "--ratio", "2"], "ratio must lie"),
    ],
)
def test_bad_train_and_schedule_input(folder, tmp_path, capsys, argv, message):
    assert main([*argv, "--model", folder, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


class _PixelFeatures:
    """A cheap stand-in for the Inception extractor: 8 pooled pixel values."""

    name = "pixels"

    def __init__(self, device=None):
        pass

    def __call__(self, images):
        return torch.nn.functional.adaptive_avg_pool2d(images, (2, 4)).flatten(1).double().numpy()


def test_eval_two_schedules(folder, idx_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LEES_CACHE", str(tmp_path / "cache"))
    # installed Inception weights make both metrics the default (a stand-in extractor keeps it fast)
    monkeypatch.setattr("lees.evaluation.metrics.inception_path", lambda: tmp_path)
    monkeypatch.setitem(lees.evaluation.metrics.EXTRACTORS, "inception", _PixelFeatures)
    for kind in ("full", "ase"):
        assert main(["schedule", kind, "--model", folder, "--steps", "3", "--out", str(tmp_path / kind)]) == 0
    argv = [
        "eval",
        "--model",
        folder,
        "--data",
        idx_data,
        "-n",
        "4",
        "--seeds",
        "0",
        "1",
        "--out",
        str(tmp_path),
    ]
    argv += [
        "--schedule",
        str(tmp_path / "full" / "schedule.json"),
        "--schedule",
        str(tmp_path / "ase" / "schedule.json"),
    ]
    assert main(argv) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    assert len(report["results"]) == 2 and "t_test" in report
    assert all(len(r["fd"]) == 2 for r in report["results"].values())
    assert report["metrics"] == ["clf", "inception"]
    assert all(len(r["fd_inception"]) == 2 for r in report["results"].values())
    out = capsys.readouterr().out
    assert "paired t-test on clf FD" in out and "inception FD" in out


def test_schedule_and_sample_on_custom_timesteps(folder, tmp_path, capsys):
    steps = "999,700,300,50"
    argv = ["schedule", "random", "--model", folder, "--ratio", "0.5", "--sampler", "ddim"]
    assert main([*argv, "--timesteps", steps, "--out", str(tmp_path / "s")]) == 0
    schedule = json.loads((tmp_path / "s" / "schedule.json").read_text())
    assert schedule["timesteps"] == [999, 700, 300, 50]
    argv = ["sample", "--model", folder, "-n", "2", "--sampler", "ddim", "--timesteps", steps]
    assert main([*argv, "--schedule", str(tmp_path / "s" / "schedule.json"), "--out", str(tmp_path)]) == 0
    assert "4 ddim steps" in capsys.readouterr().out
    assert main([*argv, "--timesteps", "5,10", "--out", str(tmp_path)]) == 2
    assert "strictly descending" in capsys.readouterr().err


def test_sample_takes_steps_and_sampler_from_the_schedule(folder, tmp_path, capsys):
    argv = ["schedule", "random", "--model", folder, "--sampler", "ddim", "--steps", "3", "--ratio", "0.5"]
    assert main([*argv, "--out", str(tmp_path / "s")]) == 0
    schedule = str(tmp_path / "s" / "schedule.json")
    assert Schedule.load(schedule).settings["sampler"] == "ddim"
    capsys.readouterr()
    sample = [
        "sample",
        "--model",
        folder,
        "-n",
        "2",
        "--schedule",
        schedule,
        "--out",
        str(tmp_path / "a.png"),
    ]
    assert main(sample) == 0  # no --steps: the schedule's 3, not the default 50
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'a.png'}" in out and "(2 samples, 3 ddim steps)" in out
    for extra, message in (
        (["--sampler", "ddpm"], "made for the ddim sampler, not ddpm"),
        (["--steps", "50"], "the schedule has 3 steps, not 50"),
    ):
        assert main([*sample, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]


def test_sample_writes_the_format_its_suffix_names(folder, tmp_path, capsys):
    out = tmp_path / "grid.jpg"
    assert main(["sample", "--model", folder, "-n", "2", "--steps", "2", "--out", str(out)]) == 0
    assert Image.open(out).format == "JPEG" and (tmp_path / "grid.npz").is_file()
    assert f"wrote {out}" in capsys.readouterr().out
    assert (
        main(["sample", "--model", folder, "-n", "2", "--steps", "2", "--out", str(tmp_path / "g.xyz")]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write a picture named g.xyz" in err[0]
    assert not list(tmp_path.glob("g.*"))


def test_train_shows_the_held_out_loss_or_skips_it(folder, idx_data, tmp_path, capsys):
    argv = ["train", "--model", folder, "--data", idx_data, "--resize"]  # the tiny model takes 16x16
    argv += ["--train-steps", "2", "--batch-size", "4"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    out, err = capsys.readouterr()
    assert "held-out loss" in out and "held-out loss" in err  # the result, and the progress bar
    settings = Schedule.load(tmp_path / "a" / "schedule.json").settings
    assert settings["sampler"] == "ddpm" and settings["held_out_loss_gated"] > 0
    assert main([*argv, "--no-held-out", "--out", str(tmp_path / "b")]) == 0
    out, err = capsys.readouterr()
    assert "held-out" not in out + err and f"wrote {tmp_path / 'b' / 'gates.safetensors'}" in out
    assert "held_out_loss_full" not in Schedule.load(tmp_path / "b" / "schedule.json").settings


def test_option_names_agree_across_commands(tmp_path, capsys):
    parser = build_parser()
    args = parser.parse_args(["backbone", "train", "--out", "x", "--train-steps", "7"])
    assert args.train_steps == 7
    with pytest.raises(SystemExit):
        parser.parse_args(["backbone", "train", "--out", "x", "--steps", "7"])
    capsys.readouterr()
    for flag in ("-n", "--n"):  # --n: the old spelling, still read but no longer shown
        assert parser.parse_args(["schedule", "ase-grid", "--out", "x", flag, "8"]).n == 8
    assert main(["backbone", "train", "--out", str(tmp_path), "--train-steps", "0"]) == 2
    assert "train_steps, batch_size and checkpoint_every must be positive" in capsys.readouterr().err


def _help(*command):
    result = subprocess.run(
        [sys.executable, "-m", "lees.cli", *command, "--help"], capture_output=True, text=True, check=True
    )
    return " ".join(result.stdout.split())


def test_help_names_the_embedded_model_and_keeps_the_shipped_classifier():
    assert "embedded (the Fashion-MNIST DDPM shipped with lees; the default)" in _help("sample")
    assert "not the default here: name a model" in _help("blocks")
    classifier = _help("classifier", "train")
    assert "--out runs/classifier" in classifier and "--out src/lees" not in classifier


def test_route_writes_into_the_model_folder_and_sample_runs_it(folder, tmp_path, capsys):
    argv = ["route", "--model", folder, "--steps", "4", "--train-steps", "3", "--trajectories", "2"]
    assert main([*argv, "--batch-size", "2", "--target-ratio", "0.8"]) == 0
    path = Path(folder) / "lees" / "schedule.json"
    out = capsys.readouterr().out
    assert f"wrote {path}" in out and "reuses the rest" in out and "chosen by its step objective" in out
    schedule = Schedule.load(path)
    assert schedule.source == "router" and schedule.flop_ratio <= 0.8 + 1e-9
    assert schedule.settings["provenance"]["model_fingerprint"]
    grid = str(tmp_path / "g.png")
    assert main(["sample", "--model", folder, "-n", "2", "--schedule", str(path), "--out", grid]) == 0
    assert (tmp_path / "g.png").is_file()


def test_route_starts_from_a_schedule(folder, tmp_path, capsys):
    start = tmp_path / "uniform"
    made = ["schedule", "uniform", "--model", folder, "--steps", "4", "--interval", "2", "--out", str(start)]
    assert main(made) == 0
    argv = ["route", "--model", folder, "--steps", "4", "--train-steps", "1", "--trajectories", "2",
            "--batch-size", "2", "--schedule", str(start / "schedule.json"),
            "--out", str(tmp_path / "w")]  # fmt: skip
    assert main([*argv, "--lambda", "0", "--target-ratio", "0"]) == 0
    warm = Schedule.load(tmp_path / "w" / "schedule.json")
    assert warm.settings["start"]["source"] == "uniform"
    uniform = Schedule.load(start / "schedule.json")
    assert (warm.actions == uniform.actions).mean() >= 0.9  # one small step keeps most of the start
    assert main([*argv, "--steps", "5"]) == 2
    assert "timesteps are not the router's (4 vs 5 steps)" in capsys.readouterr().err
    base = ["route", "--model", folder, "--steps", "4", "--train-steps", "1", "--trajectories", "2",
            "--batch-size", "2", "--out", str(tmp_path / "r")]  # fmt: skip
    assert main([*base, "--schedule", "full"]) == 0
    assert Schedule.load(tmp_path / "r" / "schedule.json").settings["start"] is None
    assert "started from run everything" in capsys.readouterr().out
    assert main(base) == 0  # the default: the cached baseline within the budget
    assert Schedule.load(tmp_path / "r" / "schedule.json").settings["start"]["source"] == "deepcache"
    assert "started from deepcache every" in capsys.readouterr().out


def test_schedule_deepcache_and_uniform(folder, tmp_path, capsys):
    for kind, extra in (("deepcache", ["--interval", "2"]), ("uniform", ["--between", "skip"])):
        assert (
            main(["schedule", kind, "--model", folder, "--steps", "6", "--out", str(tmp_path / kind), *extra])
            == 0
        )
        schedule = Schedule.load(tmp_path / kind / "schedule.json")
        assert schedule.source == kind and schedule.flop_ratio < 1
    assert not Schedule.load(tmp_path / "uniform" / "schedule.json").reuses
    deepcache = Schedule.load(tmp_path / "deepcache" / "schedule.json")
    assert deepcache.reuses and deepcache.settings["cache_bytes_per_sample"] > 0
    assert "KiB per sample" in capsys.readouterr().out


class StubInception:
    """Stands in for the Inception network (under its name): pooled pixels, no weights to load."""

    name = "inception"

    def __init__(self, device="cpu") -> None:
        pass

    def __call__(self, images):
        import torch

        return torch.nn.functional.adaptive_avg_pool2d(images, (2, 3)).flatten(1).double().numpy()


def _no_inception(device="cpu"):
    raise FileNotFoundError("the FID Inception weights are not installed")


@pytest.mark.parametrize("inception", [StubInception, _no_inception])
def test_ase_grid_names_its_metric_and_checks_its_choice(
    folder, idx_data, tmp_path, capsys, monkeypatch, inception
):
    import lees.learn.ase_grid

    monkeypatch.setenv("LEES_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(lees.learn.ase_grid, "InceptionFeatures", inception)
    argv = ["schedule", "ase-grid", "--model", folder, "--steps", "3", "-n", "4", "--data", idx_data]
    sampler = "ddpm" if inception is StubInception else "ddim"  # the grid scores on the sampler asked for
    argv += ["--sampler", sampler]
    used, score = [], lees.learn.ase_grid.score_schedule
    monkeypatch.setattr(
        lees.learn.ase_grid, "score_schedule", lambda *a, **k: used.append(k["sampler"]) or score(*a, **k)
    )
    assert main([*argv, "--out", str(tmp_path / "g")]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "g" / "grid.json").read_text())
    assert report["metric"] == "fd_clf" and all(r["metric"] == "fd_clf" for r in report["candidates"])
    assert "candidates by fd_clf" in out and " fd_clf " in out
    settings = Schedule.load(tmp_path / "g" / "schedule.json").settings
    assert settings["grid_metric"] == "fd_clf" and set(used) == {sampler}
    if inception is StubInception:
        scores = report["check"]["scores"]
        assert set(scores) == {"best", "ase default"} and set(scores["best"]) == {"fd_clf", "fid"}
        assert scores["best"]["fd_clf"] == pytest.approx(min(r["fd"] for r in report["candidates"]), rel=1e-4)
        lines = out.splitlines()
        head = lines.index(next(line for line in lines if line.split() == ["FLOPs", "fd_clf", "fid"]))
        assert lines[head + 1].startswith("best") and lines[head + 2].startswith("ase default")
    else:
        assert report["check"].startswith("skipped: the FID Inception weights are not installed")
        assert "not checked under Inception FID" in out


def help_examples() -> list[str]:
    """Every ``lees ...`` line of every command's examples (a trailing backslash continues a line)."""
    from lees.cli import COMMANDS

    found = []
    for module in COMMANDS:
        for name, text in vars(module).items():
            if name.startswith("EPILOG"):
                joined = text.replace("\\\n", " ")
                found += [line.strip() for line in joined.splitlines() if line.strip().startswith("lees ")]
    return found


def test_every_command_has_examples_and_each_parses():
    examples = help_examples()
    commands = {" ".join(e.split()[1:3]) if e.split()[1] in ("backbone", "classifier") else e.split()[1]
                for e in examples}  # fmt: skip
    parser = build_parser()
    named = {a for a in parser._subparsers._group_actions[0].choices}  # every subcommand
    assert named <= {c.split()[0] for c in commands}, named - {c.split()[0] for c in commands}
    for example in examples:
        argv = shlex.split(example, comments=True)[1:]
        parser.parse_args(argv)  # SystemExit (with the reason on stderr) if an option is wrong


def test_schedule_examples_run(tmp_path, monkeypatch, capsys):
    if not (EMBEDDED_DIR / "unet" / "config.json").is_file():
        pytest.skip("the embedded model is not in this checkout")
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    for example in help_examples():
        argv = shlex.split(example, comments=True)[1:]
        if argv[0] == "schedule" and argv[1] != "ase-grid":
            out = tmp_path / argv[argv.index("--out") + 1]
            assert main([*argv[: argv.index("--out")], "--out", str(out)]) == 0, example
            assert Schedule.load(out / "schedule.json").num_steps > 0
    assert "uniform-2-skip schedule on 50 steps" in capsys.readouterr().out


def subcommands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every runnable command path of ``parser`` (``("schedule",)``, ``("backbone", "train")``, ...)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += subcommands(sub, (*prefix, name)) or [(*prefix, name)]
    return found


def printed_help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit:
        main([*argv, "--help"])
    assert exit.value.code == 0, argv
    return capsys.readouterr().out


# The examples cheap enough to run as printed (seconds on a CPU): the schedule examples run in
# test_schedule_examples_run; the others train, sample or score for minutes to hours (their options
# are run on tiny models by the tests of each command, and every example parses: see above).
CHEAP_EXAMPLES = ("lees blocks ", "lees frontier --plot-only ")


def test_every_help_runs_and_its_cheap_examples_run_as_printed(tmp_path, monkeypatch, capsys):
    top = printed_help([], capsys)
    commands = subcommands(build_parser())
    assert {c[0] for c in commands} <= set(top.split()), top  # lees --help names every command
    printed = []
    for command in commands:
        text = printed_help(list(command), capsys).replace("\\\n", " ")
        assert "example" in text, command
        printed += [" ".join(line.split()) for line in text.splitlines() if line.strip().startswith("lees ")]
    assert sorted(printed) == sorted(" ".join(e.split()) for e in help_examples())  # parsed above = shown
    monkeypatch.chdir(tmp_path)  # the examples write under runs/ here
    stored = tmp_path / "runs" / "frontier"
    stored.mkdir(parents=True)
    (stored / "frontier.jsonl").write_text((RESULTS / "frontier" / "frontier.jsonl").read_text())
    ran = [e for e in printed if e.startswith(CHEAP_EXAMPLES)]
    for example in ran:
        assert main(shlex.split(example, comments=True)[1:]) == 0, example
    assert len(ran) == 3 and (tmp_path / "runs" / "blocks" / "blocks.json").is_file()
    assert (stored / "frontier-fd_clf.png").is_file()


def test_frontier_samples_scores_resumes_and_redraws(tmp_path, monkeypatch, capsys):
    if not (EMBEDDED_DIR / "unet" / "config.json").is_file():
        pytest.skip("the embedded model is not in this checkout")
    import lees.reporting.frontier_run
    import lees.sampling.stored

    def no_inception():
        raise FileNotFoundError("the FID Inception weights are not installed")

    monkeypatch.setenv("LEES_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(lees.reporting.frontier_run, "inception_path", no_inception)
    monkeypatch.setattr(lees.reporting.frontier_run, "REFERENCE_N", {"clf": 200})  # a small reference: quick
    out = tmp_path / "frontier"
    argv = ["frontier", "-n", "2", "--fewer", "25", "--rows", "learned", "--out", str(out)]
    assert main(argv) == 0
    rows = [json.loads(line) for line in (out / "frontier.jsonl").read_text().splitlines()]
    assert [r["method"] for r in rows] == ["full", "full", "uniform-2", "deepcache-3", "router-0.70"]
    assert [r["steps"] for r in rows[:2]] == [50, 25] and rows[1]["flop_ratio"] == 0.5
    assert (out / "frontier-fd_clf.png").is_file() and "versus_fewer_steps" in rows[2]

    def sampled_again(*args, **kwargs):
        raise AssertionError("the stored pieces were not reused")

    monkeypatch.setattr(lees.sampling.stored, "sample_lockstep", sampled_again)
    assert main(argv) == 0  # every piece is stored: nothing is sampled again, the rows are the same
    assert [json.loads(line) for line in (out / "frontier.jsonl").read_text().splitlines()] == rows
    stored = tmp_path / "stored"  # a run of benchmarks/frontier.py, under its older row names
    stored.mkdir()
    (stored / "frontier.jsonl").write_text((RESULTS / "frontier" / "frontier.jsonl").read_text())
    capsys.readouterr()
    assert main(["frontier", "--plot-only", "--out", str(stored)]) == 0
    assert (stored / "frontier-fd_clf.png").is_file() and (stored / "frontier-fid.png").is_file()
