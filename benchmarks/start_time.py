"""How long lees takes to start: ``lees --help`` and each ``lees CMD --help``, ``import lees``, and what a
first ``lees demo`` on a fresh machine spends before its first sample beyond what later ones do.

Each figure is the wall time of a fresh process (interpreter start included), the median of
``--repeats`` runs; the import runs alternate with a process that imports torch and diffusers alone,
so their difference is paired. The demo is run twice (``-n 8 --steps 10``) with ``LEES_CACHE`` set to
an empty folder: the first run's extra time over the second is the first-demo setup cost (the
reference features the demo's metrics compare with). ``--src`` measures another checkout's package:

    .venv/bin/python benchmarks/start_time.py                       # this checkout's src/
    .venv/bin/python benchmarks/start_time.py --src /tmp/old/src    # another checkout, to compare

Stored output: docs/results/start-time/.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
IMPORTS = {
    "torch + diffusers": "import torch, diffusers",
    "import lees": "import lees",
    "lees, every public name": "import lees; [getattr(lees, n) for n in lees.__all__]",
}


def wall(argv: list[str], env: dict[str, str]) -> float:
    """Seconds one process takes from start to exit (it must succeed)."""
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def commands(env: dict[str, str]) -> list[list[str]]:
    """Every command line that has a ``--help``: ``lees`` and each (sub)command of its parser."""
    code = (
        "import argparse\nfrom lees.cli import build_parser\n"
        "def walk(p, path):\n"
        "    print(' '.join(path))\n"
        "    for a in p._actions:\n"
        "        if isinstance(a, argparse._SubParsersAction):\n"
        "            for name, sub in a.choices.items(): walk(sub, path + [name])\n"
        "walk(build_parser(), [])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return [line.split() for line in out.stdout.splitlines()]


def help_times(env: dict[str, str], repeats: int) -> None:
    times = {}
    for cmd in commands(env):
        argv = [sys.executable, "-m", "lees.cli", *cmd, "--help"]
        times[" ".join(["lees", *cmd])] = statistics.median(wall(argv, env) for _ in range(repeats))
    for name, seconds in times.items():
        print(f"  {name + ' --help':<34} {seconds:6.2f} s")
    print(f"  slowest --help: {max(times.values()):.2f} s over {len(times)} command lines")


def import_times(env: dict[str, str], repeats: int) -> None:
    runs: dict[str, list[float]] = {name: [] for name in IMPORTS}
    for _ in range(repeats):  # alternating, so a busy moment hits every kind alike
        for name, code in IMPORTS.items():
            runs[name].append(wall([sys.executable, "-c", code], env))
    base = statistics.median(runs["torch + diffusers"])
    for name, seconds in runs.items():
        median = statistics.median(seconds)
        print(f"  {name:<26} {median:6.2f} s  ({median - base:+.2f} s against torch + diffusers)")


def demo_setup(env: dict[str, str], cache: Path) -> None:
    argv = [sys.executable, "-m", "lees.cli", "demo", "-n", "8", "--steps", "10"]
    with tempfile.TemporaryDirectory() as out:
        env = {**env, "LEES_CACHE": str(cache)}
        first = wall([*argv, "--out", f"{out}/first"], env)
        second = wall([*argv, "--out", f"{out}/second"], env)
    print(f"  first lees demo -n 8 --steps 10 (empty LEES_CACHE) {first:7.1f} s")
    print(f"  the same again                                      {second:7.1f} s")
    print(f"  first-demo setup cost                               {first - second:7.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--src", type=Path, default=SRC, help="the src/ folder whose lees is measured")
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure (their median)")
    parser.add_argument(
        "--cache", type=Path, default=None, help="an empty LEES_CACHE (default: a temporary one)"
    )
    parser.add_argument("--no-demo", action="store_true", help="leave out the demo's setup cost")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(args.src.resolve())}
    print(f"lees from {args.src}, {os.cpu_count()} CPU cores, median of {args.repeats} runs each")
    print("--help:")
    help_times(env, args.repeats)
    print("imports:")
    import_times(env, args.repeats)
    if not args.no_demo:
        print("demo:")
        if args.cache is None:
            with tempfile.TemporaryDirectory() as cache:
                demo_setup(env, Path(cache))
        else:
            demo_setup(env, args.cache)


if __name__ == "__main__":
    main()
