"""The README's code blocks ("Use it with diffusers", "Use it from Python") run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_use_it_with_diffusers_block_runs():
    text = README.read_text()
    section = text[text.index("## Use it with diffusers") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    images = scope["images"]
    assert images.shape == (4, 32, 32, 1) and images.min() >= 0 and images.max() <= 1
    unet = scope["pipe"].unet
    assert not any("_diffusers_hook" in m.__dict__ for m in unet.modules())  # disabled cleanly


def test_use_it_from_python_block_runs():
    import pytest

    from lees.models.data import DataError, load_images

    try:
        load_images("fashion-mnist")
    except DataError as missing:
        pytest.skip(str(missing))
    text = README.read_text()
    section = text[text.index("## Use it from Python") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["samples"].shape == (16, 1, 32, 32) and len(scope["result"].log) == 20
    assert scope["schedule"].num_steps == 50
