"""The shipped model, its metric classifier and its learned gates (skipped where not installed)."""

import json

import pytest
import torch
from diffusers import UNet2DModel

import lees
from lees import Schedule, find_blocks, load_backbone, sample
from lees.diffusion.samplers import sampler_timesteps
from lees.engine.actions import RUN
from lees.evaluation.metrics import ClassifierFeatures, fd, features
from lees.models.backbones import EMBEDDED_DIR, load_noise_scheduler
from lees.models.data import DataError, load_images
from lees.models.pipelines import ClassFlowPipeline
from lees.reporting.demo import SHIPPED_GATES
from lees.schedules.saving import load_gate
from lees.schedules.tuned import load_tuned

pytestmark = pytest.mark.skipif(
    not (EMBEDDED_DIR / "unet" / "config.json").is_file(), reason="the embedded model is not in this checkout"
)


def test_embedded_model_loads_and_is_worth_gating():
    model = load_backbone("embedded")
    blocks = find_blocks(model)
    assert len(blocks) >= 12
    attention = {b.name.rsplit(".", 2)[0] for b in blocks if b.kind == "attention"}
    assert attention == {"down_blocks.1", "mid_block", "up_blocks.2"}  # 16x16 and the middle
    card = json.loads((EMBEDDED_DIR / "training.json").read_text())
    assert card["config"]["data"] == "fashion-mnist" and card["step"] > 0
    weights = next((EMBEDDED_DIR / "unet").glob("*.safetensors"))
    assert weights.stat().st_size < 20e6


def test_trained_samples_beat_untrained_ones():
    try:
        real = load_images("fashion-mnist", "test")[0][:500]
    except DataError as err:
        pytest.skip(str(err))
    model = load_backbone("embedded")
    noise = load_noise_scheduler("embedded")
    untrained = UNet2DModel.from_config(model.config).eval()
    extractor = ClassifierFeatures()
    ref = features(extractor, real)
    good = fd(features(extractor, sample(model, None, 64, 20, seed=0, scheduler=noise, progress=False)), ref)
    bad = fd(
        features(extractor, sample(untrained, None, 64, 20, seed=0, scheduler=noise, progress=False)), ref
    )
    assert good < 0.5 * bad


def test_shipped_gates_fit_the_model_and_skip_blocks():
    if not SHIPPED_GATES.is_file():
        pytest.skip("no shipped gates yet")
    model = load_backbone("embedded")
    blocks = find_blocks(model)
    gate, names = load_gate(SHIPPED_GATES)
    assert names == blocks.names
    schedule = Schedule.from_gate(gate, blocks, sampler_timesteps(load_noise_scheduler("embedded"), 50))
    assert 0.2 < schedule.executed_ratio < 1.0
    shipped = Schedule.load(SHIPPED_GATES.parent / "schedule.json", blocks)
    assert (shipped.table == schedule.table).all()
    assert torch.isfinite(gate.a).all()


@pytest.mark.parametrize(
    "model, expected",
    [
        ("embedded", ["full", "router-0.70", "full@34", "uniform-2", "ase", "lees-0.05"]),
        ("embedded-dit", ["full", "dit-router-0.70", "full@31", "uniform-2", "ase", "dit-lees-0.05"]),
    ],
)
def test_the_demo_rows_are_the_shipped_schedules_made_for_the_model(model, expected):
    from lees.diffusion.solvers import default_solver
    from lees.reporting.demo import demo_methods

    noise = load_noise_scheduler(model)
    sampler = default_solver(noise)
    rows = demo_methods(
        find_blocks(load_backbone(model)), sampler_timesteps(noise, 50, sampler), noise, sampler
    )
    assert list(rows) == expected  # each model's router with its fewer-steps partner; the other's left out


@pytest.mark.parametrize(
    "name, solver, answered",
    [
        ("dit-search-0.50", "euler", 30),
        ("dit-search-0.35", "euler", 30),
        ("dit-search-dpm-0.50", "unipc", 20),
        ("dit-search-dpm-0.35", "unipc", 20),
    ],
)
def test_a_shipped_searched_policy_runs_its_table_inside_the_dit_pipeline(name, solver, answered):
    """``lees.enable(pipe, folder)`` and ``pipe(**lees.tuned(folder))`` on the DiT pipeline run exactly the
    blocks the table runs (counted inside each block), on the table's solver (Euler at 30 steps; UniPC at
    14 or 10 for calls of DPM-Solver++'s 20), and ``disable`` restores it."""
    folder = EMBEDDED_DIR / name
    policy = load_tuned(folder)
    pipe = ClassFlowPipeline.from_pretrained(lees.EMBEDDED_DIT_DIR)
    ran = []
    for k, block in enumerate(pipe.transformer.transformer_blocks):
        block.attn1.register_forward_hook(lambda *_, k=k: ran.append(k))
    call = {"class_labels": [1, 7], "guidance_scale": 2.0, "output_type": "pt"}
    plain = pipe(**call, num_inference_steps=answered, generator=torch.Generator().manual_seed(0)).images
    lees.enable(pipe, folder)
    assert lees.tuned(folder) == {"num_inference_steps": answered} and policy.solver == solver
    ran.clear()
    fast = pipe(**call, **lees.tuned(folder), generator=torch.Generator().manual_seed(0)).images
    lees.disable(pipe)
    runs = policy.schedule.actions == RUN
    assert len(ran) == int(runs.sum()) and sorted(set(ran)) == sorted(set(runs.nonzero()[0].tolist()))
    assert not torch.equal(fast, plain) and float((fast - plain).abs().max()) < 0.5
    again = pipe(**call, num_inference_steps=answered, generator=torch.Generator().manual_seed(0)).images
    assert torch.equal(again, plain)


def test_a_table_on_another_solver_answers_the_reference_step_count_inside_the_dit_pipeline(tmp_path):
    """A policy whose table runs UniPC at 10 steps, made for calls of DPM-Solver++'s 20 (``lees route
    --reference-run``): ``pipe(num_inference_steps=20)`` runs UniPC's 10 timesteps and exactly the table's
    blocks."""
    from lees.schedules.tuned import TunedPolicy, save_policies

    pipe = ClassFlowPipeline.from_pretrained(lees.EMBEDDED_DIT_DIR)
    blocks = find_blocks(pipe.transformer)
    timesteps = sampler_timesteps(pipe.scheduler, 10, "unipc")
    table = Schedule.full(blocks, timesteps).actions
    table[:, 2::3] = 1  # reuse every third call after the first
    schedule = Schedule(table, blocks.names, timesteps, block_shares=blocks.shares)
    reference = {"solver": "dpm++", "steps": 20, "guidance_scale": 2.0}
    policy = TunedPolicy("schedule", "unipc-table", "unipc", 10, schedule, reference=reference)
    save_policies([policy], tmp_path)
    ran, seen = [], []
    for k, block in enumerate(pipe.transformer.transformer_blocks):
        block.attn1.register_forward_hook(lambda *_, k=k: ran.append(k))
    timestep = lambda args, kwargs: kwargs["timestep"] if "timestep" in kwargs else args[1]  # noqa: E731
    pipe.transformer.register_forward_pre_hook(
        lambda _, args, kwargs: seen.append(float(timestep(args, kwargs).flatten()[0])), with_kwargs=True
    )
    lees.enable(pipe, tmp_path)
    assert lees.tuned(tmp_path) == {"num_inference_steps": 20}
    call = {"class_labels": [1, 7], "guidance_scale": 2.0, "output_type": "pt"}
    pipe(**call, **lees.tuned(tmp_path), generator=torch.Generator().manual_seed(0))
    lees.disable(pipe)
    assert seen == pytest.approx([float(t) for t in timesteps])
    assert len(ran) == int((table == RUN).sum())
