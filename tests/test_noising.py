"""The model's own noise process: scheduler configs read from the model, every prediction_type, the
noising and targets against diffusers', and lees' samplers against diffusers' schedulers."""

import pytest
import torch
from diffusers import (
    DDIMPipeline,
    DDIMScheduler,
    DDPMScheduler,
    EDMEulerScheduler,
    UNet2DModel,
)
from diffusers.models.unets.unet_2d import UNet2DOutput

from lees import BackboneError, find_blocks
from lees.diffusion.noising import (
    PREDICTION_TYPES,
    MissingSchedulerError,
    Noising,
    PredictionTypeError,
    split,
    target,
)
from lees.diffusion.samplers import make_sampler, sample_generators
from lees.evaluation.held_out import held_out_loss
from lees.learn.gate_training import GateTrainConfig, train_gates
from lees.models.architectures import DDPM_NOISE
from lees.models.backbones import load_noise_scheduler
from lees.sampling.lockstep import sample

from .conftest import tiny_unet

COSINE = {"beta_schedule": "squaredcos_cap_v2", "clip_sample": True}


def noise_process(kind: str = "epsilon", cls=DDPMScheduler, **config) -> DDPMScheduler:
    return cls.from_config({**DDPM_NOISE, **COSINE, "prediction_type": kind, **config})


@pytest.mark.parametrize("kind", PREDICTION_TYPES)
@pytest.mark.parametrize("betas", ["linear", "squaredcos_cap_v2"])
def test_noising_and_targets_are_diffusers(kind, betas):
    noise = noise_process(kind, beta_schedule=betas)
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 1, 4, 4, generator=gen), torch.randn(6, 1, 4, 4, generator=gen)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    xt, goal = Noising(noise, "cpu")(x0, eps, t)
    assert torch.allclose(xt, noise.add_noise(x0, eps, t), atol=1e-6)
    expected = {"epsilon": eps, "v_prediction": noise.get_velocity(x0, eps, t), "sample": x0}[kind]
    assert torch.allclose(goal, expected, atol=1e-6)
    # what the samplers read back from the model's output: the same x0 and eps (where well conditioned)
    alpha = noise.alphas_cumprod[t].view(-1, 1, 1, 1)
    x0_back, eps_back = split(kind, goal, xt, alpha)
    assert torch.allclose(x0_back[2:4], x0[2:4], atol=1e-5)
    assert torch.allclose(eps_back[2:4], eps[2:4], atol=1e-5)


def test_unknown_prediction_type_is_a_clear_error():
    odd = DDPMScheduler(**DDPM_NOISE)
    odd.register_to_config(prediction_type="flow")
    for call in (lambda: Noising(odd, "cpu"), lambda: make_sampler(odd, "ddim", 4)):
        with pytest.raises(PredictionTypeError, match="'flow' is not one of epsilon, v_prediction, sample"):
            call()
    with pytest.raises(PredictionTypeError):
        target("flow", torch.zeros(1), torch.zeros(1), torch.ones(1))


def _hand_loop(model, noise, sampler: str, steps: int, n: int, seed: int) -> torch.Tensor:
    """diffusers' own scheduler stepped by hand on lees' start noise (and per-sample step noise)."""
    loop = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}[sampler].from_config(noise.config)
    loop.set_timesteps(steps)
    gens = sample_generators(seed, range(n), torch.device("cpu"))
    x = torch.stack([torch.randn((1, 16, 16), generator=g) for g in gens])
    for t in loop.timesteps:
        with torch.no_grad():
            out = model(x, t.expand(n)).sample
        x = loop.step(out, t, x, generator=gens).prev_sample
    return x


@pytest.mark.parametrize("kind", PREDICTION_TYPES)
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
@pytest.mark.parametrize(
    "config",
    [{}, {"set_alpha_to_one": False}, {"timestep_spacing": "trailing", "clip_sample": False}],
    ids=["cosine", "alpha-to-one-off", "trailing-unclipped"],
)
def test_samplers_step_as_diffusers_does(tiny, kind, sampler, config):
    noise = noise_process(kind, **config)
    ours = sample(tiny, None, 3, steps=4, sampler=sampler, seed=5, scheduler=noise, progress=False)
    theirs = _hand_loop(tiny, noise, sampler, 4, 3, 5)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_ddim_honours_set_alpha_to_one(tiny):
    on = make_sampler(noise_process(set_alpha_to_one=True), "ddim", 4)
    off = make_sampler(noise_process(set_alpha_to_one=False), "ddim", 4)
    assert float(on.final_alpha_cumprod) == 1.0 and float(off.final_alpha_cumprod) < 1.0
    a, b = (
        sample(
            tiny,
            None,
            2,
            steps=4,
            sampler="ddim",
            scheduler=noise_process(set_alpha_to_one=one),
            progress=False,
        )
        for one in (True, False)
    )
    assert not torch.allclose(a, b, atol=1e-4)


def test_sample_takes_a_pipeline_and_its_scheduler(tiny):
    noise = noise_process("v_prediction", cls=DDIMScheduler, set_alpha_to_one=False)
    pipe = DDIMPipeline(unet=tiny, scheduler=noise)
    ours = sample(pipe, None, 3, steps=5, sampler="ddim", seed=2, progress=False)
    alone = sample(tiny, None, 3, steps=5, sampler="ddim", seed=2, scheduler=noise, progress=False)
    assert torch.equal(ours, alone)

    gens = sample_generators(2, range(3), torch.device("cpu"))
    images = pipe(batch_size=3, generator=gens, num_inference_steps=5, output_type="np").images
    theirs = torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1  # the pipeline's [0, 1] images
    assert torch.allclose(ours.clamp(-1, 1), theirs, atol=1e-5)
    with pytest.raises(MissingSchedulerError, match="no scheduler given"):
        sample(tiny, None, 1, steps=2, progress=False)


def oracle(noise, x0: torch.Tensor) -> UNet2DModel:
    """The tiny UNet with its output replaced by exactly its scheduler's target for data that is one
    known image (a forward hook inverts the noising; the blocks still run, to be found and gated)."""
    model = tiny_unet()

    def exact(module, args, kwargs, output) -> UNet2DOutput:
        x, t = args[0], kwargs.get("timestep", args[1] if len(args) > 1 else None)
        x0_rows = x0.expand_as(x)
        a = noise.alphas_cumprod[torch.as_tensor(t).long().cpu()].view(-1, 1, 1, 1)
        eps = (x - a.sqrt() * x0_rows) / (1 - a).sqrt()
        return UNet2DOutput(sample=target(noise.config.prediction_type, x0_rows, eps, a))

    model.register_forward_hook(exact, with_kwargs=True)
    return model


@pytest.mark.parametrize("kind", ["v_prediction", "sample", "epsilon"])
def test_training_losses_use_the_models_target(kind):
    x0 = torch.rand(1, 1, 16, 16) * 2 - 1
    data, noise = x0.expand(16, -1, -1, -1).clone(), noise_process(kind)
    model = oracle(noise, x0)
    blocks = find_blocks(model)
    assert held_out_loss(model, blocks, data, noise, n=16, batch_size=8) < 1e-6
    result = train_gates(
        model, data, noise, GateTrainConfig(train_steps=3, batch_size=8), blocks, progress=False
    )
    assert max(row["loss"] for row in result.log) < 1e-6
    other = noise_process("epsilon" if kind != "epsilon" else "v_prediction")
    assert held_out_loss(model, blocks, data, other, n=16, batch_size=8) > 1e-2  # another target: not ~0


def test_a_folders_scheduler_config_is_used(tmp_path):
    noise = noise_process("v_prediction", cls=DDIMScheduler, set_alpha_to_one=False, steps_offset=1)
    tiny_unet().save_pretrained(tmp_path / "pipe" / "unet")
    noise.save_pretrained(tmp_path / "pipe" / "scheduler")
    tiny_unet().save_pretrained(tmp_path / "bare")
    noise.save_pretrained(tmp_path / "bare")  # scheduler_config.json beside the model's config.json
    for folder in ("pipe", "bare"):
        loaded = load_noise_scheduler(str(tmp_path / folder))
        assert loaded.config.prediction_type == "v_prediction"
        assert loaded.config.beta_schedule == "squaredcos_cap_v2"
        assert torch.allclose(loaded.alphas_cumprod, noise.alphas_cumprod)
        ddim = make_sampler(loaded, "ddim", 10)
        assert ddim.config.set_alpha_to_one is False and float(ddim.final_alpha_cumprod) < 1.0
        assert [int(t) for t in ddim.timesteps] == [int(t) for t in make_sampler(noise, "ddim", 10).timesteps]
        assert int(ddim.timesteps[-1]) == 1  # steps_offset


def test_a_missing_scheduler_config_is_an_error(tmp_path):
    tiny_unet().save_pretrained(tmp_path / "model")
    with pytest.raises(MissingSchedulerError, match="comes with no scheduler config") as err:
        load_noise_scheduler(str(tmp_path / "model"))
    assert "\n" not in str(err.value)
    EDMEulerScheduler().save_pretrained(tmp_path / "model")
    with pytest.raises(BackboneError, match="EDMEulerScheduler.*has no beta schedule"):
        load_noise_scheduler(str(tmp_path / "model"))
    default = load_noise_scheduler("arch:ddpm-cifar10")  # random weights: the documented default
    assert default.config.beta_schedule == "linear" and default.config.prediction_type == "epsilon"
