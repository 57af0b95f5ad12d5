"""``lees reproduce`` (the paper's protocol and its claims table) and ``lees demo`` (the main job)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import (
    add_device,
    add_guidance,
    add_metric,
    add_model,
    add_resize,
    add_steps,
    command,
    default_metrics,
)

EPILOG_REPRODUCE = """examples:
  lees reproduce --quick --out report        # every row, smaller: 2 seeds x 8 samples, 15 gate steps
                                             # of 16 images per run and seed, no Inception FID
                                             # (< 10 min on 2 CPU cores; it prints what it shrinks)
  lees reproduce --out report-full           # 5 seeds x 200 samples, one epoch per gate run and seed
                                             # (hours on 2 CPU cores, minutes on a GPU)
(run the same command again after an interruption: finished pieces in OUT/work are reused)
"""
EPILOG_DEMO = """examples:
  lees demo --out runs/demo                                # the embedded UNet, DDPM-50
  lees demo --model embedded-dit -n 64 --out runs/demo-dit  # the embedded DiT, Euler-50, guidance 2
"""


def register(sub: argparse._SubParsersAction) -> None:
    help = "the paper's evaluation protocol and claims table"
    p = command(sub, "reproduce", run_reproduce, help, EPILOG_REPRODUCE)
    add_model(p)
    p.add_argument("--out", type=Path, default=Path("report"), help="report folder (default: report)")
    p.add_argument(
        "--quick", action="store_true",
        help="every row, smaller: 2 seeds x 8 samples, 15 gate-training steps of 16 images per run and "
        "seed, ASE grid on 8 samples, 500 held-out images, no Inception FID unless --fid names rows "
        "(it prints what it shrinks when it starts)",
    )  # fmt: skip
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="sampling seeds")
    p.add_argument("-n", type=int, default=None, help="samples per method and seed")
    add_steps(p, "sampler steps (50)")
    p.add_argument(
        "--fid", choices=("auto", "key", "all", "none"), default=None,
        help="rows scored by Inception FID, seeds pooled (default auto: every row on CUDA, the key rows on "
        "a CPU; none with --quick)",
    )  # fmt: skip
    add_resize(p)
    help = "the main job: learned schedule vs full model and ASE on an embedded model"
    p = command(sub, "demo", run_demo, help, EPILOG_DEMO)
    p.add_argument(
        "--model", choices=("embedded", "embedded-dit"), default="embedded",
        help="the embedded UNet (DDPM; the default) or DiT (flow matching, Euler)",
    )  # fmt: skip
    add_guidance(p)
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="folder for the pictures (runs/demo)")
    p.add_argument("-n", type=int, default=128, help="samples per method (128)")
    add_steps(p, "sampler steps (50)")
    p.add_argument("--seed", type=int, default=0)
    add_device(p)
    add_metric(
        p, "clf: fd_clf, inception: Inception FID, clf_raw: fd_clf on raw features as before 2026-11-27"
    )


def run_reproduce(args: argparse.Namespace) -> None:
    """Run the paper's evaluation protocol on a model and write the report with the claims table."""
    from ..reporting.reproduce import reproduce

    path = reproduce(reproduce_config(args), args.out)
    print(f"wrote {path}, {args.out / 'results.json'}, {args.out / 'pareto.png'} and the plots beside them")


def reproduce_config(args: argparse.Namespace):
    """The protocol's settings from the flags: ``--quick``'s or the full protocol's, with the flags given."""
    from ..reporting.reproduce import ReproduceConfig

    given = (("seeds", args.seeds), ("n", args.n), ("fid", args.fid))
    kwargs = {"model": args.model, "device": args.device, "dtype": args.dtype, "steps": args.steps}
    kwargs |= {"resize": args.resize, **{k: v for k, v in given if v is not None}}
    return ReproduceConfig.quick(**kwargs) if args.quick else ReproduceConfig(**kwargs)


def run_demo(args: argparse.Namespace) -> None:
    """On an embedded model: the shipped router schedule against the full model at 50 and at fewer steps,
    uniform reuse, ASE and the paper's LEES gates, sampled side by side and scored."""
    from ..reporting.demo import demo, demo_metrics

    metrics = args.metric or demo_metrics(default_metrics(print))
    rows = demo(
        args.out, n=args.n, steps=args.steps, seed=args.seed, device=args.device, metrics=tuple(metrics),
        model_name=args.model, guidance_scale=args.guidance_scale,
    )  # fmt: skip
    scores = [m for m in ("fd_clf", "fid") if m in rows[0]]
    head = ("method", "steps", *scores, "s/100 img", "time cut", "blocks", "FLOPs")
    print(("{:<16} {:>5}" + " {:>8}" * len(scores) + " {:>10} {:>9} {:>7} {:>6}").format(*head))
    for r in rows:
        quality = "".join(f" {r[m]:>8.3f}" for m in scores)
        print(
            f"{r['method']:<16} {r['steps']:>5}{quality} {r['seconds_per_100']:>10.2f} "
            f"{r['latency_cut']:>+9.1%} {r['executed_ratio']:>7.1%} {r['flop_ratio']:>6.1%}"
        )
    print(
        "fd_clf: Fréchet distance in a small classifier's features; fid: Inception FID (biased upwards at "
        f"small n; compare within its column); lower is better; {args.n} samples, {args.steps} "
        f"{'Euler' if args.model == 'embedded-dit' else 'DDPM'} steps, seed {args.seed}"
    )
    print(
        "blocks: share of (block, step) pairs computed (a reused block is not); FLOPs: against the full "
        f"model at {args.steps} steps"
    )
    names, out = ",".join(r["method"] for r in rows), args.out
    print(f"wrote {out}/samples-{{{names}}}.png and the learned schedules' gates.png, schedule-NAME.png")
