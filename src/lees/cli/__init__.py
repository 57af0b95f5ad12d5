"""The ``lees`` command line: one subcommand per job, the same option names everywhere."""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from ..utils.files import atomic_write_text

EPILOG_BLOCKS = """example:
  lees blocks --model arch:ddpm-cifar10
  lees blocks --model path/to/diffusers_unet_folder --out runs/blocks   # also writes blocks.json
"""


def _add_model(p: argparse.ArgumentParser, default: str | None = "embedded") -> None:
    when = "the default" if default == "embedded" else "not the default here: name a model"
    p.add_argument(
        "--model",
        default=default,
        help=f"embedded (the Fashion-MNIST DDPM shipped with lees; {when}), arch:NAME (random weights, "
        "e.g. arch:ddpm-cifar10), a local diffusers folder, or a hub id",
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed for random weights and sampling (default: 0)")
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="cast the model (and its autoencoder) to this dtype; inputs follow it, the sampler's state "
        "and the gate math stay float32 (default: float32)",
    )


DTYPES = ("float32", "float16", "bfloat16")


def _load_model(args: argparse.Namespace, device: str, spec: str | None = None):
    """The model ``--model`` (or ``spec``) names, on ``device``, cast to ``--dtype``."""
    import torch

    from ..models.backbones import load_backbone

    model = load_backbone(spec or args.model, device=device, seed=args.seed)
    return model.to(getattr(torch, args.dtype))


def _add_resize(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--resize",
        action="store_true",
        help="resize the images to the model's channels and size (without it a mismatch is an error)",
    )


def _add_sampler(p: argparse.ArgumentParser, default: str | None = "ddpm") -> None:
    p.add_argument(
        "--sampler",
        choices=("ddpm", "ddim"),
        default=default,
        help=f"sampler (default: {default})" if default else "sampler (default: the schedule's, else ddpm)",
    )
    p.add_argument(
        "--timesteps",
        type=_timestep_list,
        default=None,
        metavar="T1,T2,...",
        help="sample on these descending timesteps instead of --steps evenly spaced ones "
        "(e.g. an Align-Your-Steps schedule: 999,850,736,645,545,455,343,233,124,24)",
    )


def _timestep_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None


def _join_processes(device: str) -> str:
    """Under torchrun, join the process group; the device this process uses."""
    from ..utils.distributed import init_from_env, local_device

    init_from_env(device)
    return local_device(device)


def _processes() -> str:
    """ ", on N processes" under torchrun, else nothing (for the summary line of a command)."""
    from ..utils.distributed import world

    return f", on {world()[1]} processes" if world()[1] > 1 else ""


def _autoencoder(args: argparse.Namespace, device: str):
    """The autoencoder of a latent-diffusion pipeline folder (vae/ or vqvae/) in ``--dtype``, else None."""
    import torch

    from ..models.latents import load_autoencoder

    path = Path(args.model).expanduser()
    found = load_autoencoder(path, device) if args.model != "embedded" and path.is_dir() else None
    return None if found is None else found.to(getattr(torch, args.dtype))


def _add_out(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--out", type=Path, required=required, default=None, help="folder to write results to")


def cmd_blocks(args: argparse.Namespace) -> None:
    """Print the skippable blocks of a model with their FLOP shares."""
    from ..engine.blocks import find_blocks

    spec = args.model or args.model_pos
    if spec is None:
        raise ValueError("name a model: lees blocks --model arch:ddpm-cifar10")
    model = _load_model(args, args.device, spec)
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


EPILOG_BACKBONE = """examples:
  lees backbone train --data fashion-mnist --out runs/backbone --train-steps 5000 --max-minutes 60
  lees backbone train --arch embedded-dit --out runs/dit --train-steps 36000 --lr 3e-4 --grid-every 1000
  (run the same command again to resume from its folder's checkpoint.safetensors)
"""


def cmd_backbone_train(args: argparse.Namespace) -> None:
    """Train a small DDPM UNet on local data (how the embedded model is made); resumable."""
    from ..learn.backbone_training import BackboneTrainConfig, train_backbone

    if args.train_steps < 1 or args.batch_size < 1:
        raise ValueError("--train-steps and --batch-size must be positive")
    config = BackboneTrainConfig(
        data=args.data,
        steps=args.train_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        max_minutes=args.max_minutes,
        arch=args.arch,
        bf16=args.bf16,
        warmup=args.warmup,
        ema_decay=args.ema_decay,
        checkpoint_every=args.checkpoint_every,
        grid_every=args.grid_every,
        grid=args.grid,
        guidance_scale=args.guidance_scale,
    )
    train_backbone(args.out, config, device=args.device)


EPILOG_SAMPLE = """examples:
  lees sample --model embedded -n 64 --steps 50 --out grid.png        # grid.png + grid.npz
  lees sample --model embedded -n 16 --out grid.jpg                   # the format follows the suffix
  lees sample --model embedded --schedule runs/lees/schedule.json --out runs/samples
(with --schedule the steps, sampler and timesteps are the schedule's)
"""


def _schedule_sampler(schedule, sampler: str | None) -> str:
    """The sampler a schedule runs on: the one it was made for (``settings["sampler"]``), else ``sampler``.

    A sampler asked for that contradicts the schedule's is an error: the table's columns are the
    steps of that sampler, and another one would run them as different updates.
    """
    made_for = schedule.settings.get("sampler")
    if sampler is not None and made_for is not None and sampler != made_for:
        raise ValueError(f"the schedule was made for the {made_for} sampler, not {sampler}: drop --sampler")
    return sampler or made_for or "ddpm"


def _sampling_plan(args: argparse.Namespace, schedule) -> tuple[int, str, list[int] | None]:
    """Steps, sampler and timesteps: a schedule's own (options may only repeat them), else the options'."""
    if schedule is None:
        return args.steps or 50, args.sampler or "ddpm", args.timesteps
    if args.steps is not None and args.steps != schedule.num_steps:
        raise ValueError(f"the schedule has {schedule.num_steps} steps, not {args.steps}: drop --steps")
    if args.timesteps is not None and args.timesteps != schedule.timesteps:
        raise ValueError("--timesteps differ from the schedule's: drop --timesteps")
    return schedule.num_steps, _schedule_sampler(schedule, args.sampler), schedule.timesteps


def _grid_path(out: Path) -> Path:
    """``out`` itself when it names a picture (its suffix gives the format), else ``out/samples.png``."""
    from ..utils.images import image_format

    if out.suffix and not out.is_dir():
        image_format(out)  # refuse an unknown suffix before sampling, not after
        return out
    return out / "samples.png"


def cmd_sample(args: argparse.Namespace) -> None:
    """Draw samples (optionally skipping blocks by a schedule); write a picture grid and an .npz."""
    import numpy as np

    from ..engine.blocks import find_blocks
    from ..models.backbones import load_noise_scheduler
    from ..sampling.lockstep import sample
    from ..schedules.schedule import Schedule
    from ..utils.distributed import is_main, sample_sharded
    from ..utils.files import atomic_write_bytes
    from ..utils.images import save_grid, to_uint8

    if args.n < 1 or (args.steps is not None and args.steps < 1):
        raise ValueError("-n and --steps must be positive")
    grid = _grid_path(args.out)
    device = _join_processes(args.device)
    model = _load_model(args, device)
    schedule = Schedule.load(args.schedule, find_blocks(model)) if args.schedule else None
    steps, sampler, timesteps = _sampling_plan(args, schedule)
    noise = load_noise_scheduler(args.model)
    images = sample_sharded(
        partial(sample, model, schedule), args.n, steps=steps, sampler=sampler, seed=args.seed,
        scheduler=noise, batch_size=args.batch_size, device=device, timesteps=timesteps,
        decoder=_autoencoder(args, device),
    )  # fmt: skip
    if not is_main():
        return
    save_grid(images, grid)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=to_uint8(images))
    npz = atomic_write_bytes(grid.with_suffix(".npz"), buffer.getvalue())
    steps = len(timesteps) if timesteps else steps
    print(f"wrote {grid} and {npz} ({args.n} samples, {steps} {sampler} steps{_processes()})")


EPILOG_TRAIN = """example:
  lees train --model embedded --lambda 0.05 --out runs/lees
  lees train --model embedded --target-ratio 0.6 --cost flops --out runs/budget
  lees train --model embedded --no-held-out --out runs/quick   # skip the held-out loss afterwards
  lees train --model path/to/unet16 --data mnist --resize --out runs/small   # data resized to the model
"""


HELD_OUT_CHUNK = 100  # test images per call of held_out_loss: one tick of the progress bar


def _held_out_losses(model, blocks, images, noise, gate, device, autoencoder, resize) -> tuple[float, float]:
    """Held-out epsilon-MSE of the full and of the gated model on the first 2000 test images.

    Scored chunk by chunk (chunk k with noise seed k, the same for both models) so a progress bar
    can show this step, the longer part of ``lees train`` on the embedded model.
    """
    from tqdm.auto import tqdm

    from ..evaluation.held_out import held_out_loss

    images = images[:2000]
    totals = [0.0, 0.0]
    with tqdm(total=2 * len(images), desc="held-out loss", unit="img") as bar:
        for k, first in enumerate(range(0, len(images), HELD_OUT_CHUNK)):
            chunk = images[first : first + HELD_OUT_CHUNK]
            for j, g in enumerate((None, gate)):
                loss = held_out_loss(
                    model, blocks, chunk, noise, g, n=len(chunk), batch_size=len(chunk), seed=k,
                    device=device, autoencoder=autoencoder, resize=resize,
                )  # fmt: skip
                totals[j] += loss * len(chunk)
                bar.update(len(chunk))
    return totals[0] / len(images), totals[1] / len(images)


def cmd_train(args: argparse.Namespace) -> None:
    """Train the 2K gate parameters of a frozen backbone; write gates, schedule, log and heat-map."""
    from ..diffusion.samplers import sampler_timesteps
    from ..learn.gate_training import GateTrainConfig, config_dict, train_gates
    from ..models.backbones import load_noise_scheduler
    from ..models.data import load_images
    from ..reporting.plots import gate_heatmap, schedule_map
    from ..schedules.saving import save_gate
    from ..schedules.schedule import Schedule
    from ..utils.distributed import is_main

    config = GateTrainConfig(
        lam=args.lam,
        steps=args.train_steps,
        batch_size=args.batch_size,
        cost=args.cost,
        target_ratio=args.target_ratio,
        early_stop_kl=args.early_stop_kl,
        seed=args.seed,
        estimator=args.estimator,
    )
    spec = args.model
    device = _join_processes(args.device)
    model = _load_model(args, device)
    noise = load_noise_scheduler(spec)
    images, _ = load_images(args.data, "train")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    autoencoder = _autoencoder(args, device)
    result = train_gates(
        model, images, noise, config, device=device, log_path=out / "train_log.jsonl",
        autoencoder=autoencoder, checkpoint=out / "checkpoint.safetensors", resize=args.resize,
    )  # fmt: skip
    if not is_main():
        return
    timesteps = sampler_timesteps(noise, args.steps, args.sampler, args.timesteps)
    settings = config_dict(config) | {
        "model": spec,
        "data": args.data,
        "resize": args.resize,
        "sampler": args.sampler,
        "train_seconds": round(result.seconds, 1),
        "train_steps_done": len(result.log),
        "stopped_early": result.stopped_early,
        "final_lambda": result.log[-1]["lambda"],
    }
    held_out = ""
    if args.held_out:
        test_images = load_images(args.data, "test")[0]
        loss_full, loss_gated = _held_out_losses(
            model, result.blocks, test_images, noise, result.gate, device, autoencoder, args.resize
        )
        settings |= {"held_out_loss_full": loss_full, "held_out_loss_gated": loss_gated}
        held_out = f"; held-out loss {loss_gated:.5f} (full model {loss_full:.5f})"
    save_gate(result.gate, result.blocks.names, out / "gates.safetensors", settings=settings)
    schedule = Schedule.from_gate(
        result.gate, result.blocks, timesteps, noise.config.num_train_timesteps, settings
    )
    schedule.save(out / "schedule.json")
    gate_heatmap(
        result.gate, result.blocks.names, out / "gates.png", f"gates of {spec} (lambda={args.lam:g})"
    )
    schedule_map(schedule, out / "schedule.png")
    stop = " (stopped early: the gates settled)" if result.stopped_early else ""
    print(
        f"trained {len(result.log)} steps in {result.seconds:.1f} s{_processes()}{stop}; "
        f"on {len(timesteps)} {args.sampler} steps the schedule runs {schedule.executed_ratio:.1%} "
        f"of the blocks, {schedule.flop_ratio:.1%} of the FLOPs{held_out}"
    )
    (out / "checkpoint.safetensors").unlink(missing_ok=True)  # only an interrupted run needs it
    written = ["gates.safetensors", "schedule.json", "train_log.jsonl", "gates.png", "schedule.png"]
    print(f"wrote {', '.join(str(out / name) for name in written)}")


EPILOG_SCHEDULE = """examples:
  lees schedule full --model embedded --steps 50 --out runs/full
  lees schedule ase --model embedded --steps 50 --drop-length 200 --out runs/ase
  lees schedule ase-grid --model embedded --budget 0.6 -n 256 --out runs/ase-grid
  lees schedule random --model embedded --ratio 0.6 --seed 1 --out runs/random
  lees schedule learned --model embedded --gates runs/lees/gates.safetensors --steps 20 --out runs/lees20
  lees schedule deepcache --model embedded --interval 3 --levels 1 --out runs/deepcache3
  lees schedule uniform --model embedded --interval 2 --outer 1 --between skip --out runs/uniform2-skip
"""


def _ase_grid(args: argparse.Namespace, model, blocks, timesteps):
    """Baseline B3: ASE tuned by grid search on fd_clf; writes grid.json beside the schedule, naming the
    metric, with the best and the default ASE schedule also under Inception FID where it is installed."""
    import json

    from ..evaluation.metrics import ClassifierFeatures, reference_features
    from ..learn.ase_grid import ase_grid
    from ..models.backbones import load_noise_scheduler
    from ..schedules.baselines import ase_schedule

    budget = args.budget or ase_schedule(blocks, timesteps).flop_ratio
    extractor = ClassifierFeatures(args.device)
    reference = reference_features(extractor, args.data, "train")
    noise = load_noise_scheduler(args.model)
    grid = ase_grid(
        model, noise, blocks, timesteps, extractor, reference, budget, n=args.n, seed=args.seed,
        device=args.device, sampler=args.sampler,
    )  # fmt: skip
    report = {
        "budget": budget,
        "n": args.n,
        "metric": grid.metric,
        "seconds": grid.seconds,
        "candidates": grid.rows,
    }
    path = atomic_write_text(args.out / "grid.json", json.dumps(report, indent=1) + "\n")
    print(f"grid search: {len(grid.rows)} candidates by {grid.metric} in {grid.seconds:.0f} s; wrote {path}")
    report["check"] = _check_choice(
        args, model, noise, grid, (extractor, reference), ase_schedule(blocks, timesteps)
    )
    atomic_write_text(path, json.dumps(report, indent=1) + "\n")  # the grid is kept should the check fail
    return grid.best


def _check_choice(args: argparse.Namespace, model, noise, grid, ranked_by, default) -> dict | str:
    """The grid's best and ASE's default, each under the grid's metric and Inception FID (same seeds),
    printed side by side; a note instead when the Inception weights are not installed or --no-check."""
    from ..evaluation.metrics import InceptionFeatures, reference_features
    from ..evaluation.scoring import score_under

    if args.no_check:
        return "skipped (--no-check)"
    try:
        inception = InceptionFeatures(args.device)
    except FileNotFoundError as err:
        print(f"not checked under Inception FID: {err}")
        return f"skipped: {err}"
    scorers = {
        grid.metric: ranked_by,
        "fid": (inception, reference_features(inception, args.data, "train", 2000)),
    }
    schedules = {"best": grid.best, "ase default": default}
    scores = score_under(model, noise, schedules, scorers, args.n, args.seed, args.device, args.sampler)
    print(f"{'':<12} {'FLOPs':>6} " + " ".join(f"{m:>8}" for m in scorers))
    for name, schedule in schedules.items():
        values = " ".join(f"{scores[name][m]:>8.3f}" for m in scorers)
        print(f"{name:<12} {schedule.flop_ratio:>6.1%} {values}")
    return {"n": args.n, "seed": args.seed, "fid_reference": 2000, "scores": scores}


def cmd_schedule(args: argparse.Namespace) -> None:
    """Write a schedule (full model, ASE's drop schedule or its grid-tuned best, random or learned gates,
    DeepCache, uniform reuse)."""
    from ..diffusion.samplers import sampler_timesteps
    from ..engine.actions import ACTIONS
    from ..engine.blocks import find_blocks
    from ..models.backbones import load_noise_scheduler
    from ..reporting.plots import schedule_map
    from ..schedules.baselines import ase_schedule, deepcache_schedule, random_schedule, uniform_schedule
    from ..schedules.saving import load_gate
    from ..schedules.schedule import Schedule, ScheduleMismatchError

    spec = args.model
    model = _load_model(args, args.device)
    blocks = find_blocks(model)
    noise = load_noise_scheduler(spec)
    if args.steps < 1:
        raise ValueError("--steps must be positive")
    timesteps = sampler_timesteps(noise, args.steps, args.sampler, args.timesteps)
    if args.kind == "full":
        schedule = Schedule.full(blocks, timesteps)
    elif args.kind == "ase":
        schedule = ase_schedule(blocks, timesteps, args.drop_length, args.drop_step, args.start)
    elif args.kind == "random":
        schedule = random_schedule(blocks, timesteps, args.ratio, args.seed)
    elif args.kind == "ase-grid":
        schedule = _ase_grid(args, model, blocks, timesteps)
    elif args.kind == "deepcache":
        schedule = deepcache_schedule(
            blocks, timesteps, args.interval, args.levels, between=ACTIONS[args.between]
        )
    elif args.kind == "uniform":
        schedule = uniform_schedule(blocks, timesteps, args.interval, args.outer, ACTIONS[args.between])
    else:
        if args.gates is None:
            raise ValueError("lees schedule learned needs --gates FILE (from lees train)")
        gate, names = load_gate(args.gates)
        if names != blocks.names:
            raise ScheduleMismatchError(f"{args.gates} was trained for other blocks than those of {spec}")
        schedule = Schedule.from_gate(gate, blocks, timesteps, noise.config.num_train_timesteps)
    schedule.settings["sampler"] = args.sampler  # what lees sample and lees eval run it on
    memory = _note_cache(schedule, blocks, model)
    path = schedule.save(args.out / "schedule.json")
    png = schedule_map(schedule, args.out / "schedule.png")
    print(
        f"{args.kind} schedule on {len(timesteps)} steps: runs {schedule.executed_ratio:.1%} of the blocks, "
        f"{schedule.flop_ratio:.1%} of the FLOPs{memory}; wrote {path} and {png}"
    )


def _note_cache(schedule, blocks, model) -> str:
    """Store the reuse cache's peak bytes per sample in the schedule's settings; the text for the user."""
    if not schedule.reuses:
        return ""
    size = next(model.parameters()).element_size()
    schedule.settings["cache_bytes_per_sample"] = schedule.cache_bytes_per_sample(blocks, size)
    return f", reuse cache {schedule.settings['cache_bytes_per_sample'] / 1024:.0f} KiB per sample"


EPILOG_EVAL = """example:
  lees eval --model embedded --schedule runs/ase/schedule.json --schedule runs/lees/schedule.json \\
            -n 256 --seeds 0 1 2 --out runs/eval
(no --schedule: the full model; the first two are compared by a paired t-test over seeds;
 an interrupted run picks up from OUT/work/ when run again)
"""


def _default_metrics(say) -> list[str]:
    """fd_clf, and Inception FID beside it when its weights are installed (the two can disagree)."""
    from ..evaluation.metrics import inception_path

    try:
        inception_path()
    except FileNotFoundError as missing:
        say(f"scoring under clf only: {missing}")
        return ["clf"]
    return ["clf", "inception"]


def cmd_eval(args: argparse.Namespace) -> None:
    """Sample with each schedule over several seeds; quality, latency, ratios as mean ± std, and a t-test."""
    import json

    from ..diffusion.samplers import sampler_timesteps
    from ..engine.blocks import find_blocks
    from ..evaluation.metrics import EXTRACTORS, REFERENCE_N, reference_features
    from ..evaluation.scoring import score_schedule
    from ..evaluation.stats import mean_pm_std, paired_t
    from ..models.backbones import load_noise_scheduler
    from ..schedules.schedule import Schedule
    from ..utils.distributed import is_main

    spec = args.model
    device = _join_processes(args.device)
    say = print if is_main() else (lambda *a, **k: None)  # under torchrun only rank 0 reports
    model = _load_model(args, device)
    noise = load_noise_scheduler(spec)
    blocks = find_blocks(model)
    schedules = {str(p): Schedule.load(p, blocks) for p in args.schedule}
    if not schedules:
        sampler = args.sampler or "ddpm"
        timesteps = sampler_timesteps(noise, args.steps, sampler, args.timesteps)
        schedules = {"full": Schedule.full(blocks, timesteps, settings={"sampler": sampler})}
    if args.n < 2 or not args.seeds:
        raise ValueError("need -n >= 2 and at least one seed")
    metrics = args.metric or _default_metrics(say)
    scorers = {}
    for name in metrics:
        extractor = EXTRACTORS[name](device)
        count = args.reference_n or REFERENCE_N[name]
        scorers[name] = (extractor, reference_features(extractor, args.data, "train", n=count))
    (extractor, reference), also = scorers[metrics[0]], {m: scorers[m] for m in metrics[1:]}
    results = {}
    for k, (name, schedule) in enumerate(schedules.items()):
        scores = [
            score_schedule(model, noise, schedule, extractor, reference, args.n, schedule.num_steps, seed,
                           device=device, sampler=_schedule_sampler(schedule, args.sampler), progress=True,
                           state=args.out / "work" / f"schedule{k}-seed{seed}.npz", also=also)
            for seed in args.seeds
        ]  # fmt: skip
        row = {
            "fd": [s.fd for s in scores],
            **{f"fd_{m}": [s.also[m] for s in scores] for m in also},
            "kid": [s.kid for s in scores],
            "seconds_per_100": [s.seconds_per_100 for s in scores],
            "images_per_s": [s.n / s.seconds for s in scores],
            "executed_ratio": schedule.executed_ratio,
            "flop_ratio": schedule.flop_ratio,
        }
        results[name] = row
        quality = ", ".join(
            f"{m} FD {mean_pm_std(row['fd' if m == metrics[0] else f'fd_{m}'])}" for m in metrics
        )
        say(
            f"{name}: {quality}, {mean_pm_std(row['seconds_per_100'], '.2f')} s/100 img, "
            f"blocks {schedule.executed_ratio:.1%}, FLOPs {schedule.flop_ratio:.1%}"
        )
    report: dict = {
        "metric": metrics[0],
        "metrics": metrics,
        "n": args.n,
        "seeds": args.seeds,
        "results": results,
    }
    names = list(results)
    if len(names) >= 2 and len(args.seeds) >= 2:
        t, p = paired_t(results[names[0]]["fd"], results[names[1]]["fd"])
        report["t_test"] = {"a": names[0], "b": names[1], "t": t, "p": p}
        say(f"paired t-test on {metrics[0]} FD, {names[0]} vs {names[1]}: t = {t:.3f}, p = {p:.4g}")
    if is_main():
        path = atomic_write_text(args.out / "eval.json", json.dumps(report, indent=1) + "\n")
        say(f"wrote {path}{_processes()}")


EPILOG_REPRODUCE = """examples:
  lees reproduce --quick --out report        # 2 seeds x 64 samples, 100 gate steps per run and seed
  lees reproduce --out report-full           # 5 seeds x 200 samples, one epoch per gate run and seed
                                             # (hours on 2 CPU cores, minutes on a GPU)
(run the same command again after an interruption: finished pieces in OUT/work are reused)
"""


def cmd_reproduce(args: argparse.Namespace) -> None:
    """Run the paper's evaluation protocol on a model and write the report with the claims table."""
    from ..reporting.reproduce import ReproduceConfig, reproduce

    overrides = {k: v for k, v in (("seeds", args.seeds), ("n", args.n)) if v is not None}
    kwargs = {"model": args.model, "device": args.device, "dtype": args.dtype, "steps": args.steps}
    kwargs |= {"resize": args.resize, "fid": args.fid, **overrides}
    config = ReproduceConfig.quick(**kwargs) if args.quick else ReproduceConfig(**kwargs)
    if config.n < 2 or len(config.seeds) < 2:
        raise ValueError("the protocol needs n >= 2 samples and at least 2 seeds (for the t-test)")
    path = reproduce(config, args.out)
    print(f"wrote {path}, {args.out / 'results.json'}, {args.out / 'pareto.png'} and the plots beside them")


def cmd_demo(args: argparse.Namespace) -> None:
    """On the embedded model: the shipped router schedule against the full model at 50 and at fewer steps,
    uniform reuse, ASE and the paper's LEES gates, sampled side by side and scored."""
    from ..reporting.demo import demo

    metrics = args.metric or _default_metrics(print)
    rows = demo(
        args.out, n=args.n, steps=args.steps, seed=args.seed, device=args.device, metrics=tuple(metrics)
    )
    scores = [m for m in ("fd_clf", "fid") if m in rows[0]]
    head = ("method", "steps", *scores, "s/100 img", "time cut", "blocks", "FLOPs")
    print(("{:<8} {:>5}" + " {:>8}" * len(scores) + " {:>10} {:>9} {:>7} {:>6}").format(*head))
    for r in rows:
        quality = "".join(f" {r[m]:>8.3f}" for m in scores)
        print(
            f"{r['method']:<8} {r['steps']:>5}{quality} {r['seconds_per_100']:>10.2f} "
            f"{r['latency_cut']:>+9.1%} {r['executed_ratio']:>7.1%} {r['flop_ratio']:>6.1%}"
        )
    print(
        "fd_clf: Fréchet distance in a small classifier's features; fid: Inception FID (biased upwards at "
        f"small n; compare within its column); lower is better; {args.n} samples, {args.steps} DDPM steps, "
        f"seed {args.seed}"
    )
    print(
        "blocks: share of (block, step) pairs computed (a reused block is not); FLOPs: against the full "
        f"model at {args.steps} steps"
    )
    names = ",".join(r["method"] for r in rows)
    out = args.out
    print(f"wrote {out}/samples-{{{names}}}.png, {out}/gates.png, {out}/schedule-{{router,lees}}.png")


EPILOG_CLASSIFIER = """example:
  lees classifier train --data fashion-mnist --out runs/classifier
(fd_clf always uses the shipped src/lees/embedded/classifier, which this leaves alone)
"""


def cmd_classifier_train(args: argparse.Namespace) -> None:
    """Train the small classifier whose features give the offline metric fd_clf."""
    from ..evaluation.classifier import train_classifier

    card = train_classifier(args.out, args.data, args.epochs, seed=args.seed)
    print(f"test accuracy {card['test_accuracy']:.4f}; wrote {args.out}/model.safetensors and card.json")


def _command(
    sub: argparse._SubParsersAction,
    name: str,
    func: Callable[[argparse.Namespace], None],
    help: str,
    epilog: str | None = None,
) -> argparse.ArgumentParser:
    """A subcommand that runs ``func``, described by its docstring, with its examples below the options."""
    p = sub.add_parser(
        name,
        help=help,
        description=func.__doc__,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=func)
    return p


def _blocks_parser(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub, "blocks", cmd_blocks, "list the skippable blocks of a model and their FLOP shares", EPILOG_BLOCKS
    )
    p.add_argument("model_pos", nargs="?", metavar="MODEL", help="same as --model")
    _add_model(p, default=None)
    _add_out(p)
    p.add_argument("--sample-size", type=int, default=None, help="input size for the FLOP count")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "train", cmd_train, "train the gates of a frozen backbone (LEES)", EPILOG_TRAIN)
    _add_model(p)
    _add_out(p, required=True)
    p.add_argument(
        "--data", default="fashion-mnist", help="training images: fashion-mnist, mnist, or an idx folder"
    )
    _add_resize(p)
    p.add_argument("--lambda", dest="lam", type=float, default=0.05, help="weight of the compute term (0.05)")
    p.add_argument("--target-ratio", type=float, default=None, help="adapt lambda to land on this ratio")
    p.add_argument(
        "--cost", choices=("blocks", "flops"), default="blocks", help="what the compute term counts"
    )
    p.add_argument(
        "--estimator",
        choices=("soft", "ste"),
        default="soft",
        help="gradient of the gates: soft (blocks mixed by g while training; default) or ste (the paper's "
        "straight-through estimator, which collapses on the embedded model; see docs/method.md)",
    )
    p.add_argument("--train-steps", type=int, default=None, help="optimisation steps (default: one epoch)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--early-stop-kl", type=float, default=None, help="stop once the gate KL stays below this")
    p.add_argument(
        "--no-held-out",
        dest="held_out",
        action="store_false",
        help="skip the held-out loss of the gated and the full model after training",
    )
    p.add_argument("--steps", type=int, default=50, help="sampler steps of the written schedule (50)")
    _add_sampler(p)


def _schedule_parser(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub, "schedule", cmd_schedule, "write a baseline or learned schedule for a sampler", EPILOG_SCHEDULE
    )
    p.add_argument("kind", choices=("full", "ase", "ase-grid", "random", "learned", "deepcache", "uniform"))
    _add_model(p)
    _add_out(p, required=True)
    p.add_argument("--steps", type=int, default=50, help="sampler steps (50)")
    _add_sampler(p)
    p.add_argument("--drop-length", type=int, default=200, help="ase: timesteps per drop segment (200)")
    p.add_argument("--drop-step", type=int, default=None, help="ase: blocks dropped per segment (K/7)")
    p.add_argument("--start", type=int, default=0, help="ase: timestep where dropping starts (0)")
    p.add_argument("--ratio", type=float, default=0.6, help="random: share of (block, step) cells that run")
    p.add_argument("--gates", type=Path, default=None, help="learned: gates.safetensors from lees train")
    p.add_argument("--budget", type=float, default=None, help="ase-grid: max FLOP ratio (ASE default's)")
    p.add_argument("-n", type=int, default=256, help="ase-grid: samples scored per candidate (256)")
    p.add_argument("--n", dest="n", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # old name
    p.add_argument("--data", default="fashion-mnist", help="ase-grid: real images for the offline metric")
    p.add_argument(
        "--no-check",
        action="store_true",
        help="ase-grid: skip scoring the best and default under Inception FID",
    )
    p.add_argument(
        "--interval", type=int, default=3, help="deepcache, uniform: a full step every N steps (3)"
    )
    p.add_argument("--levels", type=int, default=1, help="deepcache: outer UNet levels that always run (1)")
    p.add_argument("--outer", type=int, default=1, help="uniform: first and last blocks that always run (1)")
    p.add_argument(
        "--between", choices=("reuse", "skip"), default="reuse", help="deepcache, uniform: the other blocks"
    )


EPILOG_ROUTE = """examples:
  lees route --model embedded --steps 50 --target-ratio 0.7 --train-steps 300 --out runs/router-0.70
  lees route --model path/to/pipeline --steps 20 --sampler ddim --target-ratio 0.5
  lees schedule uniform --model embedded --interval 2 --outer 1 --out runs/uniform2
  lees route --model embedded --schedule runs/uniform2/schedule.json --train-steps 50 --out runs/router-warm
  lees route --model embedded --schedule full --out runs/router-from-full   # every logit starts at "run"
  (the default start is the baseline within the budget: DeepCache for a UNet, else uniform reuse)
  (without --out a diffusers folder gets the schedule in its lees/ subfolder)
(a few minutes on a CPU for the embedded model; the schedule reuses, never drops, a block's output)
"""


def cmd_route(args: argparse.Namespace) -> None:
    """Learn a run-or-reuse schedule (the step router) for a frozen model on its sampler's own trajectory."""
    import json

    from ..engine.blocks import find_blocks
    from ..learn.router import STARTS, RouterConfig, train_router
    from ..models.backbones import load_noise_scheduler
    from ..reporting.plots import schedule_map
    from ..schedules.saving import save_pretrained
    from ..schedules.schedule import Schedule

    model = _load_model(args, args.device)
    config = RouterConfig(
        steps=args.steps, sampler=args.sampler, target_ratio=args.target_ratio or None, lam=args.lam,
        train_steps=args.train_steps, batch_size=args.batch_size, trajectories=args.trajectories,
        estimator=args.estimator, objective=args.objective, seed=args.seed,
    )  # fmt: skip
    if args.out is None and not Path(args.model).is_dir():
        raise ValueError("name --out (or give --model a diffusers folder to write its lees/ subfolder)")
    out = args.out if args.out is not None else Path(args.model)
    blocks = find_blocks(model)
    start = args.schedule if args.schedule in STARTS else Schedule.load(args.schedule, blocks)
    result = train_router(model, load_noise_scheduler(args.model), config, blocks, progress=True, start=start)
    schedule = result.schedule
    memory = _note_cache(schedule, blocks, model)
    path = save_pretrained(schedule, out, model=model, model_spec=args.model, objective="router")
    png = schedule_map(schedule, path.parent / "schedule.png")
    (path.parent / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in result.log))
    print(
        f"router on {schedule.num_steps} {args.sampler} steps in {result.seconds:.0f} s, started from "
        f"{_start_name(schedule)}, chosen by its {config.objective} objective (distance to the full "
        "model's run; no fd_clf or FID): runs "
        f"{schedule.executed_ratio:.1%} of the blocks, {schedule.flop_ratio:.1%} of the FLOPs, reuses the "
        f"rest{memory}; wrote {path}, {png} and {path.parent / 'train_log.jsonl'}"
    )


def _start_name(schedule) -> str:
    """The start a router schedule's settings record, in words: 'run everything' or its source."""
    start = schedule.settings.get("start")
    if start is None:
        return "run everything"
    return start["source"] + (f" every {start['interval']} steps" if "interval" in start else "")


def _route_parser(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "route", cmd_route, "learn a run-or-reuse schedule (the step router)", EPILOG_ROUTE)
    _add_model(p)
    _add_out(p)
    p.add_argument("--steps", type=int, default=50, help="sampler steps of the schedule (50)")
    p.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddpm", help="sampler (default: ddpm)")
    p.add_argument(
        "--target-ratio", type=float, default=0.7, help="FLOP ratio wanted (0.7); 0 for lambda mode"
    )
    p.add_argument("--lambda", dest="lam", type=float, default=0.5, help="weight of the compute term (0.5)")
    p.add_argument("--train-steps", type=int, default=300, help="optimisation steps (300)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--trajectories", type=int, default=32, help="teacher sampling runs to train on (32)")
    p.add_argument(
        "--schedule",
        default="baseline",
        help="start from: baseline (the default: DeepCache for a UNet, else uniform reuse, within the "
        "budget), full (run everything), or a schedule JSON for the same steps",
    )
    p.add_argument("--estimator", choices=("ste", "soft"), default="ste", help="gradient of the decisions")
    p.add_argument(
        "--objective",
        choices=("step", "kl", "rollout"),
        default="step",
        help="step (default): one step at the teacher's states, caches as scheduled (about 2 min here); "
        "kl: the same, steps weighted as DDPM's ELBO (the last steps most); "
        "rollout: the student's own sampling runs against the teacher's (slower); see docs/reuse.md",
    )


def _sample_parser(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub, "sample", cmd_sample, "draw samples, optionally skipping blocks by a schedule", EPILOG_SAMPLE
    )
    _add_model(p)
    p.add_argument(
        "--out", type=Path, required=True, help="a picture (.png, .jpg, ...; an .npz beside it) or a folder"
    )
    p.add_argument("--schedule", type=Path, default=None, help="schedule JSON (default: the full model)")
    p.add_argument("-n", type=int, default=64, help="number of samples (default: 64)")
    p.add_argument(
        "--steps", type=int, default=None, help="sampling steps (default: the schedule's, else 50)"
    )
    _add_sampler(p, default=None)
    p.add_argument("--batch-size", type=int, default=64)


def _eval_parser(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub, "eval", cmd_eval, "quality and speed of schedules over seeds, with a t-test", EPILOG_EVAL
    )
    _add_model(p)
    _add_out(p, required=True)
    p.add_argument("--schedule", type=Path, action="append", default=[], help="schedule JSON (repeatable)")
    p.add_argument("-n", type=int, default=256, help="samples per schedule and seed (256)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampling seeds (0 1 2)")
    p.add_argument("--steps", type=int, default=50, help="sampler steps without --schedule (50)")
    _add_sampler(p, default=None)
    _add_metric(p, "the t-test's is the first")
    p.add_argument("--data", default="fashion-mnist", help="real images for the reference statistics")
    p.add_argument(
        "--reference-n",
        type=int,
        default=None,
        help="real images in the reference (clf 10000, inception 2000)",
    )


def _reproduce_parser(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub, "reproduce", cmd_reproduce, "the paper's evaluation protocol and claims table", EPILOG_REPRODUCE
    )
    _add_model(p)
    p.add_argument("--out", type=Path, default=Path("report"), help="report folder (default: report)")
    p.add_argument(
        "--quick", action="store_true", help="2 seeds x 64 samples, 100 gate-training steps per run"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="sampling seeds")
    p.add_argument("-n", type=int, default=None, help="samples per method and seed")
    p.add_argument("--steps", type=int, default=50, help="DDPM sampling steps (50)")
    p.add_argument(
        "--fid", choices=("auto", "key", "all", "none"), default="auto",
        help="rows scored by Inception FID, seeds pooled (auto: every row on CUDA, the key rows on a CPU)",
    )  # fmt: skip
    _add_resize(p)


def _demo_parser(sub: argparse._SubParsersAction) -> None:
    help = "the main job: learned schedule vs full model and ASE on the embedded model"
    p = _command(sub, "demo", cmd_demo, help, "example:\n  lees demo --out runs/demo\n")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="folder for the pictures (runs/demo)")
    p.add_argument("-n", type=int, default=128, help="samples per method (128)")
    p.add_argument("--steps", type=int, default=50, help="DDPM sampling steps (50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    _add_metric(
        p, "clf: fd_clf, inception: Inception FID, clf_raw: fd_clf on raw features as before 2026-11-27"
    )


def _add_metric(p: argparse.ArgumentParser, note: str) -> None:
    p.add_argument(
        "--metric", choices=("clf", "inception", "clf_raw"), nargs="+", default=None,
        help=f"feature spaces ({note}; default: clf, and inception if its weights are installed)",
    )  # fmt: skip


def _backbone_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backbone", help="make a backbone: train a small diffusion model on local data")
    actions = p.add_subparsers(dest="backbone_command", required=True, metavar="ACTION")
    p = _command(
        actions, "train", cmd_backbone_train, "train (or resume) a DDPM UNet or a flow-matching DiT",
        EPILOG_BACKBONE,
    )  # fmt: skip
    p.add_argument("--data", default="fashion-mnist", help="fashion-mnist, mnist, or a folder of idx files")
    _add_out(p, required=True)
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
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument("--seed", type=int, default=0)


def _classifier_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classifier", help="the feature network of the offline metric fd_clf")
    actions = p.add_subparsers(dest="classifier_command", required=True, metavar="ACTION")
    p = _command(actions, "train", cmd_classifier_train, "train it on local data", EPILOG_CLASSIFIER)
    p.add_argument("--data", default="fashion-mnist", help="fashion-mnist, mnist, or a folder of idx files")
    _add_out(p, required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)


BUILDERS = (
    _blocks_parser, _train_parser, _route_parser, _schedule_parser, _sample_parser, _eval_parser,
    _reproduce_parser, _demo_parser, _backbone_parser, _classifier_parser,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The ``lees`` parser: one subcommand per job, each added by its builder in ``BUILDERS``."""
    from .._version import __version__

    parser = argparse.ArgumentParser(
        prog="lees",
        description="Learn which blocks of a frozen diffusion model to skip at each timestep.",
    )
    parser.add_argument("--version", action="version", version=f"lees {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for build in BUILDERS:
        build(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lees`` console script; bad input ends in one line on stderr, exit 2."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except (ValueError, TypeError, OSError, ArithmeticError) as err:
        if os.environ.get("LEES_DEBUG"):
            raise
        message = " ".join(str(err).split())
        print(f"lees {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0

