"""The solver-neutral reference: the converged ODE solution from each sample's noise and label, on a tiny
flow-matching DiT; refused for stochastic solvers; and lees tune's rows judged against it, with intervals."""

import json

import pytest
import torch
from diffusers import DiTTransformer2DModel, FlowMatchEulerDiscreteScheduler

from lees import sample
from lees.cli import main
from lees.evaluation.bootstrap import tie_verdict
from lees.evaluation.fidelity import psnr
from lees.evaluation.ode_reference import CHECK, ODE, check_deterministic, ode_reference
from lees.models.architectures import FLOW_NOISE
from lees.models.pipelines import ClassFlowPipeline

from .test_flow import TINY_DIT
from .test_frontier import without_inception


def tiny_dit() -> DiTTransformer2DModel:
    torch.manual_seed(0)
    return DiTTransformer2DModel(**{k: v for k, v in TINY_DIT.items() if k != "_class_name"}).eval()


def test_the_ode_reference_is_dpm_solver_at_100_steps_and_euler_at_200_lands_closer_than_at_10(tmp_path):
    model, scheduler = tiny_dit(), FlowMatchEulerDiscreteScheduler(**FLOW_NOISE)
    ode, closeness = ode_reference(model, scheduler, 3, 0, tmp_path, guidance_scale=2.0)
    alone = sample(model, None, 3, ODE[1], ODE[0], seed=0, scheduler=scheduler, guidance_scale=2.0,
                   progress=False)  # fmt: skip
    assert torch.allclose(ode, alone, atol=1e-5)  # the same noise and labels as every run of seed 0
    few = sample(
        model, None, 3, 10, CHECK[0], seed=0, scheduler=scheduler, guidance_scale=2.0, progress=False
    )
    assert closeness["psnr_mean"] > float(psnr(few, ode).mean())  # Euler converges toward it with steps
    assert closeness["reference"] == "dpm++@100" and closeness["check"] == "euler@200"
    assert json.loads((tmp_path / "ode-check.json").read_text()) == closeness


@pytest.mark.parametrize("solver", ["ddpm", "euler-a"])
def test_a_stochastic_solver_has_no_ode_partner(solver):
    with pytest.raises(ValueError, match="stochastic"):
        check_deterministic(solver)
    check_deterministic("dpm++")  # a deterministic one passes


def test_tune_on_a_flow_dit_scores_every_row_against_the_ode_solution(tmp_path, capsys):
    ClassFlowPipeline(tiny_dit(), FlowMatchEulerDiscreteScheduler(**FLOW_NOISE)).save_pretrained(
        tmp_path / "dit"
    )
    argv = ["tune", "--model", str(tmp_path / "dit"), "--budget", "0.8", "-n", "4", "--steps", "4",
            "--batch-size", "2", "--quick", "--router-train-steps", "2", "--guidance-scale", "2",
            "--reference", "ode", "--resamples", "50", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "ODE reference dpm++@100 vs euler@200" in out and "interval" in out
    rows = json.loads((tmp_path / "out" / "tune.json").read_text())["rows"]
    full = next(r for r in rows if r["name"] == "full")
    assert full["psnr"] == pytest.approx(100.0) and full["psnr_ode"] < 100.0  # an error of its own
    for row in rows:
        for metric in ("psnr", "ssim", "fd_full", "psnr_ode", "ssim_ode", "fd_ode"):
            low, high = row[f"{metric}_interval"]
            assert low <= high and row[metric] == pytest.approx(row[metric])


def test_tune_refuses_the_ode_reference_for_a_stochastic_full_model(tmp_path, capsys):
    from diffusers import DDPMPipeline, DDPMScheduler

    from .test_tune import tiny_unet32

    DDPMPipeline(unet=tiny_unet32(), scheduler=DDPMScheduler()).save_pretrained(tmp_path / "pipe")
    argv = ["tune", "--model", str(tmp_path / "pipe"), "--reference", "ode", "-n", "4", "--quick",
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 2
    assert "'ddpm' is stochastic" in capsys.readouterr().err
    assert not (tmp_path / "out" / "tune.json").exists()


def test_frontier_judges_fidelity_to_the_ode_solution_against_the_curve(tmp_path, monkeypatch, capsys):
    without_inception(tmp_path, monkeypatch)
    pipe = ClassFlowPipeline(tiny_dit(), FlowMatchEulerDiscreteScheduler(**FLOW_NOISE))
    pipe.save_pretrained(tmp_path / "dit")
    out = tmp_path / "frontier"
    argv = ["frontier", "--model", str(tmp_path / "dit"), "-n", "4", "--steps", "4", "--fewer", "2",
            "--rows", "dit", "--reference", "ode", "--resamples", "20", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    rows = [json.loads(line) for line in (out / "frontier.jsonl").read_text().splitlines()]
    full = next(r for r in rows if r["method"] == "full" and r["steps"] == 4)
    assert full["fd_ode"] > 0 and full["psnr_ode"] < 100  # the full model has an error of its own
    assert full["ode_reference"] == json.loads((out / "ode" / "ode-check.json").read_text())
    judged = next(r for r in rows if r["method"] == "uniform-2")["versus_fewer_steps"]["fd_ode"]
    if judged["verdict"] == "outside the measured range":  # measured latency past the curve's ends: no margin
        assert judged["curve"] is None and "interval" not in judged
    else:
        low, high = judged["interval"]
        assert judged["resamples"] == 20 and low <= high and judged["verdict"] == tie_verdict((low, high))
    assert (out / "frontier-fd_ode.png").is_file() and "under fd_ode" in capsys.readouterr().out
    assert (
        main([*argv[:-2], "--sampler", "dpm++", "--solvers", "euler-a", "--out", str(tmp_path / "no")]) == 2
    )
