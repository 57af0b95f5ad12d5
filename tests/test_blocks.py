import pytest
import torch
from torch import nn

from lees import find_blocks
from lees.engine.flops import flop_counter
from lees.models.denoisers import example_inputs


def test_ddpm_cifar10_blocks_in_execution_order(cifar_ddpm):
    blocks = find_blocks(cifar_ddpm)
    assert len(blocks) == 28
    kinds = [b.kind for b in blocks]
    assert kinds.count("resnet") == 22 and kinds.count("attention") == 6
    names = blocks.names
    # down path first, then the middle (resnet, attention, resnet), then the up path
    assert names[:4] == [
        "down_blocks.0.resnets.0",
        "down_blocks.0.resnets.1",
        "down_blocks.1.resnets.0",
        "down_blocks.1.attentions.0",
    ]
    assert names[10:13] == ["mid_block.resnets.0", "mid_block.attentions.0", "mid_block.resnets.1"]
    assert names[-1] == "up_blocks.3.resnets.2"
    assert blocks.input_shape == (1, 3, 32, 32)


def test_flop_shares_are_measured_consistently(cifar_ddpm):
    blocks = find_blocks(cifar_ddpm)
    with flop_counter() as counter, torch.no_grad():
        args, kwargs = example_inputs(cifar_ddpm)
        cifar_ddpm(*args, **kwargs)
    assert blocks.total_flops == counter.get_total_flops()
    assert all(b.share > 0 for b in blocks)
    assert 0.7 < sum(blocks.shares) < 1.0  # conv_in/out, resamplers and time embedding always run
    by_name = {b.name: b for b in blocks}
    # a channel-changing block keeps its 1x1 projection: it saves less than it costs
    changing = by_name["up_blocks.3.resnets.0"]
    assert 0 < changing.saved_flops < changing.flops
    same = by_name["down_blocks.0.resnets.0"]
    assert same.saved_flops == same.flops
    # attention FLOPs include the attention product itself, not only the four projections
    attn = by_name["down_blocks.1.attentions.0"]
    projections = 4 * 2 * 256 * 256 * 256  # q, k, v, out at 16x16 tokens, 256 channels
    assert attn.flops == projections + 2 * 2 * 256 * 256 * 256


def test_tiny_model_blocks(tiny):
    blocks = find_blocks(tiny)
    assert [(b.name, b.kind) for b in blocks] == [
        ("down_blocks.0.resnets.0", "resnet"),
        ("down_blocks.1.resnets.0", "resnet"),
        ("down_blocks.1.attentions.0", "attention"),
        ("mid_block.resnets.0", "resnet"),
        ("mid_block.attentions.0", "attention"),
        ("mid_block.resnets.1", "resnet"),
        ("up_blocks.0.resnets.0", "resnet"),
        ("up_blocks.0.attentions.0", "attention"),
        ("up_blocks.0.resnets.1", "resnet"),
        ("up_blocks.0.attentions.1", "attention"),
        ("up_blocks.1.resnets.0", "resnet"),
        ("up_blocks.1.resnets.1", "resnet"),
    ]
    assert find_blocks(tiny, sample_size=32).total_flops > 3 * blocks.total_flops


def test_user_named_blocks_are_sorted_by_execution(tiny):
    blocks = find_blocks(tiny, names=["up_blocks.1.resnets.0", "down_blocks.0.resnets.0"])
    assert blocks.names == ["down_blocks.0.resnets.0", "up_blocks.1.resnets.0"]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["no.such.module"], "no module named"),
        (["down_blocks.1", "down_blocks.1.resnets.0"], "must not nest"),
        (["conv_in"], "would change the tensor shape"),
        (["mid_block.resnets.0", "mid_block.resnets.0"], "named twice"),
    ],
)
def test_bad_block_names(tiny, names, message):
    with pytest.raises(ValueError, match=message):
        find_blocks(tiny, names=names)


class ResidualMLP(nn.Module):
    """A non-diffusers model: the user names its residual units."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.Tanh()) for _ in range(3))
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return self.head(x)


def test_any_model_with_named_blocks_and_inputs():
    model = ResidualMLP()
    blocks = find_blocks(model, names=["blocks.0", "blocks.2"], example_inputs=(torch.zeros(1, 8),))
    assert [b.kind for b in blocks] == ["identity", "identity"]
    assert blocks.total_flops == 3 * 2 * 8 * 8 + 2 * 8 * 2  # three 8x8 layers and the head
    assert blocks[0].flops == blocks[0].saved_flops == 2 * 8 * 8
    with pytest.raises(TypeError, match="no block adapter"):
        find_blocks(model)
    with pytest.raises(TypeError, match="example_inputs"):
        find_blocks(model, names=["blocks.0"])
