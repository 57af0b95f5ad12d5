"""``lees route``: a learned schedule for a sampler and step count: the step router (run or reuse, trained
on the teacher's states), or with ``--objective search`` a run / reuse / forecast table searched by rollouts
against the full model's final samples within a measured latency budget (:mod:`lees.learn.search`)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from .options import (
    add_guidance,
    add_model,
    add_out,
    add_prompts,
    add_sampler,
    add_steps,
    command,
    guidance_scale,
    load_model,
    note_cache,
    prompt_list,
)

EPILOG = """examples:
  lees route --model embedded --steps 50 --target-flop-ratio 0.7 --train-steps 300 --out runs/router-0.70
  lees route --model embedded --steps 20 --sampler ddim --target-flop-ratio 0.5 --out runs/router-ddim
  lees schedule uniform-2 --model embedded --out runs/uniform2
  lees route --model embedded --schedule runs/uniform2/schedule.json --train-steps 50 --out runs/router-warm
  lees route --model embedded --schedule full --out runs/router-from-full   # every logit starts at "run"
  lees route --model embedded --scheduler DPMSolverMultistepScheduler --steps 20 --out runs/router-dpm
  lees route --model embedded-dit --sampler euler --steps 20 --target-flop-ratio 0.6 --out runs/route-dit
  lees route --model embedded-dit --sampler euler --steps 20 --forecast-order 1 --out runs/route-forecast
  lees route --model embedded-dit --sampler euler --steps 30 --guidance-scale 2 --objective search \
      --target-latency-ratio 0.5 --trajectories 4 --max-rollouts 12 --out runs/search-dit
  lees route --model embedded-dit --sampler unipc --steps 10 --reference-run dpm++@20 --guidance-scale 2 \
      --objective search --target-latency-ratio 0.35 --trajectories 4 --max-rollouts 12 --out runs/unipc
  lees route --model embedded-dit --sampler euler --steps 30 --guidance-scale 2 --objective probe \
      --target-latency-ratio 0.5 --trajectories 4 --max-rollouts 16 --out runs/probe-dit
  lees route --model embedded-dit --steps 10 20 --train-steps 20 --out runs/route-steps   # one per count
  lees route --model path/to/sd --prompts "a red car" "a cat on a sofa" --steps 25 --target-flop-ratio 0.6
  lees route --model path/to/sd-unet --conditions prompts.safetensors --steps 25 --out runs/route-sd
  (a text-to-image pipeline folder: the teacher runs are its own call on --prompts, guidance as it does it)
  (the columns are the model calls of one run: lees.pipeline_timesteps(scheduler); Heun calls twice a step)
  (the default start is the baseline within the budget: DeepCache for a UNet, else uniform reuse)
  (without --out a diffusers folder gets the schedule in its lees/ subfolder)
  (several --steps: a router per count in OUT/steps-N, and OUT/policy.json holding them all, which
   lees.enable(pipe, OUT) applies: each pipe() call runs the schedule of its num_inference_steps)
(a few minutes on a CPU for the embedded model; the schedule reuses, never drops, a block's output)
(search, probe: the latency of each action is timed first; every rollout's score goes to
 OUT/search_state.json (OUT/probe_state.json), so the same command again continues an interrupted search;
 about 15 min for the DiT at 16 samples and 300 rollouts on 2 CPU cores)
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "route", run, "learn a run-or-reuse schedule (the step router)", EPILOG)
    add_model(p)
    add_out(p)
    add_steps(p, "sampler steps of the schedule (50); several (20 30 50): a schedule for each", several=True)
    solver = "a lees solver of the model's family (flow matching: euler, heun, dpm++, unipc; default: the "
    add_sampler(p, default=None, help=solver + "scheduler the model comes with)")
    p.add_argument(
        "--scheduler", default=None, metavar="CLASS",
        help="a diffusers scheduler class on the model's scheduler config, e.g. DPMSolverMultistepScheduler",
    )  # fmt: skip
    add_guidance(p)
    add_prompts(p)
    p.add_argument(
        "--conditions", type=Path, default=None, metavar="FILE.safetensors",
        help="keyword inputs of the denoiser by name (e.g. encoder_hidden_states, pooled_projections), "
        "each (1 or P, ...): trajectory i takes row i mod P (prompt embeddings, no text encoder needed)",
    )  # fmt: skip
    p.add_argument(
        "--target-flop-ratio", type=float, default=0.7,
        help="the whole model's FLOPs wanted, against the full model's (0.7): the table spends it to within "
        "one block-step below, whatever the start; 0 for lambda mode",
    )  # fmt: skip
    p.add_argument("--target-ratio", dest="target_flop_ratio", type=float, default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)  # the old name  # fmt: skip
    p.add_argument(
        "--lambda", dest="lam", type=float, default=0.5,
        help="weight of the compute term (0.5); in budget mode its start if the start runs over the budget",
    )  # fmt: skip
    p.add_argument("--train-steps", type=int, default=300, help="optimisation steps (300)")
    p.add_argument(
        "--batch-size", type=int, default=None,
        help="the router's training batch (8); search, probe: the batch you sample, at which the actions "
        "and the found schedule are timed (default: --trajectories)",
    )  # fmt: skip
    p.add_argument(
        "--trajectories", type=int, default=None,
        help="teacher sampling runs to train on (32); search: the samples each rollout scores (16, on seeds "
        "9001 + --seed: no evaluation's)",
    )  # fmt: skip
    add_search_options(p)
    p.add_argument(
        "--schedule",
        default="baseline",
        help="start from: baseline (default: DeepCache for a UNet, else uniform reuse; search: the best "
        "uniform tables), full (all run), or a schedule JSON for the same steps (search: its table, refined)",
    )
    add_router_options(p)
    p.add_argument(
        "--objective",
        choices=("step", "kl", "rollout", "search", "probe"),
        default="step",
        help="step (default): one step at the teacher's states, caches as scheduled (about 2 min here); "
        "kl: the same, steps weighted as DDPM's ELBO (the last steps most); "
        "rollout: the student's own sampling runs against the teacher's (slower); "
        "search: run / reuse / forecast tables scored by their final samples against the full model's, "
        "within --target-latency-ratio (no gradients; lees' own sampler); probe: the same for an adaptive "
        "schedule's thresholds (a block runs where block 0's output moved past them); see docs/reuse.md",
    )


def add_router_options(p: argparse.ArgumentParser) -> None:
    """How the step router's decisions are trained and what a block that does not run keeps."""
    p.add_argument("--estimator", choices=("ste", "soft"), default="ste", help="gradient of the decisions")
    p.add_argument(
        "--forecast-order", type=int, choices=(0, 1, 2), default=0,
        help="1 or 2: a block that does not run also learns to reuse or forecast its residual (a line or "
        "parabola through its last runs; step and kl objectives); 0 (default): run or reuse",
    )  # fmt: skip


def add_search_options(p: argparse.ArgumentParser) -> None:
    """The budget and effort of ``--objective search``."""
    p.add_argument(
        "--target-latency-ratio", type=float, default=0.5,
        help="search: the schedule's latency over the full model's, each action's cost measured first (0.5)",
    )  # fmt: skip
    p.add_argument("--max-rollouts", type=int, default=300, help="search: schedules scored at most (300)")
    p.add_argument(
        "--reference", choices=("run", "ode", "both"), default="run",
        help="search: score rollouts against the full model's run, the converged ODE solution from the same "
        "noise and labels (DPM-Solver++ 2M at 100 steps), or both (mean PSNR) (run)",
    )  # fmt: skip
    p.add_argument(
        "--reference-run", default=None, metavar="SOLVER@STEPS",
        help="search: the full model's run scored and timed against when it is not the search's own "
        "--sampler at --steps: the solver chosen with the table (e.g. --sampler unipc --steps 10 "
        "--reference-run dpm++@20 --target-latency-ratio 0.35: a share of DPM-Solver++ at 20 steps)",
    )  # fmt: skip
    p.add_argument(
        "--data", default=None,
        help="search: also keep fd_clf to this dataset (e.g. fashion-mnist) from rising, to first order, "
        "through the full model's feature statistics (lees.learn.fd_guard) (none)",
    )  # fmt: skip
    p.add_argument(
        "--guard-weight", type=float, default=50.0,
        help="search: dB of score taken per unit of fd_clf's first-order rise, with --data (50)",
    )  # fmt: skip
    p.add_argument(
        "--fd-weight", type=float, default=0.0,
        help="search: dB of score taken per unit of FD to the full model's samples in the classifier's "
        "features, estimated on the training batch (lees.learn.fd_guard), with --data (0: none)",
    )  # fmt: skip
    p.add_argument("--probe-warmup", type=int, default=3, help="probe: calls run in full first (3)")
    p.add_argument(
        "--probe-base", default=None, metavar="SCHEDULE",
        help="probe: a schedule file (e.g. a search's at a smaller budget) whose table the probe adds runs "
        "to, block 0 run at every call (default: the warm-up, then forecasts)",
    )  # fmt: skip
    p.add_argument(
        "--probe-segments", type=int, nargs=2, default=(5, 2), metavar=("CALLS", "BLOCKS"),
        help="probe: stretches of the calls after the warm-up and of the blocks, each with its own "
        "threshold (5 2)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> None:
    """Learn a run-or-reuse schedule (the step router) for a frozen model on its sampler's own trajectory;
    with several ``--steps``, one per count and a policy file that picks one per pipeline call."""
    from ..schedules.saving import target_folder

    if args.out is None and not Path(args.model).is_dir():
        raise ValueError("name --out (or give --model a diffusers folder to write its lees/ subfolder)")
    from ..schedules.tuned import check_step_counts

    counts = args.steps
    check_step_counts(counts)
    searched = args.objective in ("search", "probe")
    scored = {"--data": args.data is not None, "--guard-weight": args.guard_weight != 50.0,
              "--reference": args.reference != "run",
              "--reference-run": args.reference_run is not None,
              "--fd-weight": args.fd_weight != 0}  # fmt: skip
    if not searched and any(scored.values()):
        given = ", ".join(name for name, set_ in scored.items() if set_)
        raise ValueError(f"{given} score a search's rollouts: add --objective search or probe")
    model, scheduler, source = route_model(args)
    if searched:
        if len(counts) != 1:
            raise ValueError(f"--objective {args.objective} takes one --steps count")
        return run_search(args, counts[0], model, scheduler, source)
    out = target_folder(args.out if args.out is not None else Path(args.model))  # lees/ of a diffusers folder
    if len(counts) == 1:
        route_one(args, counts[0], model, scheduler, source, out)
        return
    solver = policy_solver(args, scheduler)
    schedules = [route_one(args, n, model, scheduler, source, out / f"steps-{n}") for n in counts]
    path = save_route_policy(dict(zip(counts, schedules, strict=True)), solver, args, out)
    print(f"policy (a router schedule for each of {', '.join(map(str, counts))} steps, the {solver} solver) "
          f"saved to {path}; apply: lees.enable(pipe, {str(out)!r})")  # fmt: skip


def route_one(args: argparse.Namespace, steps: int, model, scheduler, source, out: Path):
    """Train the router at ``steps``, save its schedule, map and log in ``out`` and say so; returns it."""
    from ..engine.blocks import find_blocks
    from ..learn.pipeline_teacher import pipeline_teacher
    from ..learn.router import STARTS, RouterConfig, train_router
    from ..reporting.plots import schedule_map
    from ..schedules.saving import save_pretrained
    from ..schedules.schedule import Schedule

    trajectories = args.trajectories or 32
    teacher = None if source is None else pipeline_teacher(source, steps, trajectories, args.seed)
    config = RouterConfig(
        steps=steps, sampler=args.sampler, timesteps=args.timesteps,
        guidance_scale=1.0 if args.conditions or teacher else guidance_scale(args, model),
        target_flop_ratio=args.target_flop_ratio or None, lam=args.lam, train_steps=args.train_steps,
        batch_size=8 if args.batch_size is None else args.batch_size, trajectories=trajectories,
        estimator=args.estimator,
        objective=args.objective, forecast_order=args.forecast_order, seed=args.seed,
    )  # fmt: skip
    blocks = find_blocks(model)
    start = args.schedule if args.schedule in STARTS else Schedule.load(args.schedule, blocks)
    log = out / "train_log.jsonl"
    conditions = load_conditions(args.conditions, model)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", UserWarning)
        result = train_router(model, scheduler, config, blocks, progress=True, log_path=log, start=start,
                              conditions=conditions, teacher=teacher)  # fmt: skip
    for warning in said:  # the budget warning as a line of its own, not a source location
        print(f"warning: {warning.message}", file=sys.stderr)
    schedule = result.schedule
    memory = note_cache(schedule, blocks, model)
    path = save_pretrained(schedule, out, model=model, model_spec=args.model, objective="router")
    png = schedule_map(schedule, path.parent / "schedule.png")
    solver = schedule.settings["sampler"] or schedule.settings["scheduler"]
    guided = f", guidance scale {config.guidance_scale:g}" if config.guidance_scale != 1.0 else ""
    kept = "reuses" if not schedule.forecasts else f"reuses or forecasts (order {schedule.forecast_order})"
    if teacher is not None:
        guided = f", teacher runs through the pipeline's own call ({source.prompting.describe()})"
    print(
        f"router on {schedule.num_steps} model calls of {solver}{guided} in {result.seconds:.0f} s, started "
        f"from {start_name(schedule)}, chosen by its {config.objective} objective (distance to the full "
        "model's run; no fd_clf or FID): runs "
        f"{schedule.executed_ratio:.1%} of the blocks, {schedule.flop_ratio:.1%} of the FLOPs, {kept} the "
        f"rest{memory}; wrote {path}, {png} and {log}"
    )
    return schedule


def policy_solver(args: argparse.Namespace, scheduler) -> str:
    """The solver a policy of several step counts runs (a name of the model family's registry): the
    ``--sampler``, else the scheduler the model comes with; refused for a ``--scheduler`` class or
    ``--timesteps``, which a pipeline call's step count alone does not give."""
    from ..diffusion.solvers import solvers_for
    from ..tune.runs import own_solver

    if args.scheduler or args.timesteps:
        raise ValueError(
            "several --steps take the pipeline's own grid per count: drop --scheduler and --timesteps"
        )
    solver = args.sampler or own_solver(scheduler)
    if solver not in solvers_for(scheduler):
        known = ", ".join(solvers_for(scheduler))
        raise ValueError(f"several --steps need a --sampler of the model's family ({known}), not {solver}")
    return solver


def save_route_policy(schedules: dict, solver: str, args: argparse.Namespace, out: Path) -> Path:
    """The schedules (by step count) as one tuned-policy file in ``out``: ``lees.enable(pipe, out)`` runs,
    at each call, the schedule of its step count (with ``solver``)."""
    from ..schedules.tuned import TunedPolicy, save_policies

    budget = args.target_flop_ratio or None
    policies = [
        TunedPolicy(
            "schedule",
            f"router@{n}",
            solver,
            n,
            schedule,
            reference={
                "solver": solver,
                "steps": n,
                "budget": budget,
                "objective": "router",
                "guidance_scale": schedule.settings.get("guidance_scale", 1.0),
            },
        )  # fmt: skip
        for n, schedule in schedules.items()
    ]
    return save_policies(policies, out)


def run_search(args: argparse.Namespace, steps: int, model, scheduler, source) -> None:
    """``--objective search`` (:func:`lees.learn.search.search_schedule`) or ``probe``
    (:func:`lees.learn.probe_search.search_probe`), saved as route saves a schedule, its state beside it."""
    from ..learn.probe_search import ProbeConfig, search_probe
    from ..learn.search import SearchConfig, check_search, search_schedule
    from ..schedules.saving import save_pretrained, target_folder

    if source is not None or args.conditions is not None or args.timesteps is not None:
        raise ValueError(f"--objective {args.objective} samples with lees' own sampler: drop --prompts, "
                         "--conditions and --timesteps")  # fmt: skip
    settings = dict(
        steps=steps, sampler=args.sampler, guidance_scale=guidance_scale(args, model),
        target_latency_ratio=args.target_latency_ratio, samples=args.trajectories or 16,
        seed=args.seed, max_rollouts=args.max_rollouts, reference=args.reference, guard_data=args.data,
        guard_weight=args.guard_weight, reference_run=args.reference_run, timing_batch=args.batch_size,
        fd_weight=args.fd_weight,
    )  # fmt: skip
    probe = args.objective == "probe"
    if args.schedule != "baseline" and (probe or args.schedule == "full"):
        raise ValueError("--schedule starts a search from a schedule file (probe: --probe-base)")
    if probe:
        segments, groups = args.probe_segments
        config = ProbeConfig(**settings, warmup=args.probe_warmup, segments=segments, groups=groups,
                             base=args.probe_base)  # fmt: skip
    else:
        config = SearchConfig(**settings, start=None if args.schedule == "baseline" else args.schedule)
    check_search(model, scheduler, config)  # before the folder is made
    out = target_folder(args.out if args.out is not None else Path(args.model))
    out.mkdir(parents=True, exist_ok=True)
    state = out / f"{args.objective}_state.json"
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", UserWarning)
        result = (search_probe if probe else search_schedule)(model, scheduler, config, state_path=state)
    for warning in said:
        print(f"warning: {warning.message}", file=sys.stderr)
    path = save_pretrained(result.schedule, out, model=model, model_spec=args.model, objective=args.objective)
    print(search_line(result, config, path, state))


def search_line(result, config, path: Path, state: Path) -> str:
    """What a search found, in one line: latency (modelled and measured), score, moves, where it wrote."""
    from ..learn.search import REFERENCES
    from ..reporting.plots import schedule_map

    schedule = result.schedule
    png = schedule_map(schedule, path.parent / "schedule.png")
    moves = ", ".join(m for m in schedule.settings["moves"][1:]) or "none"
    measured = (
        "" if result.measured_ratio is None else f"measured {result.measured_ratio:.3f} alone against it; "
    )
    at = "" if config.reference_run is None else f" at {config.reference_run}"
    change = schedule.settings.get("train_fd_change")
    guard = "" if change is None else f", less {config.guard_weight:g} x fd_clf's rise {change:+.3f}"
    distance = schedule.settings.get("train_fd_full")
    guard += "" if distance is None else f", less {config.fd_weight:g} x FD to full {distance:.3f}"
    what = (
        f"an adaptive table (probe block 0, on {config.base or f'{config.warmup} warm-up calls'}, "
        f"thresholds per {config.segments} call and {config.groups} block stretches: "
        f"{schedule.settings['theta']} in log)"
        if schedule.adaptive
        else f"runs {schedule.executed_ratio:.1%} of the blocks, forecast order {schedule.forecast_order}"
    )
    return (
        f"search on {schedule.num_steps} calls of {config.sampler}, guidance scale "
        f"{config.guidance_scale:g}: latency {result.latency_ratio:.3f} of the full model's{at} (modelled "
        f"from timed actions; {measured}asked {config.target_latency_ratio:g}), training score "
        f"{result.psnr:.2f} dB (PSNR of the final samples against {REFERENCES[config.reference]}{guard}; "
        f"start {result.start_psnr:.2f} dB, {config.samples} samples), {schedule.settings['rollouts']} "
        f"rollouts; moves: {moves}; {what}; wrote {path}, {png} and {state}"
    )


def route_model(args: argparse.Namespace):
    """The denoiser, its scheduler and, for a text-to-image pipeline folder, the pipeline with the call the
    teacher runs through (None: lees' own sampler, with ``--conditions`` where the model needs them)."""
    from ..models.backbones import load_pipeline, prompted_pipeline
    from ..models.denoisers import PROMPTS_NEEDED, needs_prompts
    from ..sampling.pipeline_call import BUILT_IN_PROMPTS, PipelineSource, Prompting

    call = (args.prompts, args.negative_prompt, args.height, args.width)
    if not prompted_pipeline(args.model):
        if any(v is not None for v in call):
            raise ValueError(
                "--prompts, --negative-prompt, --height and --width need a pipeline folder with its text "
                f"encoders (a model_index.json naming them); {args.model} has none"
            )
        model = load_model(args, args.device)
        if needs_prompts(model) and args.conditions is None:
            raise ValueError(PROMPTS_NEEDED.format(type(model).__name__))
        return model, route_scheduler(args), None
    if args.timesteps is not None or args.conditions is not None:
        raise ValueError("a text-to-image pipeline sets its own timesteps and embeds --prompts: drop "
                         "--timesteps and --conditions")  # fmt: skip
    pipe = load_pipeline(args.model, args.device)
    if args.sampler or args.scheduler:
        pipe.scheduler = route_scheduler(args)
    prompts = prompt_list(args.prompts)
    prompting = Prompting(prompts or BUILT_IN_PROMPTS, args.negative_prompt, args.guidance_scale, args.height,
                          args.width, built_in=not prompts)  # fmt: skip
    source = PipelineSource(pipe, prompting)
    return source.denoiser, pipe.scheduler, source


def route_scheduler(args: argparse.Namespace):
    """The scheduler the teacher samples with: the model's noise process for a named ``--sampler``, a
    ``--scheduler`` class on its config, else the scheduler the model comes with."""
    from ..diffusion.solvers import named_scheduler
    from ..models.backbones import load_noise_scheduler, load_pipeline_scheduler

    if args.sampler and args.scheduler:
        raise ValueError("name a --sampler or a --scheduler, not both")
    if args.sampler:
        return load_noise_scheduler(args.model)
    if args.scheduler:
        return named_scheduler(load_noise_scheduler(args.model), args.scheduler)
    return load_pipeline_scheduler(args.model)


def load_conditions(path: Path | None, model) -> dict | None:
    """The denoiser's keyword inputs in a safetensors file, floats in the model's dtype; None without."""
    if path is None:
        return None
    from safetensors.torch import load_file

    from ..models.denoisers import model_device, model_dtype

    if not path.is_file():
        raise ValueError(f"no conditions file {path}")
    tensors = load_file(str(path), device=str(model_device(model)))
    return {k: v.to(model_dtype(model)) if v.is_floating_point() else v for k, v in tensors.items()}


def start_name(schedule) -> str:
    """The start a router schedule's settings record, in words: 'run everything' or its source."""
    start = schedule.settings.get("start")
    if start is None:
        return "run everything"
    return start["source"] + (f" every {start['interval']} steps" if "interval" in start else "")
