"""``lees train``: the paper's time gates of a frozen backbone, and the schedule they give."""

from __future__ import annotations

import argparse

from .options import (
    add_data,
    add_model,
    add_out,
    add_resize,
    add_sampler,
    add_steps,
    command,
    join_processes,
    load_autoencoder,
    load_model,
    processes,
)

EPILOG = """examples:
  lees train --model embedded --lambda 0.05 --out runs/lees
  lees train --model embedded --target-gated-share 0.6 --cost flops --out runs/budget
  lees train --model embedded --no-held-out --train-steps 50 --out runs/quick   # no held-out loss after
  lees train --model arch:ddpm-cifar10 --data mnist --resize --train-steps 2 --out runs/small   # data resized
"""
WRITTEN = ("gates.safetensors", "schedule.json", "train_log.jsonl", "gates.png", "schedule.png")


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "train", run, "train the gates of a frozen backbone (LEES)", EPILOG)
    add_model(p)
    add_out(p, required=True)
    add_data(p, "training images: fashion-mnist, mnist, or an idx folder")
    add_resize(p)
    p.add_argument("--lambda", dest="lam", type=float, default=0.05, help="weight of the compute term (0.05)")
    p.add_argument(
        "--target-gated-share", type=float, default=None,
        help="budget mode: adapt lambda until this share of the gated blocks runs (counted as --cost "
        "counts), then shift every gate's bias alike so the written schedule runs that share on --steps",
    )  # fmt: skip
    p.add_argument(
        "--target-ratio",
        dest="target_gated_share",
        type=float,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )
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
    add_steps(p, "sampler steps of the written schedule (50)")
    add_sampler(p)


def run(args: argparse.Namespace) -> None:
    """Train the 2K gate parameters of a frozen backbone; write gates, schedule, log and heat-map."""
    from ..learn.gate_training import GateTrainConfig, train_gates
    from ..models.backbones import load_noise_scheduler
    from ..models.data import load_images
    from ..utils.distributed import is_main

    config = GateTrainConfig(
        lam=args.lam, train_steps=args.train_steps, batch_size=args.batch_size, cost=args.cost,
        target_gated_share=args.target_gated_share, early_stop_kl=args.early_stop_kl, seed=args.seed,
        estimator=args.estimator,
    )  # fmt: skip
    device = join_processes(args.device)
    model, noise = load_model(args, device), load_noise_scheduler(args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    autoencoder = load_autoencoder(args, device)
    result = train_gates(
        model, load_images(args.data, "train")[0], noise, config, device=device, autoencoder=autoencoder,
        log_path=args.out / "train_log.jsonl", checkpoint=args.out / "checkpoint.safetensors",
        resize=args.resize,
    )  # fmt: skip
    if is_main():
        write(args, result, model, noise, device, autoencoder)


def write(args: argparse.Namespace, result, model, noise, device: str, autoencoder) -> None:
    """The gates with their settings (and held-out losses), the schedule they give on the sampler's
    steps, and both as pictures; the checkpoint only an interrupted run needs is removed."""
    from ..diffusion.samplers import sampler_timesteps
    from ..evaluation.held_out import held_out_losses
    from ..models.data import load_images
    from ..reporting.plots import gate_heatmap, schedule_map
    from ..schedules.saving import save_gate
    from ..schedules.schedule import Schedule

    out, held_out = args.out, ""
    timesteps = sampler_timesteps(noise, args.steps, args.sampler, args.timesteps)
    settings = result.config.to_dict() | {
        "model": args.model, "data": args.data, "resize": args.resize, "sampler": args.sampler,
        "train_seconds": round(result.seconds, 1), "train_steps_done": len(result.log),
        "stopped_early": result.stopped_early, "final_lambda": result.log[-1]["lambda"],
    } | meet_share(result, timesteps, noise.config.num_train_timesteps)  # fmt: skip
    if args.held_out:
        test = load_images(args.data, "test")[0]
        full, gated = held_out_losses(model, result.blocks, test, noise, result.gate, device=device,
                                      autoencoder=autoencoder, resize=args.resize)  # fmt: skip
        settings |= {"held_out_loss_full": full, "held_out_loss_gated": gated}
        held_out = f"; held-out loss {gated:.5f} (full model {full:.5f})"
    save_gate(result.gate, result.blocks.names, out / "gates.safetensors", settings=settings)
    schedule = Schedule.from_gate(
        result.gate, result.blocks, timesteps, noise.config.num_train_timesteps, settings
    )
    schedule.save(out / "schedule.json")
    gate_heatmap(
        result.gate, result.blocks.names, out / "gates.png", f"gates of {args.model} (lambda={args.lam:g})"
    )
    schedule_map(schedule, out / "schedule.png")
    stop = " (stopped early: the gates settled)" if result.stopped_early else ""
    met = ""
    if "share_offset" in settings:
        met = f" (every gate's bias shifted by {settings['share_offset']:+.3f} to meet --target-gated-share)"
    print(
        f"trained {len(result.log)} steps in {result.seconds:.1f} s{processes()}{stop}; "
        f"on {len(timesteps)} {args.sampler} steps the schedule runs {schedule.executed_ratio:.1%} "
        f"of the blocks, {schedule.flop_ratio:.1%} of the FLOPs{met}{held_out}"
    )
    (out / "checkpoint.safetensors").unlink(missing_ok=True)
    print(f"wrote {', '.join(str(out / name) for name in WRITTEN)}")


SHARE_SLACK = 0.02  # how far the written schedule's gated share may lie from --target-gated-share unsaid


def meet_share(result, timesteps: list, num_train: int) -> dict:
    """In budget mode, shift the trained gates' biases by one offset so that the schedule on the
    sampler's ``timesteps`` runs the target share of the gated blocks (counted as ``--cost`` counts);
    the offset and the share met, as settings (none in lambda mode). A share more than 0.02 off (gates
    flat in time open or close a whole block at once) is said on stderr with its figure."""
    import sys

    from ..diffusion.samplers import gate_time, timestep_values
    from ..learn.gate_training import cost_weights, gated_share, meet_gated_share

    config = result.config
    if config.target_gated_share is None:
        return {}
    weights = cost_weights(result.blocks, config.cost)
    t = gate_time(timestep_values(timesteps), num_train)
    offset = meet_gated_share(result.gate, weights, t, config.target_gated_share)
    share = gated_share(result.gate, weights, t)
    if abs(share - config.target_gated_share) > SHARE_SLACK:
        print(f"warning: the schedule runs {share:.3f} of the gated blocks, not the "
              f"{config.target_gated_share:.3f} asked for: the gates open or close too many steps at once "
              "(train longer)", file=sys.stderr)  # fmt: skip
    return {"share_offset": offset, "schedule_gated_share": share}
