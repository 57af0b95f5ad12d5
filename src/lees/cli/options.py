"""The options several commands share, declared once, and what commands do with them.

Library modules are imported inside the functions that need them, so ``lees --help`` stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

DTYPES = ("float32", "float16", "bfloat16")
# lees.diffusion.solvers.SOLVER_NAMES (spelled out: --help does not import diffusers); which of them a
# model takes depends on its family (flow matching: euler, heun, dpm++, unipc).
SAMPLERS = ("ddpm", "ddim", "dpm++", "unipc", "euler", "euler-a", "heun", "pndm")

METRICS = ("clf", "inception", "clf_raw")


def command(
    sub: argparse._SubParsersAction,
    name: str,
    run: Callable[[argparse.Namespace], None],
    help: str,
    epilog: str,
) -> argparse.ArgumentParser:
    """A subcommand that calls ``run``, described by its docstring, with its examples below the options."""
    p = sub.add_parser(
        name,
        help=help,
        description=run.__doc__,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=run)
    return p


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")


def add_model(p: argparse.ArgumentParser, default: str | None = "embedded") -> None:
    """``--model``, ``--device``, ``--seed`` and ``--dtype``."""
    when = "the default" if default == "embedded" else "not the default here: name a model"
    p.add_argument(
        "--model",
        default=default,
        help=f"embedded (the Fashion-MNIST DDPM shipped with lees; {when}), embedded-dit (its "
        "class-conditional flow-matching DiT), arch:NAME (random weights, e.g. arch:ddpm-cifar10), a local "
        "diffusers folder, or a hub id",
    )
    add_device(p)
    p.add_argument("--seed", type=int, default=0, help="seed for random weights and sampling (default: 0)")
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="cast the model (and its autoencoder) to this dtype; inputs follow it, the sampler's state "
        "and the gate math stay float32 (default: float32)",
    )


def add_out(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--out", type=Path, required=required, default=None, help="folder to write results to")


def add_resize(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--resize",
        action="store_true",
        help="resize the images to the model's channels and size (without it a mismatch is an error)",
    )


def add_steps(p: argparse.ArgumentParser, help: str, default: int | None = 50, several: bool = False) -> None:
    """``--steps``: sampler steps (never optimisation steps: those are ``--train-steps``); ``several``:
    one count or more (a list, even of one)."""
    if several:
        default = None if default is None else [default]
    p.add_argument("--steps", type=int, nargs="+" if several else None, default=default, help=help)


def add_sampler(
    p: argparse.ArgumentParser, default: str | None = "ddpm", timesteps: bool = True, help: str | None = None
) -> None:
    """``--sampler`` (and ``--timesteps``, a custom descending list); ``help`` replaces the default's."""
    p.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default=default,
        help=help
        or (
            f"sampler (default: {default})"
            if default
            else "solver (default: the schedule's, else ddpm; euler for a flow-matching model); "
            "flow-matching models take euler, heun, dpm++, unipc"
        ),
    )
    if timesteps:
        p.add_argument(
            "--timesteps",
            type=timestep_list,
            default=None,
            metavar="T1,T2,...",
            help="sample on these descending timesteps instead of --steps evenly spaced ones "
            "(e.g. an Align-Your-Steps schedule: 999,850,736,645,545,455,343,233,124,24; floats for "
            "flow matching: 1000,750.5,500,250)",
        )


def add_guidance(p: argparse.ArgumentParser, pipelines: bool = False) -> None:
    """``--guidance-scale``: classifier-free guidance of a class-conditional model (``pipelines``: and of
    a text-to-image pipeline folder's call)."""
    also = (
        "; of a text-to-image pipeline folder: its call's (default: the pipeline's own)" if pipelines else ""
    )
    p.add_argument(
        "--guidance-scale", type=float, default=None,
        help="classifier-free guidance of a class-conditional model with a null class (labels drawn per "
        f"sample; one batched call on [cond, null] per step); default 2 for such a model, else 1 "
        f"(none){also}",
    )  # fmt: skip


def add_verdict_options(p: argparse.ArgumentParser) -> None:
    """``--resamples`` and ``--reference``: the paired bootstrap behind every verdict, and whether
    fidelity is also taken to the converged ODE solution (``lees frontier``, ``lees tune``)."""
    p.add_argument(
        "--resamples", type=int, default=200,
        help="paired bootstrap resamples of the sample indices behind every 95%% interval and verdict (200)",
    )  # fmt: skip
    p.add_argument(
        "--reference", choices=("run", "ode"), default="run",
        help="ode: also fidelity to the converged ODE solution from the same noise and label "
        "(DPM-Solver++ 2M at 100 steps, checked against Euler at 200; deterministic samplers only)",
    )  # fmt: skip


def add_prompts(p: argparse.ArgumentParser) -> None:
    """``--prompts``, ``--negative-prompt``, ``--height``, ``--width``: the call of a text-to-image
    pipeline folder, which lees then samples through (its text encoders, guidance and VAE)."""
    p.add_argument(
        "--prompts", nargs="+", default=None, metavar="PROMPT",
        help="a text-to-image pipeline folder's prompts: a file (one per line) or the prompts themselves; "
        "sample i takes prompt i mod P (default: lees' built-in list of varied prompts, said in the output)",
    )  # fmt: skip
    p.add_argument("--negative-prompt", default=None, help="the pipeline call's negative prompt (none)")
    p.add_argument("--height", type=int, default=None, help="image height in pixels (the pipeline's own)")
    p.add_argument("--width", type=int, default=None, help="image width in pixels (the pipeline's own)")


def prompt_list(given: list[str] | None) -> list[str] | None:
    """``--prompts``: one existing file's lines (blank ones dropped), else the prompts as given."""
    from pathlib import Path

    if given and len(given) == 1 and Path(given[0]).is_file():
        lines = [line.strip() for line in Path(given[0]).read_text().splitlines() if line.strip()]
        if not lines:
            raise ValueError(f"--prompts {given[0]} holds no prompt")
        return lines
    return given


def guidance_scale(args: argparse.Namespace, model) -> float:
    """``--guidance-scale``, or its default for ``model`` (see ``default_guidance_scale``)."""
    from ..models.denoisers import default_guidance_scale

    return default_guidance_scale(model, args.guidance_scale)


def timestep_list(text: str) -> list[int | float]:
    """Comma-separated timesteps: integers (DDPM-like models) or floats (flow matching's lie in (0, 1000])."""
    try:
        return [int(t) if t.strip().lstrip("-").isdigit() else float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None


def add_metric(p: argparse.ArgumentParser, note: str) -> None:
    p.add_argument(
        "--metric", choices=METRICS, nargs="+", default=None,
        help=f"feature spaces ({note}; default: clf, and inception if its weights are installed)",
    )  # fmt: skip


def add_data(
    p: argparse.ArgumentParser, help: str = "real images: fashion-mnist, mnist, or an idx folder"
) -> None:
    p.add_argument("--data", default="fashion-mnist", help=f"{help} (default: fashion-mnist)")


def load_model(args: argparse.Namespace, device: str, spec: str | None = None):
    """The model ``--model`` (or ``spec``) names, on ``device``, cast to ``--dtype``."""
    import torch

    from ..models.backbones import load_backbone

    model = load_backbone(spec or args.model, device=device, seed=args.seed)
    dtype = getattr(torch, args.dtype)
    return model if model.dtype == dtype else model.to(dtype)  # no cast, no diffusers warning about one


def load_autoencoder(args: argparse.Namespace, device: str):
    """The autoencoder of a latent-diffusion pipeline folder (vae/ or vqvae/) in ``--dtype``, else None."""
    import torch

    from ..models.latents import load_autoencoder as load

    path = Path(args.model).expanduser()
    found = load(path, device) if args.model != "embedded" and path.is_dir() else None
    return None if found is None else found.to(getattr(torch, args.dtype))


def join_processes(device: str) -> str:
    """Under torchrun, join the process group; the device this process uses."""
    from ..utils.distributed import init_from_env, local_device

    init_from_env(device)
    return local_device(device)


def processes() -> str:
    """ ", on N processes" under torchrun, else nothing (for the summary line of a command)."""
    from ..utils.distributed import world

    return f", on {world()[1]} processes" if world()[1] > 1 else ""


def default_metrics(say: Callable[..., Any] = print) -> list[str]:
    """fd_clf, and Inception FID beside it when its weights are installed (the two can disagree)."""
    from ..evaluation.metrics import inception_path

    try:
        inception_path()
    except FileNotFoundError as missing:
        say(f"scoring under clf only: {missing}")
        return ["clf"]
    return ["clf", "inception"]


def note_cache(schedule, blocks, model) -> str:
    """Store the reuse cache's peak bytes per sample in the schedule's settings; the text for the user."""
    if not schedule.reuses:
        return ""
    size = next(model.parameters()).element_size()
    schedule.settings["cache_bytes_per_sample"] = schedule.cache_bytes_per_sample(blocks, size)
    return f", reuse cache {schedule.settings['cache_bytes_per_sample'] / 1024:.0f} KiB per sample"
