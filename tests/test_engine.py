import pytest
import torch

from lees import GatedModel, SigmoidTimeGate, find_blocks


def _inputs(model, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    c, s = model.config.in_channels, model.config.sample_size
    return torch.randn(batch, c, s, s, generator=g), torch.tensor([3, 700][:batch])


@pytest.mark.parametrize("name", ["tiny", "cifar_ddpm"])
def test_all_on_equals_plain_model(name, request):
    model = request.getfixturevalue(name)
    gated = GatedModel(model, find_blocks(model))
    x, t = _inputs(model)
    with torch.no_grad():
        plain = model(x, t).sample
        on = gated(x, t, mask=[True] * gated.num_blocks).sample
        soft_one = gated(x, t, mask=torch.ones(gated.num_blocks), mode="soft").sample
    assert (plain - on).abs().max() <= 1e-5
    assert (plain - soft_one).abs().max() <= 1e-5


def test_model_and_state_dict_untouched(tiny):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    gated = GatedModel(tiny, find_blocks(tiny))
    x, t = _inputs(tiny)
    with torch.no_grad():
        gated(x, t, mask=[k % 2 == 0 for k in range(gated.num_blocks)])
    after = tiny.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any("forward" in m.__dict__ for m in tiny.modules())


def test_forward_restored_after_an_error(tiny):
    gated = GatedModel(tiny, find_blocks(tiny))
    with pytest.raises(RuntimeError):
        gated(torch.zeros(1, 3, 16, 16), torch.tensor([1]), mask=[True] * gated.num_blocks)  # 3 != 1 channel
    assert not any("forward" in m.__dict__ for m in tiny.modules())


def test_skipped_blocks_do_not_run(tiny):
    blocks = find_blocks(tiny)
    modules = dict(tiny.named_modules())
    calls = dict.fromkeys(blocks.names, 0)

    def counter(name):
        def hook(*_):
            calls[name] += 1

        return hook

    for b in blocks:  # the residual branch's first layer: runs only when the block computes
        inner = modules[b.name].conv1 if b.kind == "resnet" else modules[b.name].to_q
        inner.register_forward_hook(counter(b.name))
    mask = [k % 3 != 1 for k in range(len(blocks))]
    with torch.no_grad():
        GatedModel(tiny, blocks)(*_inputs(tiny), mask=mask)
    assert [calls[n] for n in blocks.names] == [int(m) for m in mask]


def _io_of(model, name):
    """Record the input and output of module ``name`` on the next call."""
    seen = {}
    module = dict(model.named_modules())[name]

    def hook(_, args, output):
        seen["x"], seen["y"] = args[0], output

    return seen, module.register_forward_hook(hook)


def test_shortcut_rule(tiny):
    blocks = find_blocks(tiny)
    gated = GatedModel(tiny, blocks)
    x, t = _inputs(tiny)
    modules = dict(tiny.named_modules())
    cases = {
        "up_blocks.1.resnets.0": "projection",  # 48 -> 16 channels after the skip concat
        "down_blocks.1.resnets.0": "projection",  # 16 -> 32 channels
        "mid_block.resnets.0": "identity",
        "mid_block.attentions.0": "identity",
    }
    for name, rule in cases.items():
        seen, handle = _io_of(tiny, name)
        mask = [n != name for n in blocks.names]
        with torch.no_grad():
            gated(x, t, mask=mask)
        handle.remove()
        if rule == "projection":
            conv = modules[name].conv_shortcut
            assert conv is not None and seen["x"].shape[1] != seen["y"].shape[1]
            assert torch.allclose(seen["y"], conv(seen["x"]))
        else:
            assert seen["y"] is seen["x"]


def test_soft_mode_mixes_shortcut_and_block(tiny):
    blocks = find_blocks(tiny)
    gated = GatedModel(tiny, blocks)
    x, t = _inputs(tiny)
    name = "up_blocks.1.resnets.0"
    k = blocks.names.index(name)
    module = dict(tiny.named_modules())[name]
    seen, handle = _io_of(tiny, name)
    weights = torch.ones(len(blocks))
    weights[k] = 0.3
    with torch.no_grad():
        gated(x, t, mask=weights, mode="soft")
        handle.remove()
        full = module(seen["x"], tiny.time_embedding(tiny.time_proj(t)))
        expected = module.conv_shortcut(seen["x"]) + 0.3 * (full - module.conv_shortcut(seen["x"]))
        assert torch.allclose(seen["y"], expected, atol=1e-5)
        off = gated(x, t, mask=[False] * len(blocks)).sample
        soft_zero = gated(x, t, mask=torch.zeros(len(blocks)), mode="soft").sample
    assert torch.allclose(off, soft_zero, atol=1e-5)


def test_ste_forward_is_hard_and_closed_gates_get_gradients(tiny):
    blocks = find_blocks(tiny)
    gated = GatedModel(tiny, blocks)
    gate = SigmoidTimeGate(len(blocks), blocks.names)
    with torch.no_grad():
        gate.b[::2] = -1.0  # every other block closed at every t
    x, t = _inputs(tiny)
    tn = (t.float() + 1) / 1000
    g = gate(tn)  # (B, K): one decision per sample
    out = gated(x, t, mask=g, mode="ste").sample
    with torch.no_grad():
        hard = gated(x, t, mask=gate.hard(tn)[0], mode="hard").sample
    assert torch.allclose(out, hard, atol=1e-4)
    out.pow(2).mean().backward()
    assert torch.isfinite(gate.a.grad).all() and torch.isfinite(gate.b.grad).all()
    assert (gate.b.grad[::2] != 0).all() and (gate.a.grad[::2] != 0).all()
    assert (gate.b.grad[1::2] != 0).all()


@pytest.mark.parametrize(
    ("mask", "mode", "error", "message"),
    [
        ([True] * 3, "hard", ValueError, "3 entries for 12 blocks"),
        (torch.ones(2, 12, dtype=torch.bool), "hard", ValueError, "one mask for the whole batch"),
        ([True] * 12, "soft", TypeError, "float tensor"),
        (torch.ones(5), "ste", ValueError, "do not fit 12 blocks"),
        ([True] * 12, "fast", ValueError, "mode must be one of"),
    ],
)
def test_bad_masks(tiny, mask, mode, error, message):
    gated = GatedModel(tiny, find_blocks(tiny))
    with pytest.raises(error, match=message):
        gated(*_inputs(tiny), mask=mask, mode=mode)
