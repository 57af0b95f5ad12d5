"""A fast start: ``lees --help`` (and each command's) and ``import lees`` load neither torch nor diffusers;
the public names load on first use and are what they were as plain imports."""

import json
import subprocess
import sys
import types
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
HEAVY = ("torch", "diffusers", "transformers", "matplotlib", "scipy")

EVERY_HELP = """
import argparse, contextlib, io, json, sys
from lees.cli import build_parser

def lines(p, path):
    yield path
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                yield from lines(sub, path + [name])

helped = []
for path in lines(build_parser(), []):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            build_parser().parse_args([*path, "--help"])
        except SystemExit:
            pass
    helped.append([" ".join(path), "usage: lees" in out.getvalue()])
print(json.dumps({"helped": helped, "loaded": [m for m in HEAVY if m in sys.modules]}))
"""


def fresh(code: str) -> dict:
    """What ``code`` printed as JSON, run in a fresh interpreter on this checkout's lees."""
    out = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{code}"],
        env={"PYTHONPATH": str(SRC), "PATH": ""},
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def test_every_help_prints_without_importing_torch():
    found = fresh(EVERY_HELP)
    assert len(found["helped"]) >= 12  # lees, each command and the backbone/classifier subcommands
    assert all(printed for _, printed in found["helped"]), found["helped"]
    assert found["loaded"] == []


def test_import_lees_loads_nothing_heavy_until_a_name_is_used():
    found = fresh(
        "import json, sys, lees\nbefore = [m for m in HEAVY if m in sys.modules]\nlees.Schedule\n"
        "print(json.dumps({'before': before, 'after': 'torch' in sys.modules}))"
    )
    assert found == {"before": [], "after": True}


def test_every_public_name_loads_and_stays_what_it_is():
    import lees.enable  # noqa: F401  (the submodule: its import must not rebind lees.enable)
    from lees.enable import enable
    from lees.schedules import baselines
    from lees.schedules.schedule import Schedule

    assert lees.enable is enable and lees.baselines is baselines and lees.Schedule is Schedule
    assert all(hasattr(lees, name) for name in lees.__all__)
    modules = [name for name in lees.__all__ if isinstance(getattr(lees, name), types.ModuleType)]
    assert modules == ["baselines"]
    assert set(lees.__all__) <= set(dir(lees))
    namespace: dict = {}
    exec("from lees import *", namespace)
    assert namespace["enable"] is enable and namespace["tuned"] is lees.tuned
