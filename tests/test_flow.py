"""Flow matching: the noise process against diffusers' scheduler math, and training the embedded DiT."""

import json

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, DiTTransformer2DModel, FlowMatchEulerDiscreteScheduler
from safetensors.torch import load_file

from lees.diffusion.noising import FlowNoising, Noising, is_flow_matching, noise_process
from lees.learn.backbone_training import BackboneTrainConfig, train_backbone, training_step
from lees.models.architectures import ARCHITECTURES, EMBEDDED_DIT, FLOW_NOISE
from lees.models.pipelines import ClassFlowPipeline

from .test_data import write_idx

# embedded-dit's structure at a fraction of its size, so that training it on a CPU takes seconds.
TINY_DIT = EMBEDDED_DIT | {"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 8}


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_noising_is_diffusers_scale_noise(shift):
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    scheduler.set_timesteps(10)
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(10, 1, 4, 4, generator=gen), torch.randn(10, 1, 4, 4, generator=gen)
    t = scheduler.timesteps  # floats in (0, 1000], shifted: sigma = shift s / (1 + (shift - 1) s)
    assert torch.allclose(t / 1000, scheduler.sigmas[:-1])
    xt, velocity = FlowNoising(scheduler, "cpu")(x0, eps, t)
    expected = torch.cat(
        [scheduler.scale_noise(x0[i : i + 1], t[i : i + 1], eps[i : i + 1]) for i in range(10)]
    )
    assert torch.allclose(xt, expected, atol=1e-6)
    assert torch.equal(velocity, eps - x0)
    # an Euler step of diffusers' scheduler with the exact velocity lands on the next x_t
    step = scheduler.step(velocity[:1], t[0], xt[:1]).prev_sample
    assert torch.allclose(step, FlowNoising(scheduler, "cpu")(x0[:1], eps[:1], t[1:2])[0], atol=1e-5)


def test_noise_process_tells_the_families_apart():
    flow = FlowMatchEulerDiscreteScheduler(**FLOW_NOISE)
    assert is_flow_matching(flow) and isinstance(noise_process(flow, "cpu"), FlowNoising)
    assert isinstance(noise_process(DDPMScheduler(), "cpu"), Noising)
    gen = torch.Generator().manual_seed(0)
    t = FlowNoising(flow, "cpu").draw_timesteps(4096, gen)
    assert t.dtype == torch.float32 and t.min() > 0 and t.max() < 1000
    assert abs(float(t.median()) - 500) < 25  # logit-normal around s = 0.5


class ExactVelocity(torch.nn.Module):
    """A 'model' that knows x0 and eps, so predicts the exact velocity."""

    def __init__(self, x0, eps):
        super().__init__()
        self.x0, self.eps = x0, eps
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t, **_):
        return self.eps - self.x0 + 0 * self.w


def test_exact_velocity_has_zero_loss():
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    gen = torch.Generator().manual_seed(3)
    idx = torch.randint(0, 4, (4,), generator=gen)
    FlowNoising(FlowMatchEulerDiscreteScheduler(), "cpu").draw_timesteps(4, gen)
    eps = torch.randn(4, 1, 8, 8, generator=gen)
    model = ExactVelocity(images[idx], eps)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    noising = FlowNoising(FlowMatchEulerDiscreteScheduler(), "cpu")
    assert training_step(model, opt, images, noising, 4, seed=3).item() == 0.0


def _data(tmp_path):
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 256, (16, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", rng.integers(0, 10, 16, dtype=np.uint8))
    return str(tmp_path)


def _config(data, steps, grid=0):
    return BackboneTrainConfig(
        data=data, train_steps=steps, batch_size=4, checkpoint_every=1, grid=grid, arch="embedded-dit",
        grid_every=2 if grid else 0,
    )  # fmt: skip


def test_train_embedded_dit_resumes_exactly(tmp_path, monkeypatch):
    monkeypatch.setitem(ARCHITECTURES, "embedded-dit", TINY_DIT)
    data = _data(tmp_path)
    folder = train_backbone(tmp_path / "a", _config(data, 2, grid=10))
    train_backbone(tmp_path / "b", _config(data, 1))  # "interrupted" after 1 step
    train_backbone(tmp_path / "b", _config(data, 2))  # resumed
    a = load_file(tmp_path / "a" / "checkpoint.safetensors")
    b = load_file(tmp_path / "b" / "checkpoint.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a" / "grids" / "step-000002.png").is_file()
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "ClassFlowPipeline"
    pipe = ClassFlowPipeline.from_pretrained(folder)
    assert isinstance(pipe.transformer, DiTTransformer2DModel)
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)


def test_labels_are_dropped_once_per_sample(monkeypatch):
    """The null class reaches every block at once (diffusers' DiT would drop per block in train mode)."""
    torch.manual_seed(0)
    model = DiTTransformer2DModel(**{k: v for k, v in TINY_DIT.items() if k != "_class_name"})
    seen = []
    model.transformer_blocks[0].norm1.emb.class_embedder.register_forward_hook(
        lambda m, args, out: seen.append(args[0].clone())
    )
    noising = FlowNoising(FlowMatchEulerDiscreteScheduler(), "cpu")
    images, labels = torch.rand(64, 1, 32, 32) * 2 - 1, torch.arange(64) % 10
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    model.eval()
    training_step(model, opt, images, noising, 64, seed=1, labels=labels, label_dropout=0.5)
    got = seen[0]
    assert 10 < int((got == 10).sum()) < 54  # about half the labels became the null class
    assert set(got.tolist()) <= set(range(11))


def test_pipeline_guidance_modes_agree():
    torch.manual_seed(0)
    model = DiTTransformer2DModel(**{k: v for k, v in TINY_DIT.items() if k != "_class_name"}).eval()
    pipe = ClassFlowPipeline(model, FlowMatchEulerDiscreteScheduler())
    pipe.set_progress_bar_config(disable=True)
    runs = [
        pipe([1, 2], 3.0, 4, generator=torch.Generator().manual_seed(0), output_type="pt", guidance=g).images
        for g in ("batched", "split")
    ]
    assert runs[0].shape == (2, 1, 32, 32)
    assert torch.allclose(runs[0], runs[1], atol=1e-5)
    with pytest.raises(ValueError, match="class labels must lie in"):
        pipe([10], num_inference_steps=2)


def test_gates_train_and_are_scored_on_the_flow_matching_target(monkeypatch):
    from lees.engine.blocks import find_blocks
    from lees.evaluation.held_out import held_out_loss
    from lees.learn.gate_training import GateTrainConfig, train_gates

    torch.manual_seed(0)
    model = DiTTransformer2DModel(**{k: v for k, v in TINY_DIT.items() if k != "_class_name"}).eval()
    images = torch.rand(8, 1, 32, 32) * 2 - 1
    drawn, call = [], FlowNoising.__call__
    monkeypatch.setattr(
        FlowNoising, "__call__", lambda self, x0, eps, t: drawn.append(t) or call(self, x0, eps, t)
    )
    scheduler = FlowMatchEulerDiscreteScheduler(**FLOW_NOISE)
    result = train_gates(
        model, images, scheduler, GateTrainConfig(train_steps=2, batch_size=4), progress=False
    )
    assert len(drawn) == 2 and all(np.isfinite(row["loss"]) for row in result.log)
    t = torch.cat(drawn)
    assert (
        t.is_floating_point() and (t > 0).all() and (t < 1000).all() and (t != t.round()).any()
    )  # logit-normal
    loss = held_out_loss(model, find_blocks(model), images, scheduler, n=8, batch_size=4)
    assert len(drawn) == 4 and np.isfinite(loss)  # the held-out loss noises by flow matching too
