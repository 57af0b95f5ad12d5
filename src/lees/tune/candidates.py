"""What ``lees tune`` can try on the user's model: every way to be faster, as data.

A :class:`Candidate` is one option with its knob values; :meth:`Candidate.applies_to` says, without
running anything, why it cannot apply to a model and scheduler (None when it can). The kinds:

* ``steps``: fewer sampler steps, with the model's own solver or another of its family's named
  solvers (:mod:`lees.diffusion.solvers`: ``ddim``, ``dpm++``, ``unipc``, ...) swapped in;
* ``uniform``: every block every ``interval`` steps, reusing its residual in between (FORA-like, any
  model lees finds blocks in);
* ``deepcache``: DeepCache's full step every ``interval`` steps, the outer level running (UNets);
* ``router``: the step router trained to a FLOP ``budget`` on the full run's own solver;
* ``cache``: one of diffusers' caches (:mod:`lees.tune.diffusers_caches`), with its settings;
* ``schedule``: a schedule file made for the reference run (a searched or routed one: ``lees route``),
  named by its folder.

Nothing here measures; the tuner runs the applicable candidates side by side at equal latency.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..diffusion.solvers import SOLVER_NAMES, family, solvers_for
from ..engine.blocks import candidate_blocks, unet_stage
from .diffusers_caches import METHODS, DenoiserCalls, NotApplicable, apply_cache

KINDS = ("steps", "uniform", "deepcache", "router", "cache", "schedule")
CACHE_CONFIGS = {method.name: config_type for config_type, method in METHODS.items()}


@dataclass(frozen=True)
class Candidate:
    """One way to sample faster: its kind (``KINDS``), a readable name and its knob values."""

    kind: str
    name: str
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {self.kind!r}")

    def applies_to(self, model: nn.Module, scheduler: Any, calls: DenoiserCalls | None = None) -> str | None:
        """Why this candidate cannot run on ``model`` sampled by ``scheduler`` (None: it can).

        ``calls`` says how the loop calls the model (the caches depend on it; default: no guidance).
        """
        return CHECKS[self.kind](self, model, scheduler, calls or DenoiserCalls())

    def cache_config(self, **extra: Any) -> Any:
        """The diffusers config of a ``cache`` candidate (``extra``: MagCache's calibrated ``mag_ratios``)."""
        if self.kind != "cache":
            raise ValueError(f"{self.name} is not one of diffusers' caches")
        return CACHE_CONFIGS[self.settings["method"]](**{**self.settings["config"], **extra})


def _check_steps(candidate: Candidate, model: nn.Module, scheduler: Any, calls: DenoiserCalls) -> str | None:
    solver = candidate.settings["solver"]
    if solver not in solvers_for(scheduler):
        return f"{solver} is no solver of a {family(scheduler)}-family model ({type(scheduler).__name__})"
    return None


def blocks_reason(model: nn.Module) -> str | None:
    try:
        candidate_blocks(model)
    except TypeError as error:
        return str(error)
    return None


def _check_blocks(candidate: Candidate, model: nn.Module, scheduler: Any, calls: DenoiserCalls) -> str | None:
    """Uniform reuse needs blocks lees can hook."""
    return blocks_reason(model)


def _check_router(candidate: Candidate, model: nn.Module, scheduler: Any, calls: DenoiserCalls) -> str | None:
    """The router trains on any scheduler, but draws its teacher's inputs itself: not Flux's packed
    latents and position ids."""
    if "img_ids" in inspect.signature(model.forward).parameters:
        return f"the router cannot draw {type(model).__name__}'s packed latents and position ids"
    return blocks_reason(model)


def _check_deepcache(
    candidate: Candidate, model: nn.Module, scheduler: Any, calls: DenoiserCalls
) -> str | None:
    reason = blocks_reason(model)
    if reason is None and not all(unet_stage(name) for name in candidate_blocks(model)):
        reason = f"DeepCache caches a UNet's deep levels; {type(model).__name__} is no UNet"
    return reason


def _check_cache(candidate: Candidate, model: nn.Module, scheduler: Any, calls: DenoiserCalls) -> str | None:
    """Attach and detach the cache (hooks only, no call): refusals and silent no-ops both show."""
    extra = {"calibrate": True} if candidate.settings["method"] == "MagCache" else {}
    applied = apply_cache(model, candidate.cache_config(**extra), calls)
    if isinstance(applied, NotApplicable):
        return applied.reason
    applied.remove()
    return None


CHECKS: dict[str, Callable[[Candidate, nn.Module, Any, DenoiserCalls], str | None]] = {
    "steps": _check_steps,
    "uniform": _check_blocks,
    "deepcache": _check_deepcache,
    "router": _check_router,
    "cache": _check_cache,
    "schedule": _check_blocks,
}


# Each cache's knob grid, from little skipped to much (FBC's and MagCache's thresholds, TaylorSeer's
# and PAB's intervals, FasterCache's attention interval).
CACHE_GRIDS: dict[str, list[dict[str, Any]]] = {
    "FirstBlockCache": [{"threshold": x} for x in (0.02, 0.05, 0.08, 0.12, 0.2, 0.3)],
    "TaylorSeer": [{"cache_interval": k, "disable_cache_before_step": 3} for k in (2, 3, 4, 5, 6)],
    "MagCache": [{"threshold": x} for x in (0.02, 0.06, 0.12, 0.24)],
    "PyramidAttentionBroadcast": [{"spatial_attention_block_skip_range": k} for k in (2, 3, 4)],
    "FasterCache": [{"spatial_attention_block_skip_range": k} for k in (2, 3)],
}
STEP_FRACTIONS = (0.75, 0.5, 0.35, 0.25)
INTERVALS = (2, 3)
BUDGETS = (0.5, 0.6, 0.7, 0.8)
QUICK_FRACTIONS = (0.5, 0.3)
QUICK_SOLVERS = 3  # the model's own solver and the next two of its family


def candidates(
    steps: int,
    solvers: Sequence[str] = SOLVER_NAMES,
    intervals: Sequence[int] = INTERVALS,
    budgets: Sequence[float] = BUDGETS,
    quick: bool = False,
) -> list[Candidate]:
    """Every candidate for a reference run of ``steps`` sampler steps (applicable or not: see
    :meth:`Candidate.applies_to`): each solver in ``solvers`` at fewer steps, uniform reuse and
    DeepCache at each interval, the router at each budget and each cache setting. ``quick``: two
    fewer-steps points per solver, the first ``QUICK_SOLVERS`` solvers and two settings per cache."""
    if steps < 2:
        raise ValueError(f"tuning needs a reference of at least 2 steps, not {steps}")
    fractions = QUICK_FRACTIONS if quick else STEP_FRACTIONS
    fewer = sorted({max(1, round(steps * f)) for f in fractions} - {steps}, reverse=True)
    found = [
        Candidate("steps", f"{solver}@{n}", {"solver": solver, "steps": n})
        for solver in (solvers[:QUICK_SOLVERS] if quick else solvers)
        for n in fewer
    ]
    found += [Candidate("uniform", f"uniform-{k}", {"interval": k}) for k in intervals]
    found += [Candidate("deepcache", f"deepcache-{k}", {"interval": k, "levels": 1}) for k in intervals]
    found += [Candidate("router", f"router@{b:g}", {"budget": b}) for b in budgets]
    found += [
        Candidate("cache", f"{method}({_knobs(config)})", {"method": method, "config": config})
        for method, grid in CACHE_GRIDS.items()
        for config in (grid[1:3] if quick else grid)
    ]
    return found


def schedule_candidates(paths: Sequence[str]) -> list[Candidate]:
    """A ``schedule`` candidate for each schedule file (or folder holding one), named by its folder."""
    from pathlib import Path

    return [Candidate("schedule", Path(p).parent.name if p.endswith(".json") else Path(p).name,
                      {"path": str(p)}) for p in paths]  # fmt: skip


def chosen(found: list[Candidate], only: Sequence[str] | None) -> list[Candidate]:
    """The candidates named in ``only`` and every schedule file's (all where None); a name no candidate has
    is an error."""
    if only is None:
        return found
    unknown = sorted(set(only) - {c.name for c in found})
    if unknown:
        raise ValueError(
            f"no candidate {', '.join(unknown)}; the candidates: {', '.join(c.name for c in found)}"
        )
    return [c for c in found if c.name in only or c.kind == "schedule"]


def _knobs(config: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in config.items())
