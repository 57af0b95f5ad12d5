"""diffusers' private names are read in one module, for the diffusers version pyproject.toml pins."""

import ast
import re
from pathlib import Path

import diffusers

from lees.utils import diffusers_private

ROOT = Path(__file__).resolve().parents[1]


def test_the_private_names_are_read_for_the_pinned_and_installed_diffusers():
    pin = re.search(r'"diffusers==([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert pin == diffusers_private.PINNED_DIFFUSERS == diffusers.__version__
    missing = [name for name in diffusers_private.__all__ if not hasattr(diffusers_private, name)]
    assert not missing


def private_imports(path: Path) -> list[str]:
    """The diffusers names a module imports from a private module or under a private name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("diffusers"):
            private_module = any(part.startswith("_") for part in node.module.split("."))
            found += [a.name for a in node.names if private_module or a.name.startswith("_")]
    return found


def test_no_other_module_imports_a_private_diffusers_name():
    others = {
        str(path.relative_to(ROOT)): names
        for path in sorted((ROOT / "src" / "lees").rglob("*.py"))
        if path.name != "diffusers_private.py" and (names := private_imports(path))
    }
    assert others == {}
    assert "TransformerBlockRegistry" in private_imports(ROOT / "src/lees/utils/diffusers_private.py")
