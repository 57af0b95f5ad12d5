"""``lees eval``: schedules compared over seeds, with a paired t-test."""

from __future__ import annotations

import argparse
import json

from .options import (
    add_data,
    add_guidance,
    add_metric,
    add_model,
    add_out,
    add_sampler,
    add_steps,
    command,
    default_metrics,
    guidance_scale,
    join_processes,
    load_model,
    processes,
)

EPILOG = """examples:
  lees eval --model embedded --schedule router-0.70 --schedule uniform-2 -n 256 --seeds 0 1 2 --out runs/eval
  lees eval --model embedded --schedule full --schedule full@25 -n 64 --seeds 0 1 --out runs/fewer
  lees eval --model embedded-dit --sampler euler --steps 20 --guidance-scale 2 -n 200 --seeds 0 --out runs/dit
(--schedule: a schedule file or any method name of lees schedule; none: the full model; the first two
 are compared by a paired t-test over seeds; an interrupted run picks up from OUT/work/ when run again)
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "eval", run, "quality and speed of schedules over seeds, with a t-test", EPILOG)
    add_model(p)
    add_out(p, required=True)
    p.add_argument(
        "--schedule", action="append", default=[], help="a schedule file or method name (repeatable)"
    )
    p.add_argument("-n", type=int, default=256, help="samples per schedule and seed (256)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampling seeds (0 1 2)")
    add_steps(p, "sampler steps of the methods named, and of the full model without --schedule (50)")
    add_sampler(p, default=None)
    add_guidance(p)
    add_metric(p, "the t-test's is the first")
    add_data(p, "real images for the reference statistics")
    p.add_argument(
        "--reference-n",
        type=int,
        default=None,
        help="real images in the reference (clf 10000, inception 2000)",
    )


def run(args: argparse.Namespace) -> None:
    """Sample with each schedule over several seeds; quality, latency, ratios as mean ± std, and a t-test."""
    from ..diffusion.samplers import sampler_timesteps
    from ..diffusion.solvers import default_solver
    from ..engine.blocks import find_blocks
    from ..evaluation.compare import compare_schedules
    from ..evaluation.metrics import scorer
    from ..models.backbones import load_noise_scheduler
    from ..schedules.registry import build_schedule
    from ..utils.distributed import is_main
    from ..utils.files import atomic_write_text

    device = join_processes(args.device)
    say = print if is_main() else (lambda *a, **k: None)  # under torchrun only rank 0 reports
    model, noise = load_model(args, device), load_noise_scheduler(args.model)
    blocks, sampler = find_blocks(model), args.sampler or default_solver(noise)
    timesteps = sampler_timesteps(noise, args.steps, sampler, args.timesteps)
    schedules = {
        name: build_schedule(name, blocks, timesteps, noise, sampler) for name in args.schedule or ["full"]
    }
    metrics = args.metric or default_metrics(say)
    scorers = {m: scorer(m, args.data, device, args.reference_n) for m in metrics}
    scale = guidance_scale(args, model)
    report = compare_schedules(model, noise, schedules, scorers, args.n, args.seeds, device, args.sampler,
                               args.out / "work", say, scale)  # fmt: skip
    report["guidance_scale"] = scale
    if is_main():
        path = atomic_write_text(args.out / "eval.json", json.dumps(report, indent=1) + "\n")
        say(f"wrote {path}{processes()}")
