"""LEES combined with fewer sampling steps, against each alone, on the embedded model.

The paper leaves "LEES + step reduction" to future work; here it is measured. For each number of
DDIM steps (default 50 and 20) the full model and the shipped LEES gates (turned into a schedule for
that sampler's own timesteps) sample the same seeds; quality is fd_clf against 10k real training
images, time is the whole sampling run. Optionally a custom timestep list (e.g. Align Your Steps)
is a further row. Ratios are against DDIM-50 full, measured in this one run.

    python benchmarks/ddim_steps.py --n 256 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import statistics

from lees import Schedule, find_blocks, load_backbone
from lees.diffusion.samplers import sampler_timesteps
from lees.evaluation.metrics import ClassifierFeatures, reference_features
from lees.evaluation.scoring import score_schedule
from lees.models.backbones import load_noise_scheduler
from lees.reporting.demo import SHIPPED_GATES
from lees.schedules.saving import load_gate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 20], help="DDIM step counts")
    parser.add_argument("--timesteps", default=None, help="also a custom list, e.g. 999,850,736,...")
    parser.add_argument("--n", type=int, default=256, help="samples per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--gates", default=str(SHIPPED_GATES), help="gate file (default: the shipped one)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    model = load_backbone("embedded", device=args.device)
    noise = load_noise_scheduler("embedded")
    blocks = find_blocks(model)
    gate, _ = load_gate(args.gates)
    extractor = ClassifierFeatures(args.device)
    reference = reference_features(extractor, "fashion-mnist", "train", n=10_000)
    lists = {f"DDIM-{s}": sampler_timesteps(noise, s, "ddim") for s in args.steps}
    if args.timesteps:
        custom = [int(t) for t in args.timesteps.split(",")]
        lists[f"custom-{len(custom)}"] = sampler_timesteps(noise, 0, "ddim", custom)
    rows = []
    for label, timesteps in lists.items():
        for method in ("full", "lees"):
            schedule = (
                Schedule.full(blocks, timesteps)
                if method == "full"
                else Schedule.from_gate(gate, blocks, timesteps, noise.config.num_train_timesteps)
            )
            scores = [
                score_schedule(model, noise, schedule, extractor, reference, args.n, len(timesteps), seed,
                               device=args.device, sampler="ddim")
                for seed in args.seeds
            ]  # fmt: skip
            rows.append({
                "run": f"{label} {method}",
                "fd_clf": statistics.mean(s.fd for s in scores),
                "fd_clf_std": statistics.stdev(s.fd for s in scores) if len(scores) > 1 else 0.0,
                "seconds_per_100": statistics.mean(s.seconds_per_100 for s in scores),
                "block_ratio": schedule.executed_ratio,
                "flop_ratio": schedule.flop_ratio,
                "denoiser_calls": len(timesteps),
            })  # fmt: skip
    base = rows[0]["seconds_per_100"]
    print(f"# embedded model, {args.n} samples x seeds {args.seeds}; speed-up = DDIM-50-full time / time")
    print(f"{'run':<18} {'fd_clf':>15} {'s/100 img':>10} {'speed-up':>9} {'blocks':>7} {'FLOPs':>6}")
    for row in rows:
        row["speed_up"] = base / row["seconds_per_100"]
        print(
            f"{row['run']:<18} {row['fd_clf']:>8.3f} ± {row['fd_clf_std']:<5.3f} "
            f"{row['seconds_per_100']:>10.2f} {row['speed_up']:>8.2f}x "
            f"{row['block_ratio']:>7.1%} {row['flop_ratio']:>6.1%}"
        )
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
