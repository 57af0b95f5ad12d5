"""The paper's evaluation protocol on one model, end to end: train, sample, measure, report.

Every expensive piece (each gate training, each method x seed sampling run) is stored under
``out/work/`` as soon as it is done and reused when the command is run again, so an interrupted run
loses at most the piece it was in.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load, save

from .backbone_training import epoch_seconds
from .backbones import load_backbone, load_noise_scheduler
from .baselines import ase_schedule, deepcache_schedule, random_schedule, uniform_schedule
from .blocks import find_blocks
from .corruptions import CORRUPTIONS, corrupt
from .data import fit_images, load_images
from .evaluation import ase_grid, device_name
from .files import atomic_write_bytes, atomic_write_text
from .images import save_grid
from .metrics import ClassifierFeatures, fd, features, kid, reference_features
from .plots import gate_heatmap, schedule_map
from .reports import FEWER_STEPS, METHODS, ROW_FIELDS, build_report
from .router import RouterConfig, train_router
from .sampling import sample_lockstep, sampler_timesteps
from .schedules import Schedule
from .training import GateTrainConfig, held_out_loss, load_gate, save_gate, train_gates

CHUNK = 100  # images per stored piece of a seed's side-by-side sampling run


@dataclass
class ReproduceConfig:
    """How much of the protocol to run (``quick`` is the < 15 min version for this CPU)."""

    model: str = "embedded"
    data: str = "fashion-mnist"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    n: int = 200
    steps: int = 50
    train_steps: int | None = None  # None: one epoch
    grid_n: int = 256
    grid_starts: list[int] = field(default_factory=lambda: [0, 100, 200, 300])
    budget_ratio: float = 0.6
    device: str = "cpu"
    dtype: str = "float32"  # what the model is cast to (float16, bfloat16: half precision)
    resize: bool = False  # fit the data to the model's channels and size (else a mismatch is an error)

    @classmethod
    def quick(cls, **kwargs) -> ReproduceConfig:
        quick = {"seeds": [0, 1], "n": 64, "train_steps": 100, "grid_n": 48, "grid_starts": [0, 200]}
        return cls(**{**quick, **kwargs})


def _gates(cfg: ReproduceConfig, work: Path, name: str, model, noise, images, blocks, **train) -> dict:
    """Train (or reload) one gate run; returns its gate, log and seconds."""
    folder = work / "gates" / name
    if (folder / "done.json").is_file():
        gate, _ = load_gate(folder / "gates.safetensors")
        return {"gate": gate, **json.loads((folder / "done.json").read_text())}
    config = GateTrainConfig(steps=cfg.train_steps, **train)
    print(f"training gates: {name} ({train})")
    result = train_gates(
        model, images, noise, config, blocks, cfg.device, log_path=folder / "train_log.jsonl"
    )
    save_gate(result.gate, blocks.names, folder / "gates.safetensors")
    info = {"seconds": result.seconds, "log": result.log, "steps": len(result.log)}
    atomic_write_text(folder / "done.json", json.dumps(info))
    return {"gate": result.gate, **info}


def _kl_settled_at(log: list[dict], threshold: float = 0.05) -> float | None:
    """Fraction of training after which every KL check stays below ``threshold``."""
    checks = [r for r in log if "kl" in r]
    for i, row in enumerate(checks):
        if all(r["kl"] < threshold for r in checks[i:]):
            return row["step"] / log[-1]["step"]
    return None


def _corrupted_reference(extractor, images: torch.Tensor) -> dict[str, np.ndarray]:
    return {name: features(extractor, corrupt(images, name, 3, seed=1)) for name in CORRUPTIONS}


def _score(extractor, images, ref, ref_corrupted) -> dict:
    feats = features(extractor, images)
    clean = fd(feats, ref)
    kid_mean, _ = kid(feats, ref)
    deltas = [
        fd(features(extractor, corrupt(images, name, 3, seed=2)), ref_corrupted[name]) - clean
        for name in CORRUPTIONS
    ]
    return {"fd": clean, "kid": kid_mean, "delta_fd": float(np.mean(deltas))}


def _claim(work: Path, cfg: ReproduceConfig) -> None:
    """Tie ``work`` to one configuration: its stored pieces are only reused by the same settings."""
    path = work / "config.json"
    settings = json.dumps(asdict(cfg), sort_keys=True)
    if path.is_file() and path.read_text() != settings:
        raise ValueError(
            f"{work} holds the pieces of a run with other settings ({path}); use another --out or delete it"
        )
    atomic_write_text(path, settings)


def _router(cfg: ReproduceConfig, work: Path, model, noise, blocks, timesteps) -> Schedule:
    """The run-or-reuse router at 0.70 of the FLOPs: the shipped one where it fits, else trained once."""
    from .backbones import EMBEDDED_DIR

    shipped = EMBEDDED_DIR / "router-0.70" / "schedule.json"
    if cfg.model == "embedded" and shipped.is_file():
        schedule = Schedule.load(shipped, blocks)
        if schedule.timesteps == timesteps:
            return schedule
    path = work / "router.json"
    if path.is_file():
        return Schedule.load(path, blocks)
    print("training the run-or-reuse router (0.70 of the FLOPs)")
    config = RouterConfig(steps=cfg.steps, target_ratio=0.7, train_steps=100 if cfg.train_steps else 400)
    schedule = train_router(model, noise, config, blocks).schedule
    schedule.save(path)
    return schedule


def _seed_results(cfg: ReproduceConfig, work: Path, seed: int, model, noise, methods, extractor, ref,
                  ref_corrupted) -> dict[str, dict]:  # fmt: skip
    """Every method's scores and sampling seconds for one seed, sampled side by side (paired timings).

    Sampled in chunks of ``CHUNK`` images, each stored as soon as it is done, so an interruption
    loses at most one chunk; the seed's scores are stored once all its chunks are in.
    """
    done = work / "runs" / f"seed{seed}.json"
    if done.is_file():
        return json.loads(done.read_text())
    parts = []
    for first in range(0, cfg.n, CHUNK):
        chunk = work / "runs" / f"seed{seed}" / f"from{first}.safetensors"
        if not chunk.is_file():
            count = min(CHUNK, cfg.n - first)
            print(f"seed {seed}: images {first}-{first + count - 1}, {len(methods)} methods side by side")
            runs = sample_lockstep(
                model, methods, count, cfg.steps, seed=seed, noise=noise, device=cfg.device, first=first,
                progress=True,
            )  # fmt: skip
            tensors = {name: r.images.contiguous() for name, r in runs.items()}
            tensors |= {
                f"{name}.seconds": torch.tensor(r.seconds, dtype=torch.float64) for name, r in runs.items()
            }
            atomic_write_bytes(chunk, save(tensors))
        parts.append(load(chunk.read_bytes()))
    results = {}
    for name in methods:
        images = torch.cat([part[name] for part in parts])
        seconds = float(sum(part[f"{name}.seconds"] for part in parts))
        results[name] = _score(extractor, images, ref, ref_corrupted) | {"seconds": seconds}
        if seed == cfg.seeds[0]:
            save_grid(images[:64], work / "grids" / f"{name}.png", nrow=8)
        print(f"{METHODS[name]}, seed {seed}: fd_clf {results[name]['fd']:.3f}, {seconds:.1f} s")
    atomic_write_text(done, json.dumps(results))
    return results


def reproduce(cfg: ReproduceConfig, out: str | Path) -> Path:
    """Run the protocol and write ``out/report.md``, ``results.json``, plots and sample grids."""
    out = Path(out)
    work = out / "work"
    started = time.perf_counter()
    _claim(work, cfg)
    model = load_backbone(cfg.model, device=cfg.device).to(getattr(torch, cfg.dtype))
    noise = load_noise_scheduler(cfg.model)
    blocks = find_blocks(model)
    timesteps = sampler_timesteps(noise, cfg.steps)
    train_images = fit_images(load_images(cfg.data, "train")[0], model, resize=cfg.resize)
    extractor = ClassifierFeatures(cfg.device)
    ref = reference_features(extractor, cfg.data, "train", n=10_000)
    ref_images = train_images[
        torch.from_numpy(np.random.default_rng(7).permutation(len(train_images))[:2000])
    ]
    ref_corrupted = _corrupted_reference(extractor, ref_images)

    runs = {f"lees-{lam:g}": {"lam": lam} for lam in (0.01, 0.05, 0.1)}
    runs["lambda-0"] = {"lam": 0.0}
    runs["budget"] = {"lam": 0.0, "target_ratio": cfg.budget_ratio}
    runs["ste"] = {"lam": 0.05, "estimator": "ste"}  # the paper's estimator, for comparison
    trained = {
        name: _gates(cfg, work, name, model, noise, train_images, blocks, **kw) for name, kw in runs.items()
    }

    schedules: dict[str, Schedule | None] = {
        "full": Schedule.full(blocks, timesteps),
        "ase": ase_schedule(blocks, timesteps),
    }
    for name, run in trained.items():
        schedules[name] = Schedule.from_gate(run["gate"], blocks, timesteps, noise.config.num_train_timesteps)
    lees = schedules["lees-0.05"]
    schedules["random"] = random_schedule(
        blocks, timesteps, max(lees.executed_ratio, 1 / lees.table.size), seed=0
    )
    grid_file = work / "ase-grid.json"
    if grid_file.is_file():
        schedules["ase-grid"] = Schedule.from_dict(json.loads(grid_file.read_text())["schedule"])
        grid_info = json.loads(grid_file.read_text())
    else:

        def tune(budget: float):
            return ase_grid(
                model, noise, blocks, timesteps, extractor, ref, budget, starts=cfg.grid_starts, n=cfg.grid_n,
                device=cfg.device,
            )  # fmt: skip

        budget = lees.flop_ratio  # ASE tuned at LEES's compute, for a like-for-like comparison
        try:
            grid = tune(budget)
        except ValueError:  # LEES is sparser than any ASE schedule of the grid: tune at ASE default's
            budget = schedules["ase"].flop_ratio
            grid = tune(budget)
        grid_info = {
            "schedule": grid.best.to_dict(),
            "rows": grid.rows,
            "seconds": grid.seconds,
            "budget": budget,
        }
        atomic_write_text(grid_file, json.dumps(grid_info))
        schedules["ase-grid"] = grid.best
    schedules["router"] = _router(cfg, work, model, noise, blocks, timesteps)
    schedules["reuse-2"] = uniform_schedule(blocks, timesteps, 2, outer=1)
    schedules["deepcache-3"] = deepcache_schedule(blocks, timesteps, 3, levels=1)
    for name in FEWER_STEPS:
        schedules[name] = Schedule.full(blocks, sampler_timesteps(noise, int(name.split("-")[1])))
    methods = {m: schedules[m] for m in METHODS if m != "soft"}
    methods["soft"] = trained["lees-0.05"]["gate"]  # A1: the lambda=0.05 gate, mixing every block

    rows: dict[str, dict] = {m: {k: [] for k in ROW_FIELDS} for m in METHODS}
    for seed in cfg.seeds:
        results = _seed_results(cfg, work, seed, model, noise, methods, extractor, ref, ref_corrupted)
        for method in METHODS:
            res = results[method]
            schedule = schedules.get(method) or schedules["full"]  # soft gating runs every block
            rows[method]["fd"].append(res["fd"])
            rows[method]["kid"].append(res["kid"])
            rows[method]["delta_fd"].append(res["delta_fd"])
            rows[method]["seconds_per_100"].append(100 * res["seconds"] / cfg.n)
            rows[method]["images_per_s"].append(cfg.n / res["seconds"])
            rows[method]["executed_ratio"].append(schedule.executed_ratio)
            rows[method]["flop_ratio"].append(schedule.flop_ratio * schedule.num_steps / cfg.steps)
    rows["ase-grid"]["note"] = (
        f"{len(grid_info['rows'])} candidates, {grid_info['seconds']:.0f} s, "
        f"budget FLOPs <= {grid_info['budget']:.2f}"
    )

    gate005 = trained["lees-0.05"]
    gate_heatmap(gate005["gate"], blocks.names, out / "gates.png", "learned gates, lambda=0.05")
    schedule_map(lees, out / "schedule-lees.png")
    schedule_map(schedules["ase"], out / "schedule-ase.png")
    grids = [work / "grids" / f"{m}.png" for m in ("full", "ase", "lees-0.05")]
    print("timing backbone training steps (the yardstick for the gates' training cost)")
    epoch = epoch_seconds(model, train_images, noise, device=cfg.device)
    held = fit_images(load_images(cfg.data, "test")[0], model, resize=cfg.resize)
    loss_full = held_out_loss(model, blocks, held, noise)
    loss_lees = held_out_loss(model, blocks, held, noise, gate005["gate"])
    meta = {
        "model": cfg.model,
        "command": " ".join(shlex.quote(a) for a in ["lees", *sys.argv[1:]]),
        "config": asdict(cfg),
        "seeds": cfg.seeds,
        "n": cfg.n,
        "steps": cfg.steps,
        "metric": "fd_clf",
        "reference": f"10k {cfg.data} training images (classifier features)",
        "gate_seconds": gate005["seconds"],
        "gate_steps": gate005["steps"],
        "backbone_epoch_seconds": epoch,
        "train_overhead": gate005["seconds"] / epoch,
        "kl_settled_at": _kl_settled_at(gate005["log"]),
        "held_out_loss_full": loss_full,
        "held_out_loss_lees": loss_lees,
        "budget_target": cfg.budget_ratio,
        "budget_reached": schedules["budget"].executed_ratio,
        "pictures": ["gates.png", "schedule-lees.png", "schedule-ase.png"]
        + [str(g.relative_to(out)) for g in grids],
        "wall_seconds": time.perf_counter() - started,
        "notes": [
            "fd_clf is a Fréchet distance in the features of a small Fashion-MNIST classifier, "
            "not Inception FID: "
            "compare its values with each other, not with the paper's FIDs.",
            f"Latency is the wall time of the whole sampling run on {device_name(cfg.device)}, per 100 "
            "images; every method of a seed is sampled side by side, step by step in a turning order, "
            "so the timings are paired.",
            f"Backbone epoch: {epoch:.0f} s, from timed training steps of a copy of the backbone "
            "(Adam on every weight) on the same device, in the same run.",
            f"Held-out epsilon-MSE: full {loss_full:.5f}, LEES-0.05 {loss_lees:.5f}.",
            f"Budget mode asked for {cfg.budget_ratio:.2f} of the blocks and runs "
            f"{schedules['budget'].executed_ratio:.3f} on the {cfg.steps}-step sampler.",
        ],
    }
    return build_report(rows, out, meta)
