"""The package's layers import downwards only, and no module imports in a cycle.

Every module under src/lees is parsed, imports inside functions included; each belongs to the layer
of its top-level subpackage (or root module). A module may import its own package's modules and any
layer below its own; siblings of one layer (``enable.py`` and ``sampling/``) may not import each
other. The README's "Layout" section says the same in words. And no function is longer than a screen.
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "lees"

LAYERS = (  # bottom to top
    ("_version", "utils"),
    ("diffusion",),
    ("models",),
    ("engine",),
    ("schedules",),
    ("enable", "sampling"),
    ("evaluation",),
    ("learn",),
    ("reporting",),
    ("tune",),
    ("cli",),
    ("__init__",),  # lees/__init__.py: the public API, re-exported from everywhere below
)
LAYER = {unit: level for level, units in enumerate(LAYERS) for unit in units}
MAX_FUNCTION_LINES = 60  # a function reads in one screen


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def unit(module: str) -> str:
    """The layer unit of a module: its top-level subpackage or root module (``__init__`` for lees)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def resolve(module: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The lees modules an import statement loads (``from . import x`` of a submodule x loads x)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name == "lees" or a.name.startswith("lees.")]
    if node.level == 0:
        base = node.module or ""
        if base != "lees" and not base.startswith("lees."):
            return []
    else:
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        parts = package.split(".")
        base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
    found = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        found.append(sub if sub in MODULES else base)
    return found


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
        graph[module] = {t for n in imports for t in resolve(module, n) if t in MODULES and t != module}
    return graph


GRAPH = import_graph()


def test_every_module_has_a_layer():
    missing = sorted({unit(m) for m in MODULES} - set(LAYER))
    assert not missing, f"no layer for {missing}: add them to LAYERS in tests/test_layout.py and the README"


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for module, targets in GRAPH.items():
        for target in sorted(targets):
            a, b = unit(module), unit(target)
            if a != b and LAYER[b] >= LAYER[a]:
                where = "the same layer" if LAYER[b] == LAYER[a] else "a layer above"
                upward.append(f"{module} -> {target} ({a} imports {b}, {where})")
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first module repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_catch_a_cycle_and_an_upward_edge():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert LAYER["engine"] < LAYER["schedules"] < LAYER["sampling"] == LAYER["enable"] < LAYER["cli"]


def test_no_function_over_60_lines():
    found = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
                if node.end_lineno - start + 1 > MAX_FUNCTION_LINES:
                    found.append(f"{module}.{node.name}: {node.end_lineno - start + 1} lines")
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(found)
