"""``lees frontier`` on a text-to-image pipeline folder: every row sampled through the pipeline's own call.

The rows are those of :mod:`lees.reporting.frontier_run` made runnable as ``lees tune`` makes its
candidates (:mod:`.runs`): the full pipeline at ``--steps`` and at each ``--fewer`` count with its own
scheduler, each ``--solvers`` solver swapped in at ``--solver-steps``, uniform reuse and DeepCache at
``--steps`` (and at each ``--reuse-steps`` count), each ``--schedules`` file at its own step count, all
applied as a user applies them (``lees.enable``). They are sampled in the same timed rounds and stored
pieces as ``lees tune``'s (:mod:`.measure`), scored against the full pipeline's images from the same
prompts and noise (:mod:`.quality`: PSNR, SSIM and the FD in Inception features where installed, each
with its paired bootstrap interval), and judged against the fewer-steps curves at their measured latency
by the frontier's own verdicts, under the two distances that are 0 for the full pipeline: ``fd_full`` and
``dssim`` (1 - SSIM). There is no dataset, so no fd_clf or data FID. The rows go to ``frontier.jsonl``
in the frontier's format, so ``lees frontier --plot-only`` redraws them.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..diffusion.solvers import check_solver
from ..engine.blocks import find_blocks
from ..evaluation.bootstrap import resample_indices
from ..evaluation.fewer_steps import Point
from ..models.backbones import load_noise_scheduler
from ..reporting.frontier_run import FrontierConfig, frontier_row, plot, round_figure, row_name
from ..sampling.pipeline_call import PipelineSource
from ..schedules.saving import load_policy
from ..schedules.schedule import Schedule
from .candidates import Candidate, schedule_candidates
from .measure import measure
from .quality import Replicates
from .runs import FULL, Run, build_runs, own_solver, quiet_diffusers
from .tuner import TuneConfig, open_model, score, warn_few_rounds
from .verdict import Row

BATCH_SIZE = 16  # samples per timed round, as lees tune's
# What the frontier's --rows all is on a pipeline folder: the hand-made reuse that applies to any model.
REUSE = (("uniform", 2), ("uniform", 3), ("deepcache", 2), ("deepcache", 3))
NOT_FOR_PIPELINES = {  # option: how the user gave it
    "rows": "--rows (the embedded models' method sets)",
    "fid_rows": "--fid-rows",
    "fid_n": "--fid-n",
    "fid_resamples": "--fid-resamples",
    "clf_raw": "--clf-raw",
    "reference": "--reference ode",
}


def pipeline_frontier(config: FrontierConfig, out: str | Path) -> list[dict[str, Any]]:
    """Sample, score and judge every row through the pipeline folder ``config.model``'s own call; write
    ``out/frontier.jsonl`` and one plot per metric; the rows (as printed).

    Args:
        config: the frontier's settings; the pipeline's call from ``prompts``, ``negative_prompt``,
            ``guidance_scale``, ``height`` and ``width`` (None: lees' built-in prompts, the pipeline's own
            defaults). The options that score against a dataset or pick embedded rows are refused.
        out: the folder for the stored pieces (a run again there resumes), the rows and the plots.
    """
    check_pipeline_options(config)
    check_solvers(config)
    tune_config = _tune_config(config)
    model, scheduler, source = open_model(tune_config)
    solver = config.sampler or own_solver(scheduler)
    curves = solver_rows(config, solver)
    with quiet_diffusers():
        runs, reasons = frontier_runs(config, model, scheduler, source, solver, curves)
    for name, reason in reasons.items():
        print(f"# {name}: left out: {reason}")
    print(f"# through {type(source.pipe).__name__}'s own call, {source.prompting.describe()}")
    print("# no fd_clf or data FID: a pipeline folder comes with no dataset; every row is scored by fidelity "
          "to the full pipeline's images from the same prompts and noise")  # fmt: skip
    warn_few_rounds(config.n, tune_config.batch_size)
    measured, failed = measure(source, scheduler, runs, config.n, tune_config.batch_size, config.seed, out)
    for name, reason in failed.items():
        print(f"# {name}: left out: {reason}")
    scored, boot = score(runs, measured, None, resample_indices(config.n, config.resamples, config.seed))
    points = {row["name"]: point(row, boot[row["name"]], curves) for row in scored}
    settings = {"seed": config.seed, "model": config.model, "sampler": solver, "n": config.n,
                "guidance_scale": guidance(source, config.guidance_scale),
                "call": source.prompting.settings()}  # fmt: skip
    rows = [frontier_row(points[r["name"]], points, cache_bytes(runs[r["name"]], model),
                         settings | image_scores(r)) for r in scored]  # fmt: skip
    (Path(out) / "frontier.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plot(out, rows)
    return rows


def check_pipeline_options(config: FrontierConfig) -> None:
    """One line naming each option given that has no meaning on a pipeline folder, before any sample."""
    defaults = {f.name: f.default for f in fields(FrontierConfig)}
    given = [flag for name, flag in NOT_FOR_PIPELINES.items() if getattr(config, name) != defaults[name]]
    if given:
        raise ValueError(
            f"{', '.join(given)}: not for a text-to-image pipeline folder ({config.model}): its rows are "
            "scored by fidelity to the full pipeline's images (PSNR, SSIM, FD in Inception features), with "
            "no dataset and no ODE reference; its rows: --fewer, --solvers, --reuse-steps, --schedules"
        )


def check_solvers(config: FrontierConfig) -> None:
    """One line naming the first ``--sampler`` or ``--solvers`` solver of another family than the
    pipeline's scheduler's (and the family's solvers), before the pipeline loads."""
    scheduler = load_noise_scheduler(config.model)
    for solver in [config.sampler, *config.solvers]:
        if solver is not None:
            check_solver(scheduler, solver)


def _tune_config(config: FrontierConfig) -> TuneConfig:
    """The frontier's sampling settings as ``lees tune`` takes them (to open the pipeline and its call)."""
    return TuneConfig(
        model=config.model, n=config.n, steps=config.steps, batch_size=config.batch_size or BATCH_SIZE,
        seed=config.seed, guidance_scale=config.guidance_scale, device=config.device,
        resamples=config.resamples, prompts=config.prompts, negative_prompt=config.negative_prompt,
        height=config.height, width=config.width,
    )  # fmt: skip


def solver_rows(config: FrontierConfig, solver: str) -> dict[str, str]:
    """The rows of each further solver's fewer-steps curve (``SOLVER@K`` at ``solver_steps``: default
    ``steps`` and ``fewer``), row to solver."""
    steps = config.solver_steps or [config.steps, *config.fewer]
    return {f"{s}@{k}": s for s in config.solvers if s != solver for k in steps}


def frontier_runs(
    config: FrontierConfig, model: Any, scheduler: Any, source: PipelineSource, solver: str, curves: dict
) -> tuple[dict[str, Run], dict[str, str]]:
    """Every row as a run through the pipeline's call (``full`` at ``steps``) and why each row that
    cannot run does not: built by ``lees tune``'s :func:`.runs.build_runs` at each step count a row
    needs (reuse at ``reuse_steps``, a schedule file at its own), each FLOP ratio against ``steps``."""
    runs: dict[str, Run] = {}
    reasons: dict[str, str] = {}
    for steps, found in by_step_count(config, solver, curves).items():
        built, why = build_runs(found, model, scheduler, solver, steps, config.seed, source=source)
        full = built.pop(FULL)
        if steps == config.steps:
            runs[FULL] = full
        for run in built.values():
            run.flop_ratio = None if run.flop_ratio is None else run.flop_ratio * steps / config.steps
        runs |= built
        reasons |= why
    return runs, reasons


def by_step_count(config: FrontierConfig, solver: str, curves: dict[str, str]) -> dict[int, list[Candidate]]:
    """The rows as ``lees tune``'s candidates, by the step count of the run they are built on."""
    fewer = [Candidate("steps", f"full@{k}", {"solver": solver, "steps": k}) for k in config.fewer
             if k != config.steps]  # fmt: skip
    others = [Candidate("steps", name, {"solver": s, "steps": int(name.rpartition("@")[2])})
              for name, s in curves.items()]  # fmt: skip
    found = {config.steps: [*fewer, *others, *reuse(None)]}
    for k in config.reuse_steps:
        if k != config.steps:  # at --steps: the rows above
            found.setdefault(k, []).extend(reuse(k))
    for path in config.schedules:
        (candidate,) = schedule_candidates([path])
        schedule = load_policy(path)
        steps = schedule.num_steps if isinstance(schedule, Schedule) else config.steps
        found.setdefault(steps, []).append(Candidate("schedule", row_name(path), candidate.settings))
    return found


def reuse(steps: int | None) -> list[Candidate]:
    """Uniform reuse and DeepCache (``REUSE``) as candidates; at ``steps`` named ``NAME@steps``."""
    at = "" if steps is None else f"@{steps}"
    options = {"deepcache": {"levels": 1}}
    return [Candidate(kind, f"{kind}-{k}{at}", {"interval": k, **options.get(kind, {})}) for kind, k in REUSE]


def point(row: Row, replicates: Replicates, curves: dict[str, str]) -> Point:
    """A measured row as the frontier's :class:`Point`: judged under ``fd_full`` (where measured) and
    ``dssim`` (1 - SSIM), the distances to the full pipeline's images that are 0 for itself; the full
    pipeline's rows (``full``, ``full@K``, ``SOLVER@K``) are the curves' points."""
    name = row["name"]
    quality, boot = {"dssim": 1 - row["ssim"]}, {"dssim": 1 - replicates["ssim"]}
    if row.get("fd_full") is not None:
        quality["fd_full"], boot["fd_full"] = row["fd_full"], replicates["fd_full"]
    curve = name.partition("@")[0] == FULL or name in curves
    return Point(FULL if curve else name, row["steps"], row["flop_ratio"], row["latency_ratio"], quality,
                 curves.get(name), boot)  # fmt: skip


def image_scores(row: Row) -> dict[str, Any]:
    """What a frontier row keeps of a tune row besides its judged distances: PSNR and SSIM with their
    intervals, the seconds and the denoiser's share of them."""
    keys = ("psnr", "psnr_interval", "ssim", "ssim_interval", "features", "seconds", "denoiser_share")
    return {k: _round(row[k]) for k in keys if row.get(k) is not None}


def _round(value: Any) -> Any:
    """A float, or each of a list's, to 4 decimals (3 significant figures where finer); else as it is."""
    if isinstance(value, float):
        return round_figure(value, 4)
    return [round_figure(v, 4) for v in value] if isinstance(value, list) else value


def cache_bytes(run: Run, model: Any) -> int:
    """The reuse cache's peak bytes per sample of a run's schedule (0: it reuses nothing)."""
    if run.schedule is None or not run.schedule.reuses:
        return 0
    return run.schedule.cache_bytes_per_sample(find_blocks(model), next(model.parameters()).element_size())


def guidance(source: PipelineSource, given: float | None) -> float | None:
    """The call's guidance scale: the one given, else the pipeline's own default (None: it has none)."""
    if given is not None:
        return given
    parameter = inspect.signature(source.pipe.__call__).parameters.get("guidance_scale")
    return None if parameter is None else parameter.default
