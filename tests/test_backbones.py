import pytest
import torch
from safetensors.torch import load_file

from lees import BackboneError, load_backbone

from .conftest import tiny_unet


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_architecture_is_seeded():
    a = load_backbone("arch:ddpm-cifar10", seed=3)
    assert sum(p.numel() for p in a.parameters()) == 35_746_307  # as published for DDPM CIFAR-10
    assert _same_weights(a, load_backbone("arch:ddpm-cifar10", seed=3))
    assert not _same_weights(a, load_backbone("arch:ddpm-cifar10", seed=4))
    assert not a.training


def test_local_folder_and_pipeline_folder(tmp_path):
    model = tiny_unet()
    model.save_pretrained(tmp_path / "plain")
    model.save_pretrained(tmp_path / "pipe" / "unet")
    assert load_file(tmp_path / "plain" / "diffusion_pytorch_model.safetensors")
    assert _same_weights(model, load_backbone(str(tmp_path / "plain")))
    assert _same_weights(model, load_backbone(str(tmp_path / "pipe")))


def test_pickle_weights_need_consent(tmp_path):
    tiny_unet().save_pretrained(tmp_path / "bin", safe_serialization=False)
    with pytest.raises(BackboneError, match="only safetensors"):
        load_backbone(str(tmp_path / "bin"))
    assert _same_weights(tiny_unet(), load_backbone(str(tmp_path / "bin"), allow_pickle=True))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("arch:nope", "unknown architecture 'nope'"),
        ("nope", "unknown model 'nope'"),
        ("./missing/folder", "unknown model"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(BackboneError, match=message):
        load_backbone(spec)


def test_folder_without_config(tmp_path):
    with pytest.raises(BackboneError, match="no config.json"):
        load_backbone(str(tmp_path))
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(BackboneError, match="is a file"):
        load_backbone(str(tmp_path / "weights.safetensors"))
