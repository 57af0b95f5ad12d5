"""``lees agreement``: how often a class-conditional model's samples are of the class asked for."""

from __future__ import annotations

import argparse
import json

from .options import (
    add_data,
    add_guidance,
    add_model,
    add_out,
    add_sampler,
    command,
    guidance_scale,
    load_model,
)

EPILOG = """examples:
  lees agreement --model embedded-dit -n 200 --steps 10 20 50              # Euler, guidance scale 2
  lees agreement --model embedded-dit -n 500 --steps 20 --sampler dpm++ --guidance-scale 1 --out runs/agree
(the labels are drawn per sample as lees sample draws them; the classifier is fd_clf's, and fd_clf is
 taken on the same samples against --data)
"""

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    help = "class agreement of a class-conditional model's samples (and their fd_clf)"
    p = command(sub, "agreement", run, help, EPILOG)
    add_model(p, default=None)
    p.add_argument("-n", type=int, default=200, help="samples per step count (200)")
    p.add_argument("--steps", type=int, nargs="+", default=[50], help="sampler steps, one run each (50)")
    add_sampler(p, default=None, timesteps=False)
    add_guidance(p)
    add_data(p, "real images for fd_clf's reference statistics")
    p.add_argument("--batch-size", type=int, default=100)
    add_out(p)


def run(args: argparse.Namespace) -> None:
    """Sample a class-conditional model (labels drawn per sample), classify the samples with the
    project's Fashion-MNIST classifier and report the share that is of the conditioned class, per
    class and overall, with fd_clf of the same samples; one run per step count."""
    from ..diffusion.solvers import default_solver
    from ..evaluation.agreement import agreement_table, sampled_agreement
    from ..evaluation.metrics import fd, scorer
    from ..models.backbones import load_noise_scheduler
    from ..utils.files import atomic_write_text

    if args.model is None:
        raise ValueError("name a class-conditional model, e.g. --model embedded-dit")
    if args.n < 2 or min(args.steps) < 1:
        raise ValueError("-n must be at least 2 and --steps positive")
    model, noise = load_model(args, args.device), load_noise_scheduler(args.model)
    sampler, scale = args.sampler or default_solver(noise), guidance_scale(args, model)
    extractor, reference = scorer("clf", args.data, args.device)
    reports = []
    for steps in args.steps:
        images, report = sampled_agreement(model, noise, args.n, steps, sampler, scale, args.seed,
                                           args.batch_size)  # fmt: skip
        report["fd_clf"] = fd(extractor(images), reference)
        reports.append(report)
        print(f"\n{args.model}: {steps} {sampler} steps, guidance scale {scale:g}, {args.n} samples")
        print(agreement_table(report, FASHION_MNIST_CLASSES if args.data == "fashion-mnist" else None))
        print(f"fd_clf {report['fd_clf']:.2f} (against {args.data})")
    if args.out is not None:
        path = atomic_write_text(args.out / "agreement.json", json.dumps(reports, indent=1) + "\n")
        print(f"wrote {path}")
