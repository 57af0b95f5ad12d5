"""The ``lees`` command line: one subcommand per job, each a map from its flags to library calls.

Each command group is one module here with its examples (``EPILOG``), ``register(sub)`` (its options)
and ``run(args)``; the options several commands share are declared once in :mod:`.options`. Errors
follow one policy (:func:`main`): bad input ends in one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from .._version import __version__
from . import agreement, blocks, evaluate, frontier, make, reproduce, route, sample, schedule, train, tune

COMMANDS = (blocks, train, route, schedule, sample, evaluate, agreement, frontier, reproduce, make, tune)
# What counts as bad input: one line, exit 2. (TypeError too: the library raises it for a model or
# pipeline it cannot take, e.g. a denoiser with no block adapter.) Anything else is a bug: a traceback.
BAD_INPUT = (ValueError, TypeError, OSError, ArithmeticError)


def build_parser() -> argparse.ArgumentParser:
    """The ``lees`` parser: one subcommand per job, each added by its module in ``COMMANDS``."""
    parser = argparse.ArgumentParser(
        prog="lees",
        description="Make a frozen diffusion model sample faster: decide per block and sampling step whether "
        "the block runs, reuses its last residual, or is skipped.",
    )
    parser.add_argument("--version", action="version", version=f"lees {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lees`` console script; bad input ends in one line on stderr, exit 2
    (``LEES_DEBUG=1`` shows the traceback instead)."""
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], None] = args.func
    try:
        run(args)
        from ..utils.distributed import leave_processes  # torch is loaded by now; --help stays fast

        leave_processes()
    except BAD_INPUT as err:
        if os.environ.get("LEES_DEBUG"):
            raise
        message = " ".join(str(err).split())
        print(f"lees {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0
