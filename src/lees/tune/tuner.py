"""``lees tune``: every way to make the user's model faster, measured side by side, and the winner saved.

Stages, each with its progress bar: list the candidates that apply (:mod:`.candidates`, :mod:`.runs`),
sample every run from the same start noise and conditions in timed rounds (:mod:`.measure`, stored
and resumable), score each against the full model's samples (:mod:`.quality`), then one verdict line
per budget (:mod:`.verdict`), the frontier plot (:mod:`.plot`) and the first budget's winner saved as
the model's policy (:mod:`.policy`), which ``lees.enable(pipe, folder)`` applies.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..diffusion.solvers import STOCHASTIC_SOLVERS, check_solver, solvers_for
from ..evaluation.bootstrap import RESAMPLES, resample_indices
from ..evaluation.ode_reference import check_deterministic, ode_reference
from ..models.backbones import (
    EMBEDDED_DIR,
    EMBEDDED_DIT_DIR,
    check_unprompted,
    load_backbone,
    load_noise_scheduler,
    load_pipeline,
    prompted_pipeline,
)
from ..models.denoisers import check_prompted
from ..sampling.pipeline_call import BUILT_IN_PROMPTS, PipelineSource, Prompting
from ..schedules.tuned import TunedPolicy, check_step_counts, save_policies
from ..utils.files import atomic_write_text
from . import policy as policy_module
from .candidates import candidates, chosen, schedule_candidates
from .measure import Measured, claim_pieces, measure
from .quality import Replicates, Scorer
from .runs import FULL, Run, build_runs, own_solver, quiet_diffusers
from .verdict import Row, verdicts

DEFAULTS = {  # by quick
    False: {"n": 256, "steps": 50, "router_train_steps": 200},
    True: {"n": 64, "steps": 20, "router_train_steps": 100},
}
BUILT_IN = {"embedded": EMBEDDED_DIR, "embedded-dit": EMBEDDED_DIT_DIR}
MIN_ROUNDS = 3  # fewer timed rounds than this: each ratio is one or two paired measurements, said


@dataclass
class TuneConfig:
    """What ``lees tune`` measures (None: the defaults of a full or a ``quick`` tune, ``DEFAULTS``)."""

    model: str
    budgets: Sequence[float] = (0.6,)
    n: int | None = None
    steps: int | None = None
    batch_size: int = 16
    seed: int = 0
    guidance_scale: float | None = None  # None: 1 for a denoiser, the pipeline's own for a prompted one
    data: str | None = None
    quick: bool = False
    device: str = "cpu"
    router_train_steps: int | None = None  # optimisation steps of each budget's router
    resamples: int = RESAMPLES  # paired bootstrap resamples behind every interval
    reference: str = "run"  # "ode": also fidelity to the converged ODE solution from the same noise
    prompts: list[str] | None = None  # a text-to-image pipeline's prompts (None: lees' built-in list)
    negative_prompt: str | None = None
    height: int | None = None
    width: int | None = None
    schedules: Sequence[str] = ()  # schedule files as candidates too (a searched one: lees route)
    only: Sequence[str] | None = None  # the candidates to measure, by name (None: all); full always
    sampler: str | None = None  # the full model's solver (None: the one the model's folder names)

    def __post_init__(self) -> None:
        self.n = self.n or DEFAULTS[self.quick]["n"]
        self.steps = self.steps or DEFAULTS[self.quick]["steps"]
        self.router_train_steps = self.router_train_steps or DEFAULTS[self.quick]["router_train_steps"]
        if not self.budgets or not all(b > 0 for b in self.budgets):
            raise ValueError(
                f"budgets are latency ratios above 0 (0.6: 60% of the full model's time), not {self.budgets}"
            )
        if self.n < 2 or self.batch_size < 1 or self.resamples < 1:
            raise ValueError(
                f"need -n >= 2, --batch-size >= 1 and --resamples >= 1, not {self.n}, {self.batch_size} "
                f"and {self.resamples}"
            )
        if self.reference not in ("run", "ode"):
            raise ValueError(f"--reference must be run or ode, not {self.reference!r}")


@dataclass
class TuneResult:
    """The measured table, the verdict lines, and where the table, plot and policy were written."""

    rows: list[Row]
    lines: list[str]
    not_applicable: dict[str, str]
    table: Path
    plot: Path
    policy: Path | None = None
    winner: TunedPolicy | None = None  # the first budget's winner (None: nothing fits it)


def tune(config: TuneConfig, out: str | Path, save: bool = True) -> TuneResult:
    """Measure every applicable way to sample ``config.model`` faster against its full model; print the
    table and one verdict per budget; save the frontier plot, the table and the winner's policy.

    Args:
        config: the model, budgets and sampling settings (:class:`TuneConfig`).
        out: the folder for pieces (a tune run again there resumes), table, plot (and a built-in
            model's policy).
        save: save the winner as the model's policy (:func:`tune_steps` saves all its counts' at once).
    """
    from .plot import frontier  # matplotlib: imported when plotting, so `import lees` stays fast

    out = Path(out)
    if config.sampler is not None:  # one line before any weights load
        check_solver(load_noise_scheduler(config.model), config.sampler)
    model, scheduler, source = open_model(config)
    solver = reference_solver(config, scheduler, source)
    if config.reference == "ode":
        check_deterministic(solver, "the full model's solver")
    solvers = [solver, *(s for s in solvers_for(scheduler) if s != solver)]
    found = candidates(config.steps, solvers, budgets=config.budgets, quick=config.quick)
    found = chosen(found + schedule_candidates(config.schedules), config.only)
    sampled = source or model  # what every run samples through
    claim_pieces(sampled, config.n, config.batch_size, config.seed, out)  # before any router trains
    with quiet_diffusers():  # attaching each cache to check it would print diffusers' notices
        guidance = 1.0 if source or config.guidance_scale is None else config.guidance_scale
        runs, reasons = build_runs(
            found, model, scheduler, solver, config.steps, config.seed, guidance, config.router_train_steps,
            out, source,
        )  # fmt: skip
    print(f"lees tune: {len(runs) - 1} candidates against {solver} at {config.steps} steps, n={config.n}")
    if source is not None:
        print(f"through {type(source.pipe).__name__}'s own call, {source.prompting.describe()}")
    warn_few_rounds(config.n, config.batch_size)
    measured, failed = measure(sampled, scheduler, runs, config.n, config.batch_size, config.seed, out)
    ode = None
    if config.reference == "ode":
        ode, _ = ode_reference(model, scheduler, config.n, config.seed, out / "ode", guidance,
                               config.device)  # fmt: skip
    rows, boot = score(
        runs, measured, config.data, resample_indices(config.n, config.resamples, config.seed), ode
    )
    reasons = {**reasons, **failed}
    lines = [line for line, _ in verdicts(rows, config.budgets, boot)]
    table = atomic_write_text(out / "tune.json", json.dumps(_report(config, rows, reasons, lines), indent=1))
    title = f"lees tune {config.model}: {solver}@{config.steps}, {config.n} samples"
    plot = frontier(rows, config.budgets, out / "frontier.png", title)
    if config.data is not None:
        frontier(
            rows, config.budgets, out / "frontier-fd_clf.png", f"{title}, fd_clf to {config.data}", "fd_clf"
        )
    print_table(rows, reasons)
    print("\n".join(lines))
    result = TuneResult(rows, lines, reasons, table, plot, winner=winner(config, runs, rows, source))
    if save and result.winner is not None:
        result.policy = save_winners(config, [result.winner], out)
    return result


def warn_few_rounds(n: int, batch_size: int) -> None:
    """One line where the latency rests on fewer than ``MIN_ROUNDS`` timed rounds."""
    rounds = -(-n // batch_size)
    if rounds < MIN_ROUNDS:
        print(
            f"warning: latency from {rounds} timed round{'s' * (rounds > 1)} ({n} samples in batches of "
            f"{batch_size}): on a busy machine a ratio can be off by far more than any speed-up; more "
            "rounds: a larger -n or a smaller --batch-size"
        )


def tune_steps(config: TuneConfig, counts: Sequence[int], out: str | Path) -> list[TuneResult]:
    """:func:`tune` at each step count in ``counts`` (its pieces, table and plot in ``OUT/steps-N``), the
    winners saved together in one policy file: ``lees.enable(pipe, folder)`` runs, at each pipeline call,
    the winner of the call's step count (a count not tuned here runs none of them).

    Args:
        config: as for :func:`tune` (its ``steps`` is replaced by each count).
        counts: the reference step counts, e.g. (20, 30, 50).
        out: the folder: one subfolder per count (a tune run again there resumes), and a built-in
            model's policy.
    """
    check_step_counts(counts)
    results = [tune(replace(config, steps=n), Path(out) / f"steps-{n}", save=False) for n in counts]
    winners = [r.winner for r in results if r.winner is not None]
    if winners:
        path = save_winners(config, winners, Path(out))
        for result in results:
            result.policy = path if result.winner is not None else None
    return results


def open_model(config: TuneConfig) -> tuple[Any, Any, PipelineSource | None]:
    """The denoiser, its scheduler and, for a pipeline folder that takes prompts, the pipeline with the
    user's call that every run samples through (None: lees' own sampler on the bare denoiser)."""
    if prompted_pipeline(config.model):
        if config.reference == "ode":
            raise ValueError(
                "--reference ode samples the bare denoiser with lees' own solver: a text-to-image pipeline "
                "folder is scored against its own run only (--reference run)"
            )
        pipe = load_pipeline(config.model, config.device)
        prompting = Prompting(
            config.prompts or BUILT_IN_PROMPTS, config.negative_prompt, config.guidance_scale, config.height,
            config.width, built_in=not config.prompts,
        )  # fmt: skip
        source = PipelineSource(pipe, prompting)
        return source.denoiser, pipe.scheduler, source
    check_unprompted(config.model, prompts=config.prompts, negative_prompt=config.negative_prompt,
                     height=config.height, width=config.width)  # fmt: skip
    model = load_backbone(config.model, config.device)
    check_prompted(model)
    return model, load_noise_scheduler(config.model), None


def reference_solver(config: TuneConfig, scheduler: Any, source: PipelineSource | None) -> str:
    """The full model's solver: ``config.sampler`` (checked before the model loads: :func:`tune`; a
    pipeline's own call then runs with it swapped in, as the frontier's ``--sampler``), else the model's
    own."""
    return config.sampler or own_solver(scheduler, None if source else scheduler_class(config.model))


def scheduler_class(model: str) -> str | None:
    """The scheduler class the model's folder names (``_class_name``), None where none is found locally."""
    folder = BUILT_IN.get(model, Path(model).expanduser())
    for path in (folder / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json"):
        if path.is_file():
            return json.loads(path.read_text()).get("_class_name")
    return None


def score(
    runs: dict[str, Run],
    measured: dict[str, Measured],
    data: str | None,
    indices: np.ndarray,
    ode: torch.Tensor | None = None,
) -> tuple[list[Row], dict[str, Replicates]]:
    """One row per measured run: latency and FLOP ratios to the full model and its quality (fidelity to
    the full model, to the ``ode`` solution where given and the run is deterministic, fd_clf to
    ``data``), each figure with its interval; and by run, each figure on every resample of ``indices``."""
    full = measured[FULL]
    scorers = [
        Scorer(full.images, indices, data),
        *([] if ode is None else [Scorer(ode, indices, suffix="ode")]),
    ]
    rows, boot = [], {}
    for name, result in tqdm(measured.items(), desc="scoring", unit="run"):
        run = runs[name]
        row = {"name": name, "kind": run.kind, "solver": run.solver, "steps": run.steps,
               "latency_ratio": result.latency_ratio(full), "flop_ratio": run.flop_ratio,
               "seconds": sum(result.seconds)}  # fmt: skip
        if result.denoiser_seconds is not None:
            row["denoiser_share"] = result.denoiser_share()
        boot[name] = {}
        for k, scorer in enumerate(scorers):
            if k and run.solver in STOCHASTIC_SOLVERS:  # no ODE partner: its samples are not the noise's
                row |= {"psnr_ode": None, "ssim_ode": None, "fd_ode": None}
                continue
            scores, replicates = scorer(result.images)
            row |= scores
            boot[name] |= replicates
        rows.append(row)
    return sorted(rows, key=lambda r: r["latency_ratio"]), boot


def _report(config: TuneConfig, rows: list[Row], reasons: dict[str, str], lines: list[str]) -> dict[str, Any]:
    return {"config": asdict(config), "rows": rows, "not_applicable": reasons, "verdicts": lines}


TABLE_FIGURES = (  # what the table prints of a row: figure, label, format
    ("fd_full", "FD full ", ".3g"), ("psnr", "PSNR ", ".1f"), ("ssim", "SSIM ", ".3f"),
    ("fd_clf", "fd_clf ", ".3g"), ("fd_ode", "to the ODE solution: FD ", ".3g"), ("psnr_ode", "PSNR ", ".1f"),
    ("ssim_ode", "SSIM ", ".3f"),
)  # fmt: skip


def print_table(rows: list[Row], reasons: dict[str, str]) -> None:
    """The measured table (by latency), each figure's 95 % interval in brackets where it has one, then
    each candidate that could not run and why."""
    width = max(len(r["name"]) for r in rows)
    print(f"{'run':<{width}} {'latency':>8} {'FLOPs':>6}  quality [95% interval]")
    for r in rows:
        flops = "" if r["flop_ratio"] is None else f"{r['flop_ratio']:.2f}"
        quality = ", ".join(
            _with_interval(r, *figure) for figure in TABLE_FIGURES if r.get(figure[0]) is not None
        )
        share = f", denoiser {r['denoiser_share']:.0%} of the call" if r.get("denoiser_share") else ""
        print(f"{r['name']:<{width}} {r['latency_ratio']:>7.2f}x {flops:>6}  {quality}{share}")
    if rows[0].get("fd_full") is None:
        print("  (no FD: the FID Inception weights are not installed; scripts/setup.sh installs them)")
    for name, reason in reasons.items():
        print(f"  not run: {name}: {reason}")


def _with_interval(row: Row, metric: str, label: str, fmt: str) -> str:
    """``label`` and the figure, with its interval where the row has one (an FD to the full model that
    rounds below 0 shows as 0)."""
    clip = (lambda v: max(v, 0.0)) if metric.startswith("fd_") else (lambda v: v)  # noqa: E731
    text = f"{label}{clip(row[metric]):{fmt}}"
    if row.get(f"{metric}_interval") is not None:
        low, high = row[f"{metric}_interval"]
        text += f" [{clip(low):{fmt}}, {clip(high):{fmt}}]"
    return text


def winner(
    config: TuneConfig, runs: dict[str, Run], rows: list[Row], source: PipelineSource | None = None
) -> TunedPolicy | None:
    """The first budget's winner as a policy, with the pipeline call it was measured with (None, said,
    where nothing measured fits the budget)."""
    budget = config.budgets[0]
    ((_, best),) = verdicts(rows, [budget])  # the winner: the best on all samples
    if best is None:
        print(f"no policy for {config.steps} steps: nothing measured runs within {budget:g}x")
        return None
    call = None if source is None else source.prompting.settings()
    return policy_module.to_policy(runs[best["name"]], runs[FULL], rows, budget, call)


def save_winners(config: TuneConfig, winners: list[TunedPolicy], out: Path) -> Path:
    """Save the winners (one per step count) as the model's policy and say where."""
    folder = out if config.model in BUILT_IN else policy_module.policy_folder(config.model, out)
    path = save_policies(winners, folder)
    names = ", ".join(f"{w.name} for {w.reference_steps} steps" for w in winners)
    budget = config.budgets[0]
    print(f"policy ({names}; budget {budget:g}) saved to {path}; apply: lees.enable(pipe, {str(folder)!r})")
    return path
