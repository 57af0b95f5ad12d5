"""The ``lees`` command line: one subcommand per job, the same option names everywhere."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .files import atomic_write_text

EPILOG_BLOCKS = """example:
  lees blocks --model arch:ddpm-cifar10
  lees blocks --model path/to/diffusers_unet_folder --out runs/blocks   # also writes blocks.json
"""


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="arch:NAME (random weights, e.g. arch:ddpm-cifar10), a local diffusers folder, or a hub id",
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed for random weights and sampling (default: 0)")


def _add_out(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--out", type=Path, required=required, default=None, help="folder to write results to")


def cmd_blocks(args: argparse.Namespace) -> None:
    """Print the skippable blocks of a model with their FLOP shares."""
    from .backbones import load_backbone
    from .blocks import find_blocks

    spec = args.model or args.model_pos
    if spec is None:
        raise ValueError("name a model: lees blocks --model arch:ddpm-cifar10")
    model = load_backbone(spec, device=args.device, seed=args.seed)
    blocks = find_blocks(model, sample_size=args.sample_size)
    if args.json:
        print(blocks.to_json())
    else:
        shape = "x".join(map(str, blocks.input_shape))
        print(
            f"{spec}: {blocks.model_class}, {len(blocks)} skippable blocks, "
            f"{blocks.total_flops / 1e9:.3f} GFLOP per call at input {shape}"
        )
        print(f"{'#':>3}  {'block':<36} {'kind':<10} {'GFLOP':>8} {'share':>7} {'cum.':>7}")
        cumulative = 0.0
        for k, b in enumerate(blocks):
            cumulative += b.share
            print(
                f"{k:>3}  {b.name:<36} {b.kind:<10} {b.saved_flops / 1e9:>8.3f} "
                f"{100 * b.share:>6.2f}% {100 * cumulative:>6.2f}%"
            )
        print(
            f"     share = FLOPs saved when the block is skipped (its own minus its shortcut's); "
            f"the rest ({100 * (1 - cumulative):.1f}%) always runs"
        )
    if args.out is not None:
        path = atomic_write_text(args.out / "blocks.json", blocks.to_json() + "\n")
        print(f"wrote {path}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="lees",
        description="Learn which blocks of a frozen diffusion model to skip at each timestep.",
    )
    parser.add_argument("--version", action="version", version=f"lees {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "blocks",
        help="list the skippable blocks of a model and their FLOP shares",
        description=cmd_blocks.__doc__,
        epilog=EPILOG_BLOCKS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model_pos", nargs="?", metavar="MODEL", help="same as --model")
    _add_model(p)
    _add_out(p)
    p.add_argument("--sample-size", type=int, default=None, help="input size for the FLOP count")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_blocks)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lees`` console script; bad input ends in one line on stderr, exit 2."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except (ValueError, TypeError, OSError) as err:
        if os.environ.get("LEES_DEBUG"):
            raise
        print(f"lees {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
