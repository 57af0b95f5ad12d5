"""``lees schedule NAME``: any method the registry names, or ASE's grid search, as a schedule file."""

from __future__ import annotations

import argparse

from .options import add_data, add_model, add_out, add_sampler, add_steps, command, load_model, note_cache

EPILOG = """examples:
  lees schedule full --model embedded --steps 50 --out runs/full
  lees schedule uniform-2 --model embedded --out runs/uniform2          # uniform reuse, every 2nd step
  lees schedule uniform-2-skip --model embedded --out runs/uniform2-skip
  lees schedule uniform-3-forecast --model embedded --out runs/uniform3-forecast  # TaylorSeer-like
  lees schedule deepcache-3@25 --model embedded --out runs/deepcache3-25  # at 25 sampler steps
  lees schedule ase --model embedded --steps 50 --drop-length 200 --out runs/ase
  lees schedule random --model embedded --ratio 0.6 --seed 1 --out runs/random
  lees schedule lees-0.05 --model embedded --steps 20 --out runs/lees20  # a shipped schedule, 20 steps
  lees schedule learned --model embedded --gates src/lees/embedded/lees-0.05/gates.safetensors --out runs/g
  lees schedule ase-grid --model embedded --budget 0.6 -n 16 --no-check --out runs/ase-grid
NAME: full, uniform-N[-skip|-forecast[-ORDER]], deepcache-N, ase, random, learned, a shipped schedule
(lees-0.05, router-0.70), a schedule file, each NAME@STEPS for other steps; ase-grid searches ASE's grid.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "schedule", run, "write a baseline or learned schedule for a sampler", EPILOG)
    p.add_argument("kind", metavar="NAME", help="a method name (see below), or ase-grid")
    add_model(p)
    add_out(p, required=True)
    add_steps(p, "sampler steps (50)")
    add_sampler(p)
    p.add_argument("--drop-length", type=int, default=None, help="ase: timesteps per drop segment (200)")
    p.add_argument("--drop-step", type=int, default=None, help="ase: blocks dropped per segment (K/7)")
    p.add_argument("--start", type=int, default=None, help="ase: timestep where dropping starts (0)")
    p.add_argument(
        "--ratio", type=float, default=None, help="random: share of (block, step) cells that run (0.6)"
    )
    p.add_argument("--gates", default=None, help="learned: gates.safetensors from lees train")
    p.add_argument(
        "--interval", type=int, default=None, help="deepcache, uniform: a full step every N steps (3)"
    )
    p.add_argument(
        "--levels", type=int, default=None, help="deepcache: outer UNet levels that always run (1)"
    )
    p.add_argument(
        "--outer", type=int, default=None, help="uniform: first and last blocks that always run (1)"
    )
    p.add_argument(
        "--between",
        choices=("reuse", "forecast", "skip"),
        default=None,
        help="deepcache, uniform: the others",
    )
    p.add_argument(
        "--order", type=int, default=None, help="uniform forecast: 1 (a line) or 2 (a parabola) (1)"
    )
    p.add_argument("--budget", type=float, default=None, help="ase-grid: max FLOP ratio (ASE default's)")
    p.add_argument("-n", type=int, default=256, help="ase-grid: samples scored per candidate (256)")
    p.add_argument("--n", dest="n", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # old name
    add_data(p, "ase-grid: real images for the offline metric")
    p.add_argument(
        "--no-check",
        action="store_true",
        help="ase-grid: skip scoring the best and default under Inception FID",
    )


def run(args: argparse.Namespace) -> None:
    """Write a schedule: any method name of the registry (the full model, uniform reuse, DeepCache, ASE,
    random gates, a shipped or saved learned schedule, each at any steps), or ASE's grid-tuned best."""
    from ..diffusion.samplers import sampler_timesteps
    from ..engine.blocks import find_blocks
    from ..learn.ase_grid import tune_ase
    from ..models.backbones import load_noise_scheduler
    from ..reporting.plots import schedule_map
    from ..sampling.lockstep import schedule_sampler
    from ..schedules.registry import build_schedule, options_of

    if args.steps < 1:
        raise ValueError("--steps must be positive")
    model, noise = load_model(args, args.device), load_noise_scheduler(args.model)
    blocks = find_blocks(model)
    timesteps = sampler_timesteps(noise, args.steps, args.sampler, args.timesteps)
    if args.kind == "ase-grid":
        schedule = tune_ase(model, noise, blocks, timesteps, args.out, args.data, args.budget, args.n,
                            args.seed, args.device, args.sampler, check=not args.no_check)  # fmt: skip
    else:
        options = {name: getattr(args, name) for name in options_of(args.kind)}
        schedule = build_schedule(args.kind, blocks, timesteps, noise, args.sampler, **options)
    schedule.settings["sampler"] = schedule_sampler(schedule, args.sampler)  # what lees sample and eval run
    memory = note_cache(schedule, blocks, model)
    path = schedule.save(args.out / "schedule.json")
    png = schedule_map(schedule, args.out / "schedule.png")
    print(
        f"{args.kind} schedule on {schedule.num_steps} steps: runs {schedule.executed_ratio:.1%} of the "
        f"blocks, {schedule.flop_ratio:.1%} of the FLOPs{memory}; wrote {path} and {png}"
    )
