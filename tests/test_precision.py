"""Half-precision models: inputs in the model's dtype, sampler state and gate math in fp32.

Tolerances, from measurements on the tiny UNet (CPU): one bf16 noise prediction is within 1.2 %
(relative L2) of fp32's, fp16 within 0.15 % (bf16 keeps 8 mantissa bits, 0.4 % per rounding, and
the error grows over the network's layers); 10 DDPM steps of a reuse schedule end within 0.05
(max abs, images in [-1, 1]) of fp32's. The bounds below leave about 2x headroom.
"""

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler

import lees
from lees import REUSE, GatedModel, ReuseCache, find_blocks
from lees.cli import build_parser, main
from lees.diffusion.samplers import sampler_timesteps
from lees.engine.hooks import Engine
from lees.evaluation.held_out import held_out_loss
from lees.learn import router
from lees.learn.gate_training import GateTrainConfig, train_gates
from lees.learn.router import RouterConfig, teacher_trajectory, train_router
from lees.models.architectures import DDPM_NOISE
from lees.models.denoisers import denoise, model_dtype
from lees.sampling.lockstep import sample
from lees.schedules.baselines import uniform_schedule

from .conftest import tiny_unet


def half(dtype: torch.dtype = torch.bfloat16):
    return tiny_unet().to(dtype)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize(("dtype", "bound"), [(torch.bfloat16, 3e-2), (torch.float16, 5e-3)])
def test_one_noise_prediction_is_close_to_fp32(dtype, bound):
    x, t = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(0)), torch.full((4,), 500)
    with torch.no_grad():
        full, low = denoise(tiny_unet(), x, t), denoise(half(dtype), x, t)
    assert model_dtype(half(dtype)) == dtype and low.dtype == torch.float32
    assert relative(low, full) < bound


def test_bf16_sampling_with_reuse_is_close_to_fp32():
    noise = DDPMScheduler(**DDPM_NOISE)
    schedule = uniform_schedule(find_blocks(tiny_unet()), sampler_timesteps(noise, 10), 2, 1)
    assert schedule.reuses
    full = sample(tiny_unet(), schedule, n=4, scheduler=noise, progress=False)
    low = sample(half(), schedule, n=4, scheduler=noise, progress=False)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    assert (low - full).abs().max() < 0.1


def test_reuse_cache_holds_the_block_dtype_and_soft_gates_get_fp32_gradients():
    model = half()
    gated = GatedModel(model, find_blocks(model))
    x, t = torch.randn(2, 1, 16, 16, dtype=torch.bfloat16), torch.full((2,), 300)
    cache = ReuseCache(gated.num_blocks)
    gated(x, t, mask=[1] * gated.num_blocks, cache=cache)
    out = gated(x, t, mask=[REUSE] * gated.num_blocks, cache=cache).sample
    assert out.dtype == torch.bfloat16 and all(r.dtype == torch.bfloat16 for r in cache.residuals)
    weights = torch.full((gated.num_blocks,), 0.5, requires_grad=True)
    gated(x, t, mask=weights, mode="soft", cache=cache, fallback=REUSE).sample.float().sum().backward()
    assert weights.grad.dtype == torch.float32 and torch.isfinite(weights.grad).all()
    assert (weights.grad != 0).any()


def test_bf16_gate_training_and_held_out_loss_are_close_to_fp32():
    noise = DDPMScheduler(**DDPM_NOISE)
    data = torch.rand(16, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    config = GateTrainConfig(train_steps=3, batch_size=4)
    full = train_gates(tiny_unet(), data, noise, config, progress=False)
    model = half()
    low = train_gates(model, data, noise, config, progress=False)
    assert low.gate.a.dtype == torch.float32 and model_dtype(model) == torch.bfloat16
    assert torch.isfinite(low.gate.a).all() and torch.isfinite(low.gate.b).all()
    for a, b in zip(full.log, low.log, strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-2 * a["loss"]
    # not the gate parameters themselves: as the router's logits (below), Adam moves each by about
    # its learning rate, in the sign of a gradient that bf16 rounding may flip where it is near zero
    scored = [
        held_out_loss(m, r.blocks, data, noise, r.gate, n=8) for m, r in ((tiny_unet(), full), (model, low))
    ]
    assert abs(scored[0] - scored[1]) < 1e-2 * scored[0]


ROUTER = RouterConfig(steps=4, train_steps=3, batch_size=2, trajectories=2)


def _teacher(model):
    engine = Engine(model, find_blocks(model))
    with engine.attached():
        return engine, teacher_trajectory(engine, DDPMScheduler(**DDPM_NOISE), ROUTER)


def _step_losses(model):
    """The router's step loss, and its gradient in the decisions, at a fixed run/reuse table."""
    engine, traj = _teacher(model)
    w = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 1.0]]).repeat(engine.num_blocks, 1)
    w = w[: engine.num_blocks].requires_grad_()
    out = []
    with engine.attached():
        for j in (1, 2, 3):
            loss = router._step_loss(engine, w, traj, torch.arange(2), j, ROUTER, "cpu")
            (grad,) = torch.autograd.grad(loss, w)
            out.append((loss.item(), grad))
    return out


def assert_teacher_close(low, full):
    """The bf16 teacher's predictions and block residuals within the one-prediction bound of fp32's."""
    for j in range(len(full.timesteps)):
        assert relative(low.targets[j], full.targets[j]) < 3e-2, f"prediction at step {j}"
    for k, residual in enumerate(full.residuals):
        assert relative(low.residuals[k], residual) < 3e-2, f"residual of block {k}"


def test_bf16_router_trains_close_to_fp32():
    """What bf16 must keep: the teacher trajectory, the loss and its gradient at a fixed schedule, and
    the training run's losses and schedule. Not the raw logits: Adam moves each logit by about its
    learning rate whatever the gradient's size, so a near-zero gradient whose sign bf16 rounding flips
    moves a logit a full step the other way (0.11 after three steps on a CPU with native bf16)."""
    assert_teacher_close(_teacher(half())[1], _teacher(tiny_unet())[1])
    for (loss, grad), (low_loss, low_grad) in zip(
        _step_losses(tiny_unet()), _step_losses(half()), strict=True
    ):
        assert abs(low_loss - loss) < 2e-2 * loss
        assert relative(low_grad, grad) < 5e-2
    noise = DDPMScheduler(**DDPM_NOISE)
    full = train_router(tiny_unet(), noise, ROUTER, progress=False)
    low = train_router(half(), noise, ROUTER, progress=False)
    assert low.logits.dtype == torch.float32 and torch.isfinite(low.logits).all()
    for a, b in zip(full.log, low.log, strict=True):
        assert abs(a["error"] - b["error"]) < 5e-2 * a["error"]
    assert (low.schedule.actions == full.schedule.actions).mean() >= 0.9


def test_the_bf16_router_check_catches_a_wrong_cast(monkeypatch):
    """The low-precision model's input cast to float8 (3 mantissa bits) instead of its own bf16 fails."""
    plain = router.guided_denoise

    def wrong(model, x, t, **kwargs):
        low = model_dtype(model) != torch.float32
        return plain(model, x.to(torch.float8_e4m3fn).float() if low else x, t, **kwargs)

    monkeypatch.setattr(router, "guided_denoise", wrong)
    with pytest.raises(AssertionError, match="prediction at step"):
        assert_teacher_close(_teacher(half())[1], _teacher(tiny_unet())[1])


def test_enable_on_a_bf16_pipeline_is_close_to_fp32():
    def run(unet):
        scheduler = DDPMScheduler(num_train_timesteps=1000)
        pipe = DDPMPipeline(unet, scheduler)
        blocks = find_blocks(unet)
        lees.enable(pipe, uniform_schedule(blocks, lees.pipeline_timesteps(scheduler, 6), 2, 1))
        # output_type "pt": the pipeline's own numpy conversion refuses bf16
        out = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=6,
                   output_type="pt").images  # fmt: skip
        lees.disable(pipe)
        return out.float()

    full, low = run(tiny_unet()), run(half())
    assert torch.isfinite(low).all() and (low - full).abs().max() < 0.1


def test_every_command_that_loads_a_model_takes_dtype():
    parser = build_parser()
    for command in ("blocks", "train", "route", "schedule full", "sample", "eval", "reproduce"):
        args = parser.parse_args([*command.split(), "--out", "x", "--dtype", "bfloat16"])
        assert args.dtype == "bfloat16"


def test_cli_samples_a_reuse_schedule_in_bf16_close_to_fp32(folder, tmp_path):
    schedule = tmp_path / "uniform"
    assert main(["schedule", "uniform", "--model", folder, "--steps", "6", "--out", str(schedule)]) == 0
    images = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / f"{dtype}.png"
        argv = ["sample", "--model", folder, "-n", "3", "--schedule", str(schedule / "schedule.json")]
        assert main([*argv, "--dtype", dtype, "--out", str(out)]) == 0
        images[dtype] = np.load(out.with_suffix(".npz"))["images"].astype(int)
    assert np.abs(images["bfloat16"] - images["float32"]).max() <= 13  # 0.1 in [-1, 1], as above
