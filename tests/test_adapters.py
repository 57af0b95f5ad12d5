"""Block adapters on today's transformers (PixArt, SD3, Flux, LTX, Wan) and, as a regression, on DiT and
the UNets: find_blocks finds each family's blocks, and the engine's run, skip and reuse equal references
built here by hand (forward hooks on the block, never through lees)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch
from diffusers import CogView4Transformer2DModel, HunyuanDiT2DModel
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from torch import nn

import lees
from lees import REUSE, RUN, SKIP, BlockAdapter, ReuseCache, find_blocks, register_block_adapter
from lees.engine.adapters import _REGISTERED
from lees.engine.flops import flop_counter
from lees.engine.hooks import Engine
from lees.models.example_calls import example_call

from .families import FAMILIES


def _hunyuan_dit() -> nn.Module:
    # 4 layers (an even count): blocks 0-1 push long skips, block 3 fuses one (skip=)
    return HunyuanDiT2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        patch_size=2,
        sample_size=8,
        hidden_size=16,
        num_layers=4,
        cross_attention_dim=16,
        cross_attention_dim_t5=16,
        pooled_projection_dim=16,
        text_len=6,
        text_len_t5=6,
    )


def _cogview4() -> nn.Module:
    # blocks called positionally, returning (hidden_states, encoder_hidden_states)
    return CogView4Transformer2DModel(
        in_channels=4,
        out_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        text_embed_dim=16,
        time_embed_dim=16,
        condition_dim=4,
        pos_embed_max_size=8,
        sample_size=8,
        rope_axes_dim=(4, 4),
    )


def _cogview4_call(model: nn.Module, seed: int) -> tuple[tuple, dict]:
    g = torch.Generator().manual_seed(seed)
    sizes = torch.tensor([[64, 64]])
    return (), dict(
        hidden_states=torch.randn(1, 4, 8, 8, generator=g),
        encoder_hidden_states=torch.randn(1, 6, 16, generator=g),
        timestep=torch.tensor([900 - 500 * seed]),
        original_size=sizes,
        target_size=sizes,
        crop_coords=torch.zeros(1, 2),
        return_dict=False,
    )


def _hunyuan_call(model: nn.Module, seed: int) -> tuple[tuple, dict]:
    g = torch.Generator().manual_seed(seed)
    args, kwargs = example_call(model)  # lees' example call: zeros; random latents, texts and t here
    for key in ("hidden_states", "encoder_hidden_states", "encoder_hidden_states_t5"):
        kwargs[key] = torch.randn(kwargs[key].shape, generator=g)
    kwargs["timestep"] = torch.tensor([900.0 - 500 * seed])
    return args, kwargs


# families diffusers has that tests/families.py leaves out: the model and two calls of it
EXTRA = {"hunyuandit": (_hunyuan_dit, _hunyuan_call), "cogview4": (_cogview4, _cogview4_call)}
TRANSFORMERS = ["dit", "pixart", "sd3", "flux", "ltx", "wan", *EXTRA]
ALL = [*TRANSFORMERS, "unet2d", "sd"]
TEXT_FIRST = ("JointTransformerBlock", "FluxTransformerBlock", "FluxSingleTransformerBlock")
JOINT = (*TEXT_FIRST, "CogView4TransformerBlock")


def _model(name: str) -> nn.Module:
    if name in EXTRA:
        torch.manual_seed(0)
        return EXTRA[name][0]().eval()
    return FAMILIES[name].make_model()


def _names(name: str, model: nn.Module) -> list[str]:
    if name in EXTRA:
        return [
            f"{attr}.{i}"
            for attr in ("transformer_blocks", "blocks")
            for i in range(len(getattr(model, attr, [])))
        ]
    return FAMILIES[name].block_names(model)


@contextmanager
def _count(name: str, model: nn.Module, block_name: str):
    """{block_name: times its body ran} (inside the block, so a skipped or reused block is not counted)."""
    if name not in EXTRA:
        with FAMILIES[name].count_block_calls(model, [block_name]) as counter:
            yield counter
        return
    counter = {block_name: 0}
    inner = model.get_submodule(block_name).norm1
    handle = inner.register_forward_pre_hook(
        lambda *_: counter.__setitem__(block_name, counter[block_name] + 1)
    )
    try:
        yield counter
    finally:
        handle.remove()


def _calls(name: str, model: nn.Module) -> list[tuple[tuple, dict]]:
    """The model calls of two steps of the family's own pipeline loop, as (args, kwargs)."""
    if name in EXTRA:
        return [EXTRA[name][1](model, seed) for seed in (0, 1)]
    fam, calls = FAMILIES[name], []
    handle = model.register_forward_pre_hook(lambda m, a, kw: calls.append((a, dict(kw))), with_kwargs=True)
    try:
        fam.loop(model, next(iter(fam.schedulers.values()))(), steps=2)
    finally:
        handle.remove()
    return calls


def _main(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else getattr(output, "sample", output)


def _blocks_to_test(name: str, model: nn.Module) -> list[str]:
    """Per family, blocks whose shortcut is identity: every transformer block, a UNet's attention."""
    if name == "unet2d":
        return ["mid_block.attentions.0"]
    if name == "sd":
        return ["down_blocks.0.attentions.0"]
    return _names(name, model)


def _arg(block: nn.Module, args: tuple, kwargs: dict, name: str, position: int):
    return kwargs[name] if name in kwargs else args[position] if len(args) > position else None


def _streams(block: nn.Module, args: tuple, kwargs: dict, output) -> dict[str, tuple]:
    """{stream: (input, output)} for the streams the block changes, read by hand per class."""
    h = _arg(block, args, kwargs, "hidden_states", 0)
    if type(block).__name__ not in JOINT:
        return {"h": (h, _main(output))}
    ehs = _arg(block, args, kwargs, "encoder_hidden_states", 1)
    if type(block).__name__ not in TEXT_FIRST:
        return {"h": (h, output[0]), "ehs": (ehs, output[1])}
    return {"h": (h, output[1]), "ehs": (ehs, output[0])}


def _pass_through(block: nn.Module, args: tuple, kwargs: dict):
    """What the block returns when its forward is replaced by a pass-through of its streams."""
    h = _arg(block, args, kwargs, "hidden_states", 0)
    kind = type(block).__name__
    if kind in JOINT:
        ehs = _arg(block, args, kwargs, "encoder_hidden_states", 1)
        if kind not in TEXT_FIRST:
            return (h, ehs)
        return (None if getattr(block, "context_pre_only", False) else ehs, h)
    if kind == "Transformer2DModel":
        return (h,) if kwargs.get("return_dict", True) is False else Transformer2DModelOutput(sample=h)
    return h


def _plain(model: nn.Module) -> bool:
    """No lees hook is left and no forward is patched (diffusers' own cache-context registry may stay)."""
    registries = [getattr(m, "_diffusers_hook", None) for m in model.modules()]
    hooks = [name for r in registries if r is not None for name in r.hooks]
    return not any(name.startswith("lees") for name in hooks) and not any(
        "forward" in m.__dict__ for m in model.modules()
    )


def _run(model, engine, mask, cache, args, kwargs):
    with torch.no_grad(), engine.deciding(mask, "hard", cache):
        return _main(model(*args, **kwargs))


@pytest.mark.parametrize("name", ALL)
def test_find_blocks_finds_each_familys_blocks(name):
    model = _model(name)
    blocks = find_blocks(SimpleNamespace(transformer=model) if name in TRANSFORMERS else model)
    expected = _names(name, model)
    assert sorted(blocks.names) == sorted(expected)
    if name in TRANSFORMERS:
        assert blocks.names == expected  # execution order is list order
    kinds = {"sd3": "joint", "flux": "joint", "cogview4": "joint"}
    if name in TRANSFORMERS:
        assert {b.kind for b in blocks} == {kinds.get(name, "identity")}
    # FLOPs: the counter's total is the model's, each block saves all it costs (identity shortcuts)
    args, kwargs = example_call(model)
    with torch.no_grad(), flop_counter() as counter:
        model(*args, **kwargs)
    assert blocks.total_flops == counter.get_total_flops() > 0
    assert all(0 < b.saved_flops <= b.flops for b in blocks) and 0 < sum(blocks.shares) < 1
    if name in TRANSFORMERS:
        assert all(b.saved_flops == b.flops for b in blocks)


def test_joint_blocks_count_both_streams():
    blocks = find_blocks(_model("sd3"))
    # 16 image tokens (8x8 latent, patch 2) and 6 + 2 = 8 text tokens are not both there: the last
    # block returns only the image stream
    assert blocks[0].out_numel > blocks[-1].out_numel == 16 * 16


@pytest.mark.parametrize("name", ALL)
def test_all_run_equals_the_plain_model(name):
    model = _model(name)
    calls = _calls(name, model)
    names = find_blocks(model).names
    with torch.no_grad():
        plain = [_main(model(*a, **kw)) for a, kw in calls]
    engine = Engine(model, names)
    with engine.attached():
        for cache in (None, ReuseCache(len(names))):
            ran = [_run(model, engine, [RUN] * len(names), cache, a, kw) for a, kw in calls]
            assert all((p - r).abs().max() <= 1e-5 for p, r in zip(plain, ran, strict=True))
    assert _plain(model)


@pytest.mark.parametrize("name", ALL)
def test_skip_equals_a_pass_through(name):
    model = _model(name)
    args, kwargs = _calls(name, model)[-1]
    names = find_blocks(model).names
    engine = Engine(model, names)
    with torch.no_grad():
        plain = _main(model(*args, **kwargs))
    for block_name in _blocks_to_test(name, model):
        block = model.get_submodule(block_name)
        handle = block.register_forward_hook(lambda m, a, kw, out: _pass_through(m, a, kw), with_kwargs=True)
        with torch.no_grad():
            reference = _main(model(*args, **kwargs))
        handle.remove()
        mask = [SKIP if n == block_name else RUN for n in names]
        with engine.attached(), _count(name, model, block_name) as counter:
            skipped = _run(model, engine, mask, None, args, kwargs)
        assert counter[block_name] == 0  # the block's body did not run
        assert (skipped - reference).abs().max() <= 1e-5, block_name
        assert not torch.allclose(skipped, plain), block_name  # the skip changed the output


@pytest.mark.parametrize("name", ALL)
def test_reuse_is_the_input_plus_the_last_residual_of_every_stream(name):
    model = _model(name)
    calls = _calls(name, model)
    (a1, kw1), (a2, kw2) = calls[0], calls[-1]  # two steps apart: other latents and timestep
    names = find_blocks(model).names
    engine = Engine(model, names)
    for block_name in _blocks_to_test(name, model):
        k, block = names.index(block_name), model.get_submodule(block_name)
        seen = []
        handle = block.register_forward_hook(
            lambda m, a, kw, out, seen=seen: seen.append((a, kw, out)), with_kwargs=True
        )
        cache = ReuseCache(len(names))
        mask = [REUSE if n == block_name else RUN for n in names]
        with engine.attached(), _count(name, model, block_name) as counter:
            _run(model, engine, [RUN] * len(names), cache, a1, kw1)
            _run(model, engine, mask, cache, a2, kw2)
        handle.remove()
        assert counter[block_name] == 1  # ran at call 1, reused at call 2
        first, second = (_streams(block, *s) for s in seen)
        for stream, (x1, y1) in first.items():
            x2, y2 = second[stream]
            if y1 is None:  # SD3's last block returns no text stream
                assert y2 is None
                continue
            assert stream == "ehs" or not torch.equal(x1, x2)  # the text input can repeat
            assert (y2 - (x2 + (y1 - x1))).abs().max() <= 1e-5, (block_name, stream)
        held = cache.residuals[k]
        assert isinstance(held, tuple) == (type(block).__name__ in JOINT)


@pytest.mark.parametrize("name", ["pixart", "sd3", "flux", "wan"])
def test_detach_leaves_the_model_plain(name):
    model = _model(name)
    args, kwargs = _calls(name, model)[-1]
    with torch.no_grad():
        plain = _main(model(*args, **kwargs))
    names = find_blocks(model).names
    engine = Engine(model, names)
    engine.attach()
    _run(model, engine, [SKIP] * len(names), ReuseCache(len(names)), args, kwargs)
    engine.detach()
    assert _plain(model)
    with torch.no_grad():
        assert torch.equal(_main(model(*args, **kwargs)), plain)


class ToyJoint(nn.Module):
    """A joint block of the user's own: takes (x, context), returns (context', x')."""

    def __init__(self):
        super().__init__()
        self.mix = nn.Linear(8, 8)
        self.text = nn.Linear(8, 8)

    def forward(self, x, context, scale=1.0):
        return context + self.text(context + x.mean(1, keepdim=True)), x + scale * self.mix(
            x + context.mean(1, keepdim=True)
        )


class ToyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(ToyJoint() for _ in range(2))

    def forward(self, x, context):
        for layer in self.layers:
            context, x = layer(x, context)  # positional, as Wan and CogView4 call theirs
        return x


@pytest.fixture
def toy():
    torch.manual_seed(0)
    yield ToyModel().eval(), torch.randn(2, 4, 8), torch.randn(2, 3, 8)
    _REGISTERED.pop(ToyJoint, None)


def test_an_unknown_multi_stream_block_is_refused(toy):
    model, x, context = toy
    with pytest.raises(TypeError, match=r"register_block_adapter\(ToyJoint") as error:
        find_blocks(model, names=["layers.0", "layers.1"], example_inputs=(x, context))
    assert "\n" not in str(error.value) and "ToyJoint" in str(error.value)
    engine = Engine(model, ["layers.0", "layers.1"])
    with engine.attached(), pytest.raises(TypeError, match="register_block_adapter"):
        _run(model, engine, [RUN, RUN], None, (x, context), {})


def test_a_registered_adapter_teaches_lees_a_new_block(toy):
    model, x, context = toy
    adapter = BlockAdapter(streams=("x", "context"), returns=("context", "x"), kind="joint")
    register_block_adapter(ToyJoint, adapter)
    assert lees.register_block_adapter is register_block_adapter
    blocks = find_blocks(model, names=["layers.0", "layers.1"], example_inputs=(x, context))
    assert [b.kind for b in blocks] == ["joint", "joint"] and blocks[0].out_numel == (4 + 3) * 8
    engine = Engine(model, blocks)
    inner = model.layers[1]
    with torch.no_grad():
        c1, x1 = model.layers[0](x, context)
        skipped_ref = x1  # layer 1 passes both streams through; the model returns x
        ran = inner(x1, c1)
    with engine.attached():
        assert torch.equal(_run(model, engine, [RUN, SKIP], None, (x, context), {}), skipped_ref)
        cache = ReuseCache(2)
        assert torch.allclose(_run(model, engine, [RUN, RUN], cache, (x, context), {}), ran[1])
        r_context, r_x = cache.residuals[1][1], cache.residuals[1][0]
        assert torch.allclose(r_context, ran[0] - c1) and torch.allclose(r_x, ran[1] - x1)
        x2 = torch.randn_like(x)
        with torch.no_grad():
            c12, x12 = model.layers[0](x2, context)
        reused = _run(model, engine, [RUN, REUSE], cache, (x2, context), {})
        assert torch.allclose(reused, x12 + (ran[1] - x1), atol=1e-6)


def test_adapter_checks_its_fields():
    with pytest.raises(ValueError, match="give returns="):
        BlockAdapter(streams=("a", "b"))
    with pytest.raises(ValueError, match="does not place"):
        BlockAdapter(streams=("a", "b"), returns=("a", "c"))
    with pytest.raises(TypeError, match="nn.Module subclass"):
        register_block_adapter(int, BlockAdapter())


def test_lees_blocks_lists_a_transformer_pipelines_blocks(tmp_path, capsys):
    from lees.cli import main

    model = _model("flux")
    model.save_pretrained(tmp_path / "pipe" / "transformer")  # a pipeline folder's denoiser
    assert main(["blocks", "--model", str(tmp_path / "pipe"), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["model_class"] == "FluxTransformer2DModel"
    assert [b["name"] for b in listed["blocks"]] == FAMILIES["flux"].block_names(model)
    assert {b["kind"] for b in listed["blocks"]} == {"joint"}
