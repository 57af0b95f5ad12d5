"""``lees frontier``: every method against the full model at fewer steps, at the same measured latency."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from .options import (
    SAMPLERS,
    add_device,
    add_guidance,
    add_prompts,
    add_sampler,
    add_verdict_options,
    command,
    prompt_list,
)

EPILOG = """examples:
  lees frontier                                  # 200 samples per method, ~25 min on 2 CPU cores
  lees frontier -n 500 --rows learned --fewer 35 25 20 --reuse-steps 35 \\
      --schedules docs/results/learned/router-kl-0.70/schedule.json --out runs/learned
  lees frontier -n 1000 --rows reuse-vs-skip --fewer 35 25 15 \\
      --fid-rows full full@35 full@25 full@15 ase lees-0.05 uniform-2 --clf-raw --out runs/rvs
  lees frontier --model embedded-dit -n 1000 --fewer 40 30 25 20 15 10 --rows dit \\
      --solvers dpm++ --solver-steps 30 20 10 --schedules runs/dit/router-0.70/schedule.json --seed 23 \\
      --out runs/dit-frontier
  lees frontier --model embedded-dit -n 64 --steps 20 --fewer 10 5 --rows dit --reference ode \\
      --out runs/dit-ode                          # fidelity to the ODE solution too, with intervals
  lees frontier --model path/to/sd --prompts "a red car" "a cat on a sofa" -n 16 --steps 20 --fewer 15 10 \\
      --solvers dpm++ --solver-steps 20 10 --reuse-steps 15 --out runs/frontier-sd
  lees frontier --plot-only --out runs/frontier   # redraw the plots from OUT/frontier.jsonl
(run the same command again after an interruption: the samples stored in OUT/pieces are reused)
(a text-to-image pipeline folder is sampled through its own call, as lees tune samples it: the prompts,
 negative prompt, guidance, size and VAE as given, each row applied as lees.enable applies it, latency the
 whole call paired per round; its rows: the full pipeline at --steps and --fewer, --solvers at
 --solver-steps, uniform reuse and DeepCache at --steps and --reuse-steps, --schedules; each scored by
 fidelity to the full pipeline's images (PSNR, SSIM, FD in Inception features: no dataset, so no fd_clf
 or FID) and judged under fd_full and dssim = 1 - SSIM; --rows, --fid-*, --clf-raw, --reference ode are
 the embedded models')
"""


def register(sub: argparse._SubParsersAction) -> None:
    from ..reporting.protocol import ROW_SETS

    p = command(sub, "frontier", run, "every method against the full model at fewer steps", EPILOG)
    p.add_argument(
        "--model",
        default="embedded",
        help="embedded (the default), embedded-dit, any model load_backbone takes, or a text-to-image "
        "pipeline folder (sampled through its own call: --prompts)",
    )
    add_sampler(p, default=None, timesteps=False)
    p.add_argument(
        "--solvers", nargs="*", choices=SAMPLERS, default=[],
        help="also the full model's fewer-steps curve with each of these solvers (at --solver-steps)",
    )  # fmt: skip
    p.add_argument(
        "--solver-steps", type=int, nargs="+", default=None, help="those curves' steps (--steps and --fewer)"
    )
    add_guidance(p, pipelines=True)
    add_prompts(p)
    p.add_argument(
        "--batch-size", type=int, default=None,
        help="samples per timed round (a pipeline folder's: 16; lees' own sampler: 64)",
    )  # fmt: skip
    p.add_argument("-n", type=int, default=200, help="samples per method (200)")
    p.add_argument("--steps", type=int, default=50, help="the full model's sampler steps (50)")
    p.add_argument("--fewer", type=int, nargs="+", default=[40, 35, 30, 25, 20, 15], help="the curve's steps")
    p.add_argument(
        "--reuse-steps", type=int, nargs="*", default=[], help="also uniform reuse, DeepCache at these steps"
    )
    p.add_argument(
        "--schedules", nargs="*", default=[], help="also these schedule files (any steps; named by folder)"
    )
    p.add_argument("--rows", choices=sorted(ROW_SETS), default="all", help="which methods beside full")
    p.add_argument("--fid-n", type=int, default=500, help="samples per method scored by FID (0: none)")
    p.add_argument(
        "--fid-resamples",
        type=int,
        default=50,
        help="bootstrap resamples of FID's intervals (50: they are costly)",
    )
    p.add_argument("--fid-rows", nargs="+", default=None, help="rows scored by Inception FID (all)")
    p.add_argument(
        "--clf-raw",
        action="store_true",
        help="also fd_clf_raw: fd_clf on raw features, its definition before 2026-11-27",
    )
    p.add_argument("--seed", type=int, default=7, help="sampling seed (7: one the report does not use)")
    add_verdict_options(p)
    add_device(p)
    p.add_argument("--out", type=Path, default=Path("runs/frontier"), help="folder (default: runs/frontier)")
    p.add_argument("--plot-only", action="store_true", help="redraw the plots from OUT/frontier.jsonl")


def run(args: argparse.Namespace) -> None:
    """Sample the embedded model with every method side by side; score each under fd_clf and Inception
    FID and judge it against the full model's fewer-steps curve at its measured latency (a text-to-image
    pipeline folder: every row through its own call, scored by fidelity to the full pipeline's images)."""
    from ..models.backbones import prompted_pipeline
    from ..reporting.frontier_run import FrontierConfig, frontier, plot, read_rows

    if args.plot_only:
        plot(args.out, read_rows(args.out))
        return
    names = {f.name for f in fields(FrontierConfig)}
    given = {k: v for k, v in vars(args).items() if k in names} | {"prompts": prompt_list(args.prompts)}
    config = FrontierConfig(**given)
    if prompted_pipeline(config.model):
        from ..tune.frontier import pipeline_frontier

        pipeline_frontier(config, args.out)
    else:
        frontier(config, args.out)
