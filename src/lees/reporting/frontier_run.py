"""The run behind ``lees frontier`` (sampling, scoring, writing): every method against the full model at
fewer steps, at the same measured latency (the verdicts themselves: :mod:`lees.evaluation.fewer_steps`).

Samples a model (the embedded UNet by default, ``embedded-dit`` or any the loaders take) with every
method side by side (paired timing: each step's calls in a turning order), with its own solver and
classifier-free guidance where it has a null class, scores each under fd_clf and Inception FID, and
writes one JSON line per method: method, steps, flop_ratio and latency_ratio (against the full model
at ``steps``), the quality under each metric, and where the method lies against the fewer-steps curve
at its latency under each metric, and against the best of every solver's curve: each figure with its 95 %
paired bootstrap interval over samples, and above or below only where the margin's interval excludes a
tie (``--resamples``; :mod:`lees.evaluation.bootstrap`). With ``--reference ode`` every row also has its
fidelity to the converged ODE solution from the same noise and label (``fd_ode``, judged as the other
metrics; ``psnr_ode``, ``ssim_ode``; :mod:`lees.evaluation.ode_reference`). The full model's rows
are named ``full`` (``full@K``: at K steps); with another solver ``SOLVER@K``. Methods that do not
apply to the model (DeepCache on a transformer, a schedule made for other blocks) are left out with
the reason printed. Writes the rows (``frontier.jsonl``) and one plot per metric. The samples are
stored in ``out/pieces`` as they finish, so the same run started again after an interruption picks up
where it stopped. A text-to-image pipeline folder is sampled through its own call instead
(:mod:`lees.tune.frontier`, which writes rows of this format).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..diffusion.samplers import sampler_timesteps
from ..diffusion.solvers import default_solver
from ..engine.blocks import Blocks, find_blocks
from ..evaluation.bootstrap import RESAMPLES, percentile_interval, resample_indices
from ..evaluation.fewer_steps import Point, Scorers, describe, measure, versus_best_solver, versus_fewer_steps
from ..evaluation.fidelity import paired_fidelity
from ..evaluation.metrics import (
    REFERENCE_N,
    ClassifierFeatures,
    InceptionFeatures,
    features,
    inception_path,
    reference_features,
)
from ..evaluation.ode_reference import check_deterministic, ode_reference
from ..models.backbones import check_unprompted, load_backbone, load_noise_scheduler, prompted_pipeline
from ..models.denoisers import check_prompted, default_guidance_scale
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
METRICS = ("fd_clf", "fid", "fd_clf_raw", "fd_ode", "fd_full", "dssim")  # the last two: a pipeline folder's
FID_RESAMPLES = 50  # FID's intervals: fewer resamples, each costs seconds (docs/results/bootstrap-cost)
REFERENCES = ("run", "ode")  # fidelity to the run's full model only, or also to the converged ODE solution


@dataclass
class FrontierConfig(Settings):
    """What ``lees frontier`` samples and scores (its flags, one field each)."""

    model: str = "embedded"  # what lees.load_backbone loads
    sampler: str | None = None  # the run's solver (None: the model's own, DDPM or Euler)
    solvers: list[str] = field(default_factory=list)  # also these solvers' fewer-steps curves
    solver_steps: list[int] | None = None  # their steps (None: steps and fewer)
    guidance_scale: float | None = None  # None: 2 for a model with a null class, else 1
    n: int = 200  # samples per method
    steps: int = 50  # the full model's sampler steps
    fewer: list[int] = field(default_factory=lambda: [40, 35, 30, 25, 20, 15])  # the curve's other steps
    reuse_steps: list[int] = field(default_factory=list)  # also uniform-2 and deepcache-3 at these steps
    schedules: list[str] = field(default_factory=list)  # also these schedule files (named by folder)
    rows: str = "all"  # a ROW_SETS entry
    fid_n: int = 500  # samples per method scored by Inception FID (0: none)
    fid_rows: list[str] | None = None  # the rows scored by Inception FID (None: all)
    clf_raw: bool = False  # also fd_clf_raw: fd_clf on raw features, its definition before 2026-11-27
    seed: int = 7  # sampling seed (7: one the report does not use)
    resamples: int = RESAMPLES  # paired bootstrap resamples of every interval
    fid_resamples: int = FID_RESAMPLES  # of Inception FID's (2048-d features: seconds a resample and row)
    reference: str = "run"  # "ode": also fidelity to the converged ODE solution from the same noise
    device: str = "cpu"
    prompts: list[str] | None = None  # a text-to-image pipeline folder's call (None: lees' built-in list)
    negative_prompt: str | None = None
    height: int | None = None
    width: int | None = None
    batch_size: int | None = None  # samples per timed round (None: a pipeline's 16, lees' sampler's 64)

    def __post_init__(self) -> None:
        if self.rows not in ROW_SETS:
            raise ValueError(f"rows must be one of {', '.join(ROW_SETS)}, got {self.rows!r}")
        counts = [self.steps, *self.fewer, *self.reuse_steps, self.resamples, self.fid_resamples]
        if self.n < 2 or min(counts) < 1:
            raise ValueError("need n >= 2, positive step counts and at least one resample")
        if self.reference not in REFERENCES:
            raise ValueError(f"--reference must be one of {', '.join(REFERENCES)}, got {self.reference!r}")
        if not set(self.fewer) - {self.steps}:
            raise ValueError(
                f"--fewer {' '.join(map(str, self.fewer))}: the fewer-steps curve needs the full model at "
                f"two or more step counts: give --fewer a step count other than --steps {self.steps}"
            )
        if self.solvers and len(set(self.solver_steps or [])) == 1:
            raise ValueError(
                f"--solver-steps {self.solver_steps[0]}: each solver's fewer-steps curve needs two or more "
                "step counts"
            )


def frontier(config: FrontierConfig, out: str | Path) -> list[dict[str, Any]]:
    """Sample, score and judge every method against the fewer-steps curves; write ``out/frontier.jsonl``
    and one plot per metric; the rows (as printed)."""
    out = Path(out)
    if prompted_pipeline(config.model):
        raise ValueError(
            f"{config.model} is a text-to-image pipeline folder: lees.tune.frontier.pipeline_frontier "
            "samples it through its own call (as lees frontier does)"
        )
    check_unprompted(config.model, prompts=config.prompts, negative_prompt=config.negative_prompt,
                     height=config.height, width=config.width)  # fmt: skip
    model = load_backbone(config.model, device=config.device)
    check_prompted(model)  # a bare text-conditioned denoiser: one line, before any sample
    noise = load_noise_scheduler(config.model)
    out.mkdir(parents=True, exist_ok=True)  # only once the model loads: a bad --model leaves nothing
    sampler = config.sampler or default_solver(noise)
    scale = default_guidance_scale(model, config.guidance_scale)
    if config.reference == "ode":
        for solver in [sampler, *config.solvers]:
            check_deterministic(solver, "the run's sampler" if solver == sampler else "the curve's solver")
    schedules, curves = methods(config, find_blocks(model), noise, sampler)
    check_fid_rows(config, schedules, curves)  # before the first sample, not after an hour of them
    settings = {"seed": config.seed, "model": config.model, "sampler": sampler, "guidance_scale": scale}
    runs = sample_stored(
        model, schedules, config.n, out / "pieces", settings=settings | {"solvers": curves},
        seed=config.seed, scheduler=noise, device=config.device, sampler=sampler, guidance_scale=scale,
        solvers=curves, **({"batch_size": config.batch_size} if config.batch_size else {}),
    )  # fmt: skip
    only = None if config.fid_rows is None else {"fid": [row_key(r, config.steps) for r in config.fid_rows]}
    found = scorers(config)
    resamples = {m: config.fid_resamples if m == "fid" else config.resamples for m in found}
    points = measure(runs, schedules, found, config.steps, only, curves, resamples, config.seed)
    extra = {name: {} for name in points}
    if config.reference == "ode":
        ode, closeness = ode_reference(model, noise, config.n, config.seed, out / "ode", scale, config.device)
        indices = resample_indices(config.n, config.resamples, config.seed)  # fd_clf's: paired with it
        extra = ode_fidelity(points, runs, ode, found["fd_clf"][0], indices)
        settings["ode_reference"] = closeness
    run = settings | {"n": config.n}
    rows = [frontier_row(p, points, runs[name].cache_bytes_per_sample, run | extra[name])
            for name, p in points.items()]  # fmt: skip
    (out / "frontier.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plot(out, rows)
    return rows


def methods(
    config: FrontierConfig, blocks: Blocks, noise, sampler: str = "ddpm"
) -> tuple[dict[str, Schedule], dict[str, str]]:
    """Every method as a schedule: the full model at each step count (with ``sampler``, then with each
    further solver: the rows ``SOLVER@K``, returned as the second value, row to solver), the baselines
    and the shipped schedules made for these steps, uniform reuse and DeepCache at each of
    ``reuse_steps`` (reuse plus fewer steps), then the schedule files, each named by its folder. A
    method that does not apply to this model is left out, its reason printed."""
    ts = sampler_timesteps(noise, config.steps, sampler)
    keep = ROW_SETS[config.rows]
    names = [*METHODS, *(name for name in shipped() if "router" in name)] if keep is None else keep
    names += [f"{name}@{k}" for k in config.reuse_steps for name in ("uniform-2", "deepcache-3")]
    rows = {"full": build_schedule("full", blocks, ts)}
    rows |= {f"full@{k}": build_schedule(f"full@{k}", blocks, ts, noise, sampler) for k in config.fewer}
    curves = solver_curves(config, blocks, noise, [s for s in config.solvers if s != sampler])
    built = {name: applicable(name, blocks, ts, noise, sampler) for name in names}
    rows |= curves
    rows |= {name: s for name, s in built.items() if s is not None and (s.timesteps == ts or "@" in name)}
    rows |= {row_name(path): build_schedule(path, blocks, ts) for path in config.schedules}
    return rows, {name: name.partition("@")[0] for name in curves}


def check_fid_rows(config: FrontierConfig, schedules: dict[str, Schedule], curves: dict[str, str]) -> None:
    """A clear error unless ``--fid-rows`` names rows of this run and the full model at two or more step
    counts of each solver it scores the full model with (FID's curves are drawn from them, and the
    methods it scores judged on the run's solver's)."""
    if config.fid_rows is None:
        return
    keys = list(dict.fromkeys(row_key(r, config.steps) for r in config.fid_rows))
    unknown = [k for k in keys if k not in schedules]
    if unknown:
        raise ValueError(
            f"--fid-rows names {', '.join(unknown)}, which this run does not sample (its rows: "
            f"{', '.join(schedules)})"
        )
    full = {k: curves.get(k) for k in keys if k == "full" or k.startswith("full@") or k in curves}
    judged = [k for k in keys if k not in full]
    solvers = {*full.values(), *([None] if judged else [])}
    if any(sum(s == solver for s in full.values()) < 2 for solver in solvers):
        on = f" (and judges {', '.join(judged)} on it)" if judged else ""
        raise ValueError(
            f"Inception FID draws the full model's fewer-steps curve from --fid-rows{on}: it needs the full "
            f"model at two or more step counts of each solver there (it has {', '.join(full) or 'none'}): "
            f"add e.g. full@{next(k for k in config.fewer if k != config.steps)} to --fid-rows"
        )


def solver_curves(config: FrontierConfig, blocks: Blocks, noise, solvers: list[str]) -> dict[str, Schedule]:
    """The full model with each of ``solvers`` at ``solver_steps`` (default: ``steps`` and each of
    ``fewer``): rows ``SOLVER@K``, each sampled with its solver beside the run's."""
    steps = config.solver_steps or [config.steps, *config.fewer]
    return {
        f"{solver}@{k}": build_schedule("full", blocks, sampler_timesteps(noise, k, solver))
        for solver in solvers
        for k in steps
    }


def applicable(name: str, blocks: Blocks, ts: list, noise, sampler: str, say=print) -> Schedule | None:
    """The method's schedule, or None with the reason said where it does not apply to this model
    (made for other blocks, a UNet's method on a transformer)."""
    try:
        return build_schedule(name, blocks, ts, noise, sampler)
    except (ValueError, KeyError) as reason:
        say(f"# {name}: left out: {reason}")
        return None


def ode_fidelity(
    points: dict[str, Point], runs: dict, ode: torch.Tensor, extractor, indices: np.ndarray
) -> dict[str, dict[str, Any]]:
    """Fidelity of every row to the converged ODE solution from the same noise: ``fd_ode`` (in fd_clf's
    features) joins each point's quality, judged against the curves as the other metrics are; PSNR and
    SSIM to it (and every interval, on the resamples ``indices``), by row name."""
    ode_feats = features(extractor, ode)
    extra = {}
    for name, point in points.items():
        images = runs[name].images
        values, replicates = paired_fidelity(images, ode, indices, features(extractor, images), ode_feats)
        point.quality["fd_ode"], point.replicates["fd_ode"] = values["fd"], replicates["fd"]
        extra[name] = {
            f"{m}_ode{suffix}": v
            for m in ("psnr", "ssim")
            for suffix, v in (("", round(values[m], 4)), ("_interval", _rounded(replicates[m], 4)))
        }
    return extra


def _rounded(replicates: np.ndarray, digits: int = 3) -> list[float]:
    """The percentile interval of ``replicates``, rounded for a row."""
    return [round_figure(v, digits) for v in percentile_interval(replicates)]


def round_figure(value: float, digits: int = 3) -> float:
    """``value`` to ``digits`` decimals, or to three significant figures where that is finer (a pipeline's
    dssim can be 5e-05)."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, max(digits, 2 - math.floor(math.log10(abs(value)))))


def scorers(config: FrontierConfig) -> Scorers:
    """fd_clf (and fd_clf_raw) on every sample, Inception FID on the first ``fid_n`` where installed (and
    ``fid_n`` is not 0)."""
    found: dict[str, tuple] = {"fd_clf": (ClassifierFeatures(config.device), config.n, REFERENCE_N["clf"])}
    if config.clf_raw:
        found["fd_clf_raw"] = (ClassifierFeatures(config.device, raw=True), config.n, REFERENCE_N["clf_raw"])
    try:
        if config.fid_n < 1:
            raise FileNotFoundError("--fid-n 0")
        inception_path()
        found["fid"] = (InceptionFeatures(config.device), config.fid_n, REFERENCE_N["inception"])
    except FileNotFoundError as missing:
        print(f"# no Inception FID: {missing}")
    return {m: (e, k, reference_features(e, "fashion-mnist", "train", n=r)) for m, (e, k, r) in found.items()}


def frontier_row(
    p: Point, points: dict[str, Point], cache_bytes: float, run: dict[str, Any]
) -> dict[str, Any]:
    """One method's line of ``frontier.jsonl`` (printed, with its verdicts in words); ``run``: the run's
    model, sampler, guidance scale, samples per method (and the ODE check and this row's fidelity to the
    ODE solution), stored with the row."""
    every = list(points.values())
    judged = {} if p.is_full else {m: versus_fewer_steps(p, every, m) for m in p.quality}
    solvers = {q.solver for q in every if q.is_full}
    best = {} if p.is_full or len(solvers) < 2 else {m: versus_best_solver(p, every, m) for m in p.quality}
    best = {m: {**j, "solver": j.get("solver") or run["sampler"]} for m, j in best.items()}
    row = {"method": p.method, "solver": p.solver, "steps": p.steps, "flop_ratio": round(p.flop_ratio, 4),
           "latency_ratio": round(p.latency_ratio, 4), **{m: round_figure(q) for m, q in p.quality.items()},
           **{f"{m}_interval": _rounded(r) for m, r in p.replicates.items()},
           "cache_bytes_per_sample": cache_bytes, **run, "versus_fewer_steps": judged}  # fmt: skip
    if best:
        row["versus_best_solver"] = best
    print(json.dumps(row))
    for j in [*judged.values(), *(j for j in best.values() if j["solver"] != run["sampler"])]:
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
                    {m: r[m] for m in metrics if m in r}, r.get("solver"),
                    intervals={m: r[f"{m}_interval"] for m in metrics if f"{m}_interval" in r})
              for r in rows]  # fmt: skip
    first = rows[0]
    model, sampler = first.get("model", "embedded"), first.get("sampler", "ddpm")  # older rows: the UNet's
    guided = (
        f", guidance {first['guidance_scale']:g}" if first.get("guidance_scale", 1) not in (1, None) else ""
    )
    paths = []
    for metric in metrics:
        title = f"{model}, {sampler}{guided}, {first['n']} samples: {metric} vs paired latency"
        paths.append(frontier_plot(points, metric, Path(out) / f"frontier-{metric}.png", title, sampler))
    print(f"# wrote {Path(out) / 'frontier.jsonl'} and frontier-*.png")
    return paths
