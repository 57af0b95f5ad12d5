"""``lees sample``: samples of a model (optionally by a schedule) as a picture grid and an ``.npz``."""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from .options import (
    add_guidance,
    add_model,
    add_sampler,
    add_steps,
    command,
    guidance_scale,
    join_processes,
    load_autoencoder,
    load_model,
    processes,
)

EPILOG = """examples:
  lees sample --model embedded -n 64 --steps 50 --out grid.png        # grid.png + grid.npz
  lees sample --model embedded -n 16 --out grid.jpg                   # the format follows the suffix
  lees sample --model embedded --schedule src/lees/embedded/router-0.70/schedule.json --out runs/samples
  lees sample --model embedded-dit -n 64 --steps 20 --sampler dpm++ --guidance-scale 2 --out dit.png
(with --schedule the steps, sampler and timesteps are the schedule's)
"""


def register(sub: argparse._SubParsersAction) -> None:
    help = "draw samples, optionally by a schedule (each block runs, reuses or is skipped)"
    p = command(sub, "sample", run, help, EPILOG)
    add_model(p)
    p.add_argument(
        "--out", type=Path, required=True, help="a picture (.png, .jpg, ...; an .npz beside it) or a folder"
    )
    p.add_argument("--schedule", type=Path, default=None, help="schedule JSON (default: the full model)")
    p.add_argument("-n", type=int, default=64, help="number of samples (default: 64)")
    add_steps(p, "sampler steps (default: the schedule's, else 50)", default=None)
    add_sampler(p, default=None)
    add_guidance(p)
    p.add_argument("--batch-size", type=int, default=64)


def run(args: argparse.Namespace) -> None:
    """Draw samples (optionally running, reusing or skipping blocks by a schedule); write a picture grid
    and an .npz."""
    from ..engine.blocks import find_blocks
    from ..models.backbones import load_noise_scheduler
    from ..sampling.lockstep import sample
    from ..schedules.schedule import Schedule
    from ..utils.distributed import is_main, sample_sharded
    from ..utils.images import save_samples

    if args.n < 1 or (args.steps is not None and args.steps < 1):
        raise ValueError("-n and --steps must be positive")
    grid = grid_path(args.out)
    device = join_processes(args.device)
    model = load_model(args, device)
    schedule = Schedule.load(args.schedule, find_blocks(model)) if args.schedule else None
    noise = load_noise_scheduler(args.model)
    steps, sampler, timesteps = sampling_plan(args, schedule, noise)
    scale = guidance_scale(args, model)
    images = sample_sharded(
        partial(sample, model, schedule), args.n, steps=steps, sampler=sampler, seed=args.seed,
        scheduler=noise, batch_size=args.batch_size, device=device, timesteps=timesteps,
        decoder=load_autoencoder(args, device), guidance_scale=scale,
    )  # fmt: skip
    if is_main():
        grid, npz = save_samples(images, grid)
        steps = len(timesteps) if timesteps else steps
        guided = f", guidance scale {scale:g}" if scale != 1.0 else ""
        print(f"wrote {grid} and {npz} ({args.n} samples, {steps} {sampler} steps{guided}{processes()})")


def sampling_plan(args: argparse.Namespace, schedule, noise=None) -> tuple[int, str, list[int] | None]:
    """Steps, sampler and timesteps: a schedule's own (options may only repeat them), else the options'
    (the default sampler is that of the family of the model's scheduler ``noise``)."""
    from ..diffusion.solvers import default_solver
    from ..sampling.lockstep import schedule_sampler

    if schedule is None:
        return args.steps or 50, args.sampler or default_solver(noise), args.timesteps
    if args.steps is not None and args.steps != schedule.num_steps:
        raise ValueError(f"the schedule has {schedule.num_steps} steps, not {args.steps}: drop --steps")
    if args.timesteps is not None and args.timesteps != schedule.timesteps:
        raise ValueError("--timesteps differ from the schedule's: drop --timesteps")
    return schedule.num_steps, schedule_sampler(schedule, args.sampler, noise), schedule.timesteps


def grid_path(out: Path) -> Path:
    """``out`` itself when it names a picture (its suffix gives the format), else ``out/samples.png``."""
    from ..utils.images import image_format

    if out.suffix and not out.is_dir():
        image_format(out)  # refuse an unknown suffix before sampling, not after
        return out
    return out / "samples.png"
