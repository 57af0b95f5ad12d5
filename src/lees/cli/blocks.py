"""``lees blocks``: the skippable blocks of a model and the share of the FLOPs each one saves."""

from __future__ import annotations

import argparse
import sys

from .options import add_model, add_out, command, load_model

EPILOG = """example:
  lees blocks --model arch:ddpm-cifar10
  lees blocks --model arch:ddpm-cifar10 --json --out runs/blocks   # also writes blocks.json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "blocks", run, "list the skippable blocks of a model and their FLOP shares", EPILOG)
    p.add_argument("model_pos", nargs="?", metavar="MODEL", help="same as --model")
    add_model(p, default=None)
    add_out(p)
    p.add_argument("--sample-size", type=int, default=None, help="input size for the FLOP count")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> None:
    """Print the skippable blocks of a model with their FLOP shares."""
    from ..engine.blocks import find_blocks
    from ..utils.files import atomic_write_text

    spec = args.model or args.model_pos
    if spec is None:
        raise ValueError("name a model: lees blocks --model arch:ddpm-cifar10")
    blocks = find_blocks(load_model(args, args.device, spec), sample_size=args.sample_size)
    print(blocks.to_json() if args.json else table(spec, blocks))
    if args.out is not None:
        path = atomic_write_text(args.out / "blocks.json", blocks.to_json() + "\n")
        print(f"wrote {path}", file=sys.stderr)


def table(spec: str, blocks) -> str:
    """The blocks as a table: each one's FLOPs saved when skipped, its share and the running total."""
    shape = "x".join(map(str, blocks.input_shape))
    lines = [
        f"{spec}: {blocks.model_class}, {len(blocks)} skippable blocks, "
        f"{blocks.total_flops / 1e9:.3f} GFLOP per call at input {shape}",
        f"{'#':>3}  {'block':<36} {'kind':<10} {'GFLOP':>8} {'share':>7} {'cum.':>7}",
    ]
    cumulative = 0.0
    for k, b in enumerate(blocks):
        cumulative += b.share
        lines.append(
            f"{k:>3}  {b.name:<36} {b.kind:<10} {b.saved_flops / 1e9:>8.3f} "
            f"{100 * b.share:>6.2f}% {100 * cumulative:>6.2f}%"
        )
    lines.append(
        f"     share = FLOPs saved when the block is skipped (its own minus its shortcut's); "
        f"the rest ({100 * (1 - cumulative):.1f}%) always runs"
    )
    return "\n".join(lines)
