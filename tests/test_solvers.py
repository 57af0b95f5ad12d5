"""The solver registry, sampling a class-conditional flow-matching DiT, the shipped embedded-dit and
class agreement."""

import json

import pytest
import torch
from diffusers import DDPMScheduler, DiTTransformer2DModel, FlowMatchEulerDiscreteScheduler
from safetensors.torch import load_file

from lees import Schedule, find_blocks, sample
from lees.cli import main
from lees.diffusion.samplers import make_sampler, sample_generators, sampler_timesteps
from lees.diffusion.solvers import DDPM_SOLVERS, FLOW_SOLVERS, SolverError, make_solver
from lees.evaluation.agreement import class_agreement, drawn_labels, predicted_classes
from lees.learn.backbone_training import BackboneTrainConfig, train_backbone
from lees.models import backbones
from lees.models.architectures import ARCHITECTURES, DDPM_NOISE, EMBEDDED_DIT, FLOW_NOISE
from lees.models.backbones import BackboneError, load_backbone, load_noise_scheduler
from lees.models.denoisers import draw_labels
from lees.models.pipelines import ClassFlowPipeline

from .conftest import tiny_unet
from .test_flow import TINY_DIT, _data

# embedded-dit's structure at 16x16 (16 tokens), so that sampling it takes milliseconds.
SMALL_DIT = {k: v for k, v in TINY_DIT.items() if k != "_class_name"} | {"sample_size": 16}


def small_dit(seed: int = 0) -> DiTTransformer2DModel:
    torch.manual_seed(seed)
    return DiTTransformer2DModel(**SMALL_DIT).eval()


def _calls(model: torch.nn.Module) -> list:
    seen = []
    model.register_forward_pre_hook(lambda m, args, kwargs: seen.append((args, kwargs)), with_kwargs=True)
    return seen


@pytest.mark.parametrize(
    "family,name", [("ddpm", n) for n in DDPM_SOLVERS] + [("flow", n) for n in FLOW_SOLVERS]
)
def test_every_solver_samples_finite_images_one_call_per_timestep(family, name):
    flow = family == "flow"
    model = small_dit() if flow else tiny_unet()
    noise = FlowMatchEulerDiscreteScheduler(**FLOW_NOISE) if flow else DDPMScheduler(**DDPM_NOISE)
    seen = _calls(model)
    images = sample(model, None, 3, steps=4, sampler=name, scheduler=noise, progress=False,
                    guidance_scale=2.0 if flow else 1.0)  # fmt: skip
    assert images.shape == (3, 1, 16, 16) and torch.isfinite(images).all()
    visited = make_sampler(noise, name, 4).timesteps
    assert len(seen) == len(visited) >= 4  # one call per timestep, guidance included (batched)
    assert [float(args[1][0]) for args, _ in seen] == [float(t) for t in visited]  # float ones for flow
    if flow:
        assert all(len(args[0]) == 6 for args, _ in seen)  # [cond, null]


def test_a_solver_of_the_other_family_is_a_one_line_error():
    flow = FlowMatchEulerDiscreteScheduler(**FLOW_NOISE)
    with pytest.raises(
        SolverError, match="no solver 'pndm' for a flow-matching model; available: euler, heun"
    ):
        make_solver(flow, "pndm")
    with pytest.raises(SolverError, match="no solver 'lms' for a DDPM-family model; available: ddpm, ddim"):
        make_sampler(DDPMScheduler(**DDPM_NOISE), "lms", 4)
    dpm = make_solver(FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0), "dpm++")
    assert dpm.config.use_flow_sigmas and dpm.config.flow_shift == 3.0
    assert dpm.config.prediction_type == "flow_prediction" and "shift" not in dpm.config


class ExactVelocity(torch.nn.Module):
    """The exact velocity field of a single data point x0: v(x_t, t) = (x_t - x0) / s at s = t / 1000."""

    def __init__(self, x0: torch.Tensor):
        super().__init__()
        self.x0, self.w = x0, torch.nn.Parameter(torch.zeros(()))
        self.config = {"in_channels": 1, "sample_size": 4}

    def forward(self, x, t, **_):
        return (x - self.x0) / (t.view(-1, 1, 1, 1) / 1000) + 0 * self.w


@pytest.mark.parametrize("name", ["euler", "heun"])
def test_flow_sampler_on_the_exact_velocity_reaches_the_data_point(name):
    x0 = torch.rand(1, 1, 4, 4) * 2 - 1
    noise = FlowMatchEulerDiscreteScheduler(**FLOW_NOISE)
    for steps in (1, 3, 10):
        images = sample(
            ExactVelocity(x0), None, 2, steps=steps, sampler=name, scheduler=noise, progress=False
        )
        assert torch.allclose(images, x0.expand(2, -1, -1, -1), atol=1e-4)


def test_lees_flow_sampling_with_guidance_is_the_pipelines():
    model = small_dit()
    gens = sample_generators(0, range(3), torch.device("cpu"))
    labels = draw_labels(model, gens, torch.device("cpu"))
    latents = torch.stack([torch.randn(1, 16, 16, generator=g) for g in gens])
    pipe = ClassFlowPipeline(model, FlowMatchEulerDiscreteScheduler(**FLOW_NOISE))
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(labels, 3.0, 5, latents=latents, output_type="pt").images
    images = sample(model, None, 3, steps=5, scheduler=pipe.scheduler, guidance_scale=3.0, progress=False)
    assert torch.allclose((images / 2 + 0.5).clamp(0, 1), expected, atol=1e-5)
    assert torch.equal(drawn_labels(model, 0, 3), labels)
    with pytest.raises(ValueError, match="needs a class-conditional model with a null class"):
        sample(tiny_unet(), None, 1, steps=2, scheduler=DDPMScheduler(**DDPM_NOISE), guidance_scale=2.0)


def test_a_schedule_over_flow_timesteps_round_trips(tmp_path):
    blocks = find_blocks(small_dit())
    timesteps = sampler_timesteps(FlowMatchEulerDiscreteScheduler(**FLOW_NOISE), 10, "euler")
    schedule = Schedule.full(blocks, timesteps, settings={"sampler": "euler"})
    schedule.save(tmp_path / "schedule.json")
    loaded = Schedule.load(tmp_path / "schedule.json", blocks)
    assert loaded.timesteps == schedule.timesteps and (loaded.actions == schedule.actions).all()


def test_class_agreement_counts_per_class():
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    predicted = torch.tensor([0, 1, 1, 1, 0, 2])
    report = class_agreement(predicted, labels, 4)
    assert report["agreement"] == pytest.approx(4 / 6) and report["n"] == 6
    assert report["per_class"][0] == {"n": 2, "agree": 0.5}
    assert report["per_class"][1]["agree"] == pytest.approx(2 / 3)
    assert report["per_class"][3] == {"n": 0, "agree": None}


def test_class_agreement_of_a_toy_classifier():
    class Brightness(torch.nn.Module):  # class 1 for a bright image, else 0
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, x):
            bright = x.mean((1, 2, 3))
            return torch.stack([-bright, bright], 1) * self.w

    images = torch.cat([torch.full((3, 1, 8, 8), 0.8), torch.full((2, 1, 8, 8), -0.8)])
    report = class_agreement(predicted_classes(images, Brightness()), torch.tensor([1, 1, 0, 0, 0]), 2)
    assert report["per_class"][1]["agree"] == 1.0 and report["per_class"][0]["agree"] == pytest.approx(2 / 3)


def test_export_of_a_runs_checkpoint_ships_and_loads(tmp_path, monkeypatch):
    monkeypatch.setitem(ARCHITECTURES, "embedded-dit", TINY_DIT)
    config = BackboneTrainConfig(data=_data(tmp_path), train_steps=2, batch_size=4, checkpoint_every=1,
                                 grid=0, arch="embedded-dit")  # fmt: skip
    train_backbone(tmp_path / "run", config)
    assert main(["backbone", "export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "dit"),
                 "--grid", "0"]) == 0  # fmt: skip
    out = tmp_path / "dit"
    ema = {
        k[4:]: v for k, v in load_file(tmp_path / "run" / "checkpoint.safetensors").items() if k[:4] == "ema."
    }
    model = load_backbone(str(out))
    assert all(torch.equal(model.state_dict()[k], v.half().float()) for k, v in ema.items())
    assert isinstance(load_noise_scheduler(str(out)), FlowMatchEulerDiscreteScheduler)
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "ClassFlowPipeline"
    card = json.loads((out / "training.json").read_text())
    assert card["step"] == 2 and card["weights_dtype"] == "float16"
    assert "step 2 of 2" in (out / "README.md").read_text()
    grid = tmp_path / "s.png"
    assert (
        main(
            [
                "sample",
                "--model",
                str(out),
                "-n",
                "2",
                "--steps",
                "2",
                "--sampler",
                "heun",
                "--out",
                str(grid),
            ]
        )
        == 0
    )
    assert main(["sample", "--model", str(out), "-n", "2", "--sampler", "pndm", "--out", str(grid)]) == 2


def test_embedded_dit_loads_offline(monkeypatch):
    if not (backbones.EMBEDDED_DIT_DIR / "transformer" / "config.json").is_file():
        pytest.skip("embedded-dit is not in this checkout")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_backbone("embedded-dit")
    assert isinstance(model, DiTTransformer2DModel) and model.dtype == torch.float32
    assert {k: model.config[k] for k in EMBEDDED_DIT if k != "_class_name"} == {
        k: v for k, v in EMBEDDED_DIT.items() if k != "_class_name"
    }
    assert isinstance(load_noise_scheduler("embedded-dit"), FlowMatchEulerDiscreteScheduler)
    weights = backbones.EMBEDDED_DIT_DIR / "transformer" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size <= 20e6
    assert {v.dtype for v in load_file(weights).values()} == {torch.float16}


def test_embedded_dit_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(backbones, "EMBEDDED_DIT_DIR", tmp_path / "dit")
    with pytest.raises(BackboneError, match="weights of embedded-dit are not shipped.*lees backbone export"):
        load_backbone("embedded-dit")
