"""The README's "Use it with diffusers" block runs as written."""

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
