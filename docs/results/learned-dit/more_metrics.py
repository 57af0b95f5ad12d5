"""Inception FID to the data and fidelity to the converged ODE solution for the rows of a stored tune.

`lees tune` scores each row by fidelity to the full model's run (PSNR, FD to full) and fd_clf to the
data (pairs.py: head to head). This adds the two measures `lees frontier` has beside them, on the tune's
stored samples (read only, never resampled), with 95 % paired bootstrap intervals over the sample
indices (the tune's seed, 200 resamples, the same indices for every row):

* Inception FID to the Fashion-MNIST training set (as `lees frontier --fid-n`: the first FID_N samples
  of each row against REFERENCE_N["inception"] real images); the features of each row are kept in
  OUT/inception so that a run again computes only what is missing.
* PSNR, SSIM and FD (in fd_clf's features, as `lees frontier --reference ode`'s fd_ode) of the first
  ODE_N samples of each row to the converged ODE solution from the same noise and labels
  (lees.evaluation.ode_reference: DPM-Solver++ at 100 steps, checked against Euler at 200; its
  samples stored in OUT/ode/pieces). Before it, samples 0 .. 19 of the full model are drawn the way
  ode_reference draws its samples and must equal the tune's stored ones: the same noise and labels.

Then each searched row (pairs.PAIRS) against its neighbours and the full model, under each measure.

    OMP_NUM_THREADS=1 PYTHONPATH=../../../src python more_metrics.py TUNE_FOLDER --out metrics-more \\
        --ode-n 200 --fid-n 500
"""

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from pairs import PAIRS, RESAMPLES, load
from safetensors.numpy import load as load_numpy
from safetensors.numpy import save as save_numpy

from lees.diffusion.samplers import sampler_timesteps
from lees.engine.blocks import find_blocks
from lees.evaluation.bootstrap import FixedReference, fd_replicates, percentile_interval, resample_indices
from lees.evaluation.metrics import REFERENCE_N, InceptionFeatures, fd, reference_features
from lees.evaluation.ode_reference import CHECK, ode_reference
from lees.models.backbones import load_backbone, load_noise_scheduler
from lees.sampling.stored import sample_stored
from lees.schedules.schedule import Schedule
from lees.tune.measure import piece_name
from lees.tune.plot import frontier
from lees.tune.quality import Scorer
from lees.tune.verdict import versus
from lees.utils.files import atomic_write_bytes, atomic_write_text

DATA, CHUNK, NOISE_CHECK = "fashion-mnist", 100, 20
METRICS = ("fid", "psnr_ode", "fd_ode")


def check_noise(model, noise, tune: dict, full: torch.Tensor, folder: Path) -> None:
    """Samples 0 .. NOISE_CHECK - 1 of the full model (the tune's solver and steps), drawn as
    ode_reference draws its own (sample_stored, its batches, the tune's seed), against the tune's stored
    ones: they must be equal, else the ODE solution would not be these samples' partner."""
    config, row = tune["config"], next(r for r in tune["rows"] if r["name"] == "full")
    name = f"{row['solver']}@{row['steps']}"
    methods = {name: Schedule.full(find_blocks(model), sampler_timesteps(noise, row["steps"], row["solver"]))}
    settings = {
        "seed": config["seed"],
        "guidance_scale": config["guidance_scale"],
        "solvers": {name: row["solver"]},
    }
    runs = sample_stored(
        model, methods, NOISE_CHECK, folder / "pieces", settings=settings, seed=config["seed"],
        scheduler=noise, sampler=CHECK[0], guidance_scale=config["guidance_scale"],
        solvers={name: row["solver"]}, progress=False,
    )  # fmt: skip
    diff = float((runs[name].images - full[:NOISE_CHECK]).abs().max())
    print(f"# noise check: samples 0-{NOISE_CHECK - 1} of the full model drawn as ode_reference draws its "
          f"own vs the tune's stored ones: largest pixel difference {diff:.3g}")  # fmt: skip
    if diff > 1e-5:
        raise SystemExit("the ODE reference's samples would not start from the tune's noise and labels")


def ode_scores(tune: dict, runs: dict[str, torch.Tensor], n: int, out: Path) -> tuple[dict, dict, dict]:
    """Every row's PSNR, SSIM and FD to the ODE solution of its first ``n`` samples (figures, and their
    bootstrap replicates, by row), and the ODE reference's check."""
    config = tune["config"]
    model, noise = load_backbone(config["model"]), load_noise_scheduler(config["model"])
    check_noise(model, noise, tune, runs["full"], out / "noise-check")
    ode, closeness = ode_reference(model, noise, n, config["seed"], out / "ode", config["guidance_scale"])
    scorer = Scorer(ode, resample_indices(n, RESAMPLES, config["seed"]), suffix="ode")
    scored = {name: scorer(images[:n]) for name, images in runs.items()}
    return {k: s for k, (s, _) in scored.items()}, {k: r for k, (_, r) in scored.items()}, closeness


def _digest(images: torch.Tensor) -> str:
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()[:16]


def cached_features(extractor, images: torch.Tensor, path: Path) -> np.ndarray:
    """``extractor``'s features of ``images``, kept in ``path`` after every CHUNK images (with a digest
    of the images they are of): a run again reads them and computes only the rest."""
    done = np.zeros((0, 0))
    if path.is_file():
        stored = load_numpy(path.read_bytes())
        if stored["digest"].tobytes().decode() == _digest(images[: len(stored["features"])]):
            done = stored["features"]
    while len(done) < len(images):
        part = extractor(images[len(done) : len(done) + CHUNK])
        done = part if not len(done) else np.concatenate([done, part])
        digest = np.frombuffer(_digest(images[: len(done)]).encode(), dtype=np.uint8)
        atomic_write_bytes(path, save_numpy({"features": done, "digest": digest}))
    return done


def fid_scores(runs: dict[str, torch.Tensor], names: list[str], n: int, seed: int, out: Path):
    """Inception FID of the first ``n`` samples of each row in ``names`` to the real data, as `lees
    frontier` computes it, and its replicates on the paired resamples (figures and replicates, by row)."""
    extractor = InceptionFeatures()
    real = reference_features(extractor, DATA, "train", n=REFERENCE_N["inception"])
    fixed, indices = FixedReference.of(real), resample_indices(n, RESAMPLES, seed)
    scores, boot = {}, {}
    for name in names:
        feats = cached_features(
            extractor, runs[name][:n], out / "inception" / f"{piece_name(name)}.safetensors"
        )
        boot[name] = {"fid": fd_replicates(feats, fixed, indices)}
        scores[name] = {"fid": fd(feats, real), "fid_interval": list(percentile_interval(boot[name]["fid"]))}
        print(f"# FID {name}: {scores[name]['fid']:.2f}", flush=True)
    return scores, boot


def cell(row: dict, metric: str, digits: int) -> str:
    if metric not in row:
        return "-"
    low, high = row[f"{metric}_interval"]
    return f"{row[metric]:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def report(
    rows: dict[str, dict], boot: dict, tune: dict, args: argparse.Namespace, closeness: dict
) -> list[str]:
    """The table, one line a row, and each searched row against its neighbours; the printed lines."""
    config, full = tune["config"], rows["full"]
    lines = [
        f"# {config['model']}, {full['solver']} {full['steps']} steps, guidance "
        f"{config['guidance_scale']:g}, seed {config['seed']}: FID on samples 0-{args.fid_n - 1} "
        f"({REFERENCE_N['inception']} real training images), ODE fidelity on samples 0-{args.ode_n - 1}; "
        f"95 % paired bootstrap intervals ({RESAMPLES} resamples, seed {config['seed']})",
        f"{'row':60s} {'latency':>7s}  {'FID [interval]':24s} {'PSNR to ODE [interval]':24s} "
        "FD to ODE [interval]",
    ]
    for row in sorted(rows.values(), key=lambda r: r["latency_ratio"]):
        lines.append(f"{row['name']:60s} {row['latency_ratio']:6.3f}x  {cell(row, 'fid', 2):24s} "
                     f"{cell(row, 'psnr_ode', 2):24s} {cell(row, 'fd_ode', 3)}")  # fmt: skip
    lines.append("# pairs (positive: the first better)")
    for mine, others in ((m, o) for m, o in PAIRS.items() if m in rows):
        for other in (o for o in others if o in rows):
            lines += [
                versus(rows[mine], rows[other], boot, m)
                for m in METRICS
                if m in rows[mine] and m in rows[other]
            ]
    print("\n".join(lines))
    return lines


def main(args: argparse.Namespace) -> None:
    tune = json.loads((args.tune / "tune.json").read_text())
    if args.plot_only:
        plots(json.loads((args.out / "more-metrics.json").read_text()), tune["config"]["budgets"], args.out)
        return
    seed, out = tune["config"]["seed"], args.out
    spelled = {piece_name(r["name"]): r["name"] for r in tune["rows"]}
    runs = {spelled[k]: torch.cat(images) for k, (images, _) in load(args.tune).items()}
    args.ode_n, args.fid_n = min(args.ode_n, len(runs["full"])), min(args.fid_n, len(runs["full"]))
    ode, ode_boot, closeness = ode_scores(tune, runs, args.ode_n, out)
    fid, fid_boot = fid_scores(runs, args.fid_rows or list(runs), args.fid_n, seed, out)
    keep = ("name", "kind", "solver", "steps", "latency_ratio")
    rows = {
        r["name"]: {k: r[k] for k in keep} | ode[r["name"]] | fid.get(r["name"], {}) for r in tune["rows"]
    }
    boot = {name: ode_boot[name] | fid_boot.get(name, {}) for name in rows}
    lines = report(rows, boot, tune, args, closeness)
    numbers = {"tune": args.tune.name, "ode_n": args.ode_n, "fid_n": args.fid_n, "resamples": RESAMPLES,
               "seed": seed, "ode_reference": closeness, "rows": list(rows.values()),
               "lines": lines}  # fmt: skip
    atomic_write_text(out / "more-metrics.json", json.dumps(numbers, indent=1) + "\n")
    plots(numbers, tune["config"]["budgets"], out)
    print(f"# wrote {out / 'more-metrics.json'} and {out}/frontier-*.png")


def plots(numbers: dict, budgets: list[float], out: Path) -> None:
    """Latency against each measure, every row with its interval (``numbers``: more-metrics.json's)."""
    title = (
        f"{numbers['tune']}: {{}} (ODE: {numbers['ode_n']} samples, FID: {numbers['fid_n']}), 95 % intervals"
    )
    for metric in METRICS:
        scored = [r for r in numbers["rows"] if metric in r]
        frontier(scored, budgets, out / f"frontier-{metric}.png", title.format(metric), metric)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tune", type=Path, help="a stored tune's folder (tune.json and pieces/), read only")
    parser.add_argument("--out", type=Path, required=True, help="where the features, ODE samples, plots go")
    parser.add_argument("--ode-n", type=int, default=1000, help="samples scored against the ODE solution")
    parser.add_argument("--fid-n", type=int, default=1000, help="samples per row scored by Inception FID")
    parser.add_argument("--fid-rows", nargs="+", default=None, help="rows scored by FID (default: all)")
    parser.add_argument(
        "--plot-only", action="store_true", help="redraw the plots from OUT/more-metrics.json"
    )
    main(parser.parse_args())
