"""A solver-neutral reference: the converged ODE solution from each sample's own noise and label.

Fidelity to the full model's run punishes a faster solver for leaving the run's path, and gives the
full model no error of its own. The probability-flow ODE's solution from the same start noise and
label is a reference no solver owns: here DPM-Solver++ 2M at 100 steps (``ODE``), checked against
Euler at 200 steps (``CHECK``) from the same noise; how close the two land is printed and stored, the
evidence that 100 steps have converged. Only deterministic runs have a partner there: a stochastic
solver (DDPM ancestral, Euler ancestral) adds fresh noise at every step, so its sample is not a
function of the start noise and label, and is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import SchedulerMixin
from torch import nn

from ..diffusion.samplers import sampler_timesteps
from ..diffusion.solvers import STOCHASTIC_SOLVERS
from ..engine.blocks import find_blocks
from ..sampling.stored import sample_stored
from ..schedules.schedule import Schedule
from ..utils.files import atomic_write_text
from .fidelity import psnr

ODE = ("dpm++", 100)  # the reference: DPM-Solver++ 2M at 100 steps
CHECK = ("euler", 200)  # its check: Euler at 200 steps from the same noise


def check_deterministic(solver: str, what: str = "the run's sampler") -> None:
    """A clear error where ``solver`` is stochastic: its samples have no ODE partner."""
    if solver in STOCHASTIC_SOLVERS:
        raise ValueError(
            f"--reference ode compares each sample with the ODE solution from its noise and label, but "
            f"{what} {solver!r} is stochastic (fresh noise every step): use a deterministic solver "
            f"(e.g. --sampler ddim, dpm++ or euler)"
        )


def ode_reference(
    model: nn.Module,
    scheduler: SchedulerMixin,
    n: int,
    seed: int,
    folder: str | Path,
    guidance_scale: float = 1.0,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The ODE solution (``ODE``) of samples ``0 .. n - 1`` of ``seed`` (the noise and labels every run
    of that seed starts from) and its check against ``CHECK``: PSNR over the pairs (mean and worst) and
    the largest pixel difference, printed and written to ``folder/ode-check.json``. The samples are
    stored in ``folder/pieces`` (a run again reads them)."""
    folder = Path(folder)
    blocks = find_blocks(model)
    names = {f"{solver}@{steps}": solver for solver, steps in (ODE, CHECK)}
    methods = {
        name: Schedule.full(blocks, sampler_timesteps(scheduler, int(name.partition("@")[2]), solver))
        for name, solver in names.items()
    }
    settings = {"seed": seed, "guidance_scale": guidance_scale, "solvers": names}
    runs = sample_stored(
        model, methods, n, folder / "pieces", settings=settings, seed=seed, scheduler=scheduler,
        device=device, sampler=CHECK[0], guidance_scale=guidance_scale, solvers=names, progress=False,
    )  # fmt: skip
    ode, check = (runs[name].images for name in names)
    pairs = psnr(check, ode).clamp(max=100.0)
    closeness = {
        "reference": list(names)[0], "check": list(names)[1], "n": n,
        "psnr_mean": float(pairs.mean()), "psnr_min": float(pairs.min()),
        "max_abs_diff": float((check - ode).abs().max()),
    }  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "ode-check.json", json.dumps(closeness, indent=1) + "\n")
    print(
        f"# ODE reference {closeness['reference']} vs {closeness['check']} from the same noise and labels "
        f"({n} samples): PSNR {closeness['psnr_mean']:.1f} dB (worst {closeness['psnr_min']:.1f}), "
        f"largest pixel difference {closeness['max_abs_diff']:.3g} (images in [-1, 1])"
    )
    return ode, closeness
