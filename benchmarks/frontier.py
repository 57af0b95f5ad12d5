"""Every method against the full model at fewer steps, at the same measured latency (one run).

Samples the embedded model with every method side by side (paired timing: each step's calls in a
turning order), scores each under fd_clf and Inception FID, and prints one JSON line per method:
method, steps, flop_ratio and latency_ratio (against the full model at --steps), the quality under
each metric, and where the method lies against the fewer-steps curve at its latency under each
metric. The full model's rows are named ``full``; learned reuse rows say ``router``. Writes the
rows (``frontier.jsonl``) and one plot per metric into --out. The samples are stored in --out/pieces as
they finish, so the same command run again after an interruption picks up where it stopped.

    python benchmarks/frontier.py                          # default: 200 samples, ~25 min on 2 CPU cores
    python benchmarks/frontier.py -n 500 --rows learned --fewer 35 25 20 --reuse-steps 35 \
        --schedules my-router/schedule.json --out runs/learned
    python benchmarks/frontier.py -n 1000 --rows reuse-vs-skip --fewer 35 25 15 \
        --fid-rows full-50 full-35 full-25 full-15 ase lees-0.05 uniform-2-reuse --clf-raw --out runs/rvs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lees
from lees.diffusion.samplers import sampler_timesteps
from lees.engine.actions import SKIP
from lees.evaluation.frontier import Point, describe, versus_fewer_steps
from lees.evaluation.metrics import (
    REFERENCE_N,
    ClassifierFeatures,
    InceptionFeatures,
    fd,
    features,
    inception_path,
    reference_features,
)
from lees.models.backbones import EMBEDDED_DIR, load_noise_scheduler
from lees.reporting.plots import frontier_plot
from lees.sampling.stored import sample_stored
from lees.schedules.baselines import ase_schedule, deepcache_schedule, uniform_schedule
from lees.schedules.saving import load_gate

ROW_SETS = {
    "all": None,
    "reuse-vs-skip": ["ase", "lees-0.05", "uniform-2-skip", "uniform-2-reuse", "uniform-3-reuse",
                      "uniform-5-reuse", "router-0.70", "router-0.50"],
    "reuse": ["uniform-2-reuse", "uniform-3-reuse", "deepcache-2", "deepcache-3", "router-0.70"],
    "learned": ["uniform-2-reuse", "deepcache-3", "router-0.70"],
}  # fmt: skip


def methods(blocks, noise, steps: int, fewer: list[int], reuse_steps: list[int]) -> dict[str, lees.Schedule]:
    """Every method as a schedule: the full model at each step count, the baselines, the shipped ones,
    and uniform reuse and DeepCache at each of ``reuse_steps`` (reuse plus fewer steps, ``NAME@K``)."""
    ts = sampler_timesteps(noise, steps)
    gate, _ = load_gate(EMBEDDED_DIR / "lees-0.05" / "gates.safetensors")
    rows = {f"full-{k}": lees.Schedule.full(blocks, sampler_timesteps(noise, k)) for k in [steps, *fewer]}
    rows["ase"] = ase_schedule(blocks, ts)
    rows["lees-0.05"] = lees.Schedule.from_gate(gate, blocks, ts, noise.config.num_train_timesteps)
    rows["uniform-2-skip"] = uniform_schedule(blocks, ts, 2, outer=1, between=SKIP)
    for interval in (2, 3, 5):
        rows[f"uniform-{interval}-reuse"] = uniform_schedule(blocks, ts, interval, outer=1)
    for interval in (2, 3):
        rows[f"deepcache-{interval}"] = deepcache_schedule(blocks, ts, interval, levels=1)
    for folder in sorted(EMBEDDED_DIR.glob("router-*")):
        schedule = lees.Schedule.load(folder / "schedule.json", blocks)
        if schedule.timesteps == ts:
            rows[folder.name] = schedule
    for k in reuse_steps:
        fewer_ts = sampler_timesteps(noise, k)
        rows[f"uniform-2-reuse@{k}"] = uniform_schedule(blocks, fewer_ts, 2, outer=1)
        rows[f"deepcache-3@{k}"] = deepcache_schedule(blocks, fewer_ts, 3, levels=1)
    return rows


def row_name(path: str) -> str:
    """A schedule file's row name: its folder's for ``FOLDER/schedule.json``, else the file's stem."""
    p = Path(path)
    return p.parent.name if p.name == "schedule.json" else p.stem


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=200, help="samples per method (200)")
    parser.add_argument("--steps", type=int, default=50, help="the full model's sampler steps (50)")
    parser.add_argument("--fewer", type=int, nargs="+", default=[40, 35, 30, 25, 20, 15])
    parser.add_argument(
        "--reuse-steps", type=int, nargs="*", default=[], help="also uniform reuse, DeepCache at these steps"
    )
    parser.add_argument(
        "--schedules", nargs="*", default=[], help="also these schedule files (any steps; named by file)"
    )
    parser.add_argument("--rows", choices=sorted(ROW_SETS), default="all", help="which methods beside full")
    parser.add_argument("--fid-n", type=int, default=500, help="samples per method scored by Inception FID")
    parser.add_argument("--fid-rows", nargs="+", default=None, help="rows scored by Inception FID (all)")
    parser.add_argument(
        "--clf-raw",
        action="store_true",
        help="also fd_clf_raw: fd_clf on raw features, its definition before 2026-11-27",
    )
    parser.add_argument("--seed", type=int, default=7, help="sampling seed (7: one the report does not use)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/frontier")
    parser.add_argument("--plot-only", action="store_true", help="redraw the plots from OUT/frontier.jsonl")
    args = parser.parse_args()
    out = Path(args.out)
    if args.plot_only:
        return plot(out, [json.loads(line) for line in (out / "frontier.jsonl").read_text().splitlines()])
    out.mkdir(parents=True, exist_ok=True)
    model = lees.load_backbone("embedded", device=args.device)
    noise = load_noise_scheduler("embedded")
    blocks = lees.find_blocks(model)
    rows = methods(blocks, noise, args.steps, args.fewer, args.reuse_steps)
    keep = ROW_SETS[args.rows]
    rows = {k: v for k, v in rows.items() if k.startswith("full-") or "@" in k or keep is None or k in keep}
    rows.update({row_name(f): lees.Schedule.load(f, blocks) for f in args.schedules})
    runs = sample_stored(model, rows, args.n, out / "pieces", settings={"seed": args.seed}, seed=args.seed,
                         scheduler=noise, device=args.device)  # fmt: skip
    scorers = {"fd_clf": (ClassifierFeatures(args.device), args.n, REFERENCE_N["clf"])}
    if args.clf_raw:
        scorers["fd_clf_raw"] = (ClassifierFeatures(args.device, raw=True), args.n, REFERENCE_N["clf_raw"])
    if inception_path().is_file():
        scorers["fid"] = (InceptionFeatures(args.device), args.fid_n, REFERENCE_N["inception"])
    reference = {m: reference_features(e, "fashion-mnist", "train", n=r) for m, (e, _, r) in scorers.items()}
    base = runs[f"full-{args.steps}"].seconds
    points = {}
    for name, schedule in rows.items():
        images = runs[name].images
        scored = {
            m: v for m, v in scorers.items() if m != "fid" or args.fid_rows is None or name in args.fid_rows
        }
        quality = {m: fd(features(e, images[:k]), reference[m]) for m, (e, k, _) in scored.items()}
        method = "full" if name.startswith("full-") else name
        ratio = schedule.flop_ratio * schedule.num_steps / args.steps
        points[name] = Point(method, schedule.num_steps, ratio, runs[name].seconds / base, quality)
    lines = []
    for name, p in points.items():
        judged = {} if p.is_full else {m: versus_fewer_steps(p, list(points.values()), m) for m in p.quality}
        row = {"method": p.method, "steps": p.steps, "flop_ratio": round(p.flop_ratio, 4),
               "latency_ratio": round(p.latency_ratio, 4), **{m: round(q, 3) for m, q in p.quality.items()},
               "cache_bytes_per_sample": runs[name].cache_bytes_per_sample, "n": args.n,
               "versus_fewer_steps": judged}  # fmt: skip
        lines.append(json.dumps(row))
        print(lines[-1])
        for j in judged.values():
            print("#", describe(p, j))
    (out / "frontier.jsonl").write_text("\n".join(lines) + "\n")
    plot(out, [json.loads(line) for line in lines])


def plot(out: Path, rows: list[dict]) -> None:
    """One plot per metric from the printed rows."""
    metrics = [m for m in ("fd_clf", "fid", "fd_clf_raw") if any(m in r for r in rows)]
    points = [Point(r["method"], r["steps"], r["flop_ratio"], r["latency_ratio"],
                    {m: r[m] for m in metrics if m in r}) for r in rows]  # fmt: skip
    for metric in metrics:
        title = f"embedded model, DDPM, {rows[0]['n']} samples: {metric} vs paired latency"
        frontier_plot(points, metric, out / f"frontier-{metric}.png", title)
    print(f"# wrote {out / 'frontier.jsonl'} and frontier-*.png")


if __name__ == "__main__":
    main()
