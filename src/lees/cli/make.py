"""``lees backbone train`` and ``lees classifier train``: how the embedded model and fd_clf's feature
network are made."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from .options import add_data, add_device, add_out, command

EPILOG_BACKBONE = """examples:
  lees backbone train --data fashion-mnist --out runs/backbone --train-steps 5000 --max-minutes 60
  lees backbone train --arch embedded-dit --out runs/dit --train-steps 36000 --lr 3e-4 --grid-every 1000
  (run the same command again to resume from its folder's checkpoint.safetensors)
"""
EPILOG_EXPORT = """example:
  lees backbone export --run runs/embedded-dit --out src/lees/embedded/dit
(the EMA weights of the run's latest checkpoint, fp16 where they fit in --max-mb, a grid and a README;
 the run may still be training)
"""
EPILOG_CLASSIFIER = """example:
  lees classifier train --data fashion-mnist --out runs/classifier
(fd_clf always uses the shipped src/lees/embedded/classifier, which this leaves alone)
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backbone", help="make a backbone: train a small diffusion model on local data")
    actions = p.add_subparsers(dest="backbone_command", required=True, metavar="ACTION")
    help = "train (or resume) a DDPM UNet or a flow-matching DiT"
    _backbone_options(command(actions, "train", run_backbone, help, EPILOG_BACKBONE))
    p = command(
        actions, "export", run_export, "ship a run's latest checkpoint as a model folder", EPILOG_EXPORT
    )
    p.add_argument("--run", type=Path, required=True, help="the --out folder of lees backbone train")
    add_out(p, required=True)
    p.add_argument("--max-mb", type=float, default=20.0, help="fp16 weights if they fit in this many MB (20)")
    p.add_argument("--grid", type=int, default=None, help="samples in OUT/samples.png (default: the run's)")
    add_device(p)
    p = sub.add_parser("classifier", help="the feature network of the offline metric fd_clf")
    actions = p.add_subparsers(dest="classifier_command", required=True, metavar="ACTION")
    p = command(actions, "train", run_classifier, "train it on local data", EPILOG_CLASSIFIER)
    add_data(p, "training images: fashion-mnist, mnist, or an idx folder")
    add_out(p, required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)


def _backbone_options(p: argparse.ArgumentParser) -> None:
    """The flags of ``lees backbone train``: each one a field of ``BackboneTrainConfig``, same name."""
    add_data(p, "training images: fashion-mnist, mnist, or an idx folder")
    add_out(p, required=True)
    p.add_argument("--train-steps", type=int, default=5000, help="optimisation steps (5000)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--max-minutes", type=float, default=None, help="checkpoint and stop after this long")
    p.add_argument(
        "--arch",
        default="embedded",
        help="embedded (the small default UNet), embedded-base, or embedded-dit (see docs/backbones.md)",
    )
    p.add_argument("--warmup", type=int, default=200, help="steps of linear learning-rate warm-up (200)")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--checkpoint-every", type=int, default=250, help="steps between checkpoints (250)")
    p.add_argument(
        "--grid-every", type=int, default=0,
        help="steps between sample grids in OUT/grids/ (a multiple of --checkpoint-every; 0: at the end)",
    )  # fmt: skip
    p.add_argument("--grid", type=int, default=64, help="samples per grid (a row per class if conditional)")
    p.add_argument("--guidance-scale", type=float, default=2.0, help="of class-conditional grids (2.0)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward pass (CUDA only)")
    add_device(p)
    p.add_argument("--seed", type=int, default=0)


def run_backbone(args: argparse.Namespace) -> None:
    """Train a small DDPM UNet on local data (how the embedded model is made); resumable."""
    from ..learn.backbone_training import BackboneTrainConfig, train_backbone

    names = {f.name for f in fields(BackboneTrainConfig)}
    config = BackboneTrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    train_backbone(args.out, config, device=args.device)


def run_export(args: argparse.Namespace) -> None:
    """Export the EMA weights of a backbone run's latest checkpoint as a shippable diffusers folder."""
    from ..learn.backbone_export import export_checkpoint

    export_checkpoint(args.run, args.out, args.max_mb, args.grid, args.device)


def run_classifier(args: argparse.Namespace) -> None:
    """Train the small classifier whose features give the offline metric fd_clf."""
    from ..evaluation.classifier import train_classifier

    card = train_classifier(args.out, args.data, args.epochs, seed=args.seed)
    print(f"test accuracy {card['test_accuracy']:.4f}; wrote {args.out}/model.safetensors and card.json")
