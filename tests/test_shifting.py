"""Flux-style dynamic shifting: timesteps computed for a resolution as the pipelines compute them (or read
from the pipeline's own ``set_timesteps`` call), a schedule refused at another resolution in one line,
and ``--timesteps`` as floats for flow matching."""

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import (
    calculate_shift as sd3_calculate_shift,
)

import lees
from lees.cli.options import timestep_list
from lees.diffusion.samplers import check_timesteps
from lees.models.denoisers import image_seq_len
from lees.schedules.registry import build_schedule

from .conftest import tiny_unet


def shifting() -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)


def flux_grid(steps: int, seq_len: int) -> list[float]:
    """What FluxPipeline sets (pipeline_flux.py, step 5) for an image of ``seq_len`` latent tokens."""
    scheduler = shifting()
    c = scheduler.config
    mu = calculate_shift(seq_len, c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)
    sigmas = np.linspace(1.0, 1 / steps, steps)
    return retrieve_timesteps(scheduler, steps, "cpu", sigmas=sigmas, mu=mu)[0].tolist()


class ShiftingPipeline(DiffusionPipeline):
    """Flux's timestep preparation, verbatim in substance; any denoiser call is a failure."""

    def __init__(self, transformer, scheduler):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler)
        self.prompts = []

    def __call__(self, prompt, height=64, width=64, num_inference_steps=28):
        self.prompts.append(prompt)
        seq_len = (height // 16) * (width // 16)  # (H / vae_scale_factor / 2) x (W / ...): packed 2 x 2
        c = self.scheduler.config
        mu = calculate_shift(seq_len, c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)
        sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        retrieve_timesteps(self.scheduler, num_inference_steps, "cpu", sigmas=sigmas, mu=mu)
        raise AssertionError("the denoiser was called")


def test_timesteps_are_shifted_for_the_resolution_as_flux_and_sd3_shift_them():
    with pytest.raises(ValueError, match="use_dynamic_shifting.*height=H, width=W"):
        lees.pipeline_timesteps(shifting(), 10)
    sigmas = np.linspace(1.0, 0.1, 10)
    grids = {n: lees.pipeline_timesteps(shifting(), 10, image_seq_len=n, sigmas=sigmas) for n in (256, 4096)}
    assert grids == {n: flux_grid(10, n) for n in grids} and grids[256] != grids[4096]
    assert all(isinstance(t, float) for t in grids[256])
    sd3 = shifting()  # SD3 passes mu only (its own calculate_shift, the same line)
    c = sd3.config
    mu = sd3_calculate_shift(1024, c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)
    sd3.set_timesteps(10, mu=mu)
    assert lees.pipeline_timesteps(shifting(), 10, image_seq_len=1024) == sd3.timesteps.tolist()


def test_timesteps_are_read_from_the_pipelines_own_call():
    pipe = ShiftingPipeline(torch.nn.Identity(), shifting())
    assert lees.pipeline_timesteps(pipe, 10, height=512, width=512) == flux_grid(10, 1024)
    assert lees.pipeline_timesteps(pipe, 4, height=1024, width=1024) == flux_grid(4, 4096)
    assert pipe.prompts == ["", ""]  # an empty prompt: the grid depends on none
    assert "set_timesteps" not in vars(pipe.scheduler)  # the scheduler is its own again
    assert pipe.scheduler.timesteps.tolist() == flux_grid(4, 4096)


def test_a_schedule_made_for_one_resolution_is_refused_at_another(capsys):
    model = tiny_unet()
    timesteps = lees.pipeline_timesteps(DDPMScheduler(num_train_timesteps=1000), 4)
    schedule = build_schedule("uniform-2", lees.find_blocks(model), timesteps)
    schedule.settings["image_seq_len"] = 16 * 16  # made at the model's 16 x 16
    lees.enable(model, schedule)
    with torch.no_grad():
        for t in timesteps:  # a run at its resolution
            model(torch.zeros(1, 1, 16, 16), t)
        with pytest.raises(lees.ScheduleError) as refused:
            model(torch.zeros(1, 1, 32, 32), timesteps[0])
    message = str(refused.value)
    assert "\n" not in message and "256 latent tokens" in message and "have 1024" in message
    lees.disable(model)


def test_the_image_length_is_counted_as_the_pipelines_count_it():
    packed = torch.zeros(2, 1024, 64)  # Flux: B x (H/16 * W/16) x C
    assert image_seq_len(torch.nn.Identity(), packed) == 1024
    sd3 = torch.nn.Module()
    sd3.config = {"patch_size": 2}
    assert image_seq_len(sd3, torch.zeros(2, 16, 64, 64)) == 32 * 32


def test_timesteps_on_the_command_line_are_floats_for_flow_matching():
    assert timestep_list("1000,750.5,500,250") == [1000, 750.5, 500, 250]
    assert check_timesteps([1000, 750.5, 500.25], 1000, flow=True) == [1000.0, 750.5, 500.25]
    with pytest.raises(ValueError, match="integers"):
        check_timesteps([999, 500.5], 1000)
    assert check_timesteps([999, 500], 1000) == [999, 500]
