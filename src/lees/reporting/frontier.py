"""``lees frontier``: every method against the full model at fewer steps, at the same measured latency.

Samples the embedded model with every method side by side (paired timing: each step's calls in a
turning order), scores each under fd_clf and Inception FID, and writes one JSON line per method:
method, steps, flop_ratio and latency_ratio (against the full model at ``steps``), the quality under
each metric, and where the method lies against the fewer-steps curve at its latency under each
metric. The full model's rows are named ``full``; learned reuse rows say ``router``. Writes the rows
(``frontier.jsonl``) and one plot per metric. The samples are stored in ``out/pieces`` as they
finish, so the same run started again after an interruption picks up where it stopped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..diffusion.samplers import sampler_timesteps
from ..engine.blocks import Blocks, find_blocks
from ..evaluation.frontier import Point, Scorers, describe, measure, versus_fewer_steps
from ..evaluation.metrics import (
    REFERENCE_N,
    ClassifierFeatures,
    InceptionFeatures,
    inception_path,
    reference_features,
)
from ..models.backbones import load_backbone, load_noise_scheduler
from ..sampling.stored import sample_stored
from ..schedules.registry import build_schedule, canonical, shipped
from ..schedules.schedule import Schedule
from ..utils.config import Settings
from .plots import frontier_plot
from .protocol import ROW_SETS

METHODS = (
    "ase",
    "lees-0.05",
    "uniform-2-skip",
    "uniform-2",
    "uniform-3",
    "uniform-5",
    "deepcache-2",
    "deepcache-3",
)
METRICS = ("fd_clf", "fid", "fd_clf_raw")


@dataclass
class FrontierConfig(Settings):
    """What ``lees frontier`` samples and scores (its flags, one field each)."""

    n: int = 200  # samples per method
    steps: int = 50  # the full model's sampler steps
    fewer: list[int] = field(default_factory=lambda: [40, 35, 30, 25, 20, 15])  # the curve's other steps
    reuse_steps: list[int] = field(default_factory=list)  # also uniform-2 and deepcache-3 at these steps
    schedules: list[str] = field(default_factory=list)  # also these schedule files (named by folder)
    rows: str = "all"  # a ROW_SETS entry
    fid_n: int = 500  # samples per method scored by Inception FID
    fid_rows: list[str] | None = None  # the rows scored by Inception FID (None: all)
    clf_raw: bool = False  # also fd_clf_raw: fd_clf on raw features, its definition before 2026-11-27
    seed: int = 7  # sampling seed (7: one the report does not use)
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.rows not in ROW_SETS:
            raise ValueError(f"rows must be one of {', '.join(ROW_SETS)}, got {self.rows!r}")
        if self.n < 2 or min([self.steps, *self.fewer, *self.reuse_steps]) < 1:
            raise ValueError("need n >= 2 and positive step counts")


def frontier(config: FrontierConfig, out: str | Path) -> list[dict[str, Any]]:
    """Sample, score and judge every method against the fewer-steps curve; write ``out/frontier.jsonl``
    and one plot per metric; the rows (as printed)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_backbone("embedded", device=config.device)
    noise = load_noise_scheduler("embedded")
    schedules = methods(config, find_blocks(model), noise)
    runs = sample_stored(model, schedules, config.n, out / "pieces", settings={"seed": config.seed},
                         seed=config.seed, scheduler=noise, device=config.device)  # fmt: skip
    only = None if config.fid_rows is None else {"fid": [row_key(r, config.steps) for r in config.fid_rows]}
    points = measure(runs, schedules, scorers(config), config.steps, only)
    rows = [_row(p, points, runs[name].cache_bytes_per_sample, config.n) for name, p in points.items()]
    (out / "frontier.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plot(out, rows)
    return rows


def methods(config: FrontierConfig, blocks: Blocks, noise) -> dict[str, Schedule]:
    """Every method as a schedule: the full model at each step count, the baselines and the shipped
    schedules made for these steps, uniform reuse and DeepCache at each of ``reuse_steps`` (reuse plus
    fewer steps), then the schedule files, each named by its folder."""
    ts = sampler_timesteps(noise, config.steps)
    keep = ROW_SETS[config.rows]
    names = [*METHODS, *(name for name in shipped() if name.startswith("router-"))]
    names = [name for name in names if keep is None or name in keep]
    names += [f"{name}@{k}" for k in config.reuse_steps for name in ("uniform-2", "deepcache-3")]
    rows = {"full": build_schedule("full", blocks, ts)}
    rows |= {f"full@{k}": build_schedule(f"full@{k}", blocks, ts, noise) for k in config.fewer}
    built = {name: build_schedule(name, blocks, ts, noise) for name in names}
    rows |= {name: s for name, s in built.items() if s.timesteps == ts or "@" in name}  # stored: their steps
    rows |= {row_name(path): build_schedule(path, blocks, ts) for path in config.schedules}
    return rows


def scorers(config: FrontierConfig) -> Scorers:
    """fd_clf (and fd_clf_raw) on every sample, Inception FID on the first ``fid_n`` where installed."""
    found: dict[str, tuple] = {"fd_clf": (ClassifierFeatures(config.device), config.n, REFERENCE_N["clf"])}
    if config.clf_raw:
        found["fd_clf_raw"] = (ClassifierFeatures(config.device, raw=True), config.n, REFERENCE_N["clf_raw"])
    try:
        inception_path()
        found["fid"] = (InceptionFeatures(config.device), config.fid_n, REFERENCE_N["inception"])
    except FileNotFoundError as missing:
        print(f"# no Inception FID: {missing}")
    return {m: (e, k, reference_features(e, "fashion-mnist", "train", n=r)) for m, (e, k, r) in found.items()}


def _row(p: Point, points: dict[str, Point], cache_bytes: float, n: int) -> dict[str, Any]:
    """One method's line of ``frontier.jsonl`` (printed, with its verdicts in words)."""
    judged = {} if p.is_full else {m: versus_fewer_steps(p, list(points.values()), m) for m in p.quality}
    row = {"method": p.method, "steps": p.steps, "flop_ratio": round(p.flop_ratio, 4),
           "latency_ratio": round(p.latency_ratio, 4), **{m: round(q, 3) for m, q in p.quality.items()},
           "cache_bytes_per_sample": cache_bytes, "n": n, "versus_fewer_steps": judged}  # fmt: skip
    print(json.dumps(row))
    for j in judged.values():
        print("#", describe(p, j))
    return row


def row_name(path: str) -> str:
    """A schedule file's row name: its folder's for ``FOLDER/schedule.json``, else the file's stem."""
    p = Path(path)
    return p.parent.name if p.name == "schedule.json" else p.name if p.is_dir() else p.stem


def row_key(name: str, steps: int) -> str:
    """A row name as this run names it: the registry's spelling, ``full`` for the full model at ``steps``."""
    name = canonical(name)
    return "full" if name == f"full@{steps}" else name


def read_rows(out: str | Path) -> list[dict[str, Any]]:
    """The rows of a finished run's ``frontier.jsonl`` (older method names read as the registry's)."""
    rows = [json.loads(line) for line in (Path(out) / "frontier.jsonl").read_text().splitlines() if line]
    return [{**row, "method": canonical(row["method"])} for row in rows]


def plot(out: str | Path, rows: list[dict[str, Any]]) -> list[Path]:
    """One plot per metric, ``out/frontier-METRIC.png``, from the rows."""
    metrics = [m for m in METRICS if any(m in r for r in rows)]
    points = [Point(r["method"], r["steps"], r["flop_ratio"], r["latency_ratio"],
                    {m: r[m] for m in metrics if m in r}) for r in rows]  # fmt: skip
    paths = []
    for metric in metrics:
        title = f"embedded model, DDPM, {rows[0]['n']} samples: {metric} vs paired latency"
        paths.append(frontier_plot(points, metric, Path(out) / f"frontier-{metric}.png", title))
    print(f"# wrote {Path(out) / 'frontier.jsonl'} and frontier-*.png")
    return paths
