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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..diffusion.samplers import sampler_timesteps
from ..engine.blocks import find_blocks
from ..evaluation.corruptions import CORRUPTIONS, corrupt
from ..evaluation.held_out import held_out_loss
from ..evaluation.metrics import (
    CLF_DEFINITION,
    ClassifierFeatures,
    InceptionFeatures,
    fd,
    features,
    inception_path,
    kid,
    reference_features,
)
from ..learn.ase_grid import ase_grid
from ..learn.backbone_training import epoch_seconds
from ..learn.gate_training import GateTrainConfig, train_gates
from ..learn.router import RouterConfig, train_router
from ..models.backbones import load_backbone, load_noise_scheduler
from ..models.data import fit_images, load_images
from ..sampling.stored import sample_stored, stored_images
from ..schedules.registry import build_schedule, canonical
from ..schedules.saving import load_gate, save_gate
from ..schedules.schedule import Schedule
from ..utils.config import Settings
from ..utils.files import atomic_write_text, claim_folder
from ..utils.images import save_grid
from ..utils.timing import device_name
from .plots import gate_heatmap, schedule_map
from .protocol import FID_KEY_ROWS, GATE_RUNS, METHODS, NAMED_ROWS
from .report import ROW_FIELDS, build_report


@dataclass
class ReproduceConfig(Settings):
    """How much of the protocol to run: the defaults are the full protocol, ``quick`` a version that
    keeps every row at a fraction of the samples and gate training (minutes on 2 CPU cores)."""

    # settings added after reproduce folders were first written: left out of a folder's claim while
    # at these values, so a run an earlier lees began still resumes
    ADDED: ClassVar[dict[str, Any]] = {"gate_batch": 64, "held_out_n": 2000}
    # the settings that say how much of the protocol runs (``departures`` compares them with the full's)
    PROTOCOL: ClassVar[tuple[str, ...]] = (
        "seeds", "n", "steps", "train_steps", "gate_batch", "grid_n", "grid_starts", "budget_ratio",
        "held_out_n", "fid", "fid_reference_n",
    )  # fmt: skip

    model: str = "embedded"
    data: str = "fashion-mnist"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    n: int = 200
    steps: int = 50  # sampler steps
    train_steps: int | None = None  # optimisation steps of each gate run; None: one epoch
    gate_batch: int = 64  # images per gate-training step
    grid_n: int = 256
    grid_starts: list[int] = field(default_factory=lambda: [0, 100, 200, 300])
    budget_ratio: float = 0.6  # the budget row's target_gated_share (share of the gated blocks)
    held_out_n: int = 2000  # held-out images of the epsilon-MSE figures
    device: str = "cpu"
    dtype: str = "float32"  # what the model is cast to (float16, bfloat16: half precision)
    resize: bool = False  # fit the data to the model's channels and size (else a mismatch is an error)
    fid: str = "auto"  # Inception FID of: "key" rows, "all" rows, "none"; auto: all on CUDA, else key
    fid_reference_n: int = 2000

    def __post_init__(self) -> None:
        if self.fid not in ("auto", "key", "all", "none"):
            raise ValueError(f"fid must be auto, key, all or none, got {self.fid!r}")
        if self.n < 2 or len(self.seeds) < 2:
            raise ValueError("the protocol needs n >= 2 samples and at least 2 seeds (for the t-test)")
        if self.steps < 1 or (self.train_steps is not None and self.train_steps < 1):
            raise ValueError("steps and train_steps must be positive")
        if min(self.gate_batch, self.grid_n, self.held_out_n, self.fid_reference_n) < 2:
            raise ValueError("gate_batch, grid_n, held_out_n and fid_reference_n must be at least 2")

    @classmethod
    def quick(cls, **kwargs) -> ReproduceConfig:
        """Every row of the protocol at its 50 sampler steps, smaller: 2 seeds x 8 samples, 15 gate-training
        steps of 16 images per run and seed, the ASE grid on 8 samples over two starts, held-out losses on
        500 images, and no Inception FID (each row's costs a 2048-d matrix square root, about 20 s on one
        core; ``fid="key"`` brings it back). A check that the whole protocol runs and of its rows' rough
        order, not of the paper's claims; ``departures`` says what differs from the full protocol."""
        quick = {"seeds": [0, 1], "n": 8, "train_steps": 15, "gate_batch": 16, "grid_n": 8,
                 "grid_starts": [0, 200], "held_out_n": 500, "fid": "none"}  # fmt: skip
        return cls(**{**quick, **kwargs})

    def claim(self) -> dict[str, Any]:
        """The settings a reproduce folder is tied to (``ADDED`` ones left out at their old values)."""
        return {k: v for k, v in self.to_dict().items() if k not in self.ADDED or v != self.ADDED[k]}

    def departures(self) -> str | None:
        """The protocol's settings that differ from the full protocol's, as ``name value (full: value)``
        (None for the full protocol): printed by ``lees reproduce`` and kept in the report's notes."""
        full, ours = type(self)().to_dict(), self.to_dict()
        differ = [k for k in self.PROTOCOL if ours[k] != full[k]]
        return "; ".join(f"{k} {_shown(ours[k])} (full: {_shown(full[k])})" for k in differ) or None


def _shown(value: Any) -> str:
    if value is None:
        return "one epoch"
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _gates(cfg: ReproduceConfig, work: Path, name: str, seed: int, model, noise, images, blocks) -> dict:
    """Train (or reload) one gate run with the seed's own draws; returns its gate, log and seconds.

    Gates are trained once per seed, so the spread over seeds holds the gate training's variance as
    well as the sampling noise's; a run cut off mid-way resumes from its checkpoint.
    """
    folder = work / "gates" / name / f"seed{seed}"
    if (folder / "done.json").is_file():
        gate, _ = load_gate(folder / "gates.safetensors")
        return {"gate": gate, **json.loads((folder / "done.json").read_text())}
    train = {**GATE_RUNS[name]}
    if "target_gated_share" in train:
        train["target_gated_share"] = cfg.budget_ratio
    config = GateTrainConfig(train_steps=cfg.train_steps, batch_size=cfg.gate_batch, seed=seed, **train)
    print(f"training gates: {name}, seed {seed} ({train})")
    result = train_gates(
        model, images, noise, config, blocks, log_path=folder / "train_log.jsonl",
        checkpoint=folder / "checkpoint.safetensors",
    )  # fmt: skip
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


def _corrupted_reference(extractor, train_images: torch.Tensor) -> dict[str, np.ndarray]:
    """Features of 2000 seeded training images under each corruption (severity 3)."""
    images = train_images[torch.from_numpy(np.random.default_rng(7).permutation(len(train_images))[:2000])]
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
    """Tie ``work`` to one configuration and fd_clf's definition: its stored pieces and choices (the
    ASE grid's, made under fd_clf) are only reused by the same settings."""
    claim_folder(work / "config.json", {**cfg.claim(), "fd_clf": CLF_DEFINITION}, "use another --out")


def _router(cfg: ReproduceConfig, work: Path, model, noise, blocks, timesteps) -> Schedule:
    """The run-or-reuse router at 0.70 of the FLOPs: the shipped one where it fits, else trained once."""

    if cfg.model == "embedded":
        schedule = build_schedule("router-0.70", blocks, timesteps)
        if schedule.timesteps == timesteps:
            return schedule
    path = work / "router.json"
    if path.is_file():
        return Schedule.load(path, blocks)
    print("training the run-or-reuse router (0.70 of the FLOPs)")
    config = RouterConfig(steps=cfg.steps, target_flop_ratio=0.7, train_steps=100 if cfg.train_steps else 400)
    schedule = train_router(model, noise, config, blocks).schedule
    schedule.save(path)
    return schedule


def _seed_results(cfg: ReproduceConfig, work: Path, seed: int, model, noise, methods, extractor, ref,
                  ref_corrupted) -> dict[str, dict]:  # fmt: skip
    """Every method's scores and sampling seconds for one seed, sampled side by side (paired timings).

    Sampled in stored pieces (:mod:`lees.sampling.stored`), so an interruption loses at most one piece;
    the seed's scores are stored once all its pieces are in.
    """
    done = work / "runs" / f"seed{seed}.json"
    if done.is_file():
        return _by_canonical_name(json.loads(done.read_text()))
    runs = sample_stored(
        model,
        methods,
        cfg.n,
        work / "runs" / f"seed{seed}",
        steps=cfg.steps,
        seed=seed,
        scheduler=noise,
        progress=True,
    )
    results = {}
    for name, run in runs.items():
        score = _score(extractor, run.images, ref, ref_corrupted)
        results[name] = score | {"seconds": run.seconds, "cache_bytes": run.cache_bytes_per_sample}
        if seed == cfg.seeds[0]:
            save_grid(run.images[:64], work / "grids" / f"{name}.png", nrow=8)
        print(f"{METHODS[name]}, seed {seed}: fd_clf {results[name]['fd']:.3f}, {run.seconds:.1f} s")
    atomic_write_text(done, json.dumps(results))
    return results


def _by_canonical_name(stored: dict[str, Any]) -> dict[str, Any]:
    """Stored figures keyed by method name, older spellings (``reuse-2``, ``full-35``) read as the
    registry's (``uniform-2``, ``full@35``)."""
    return {canonical(name): value for name, value in stored.items()}


def _fid_rows(cfg: ReproduceConfig) -> list[str]:
    """The rows scored by Inception FID (pooled over seeds) under ``cfg.fid``; [] when not installed."""
    choice = cfg.fid if cfg.fid != "auto" else "all" if torch.device(cfg.device).type == "cuda" else "key"
    if choice == "none":
        return []
    try:
        inception_path()
    except FileNotFoundError as missing:
        if cfg.fid != "auto":
            raise
        print(f"no Inception FID in this report: {missing}")
        return []
    return list(METHODS) if choice == "all" else list(FID_KEY_ROWS)


def _pooled_fid(cfg: ReproduceConfig, work: Path) -> dict[str, float]:
    """Inception FID of each chosen row over every seed's samples pooled (``len(seeds) x n`` images:
    FID is biased at small n, so one figure over all of them, not one per seed). Stored per row."""
    rows = _fid_rows(cfg)
    path = work / "fid.json"
    scores = _by_canonical_name(json.loads(path.read_text())) if path.is_file() else {}
    if all(m in scores for m in rows):
        return {m: scores[m] for m in rows}
    extractor = InceptionFeatures(cfg.device)
    ref = reference_features(extractor, cfg.data, "train", n=cfg.fid_reference_n)
    for method in (m for m in rows if m not in scores):
        images = torch.cat(
            [stored_images(work / "runs" / f"seed{seed}", cfg.n, method) for seed in cfg.seeds]
        )
        print(f"Inception FID of {METHODS[method]} over {len(images)} samples")
        scores[method] = fd(features(extractor, images, progress=True), ref)
        atomic_write_text(path, json.dumps(scores))
    return {m: scores[m] for m in rows}


def _gate_methods(
    cfg: ReproduceConfig, trained: dict[str, dict], blocks, timesteps, noise, seed: int
) -> dict:
    """One seed's gate-trained rows as schedules, the random gates at LEES-0.05's ratio, and A1's gate."""
    num_train = noise.config.num_train_timesteps
    methods: dict = {
        name: Schedule.from_gate(run["gate"], blocks, timesteps, num_train) for name, run in trained.items()
    }
    lees = methods["lees-0.05"]
    ratio = max(lees.executed_ratio, 1 / lees.table.size)
    methods["random"] = build_schedule("random", blocks, timesteps, ratio=ratio, seed=seed)
    methods["soft"] = trained["lees-0.05"]["gate"]  # A1: the lambda=0.05 gate, mixing every block
    return methods


def _ase_grid(cfg: ReproduceConfig, work: Path, model, noise, blocks, timesteps, extractor, ref,
              lees: Schedule, ase: Schedule) -> tuple[Schedule, dict]:  # fmt: skip
    """ASE's grid-tuned schedule at LEES's compute (the first seed's), searched once and stored."""
    grid_file = work / "ase-grid.json"
    if grid_file.is_file():
        info = json.loads(grid_file.read_text())
        return Schedule.from_dict(info["schedule"]), info

    def tune(budget: float):
        return ase_grid(
            model, noise, blocks, timesteps, extractor, ref, budget, starts=cfg.grid_starts, n=cfg.grid_n,
            device=cfg.device,
        )  # fmt: skip

    budget = lees.flop_ratio  # ASE tuned at LEES's compute, for a like-for-like comparison
    try:
        grid = tune(budget)
    except ValueError:  # LEES is sparser than any ASE schedule of the grid: tune at ASE default's
        budget = ase.flop_ratio
        grid = tune(budget)
    info = {"schedule": grid.best.to_dict(), "rows": grid.rows, "seconds": grid.seconds, "budget": budget,
            "metric": grid.metric}  # fmt: skip
    atomic_write_text(grid_file, json.dumps(info))
    return grid.best, info


def _add_seed(
    rows: dict[str, dict], results: dict, methods: dict, full: Schedule, cfg: ReproduceConfig
) -> None:
    """Append one seed's figures to every method's row."""
    for method in METHODS:
        res = results[method]
        schedule = methods[method] if isinstance(methods[method], Schedule) else full  # soft runs every block
        rows[method]["fd"].append(res["fd"])
        rows[method]["kid"].append(res["kid"])
        rows[method]["delta_fd"].append(res["delta_fd"])
        rows[method]["seconds_per_100"].append(100 * res["seconds"] / cfg.n)
        rows[method]["images_per_s"].append(cfg.n / res["seconds"])
        rows[method]["executed_ratio"].append(schedule.executed_ratio)
        rows[method]["flop_ratio"].append(schedule.flop_ratio_vs(cfg.steps))
        rows[method]["cache_bytes"].append(res.get("cache_bytes", 0.0))


def reproduce(cfg: ReproduceConfig, out: str | Path) -> Path:
    """Run the protocol and write ``out/report.md``, ``results.json``, plots and sample grids."""
    out = Path(out)
    work = out / "work"
    started = time.perf_counter()
    _claim(work, cfg)
    if cfg.departures():
        print(f"not the full protocol: {cfg.departures()}")
    model = load_backbone(cfg.model, device=cfg.device).to(getattr(torch, cfg.dtype))
    noise = load_noise_scheduler(cfg.model)
    blocks = find_blocks(model)
    timesteps = sampler_timesteps(noise, cfg.steps)
    train_images = fit_images(load_images(cfg.data, "train")[0], model, resize=cfg.resize)
    extractor = ClassifierFeatures(cfg.device)
    ref = reference_features(extractor, cfg.data, "train", n=10_000)
    ref_corrupted = _corrupted_reference(extractor, train_images)
    shared: dict = {name: build_schedule(name, blocks, timesteps, noise) for name in NAMED_ROWS}
    shared["router"] = _router(cfg, work, model, noise, blocks, timesteps)

    rows: dict[str, dict] = {m: {k: [] for k in ROW_FIELDS} for m in METHODS}
    first: dict = {}
    spent = {"gates": 0.0, "sampling": 0.0}  # seconds held in the stored pieces, resumed runs included
    for seed in cfg.seeds:
        trained = {
            name: _gates(cfg, work, name, seed, model, noise, train_images, blocks) for name in GATE_RUNS
        }
        methods = {**shared, **_gate_methods(cfg, trained, blocks, timesteps, noise, seed)}
        if not first:
            first = {"trained": trained, "lees": methods["lees-0.05"]}
            shared["ase-grid"], grid_info = _ase_grid(cfg, work, model, noise, blocks, timesteps, extractor,
                                                      ref, methods["lees-0.05"], shared["ase"])  # fmt: skip
            methods["ase-grid"] = shared["ase-grid"]
        methods = {m: methods[m] for m in METHODS}
        results = _seed_results(cfg, work, seed, model, noise, methods, extractor, ref, ref_corrupted)
        _add_seed(rows, results, methods, shared["full"], cfg)
        spent["gates"] += sum(run["seconds"] for run in trained.values())
        spent["sampling"] += sum(res["seconds"] for res in results.values())
    fids = _pooled_fid(cfg, work)
    for method, fid in fids.items():
        rows[method]["fid"] = [fid]
    rows["ase-grid"]["note"] = (
        f"{len(grid_info['rows'])} candidates ranked by {grid_info['metric']}, {grid_info['seconds']:.0f} s, "
        f"budget FLOPs <= {grid_info['budget']:.2f}"
    )
    spent["ASE grid"] = grid_info["seconds"]
    meta = _meta(cfg, out, work, model, noise, blocks, train_images, first, shared, started, list(fids))
    meta["piece_seconds"] = spent
    meta["notes"].append(_time_note(spent, meta["wall_seconds"]))
    return build_report(rows, out, meta)


def _meta(cfg, out, work, model, noise, blocks, train_images, first, shared, started, fid_rows) -> dict:
    """The report's metadata: the command, the gates' training cost and settling, held-out losses,
    the plots of the first seed's gates, and the notes that say how the figures were made."""
    gate005 = first["trained"]["lees-0.05"]
    gate_heatmap(gate005["gate"], blocks.names, out / "gates.png", "learned gates, lambda=0.05 (seed 0)")
    schedule_map(first["lees"], out / "schedule-lees.png")
    schedule_map(shared["ase"], out / "schedule-ase.png")
    grids = [work / "grids" / f"{m}.png" for m in ("full", "ase", "lees-0.05", "router")]
    print("timing backbone training steps (the yardstick for the gates' training cost)")
    epoch = epoch_seconds(model, train_images, noise, device=cfg.device)
    held = fit_images(load_images(cfg.data, "test")[0], model, resize=cfg.resize)
    loss_full = held_out_loss(model, blocks, held, noise, n=cfg.held_out_n)
    loss_lees = held_out_loss(model, blocks, held, noise, gate005["gate"], n=cfg.held_out_n)
    budget = first["trained"]["budget"]
    budget_reached = Schedule.from_gate(
        budget["gate"], blocks, shared["full"].timesteps, noise.config.num_train_timesteps
    ).executed_ratio
    return {
        "model": cfg.model,
        "command": " ".join(shlex.quote(a) for a in ["lees", *sys.argv[1:]]),
        "config": cfg.to_dict(),
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
        "budget_reached": budget_reached,
        "fid_rows": fid_rows,
        "pictures": ["gates.png", "schedule-lees.png", "schedule-ase.png"]
        + [str(g.relative_to(out)) for g in grids],
        "wall_seconds": time.perf_counter() - started,
        "notes": _notes(cfg, epoch, loss_full, loss_lees, budget_reached, fid_rows),
    }


def _time_note(spent: dict[str, float], wall: float) -> str:
    """What the run cost: the seconds held in its stored pieces (a resumed run's included) and this
    invocation's wall time (less than the total when it resumed from stored pieces)."""
    parts = ", ".join(f"{name} {seconds / 60:.0f} min" for name, seconds in spent.items())
    return f"Compute held in the stored pieces: {parts}; this invocation's wall time: {wall / 60:.0f} min."


def _departure_note(cfg: ReproduceConfig) -> list[str]:
    """The report's first note where the run is smaller (or larger) than the full protocol."""
    departures = cfg.departures()
    if not departures:
        return []
    return [
        f"Not the full protocol: {departures}. Every row is here; weigh the figures by these sizes (at "
        "`--quick`'s they show that the protocol runs end to end and the rows' rough order, not the "
        "paper's claims)."
    ]


def _notes(cfg, epoch, loss_full, loss_lees, budget_reached, fid_rows) -> list[str]:
    fid = (
        f"Inception FID (2048-d pool features, {cfg.fid_reference_n} real training images as reference) "
        f"of {', '.join(fid_rows)}, each over all {len(cfg.seeds)} x {cfg.n} samples pooled."
        if fid_rows
        else "No Inception FID in this run (--fid none, or the weights are not installed)."
    )
    return [
        *_departure_note(cfg),
        "fd_clf is a Fréchet distance in the features of a small Fashion-MNIST classifier, "
        "not Inception FID: compare its values with each other, not with the paper's FIDs. " + fid,
        f"Latency is the wall time of the whole sampling run on {device_name(cfg.device)}, per 100 "
        "images; every method of a seed is sampled side by side, step by step in a turning order, "
        "so the timings are paired.",
        "Every gate run is trained once per seed (with that seed's draws), so the spread over seeds "
        "holds the gate training's variance; the ASE grid is tuned once, at the first seed's LEES compute; "
        "the router is the shipped one (or trained once).",
        f"Backbone epoch: {epoch:.0f} s, from timed training steps of a copy of the backbone "
        "(Adam on every weight) on the same device, in the same run.",
        f"Held-out epsilon-MSE: full {loss_full:.5f}, LEES-0.05 (seed 0) {loss_lees:.5f}.",
        f"Budget mode asked for {cfg.budget_ratio:.2f} of the blocks and runs "
        f"{budget_reached:.3f} on the {cfg.steps}-step sampler (seed 0).",
    ]
