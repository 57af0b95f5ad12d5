"""lees tune on a tiny pipeline folder: it finishes and prints a verdict per budget, resumes without
resampling stored pieces, and saves a policy that lees.enable applies exactly as the method ran."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

import lees
import lees.tune.runs
from lees.cli import main
from lees.diffusion.samplers import sample_generators
from lees.models.architectures import DDPM_NOISE
from lees.schedules.tuned import load_tuned
from lees.tune.candidates import candidates
from lees.tune.policy import to_policy
from lees.tune.runs import FULL, Run, build_runs, own_solver
from lees.tune.tuner import TuneConfig, tune
from lees.tune.verdict import verdict

SETTINGS = dict(budgets=[0.8, 0.5], n=4, steps=6, batch_size=2, quick=True, router_train_steps=3)


def tiny_unet32() -> UNet2DModel:
    """1-channel 32x32 (the classifier's feature space scores it), two levels, attention in one."""
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=32, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=8,
    ).eval()  # fmt: skip


@pytest.fixture
def pipe_folder(tmp_path) -> str:
    DDPMPipeline(unet=tiny_unet32(), scheduler=DDPMScheduler(**DDPM_NOISE)).save_pretrained(tmp_path / "pipe")
    return str(tmp_path / "pipe")


def test_tune_prints_verdicts_and_saves_the_winner(pipe_folder, tmp_path, capsys):
    assert main(["tune", "--model", pipe_folder, "--budgets", "0.8", "0.5", "-n", "4", "--steps", "6",
                 "--batch-size", "2", "--quick", "--router-train-steps", "3",
                 "--out", str(tmp_path / "out")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("budget ")]
    assert [line.split(":")[0] for line in lines] == ["budget 0.8", "budget 0.5"]
    assert "best" in lines[0] and f"wrote {tmp_path / 'out' / 'tune.json'}" in out
    report = json.loads((tmp_path / "out" / "tune.json").read_text())
    names = {r["name"] for r in report["rows"]}
    assert {"full", "ddpm@3", "uniform-2", "deepcache-2", "router@0.8"} <= names  # + the router, trained
    assert any(r["kind"] == "cache" for r in report["rows"])  # one of diffusers' caches ran on the UNet
    assert "FirstBlockCache(threshold=0.05)" in report["not_applicable"]  # with its reason
    full = next(r for r in report["rows"] if r["name"] == "full")
    assert full["latency_ratio"] == 1.0 and full["ssim"] == pytest.approx(1.0)
    assert all(r["fd_full"] is not None and r["features"] == "clf" for r in report["rows"])
    assert (tmp_path / "out" / "frontier.png").stat().st_size > 0
    policy = load_tuned(pipe_folder)  # written into the pipeline folder's lees/
    assert policy is not None and f"saved to {pipe_folder}/lees/policy.json" in out
    best = verdict(report["rows"], 0.8)[1]
    assert policy.name == best["name"] and policy.measured[best["name"]]["latency_ratio"] <= 0.8
    assert (
        lees.tuned(pipe_folder)
        == {"num_inference_steps": policy.reference_steps}
        == {"num_inference_steps": 6}
    )


def test_tune_measures_against_the_solver_asked_for(pipe_folder, tmp_path, capsys):
    """--sampler sets the full model's solver (the reference); the model's own is then a candidate."""
    argv = ["tune", "--model", pipe_folder, "--budget", "0.8", "-n", "2", "--steps", "6", "--batch-size", "2",
            "--only", "ddim@3", "ddpm@3", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main([*argv, "--sampler", "ddim"]) == 0
    assert "candidates against ddim at 6 steps" in capsys.readouterr().out
    rows = {r["name"]: r for r in json.loads((tmp_path / "out" / "tune.json").read_text())["rows"]}
    assert set(rows) == {"full", "ddim@3", "ddpm@3"} and rows["full"]["solver"] == "ddim"
    dit = ["tune", "--model", "embedded-dit", "--sampler", "ddim", "--out", str(tmp_path / "dit")]
    assert main(dit) == 2 and not (tmp_path / "dit").exists()  # a DDPM solver for a flow model
    assert "no solver 'ddim' for a flow-matching model; available: euler" in capsys.readouterr().err


def test_an_interrupted_tune_resumes_without_resampling(pipe_folder, tmp_path, monkeypatch):
    sampled, original = [], Run.sample

    def counted(run, *args):
        if len(sampled) == 5 and not resumed:
            raise KeyboardInterrupt
        sampled.append(run.name)
        return original(run, *args)

    trained, train = [], lees.tune.runs.train_router
    monkeypatch.setattr(Run, "sample", counted)
    monkeypatch.setattr(lees.tune.runs, "train_router", lambda *a, **k: trained.append(1) or train(*a, **k))
    resumed = False
    with pytest.raises(KeyboardInterrupt):
        tune(TuneConfig(pipe_folder, **SETTINGS), tmp_path / "out")
    assert len(trained) == 2  # a router per budget, kept in out/routers
    stored = sorted((tmp_path / "out" / "pieces").rglob("*.safetensors"))
    assert len(stored) == 5
    mtimes = {p: p.stat().st_mtime_ns for p in stored}
    resumed, first = True, len(sampled)
    result = tune(TuneConfig(pipe_folder, **SETTINGS), tmp_path / "out")
    total = 2 * len(result.rows)  # two batches per measured run
    assert len(sampled) - first == total - 5  # only the missing pieces were sampled
    assert len(trained) == 2  # the routers were loaded, not trained again
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())


def test_a_folder_of_another_runs_pieces_is_refused_before_any_candidate_is_built(
    pipe_folder, tmp_path, monkeypatch
):
    (tmp_path / "out" / "pieces").mkdir(parents=True)
    (tmp_path / "out" / "pieces" / "settings.json").write_text('{"seed": 99}')
    built = []
    monkeypatch.setattr("lees.tune.tuner.build_runs", lambda *a, **k: built.append(1))
    with pytest.raises(ValueError, match="holds the pieces of a run with other settings"):
        tune(TuneConfig(pipe_folder, **SETTINGS), tmp_path / "out")
    assert not built  # no router trained, no cache calibrated, for a run that cannot store its pieces


def _pipe_images(pipe: DDPMPipeline, steps: int) -> torch.Tensor:
    gens = sample_generators(0, range(2), torch.device("cpu"))
    images = pipe(batch_size=2, generator=gens, num_inference_steps=steps, output_type="np").images
    return torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1


@pytest.mark.parametrize(
    "name", ["ddim@3", "deepcache-2", "TaylorSeer(cache_interval=3, disable_cache_before_step=3)"]
)
def test_enable_applies_a_saved_policy_as_the_method_ran(pipe_folder, name, capsys):
    pipe = DDPMPipeline.from_pretrained(pipe_folder)
    scheduler, unet = pipe.scheduler, pipe.unet
    found = [c for c in candidates(6, ("ddpm", "ddim"), quick=True) if c.name == name]
    runs, reasons = build_runs(found, unet, scheduler, own_solver(scheduler), 6, seed=0)
    assert not reasons
    direct = runs[name].sample(unet, scheduler, 0, 2, 0).images.clamp(-1, 1)  # the method, as tune ran it
    rows = [{"name": name, "latency_ratio": 0.5, "psnr": 20.0}]
    to_policy(runs[name], runs[FULL], rows, 0.6).save(f"{pipe_folder}/lees")
    lees.enable(pipe, pipe_folder)
    said = capsys.readouterr().out
    assert f"{runs[name].solver} solver at {runs[name].steps} steps" in said and "ddpm at 6 steps" in said
    enabled = _pipe_images(pipe, lees.tuned(pipe_folder)["num_inference_steps"])  # 6: the runs' reference
    solver = {"ddim": "DDIMScheduler"}.get(runs[name].solver, "DDPMScheduler")
    assert (
        type(pipe.scheduler.current).__name__ == solver and len(pipe.scheduler.timesteps) == runs[name].steps
    )
    torch.testing.assert_close(enabled, direct, atol=1e-5, rtol=0)
    lees.disable(pipe)
    assert not getattr(unet, "_diffusers_hook", None) or not any(
        getattr(m, "_diffusers_hook", None) and m._diffusers_hook.hooks for m in unet.modules()
    )  # disable removed the schedule's or the cache's hooks
    assert pipe.scheduler is scheduler  # and gave the pipeline its own scheduler back


def _row(name, kind, latency, fd):
    return {"name": name, "kind": kind, "solver": "ddim", "latency_ratio": latency, "fd_full": fd,
            "psnr": 20.0, "ssim": 0.5}  # fmt: skip


def test_verdict_says_when_fewer_steps_win_and_when_nothing_fits():
    rows = [
        _row("full", "steps", 1.0, 0.0),
        _row("ddim@10", "steps", 0.5, 3.0),
        _row("uniform-2", "schedule", 0.7, 1.0),
    ]
    line, best = verdict(rows, 0.8)
    assert best["name"] == "uniform-2" and "best fewer steps ddim@10" in line
    line, best = verdict(rows, 0.6)
    assert best["name"] == "ddim@10" and line.endswith("fewer steps win")
    line, best = verdict(rows, 0.3)
    assert best is None and "nothing measured runs within 0.3x" in line and "ddim@10" in line


def test_the_verdict_names_the_best_under_the_data_too_where_they_disagree():
    rows = [
        _row("full", "steps", 1.0, 0.0) | {"fd_clf": 5.4},
        _row("ddim@10", "steps", 0.5, 3.0) | {"fd_clf": 4.9},
        _row("uniform-2", "schedule", 0.7, 1.0) | {"fd_clf": 5.5},
    ]
    line, best = verdict(rows, 0.8)
    assert best["name"] == "uniform-2"  # the policy follows fidelity to the full model
    assert line.endswith("under fd_clf to the data (full model 5.40): best ddim@10 (4.90)")


def test_latency_is_the_median_round_so_one_stalled_piece_moves_it_little():
    from lees.tune.measure import Measured

    full = Measured(torch.zeros(0), [2.0, 2.0, 2.0, 2.0])
    run = Measured(torch.zeros(0), [1.0, 1.0, 60.0, 1.0])  # a 58-second stall in one piece
    assert run.latency_ratio(full) == 0.5


def test_the_own_solver_is_named_by_the_scheduler_config():
    from diffusers import FlowMatchEulerDiscreteScheduler

    ddpm = DDPMScheduler(**DDPM_NOISE)
    assert own_solver(ddpm) == "ddpm" and own_solver(ddpm, "DDIMScheduler") == "ddim"
    assert own_solver(ddpm, "LMSDiscreteScheduler") == "ddpm"  # none in the registry: the family's default
    assert own_solver(FlowMatchEulerDiscreteScheduler()) == "euler"


def test_rows_added_to_a_stored_tune_are_said_to_pair_with_another_sessions_full_rounds(tmp_path, capsys):
    from lees.tune.measure import measure

    model, scheduler = tiny_unet32(), DDPMScheduler(**DDPM_NOISE)
    full, fewer = Run(FULL, "steps", "ddim", 4), Run("ddim@2", "steps", "ddim", 2)
    settings = dict(n=4, batch_size=2, seed=0, out=tmp_path / "out")
    measure(model, scheduler, {FULL: full}, **settings)
    measure(model, scheduler, {FULL: full, "ddim@2": fewer}, **settings)  # the full model's pieces are read
    said = capsys.readouterr().out
    assert "warning: ddim@2: timed in other rounds than the full model's stored ones" in said
    measure(model, scheduler, {FULL: full, "ddim@2": fewer}, **settings)  # everything read: nothing to say
    other = dict(settings, out=tmp_path / "new")
    measure(model, scheduler, {FULL: full, "ddim@2": fewer}, **other)  # sampled in the same rounds
    assert "warning" not in capsys.readouterr().out


def test_a_runs_pieces_are_found_by_its_name_as_the_folder_spells_it(tmp_path):
    from lees.tune.measure import piece_folder, piece_name

    run = Run("TaylorSeer(cache_interval=3, disable_cache_before_step=3)", "cache", "euler", 4)
    folder = piece_folder(tmp_path, run)
    assert folder.name.rsplit("-", 1)[0] == piece_name(run.name)
    assert not set(piece_name(run.name)) & set("(), =")  # a plain folder name


def test_the_frontier_draws_the_full_models_own_interval_where_it_has_one(tmp_path, monkeypatch):
    import lees.tune.plot

    drawn = []
    monkeypatch.setattr(lees.tune.plot, "save_figure", lambda fig, path: drawn.append(fig) or path)

    def row(name, kind, latency, value, interval):
        return {"name": name, "kind": kind, "solver": "euler", "steps": 4, "latency_ratio": latency,
                "psnr_ode": value, "psnr_ode_interval": interval}  # fmt: skip

    rows = [row(FULL, "steps", 1.0, 38.0, [36.0, 39.5]), row("euler@2", "steps", 0.5, 30.0, [29.0, 31.0]),
            row("search", "schedule", 0.4, 36.0, [35.0, 37.0])]  # fmt: skip
    lees.tune.plot.frontier(rows, [0.5], tmp_path / "f.png", metric="psnr_ode")
    (ax,) = drawn[0].axes
    full = next(c for c in ax.containers if c.get_label() == "full model")
    (bar,) = full.lines[2]  # the vertical error bar's segments
    assert bar.get_segments()[0][:, 1].tolist() == [36.0, 39.5]
    assert ax.get_ylabel() == lees.tune.plot.LABELS["psnr_ode"]


def test_the_frontiers_distance_axis_is_linear_from_0_unless_one_row_sits_far_above_the_rest(
    tmp_path, monkeypatch
):
    import lees.tune.plot

    drawn = []
    monkeypatch.setattr(lees.tune.plot, "save_figure", lambda fig, path: drawn.append(fig) or path)

    def rows(*values):
        kinds = ["steps"] + ["schedule"] * (len(values) - 1)
        return [{"name": FULL if i == 0 else f"r{i}", "kind": kinds[i], "solver": "euler", "steps": 4,
                 "latency_ratio": 1.0 - i / 10, "fd_full": v} for i, v in enumerate(values)]  # fmt: skip

    for values in [(0.0, 0.04, 0.3, 0.7), (1e-13, 0.1, 0.2, 30.0), (4.6, 4.8, 5.3, 200.0)]:
        lees.tune.plot.frontier(rows(*values), [0.5], tmp_path / "f.png")
    scales = [fig.axes[0].get_yscale() for fig in drawn]
    assert scales == ["linear", "symlog", "log"]
    assert drawn[0].axes[0].get_ylim()[0] == 0 and len(drawn[0].axes[0].get_yticklabels()) > 2
