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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..diffusion.solvers import solvers_for
from ..models.backbones import (
    EMBEDDED_DIR,
    EMBEDDED_DIT_DIR,
    load_backbone,
    load_noise_scheduler,
    load_pipeline,
    prompted_pipeline,
)
from ..models.denoisers import check_prompted
from ..sampling.pipeline_call import BUILT_IN_PROMPTS, PipelineSource, Prompting
from ..utils.files import atomic_write_text
from . import policy as policy_module
from .candidates import candidates
from .measure import Measured, claim_pieces, measure
from .plot import frontier
from .quality import Scorer
from .runs import FULL, Run, build_runs, own_solver, quiet_diffusers
from .verdict import Row, verdicts

DEFAULTS = {  # by quick
    False: {"n": 256, "steps": 50, "router_train_steps": 200},
    True: {"n": 64, "steps": 20, "router_train_steps": 100},
}
BUILT_IN = {"embedded": EMBEDDED_DIR, "embedded-dit": EMBEDDED_DIT_DIR}


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
    prompts: list[str] | None = None  # a text-to-image pipeline's prompts (None: lees' built-in list)
    negative_prompt: str | None = None
    height: int | None = None
    width: int | None = None

    def __post_init__(self) -> None:
        self.n = self.n or DEFAULTS[self.quick]["n"]
        self.steps = self.steps or DEFAULTS[self.quick]["steps"]
        self.router_train_steps = self.router_train_steps or DEFAULTS[self.quick]["router_train_steps"]
        if not self.budgets or not all(b > 0 for b in self.budgets):
            raise ValueError(
                f"budgets are latency ratios above 0 (0.6: 60% of the full model's time), not {self.budgets}"
            )
        if self.n < 2 or self.batch_size < 1:
            raise ValueError(f"need -n >= 2 and --batch-size >= 1, not {self.n} and {self.batch_size}")


@dataclass
class TuneResult:
    """The measured table, the verdict lines, and where the table, plot and policy were written."""

    rows: list[Row]
    lines: list[str]
    not_applicable: dict[str, str]
    table: Path
    plot: Path
    policy: Path | None = None


def tune(config: TuneConfig, out: str | Path) -> TuneResult:
    """Measure every applicable way to sample ``config.model`` faster against its full model; print the
    table and one verdict per budget; save the frontier plot, the table and the winner's policy.

    Args:
        config: the model, budgets and sampling settings (:class:`TuneConfig`).
        out: the folder for pieces (a tune run again there resumes), table, plot (and a built-in
            model's policy).
    """
    out = Path(out)
    model, scheduler, source = open_model(config)
    solver = own_solver(scheduler, None if source else scheduler_class(config.model))
    solvers = [solver, *(s for s in solvers_for(scheduler) if s != solver)]
    found = candidates(config.steps, solvers, budgets=config.budgets, quick=config.quick)
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
    measured, failed = measure(sampled, scheduler, runs, config.n, config.batch_size, config.seed, out)
    rows = score(runs, measured, config.data)
    reasons = {**reasons, **failed}
    lines = [line for line, _ in verdicts(rows, config.budgets)]
    table = atomic_write_text(out / "tune.json", json.dumps(_report(config, rows, reasons, lines), indent=1))
    title = f"lees tune {config.model}: {solver}@{config.steps}, {config.n} samples"
    plot = frontier(rows, config.budgets, out / "frontier.png", title)
    if config.data is not None:
        frontier(
            rows, config.budgets, out / "frontier-fd_clf.png", f"{title}, fd_clf to {config.data}", "fd_clf"
        )
    print_table(rows, reasons)
    print("\n".join(lines))
    result = TuneResult(rows, lines, reasons, table, plot)
    result.policy = save_winner(config, runs, rows, out, source)
    return result


def open_model(config: TuneConfig) -> tuple[Any, Any, PipelineSource | None]:
    """The denoiser, its scheduler and, for a pipeline folder that takes prompts, the pipeline with the
    user's call that every run samples through (None: lees' own sampler on the bare denoiser)."""
    if prompted_pipeline(config.model):
        pipe = load_pipeline(config.model, config.device)
        prompting = Prompting(
            config.prompts or BUILT_IN_PROMPTS, config.negative_prompt, config.guidance_scale, config.height,
            config.width, built_in=not config.prompts,
        )  # fmt: skip
        source = PipelineSource(pipe, prompting)
        return source.denoiser, pipe.scheduler, source
    if config.prompts or config.negative_prompt or config.height or config.width:
        raise ValueError(
            f"--prompts, --negative-prompt, --height and --width need a pipeline folder with its text "
            f"encoders (a model_index.json naming them); {config.model} has none"
        )
    model = load_backbone(config.model, config.device)
    check_prompted(model)
    return model, load_noise_scheduler(config.model), None


def scheduler_class(model: str) -> str | None:
    """The scheduler class the model's folder names (``_class_name``), None where none is found locally."""
    folder = BUILT_IN.get(model, Path(model).expanduser())
    for path in (folder / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json"):
        if path.is_file():
            return json.loads(path.read_text()).get("_class_name")
    return None


def score(runs: dict[str, Run], measured: dict[str, Measured], data: str | None) -> list[Row]:
    """One row per measured run: latency and FLOP ratios to the full model and its quality."""
    full = measured[FULL]
    scorer = Scorer(full.images, data)
    rows = []
    for name, result in tqdm(measured.items(), desc="scoring", unit="run"):
        run = runs[name]
        rows.append({
            "name": name, "kind": run.kind, "solver": run.solver, "steps": run.steps,
            "latency_ratio": result.latency_ratio(full), "flop_ratio": run.flop_ratio,
            "seconds": sum(result.seconds), **scorer(result.images),
        })  # fmt: skip
        if result.denoiser_seconds is not None:
            rows[-1]["denoiser_share"] = result.denoiser_share()
    return sorted(rows, key=lambda r: r["latency_ratio"])


def _report(config: TuneConfig, rows: list[Row], reasons: dict[str, str], lines: list[str]) -> dict[str, Any]:
    return {"config": asdict(config), "rows": rows, "not_applicable": reasons, "verdicts": lines}


def print_table(rows: list[Row], reasons: dict[str, str]) -> None:
    """The measured table (by latency), then each candidate that could not run and why."""
    width = max(len(r["name"]) for r in rows)
    share = "denoiser" if "denoiser_share" in rows[0] else ""
    head = f"{'run':<{width}} {'latency':>8} {'FLOPs':>6} {'FD full':>9} {'PSNR':>6} {'SSIM':>6} {share}"
    print(head.rstrip())
    for r in rows:
        flops = "" if r["flop_ratio"] is None else f"{r['flop_ratio']:.2f}"
        fd = "" if r["fd_full"] is None else f"{max(r['fd_full'], 0.0):.3g}"  # the full row's rounds to 0
        extra = f"  fd_clf {r['fd_clf']:.3g}" if "fd_clf" in r else ""
        extra += f" {r['denoiser_share']:>8.0%}" if "denoiser_share" in r else ""
        quality = f"{fd:>9} {r['psnr']:>6.1f} {r['ssim']:>6.3f}{extra}"
        print(f"{r['name']:<{width}} {r['latency_ratio']:>7.2f}x {flops:>6} {quality}")
    if rows[0]["fd_full"] is None:
        print("  (no FD: the FID Inception weights are not installed; scripts/setup.sh installs them)")
    for name, reason in reasons.items():
        print(f"  not run: {name}: {reason}")


def save_winner(
    config: TuneConfig, runs: dict[str, Run], rows: list[Row], out: Path, source: PipelineSource | None = None
) -> Path | None:
    """Save the first budget's winner as the model's policy (with the pipeline call it was measured
    with); say where (None: nothing fits the budget)."""
    budget = config.budgets[0]
    ((_, best),) = verdicts(rows, [budget])
    if best is None:
        print(f"no policy saved: nothing measured runs within {budget:g}x")
        return None
    call = None if source is None else source.prompting.settings()
    policy = policy_module.to_policy(runs[best["name"]], runs[FULL], rows, budget, call)
    path = policy.save(out if config.model in BUILT_IN else policy_module.policy_folder(config.model, out))
    where = str(path.parent)
    print(f"policy ({best['name']}, budget {budget:g}) saved to {path}; apply: lees.enable(pipe, {where!r})")
    return path
