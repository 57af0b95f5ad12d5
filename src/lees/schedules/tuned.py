"""A tuned policy (``lees tune``'s winner) as a file: ``policy.json`` beside the model, read by ``enable``.

The winner of a tune is one of three things, all run with a named solver (:mod:`lees.diffusion.solvers`)
at a step count: the full model at fewer steps (``kind`` "steps": solver and steps are the whole
policy), a block schedule at the reference steps ("schedule": kept beside it as ``tuned-schedule.json``)
or one of diffusers' caches ("cache": its method and config). The file also holds the reference it
was measured against and the measured table. It is read here, below the tuner, so that
``lees.enable(pipe, folder)`` applies it without importing ``lees.tune``; a cache policy is attached
by the function the tuner registers (:func:`register_cache_attacher`), since the glue that runs
diffusers' caches on any denoiser lives there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..utils.files import atomic_write_text
from .saving import SUBFOLDER
from .schedule import Schedule, ScheduleError

POLICY_FILE = "policy.json"
SCHEDULE_NAME = "tuned-schedule.json"
FORMAT, VERSION = "lees.tuned", 1
POLICY_KINDS = ("steps", "schedule", "cache")

CacheAttacher = Callable[[nn.Module, dict[str, Any]], Any]  # (denoiser, the policy's cache) -> handle
_ATTACHERS: list[CacheAttacher] = []


@dataclass
class TunedPolicy:
    """What to run (solver at ``steps``, plus a schedule or a cache) and what it was measured as."""

    kind: str
    name: str
    solver: str
    steps: int
    schedule: Schedule | None = None
    cache: dict[str, Any] | None = None
    reference: dict[str, Any] = field(default_factory=dict)
    measured: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in POLICY_KINDS:
            raise ScheduleError(
                f"a tuned policy's kind is one of {', '.join(POLICY_KINDS)}, not {self.kind!r}"
            )
        if (self.kind == "schedule") != (self.schedule is not None) or (self.kind == "cache") != (
            self.cache is not None
        ):
            raise ScheduleError(
                f"a {self.kind} policy carries a schedule only if a schedule, a cache only if a cache"
            )

    def describe(self) -> str:
        """One line: what the policy runs and what it was measured with."""
        row = self.measured.get(self.name, {})
        scores = ", ".join(f"{k} {row[k]:.3g}" for k in ("latency_ratio", "fd_full", "psnr") if row.get(k))
        ref = self.reference
        guided = (
            f" with guidance scale {ref['guidance_scale']:g}" if ref.get("guidance_scale", 1.0) != 1.0 else ""
        )
        return (
            f"lees: tuned policy {self.name}: the {self.solver} solver at {self.steps} steps "
            f"(measured{guided} against {ref.get('solver')} at {ref.get('steps')} steps"
            f"{': ' + scores if scores else ''}); "
            f"call pipe(num_inference_steps={self.steps})"
        )

    def save(self, folder: str | Path) -> Path:
        """Write ``policy.json`` (and the schedule beside it) into ``folder``; returns the policy file."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.schedule is not None:
            self.schedule.save(folder / SCHEDULE_NAME)
        data = {
            "format": FORMAT, "version": VERSION, "kind": self.kind, "name": self.name, "solver": self.solver,
            "steps": self.steps, "schedule": SCHEDULE_NAME if self.schedule is not None else None,
            "cache": self.cache, "reference": self.reference, "measured": self.measured,
        }  # fmt: skip
        return atomic_write_text(folder / POLICY_FILE, json.dumps(data, indent=1))


def policy_file(path: str | Path) -> Path | None:
    """The tuned policy file ``path`` names: itself, or ``policy.json`` in it or its ``lees/`` (else None)."""
    path = Path(path)
    if path.is_file():
        return path if path.name == POLICY_FILE else None
    for folder in (path / SUBFOLDER, path):
        if (folder / POLICY_FILE).is_file():
            return folder / POLICY_FILE
    return None


def load_tuned(path: str | Path) -> TunedPolicy | None:
    """The tuned policy saved at ``path`` (a ``policy.json``, or a folder holding one or its ``lees/``),
    None where there is none."""
    found = policy_file(path)
    if found is None:
        return None
    data = json.loads(found.read_text())
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        raise ScheduleError(f"{found} is not a lees tuned policy (format {FORMAT} version {VERSION})")
    schedule = Schedule.load(found.parent / data["schedule"]) if data.get("schedule") else None
    keys = ("kind", "name", "solver", "steps", "cache", "reference", "measured")
    return TunedPolicy(**{k: data[k] for k in keys}, schedule=schedule)


def tuned(folder: str | Path) -> dict[str, Any]:
    """The call arguments of the tuned pipeline: ``pipe(**lees.tuned(folder))``.

    ``lees.enable(pipe, folder)`` has already swapped the pipeline's scheduler to the policy's solver
    (and says which); the step count is the one thing left for the call.

    Args:
        folder: the model folder ``lees tune`` wrote into (or its policy file).
    """
    policy = load_tuned(folder)
    if policy is None:
        raise ScheduleError(f"no tuned policy ({POLICY_FILE}) in {folder} or {Path(folder) / SUBFOLDER}")
    return {"num_inference_steps": policy.steps}


def register_cache_attacher(attach: CacheAttacher) -> None:
    """Set how a cache policy attaches to a denoiser (the tuner registers diffusers' caches with its glue)."""
    _ATTACHERS[:] = [attach]


def attach_cache(denoiser: nn.Module, policy: TunedPolicy) -> Any:
    """Attach a cache policy's cache to ``denoiser``; the handle's ``remove()`` detaches it."""
    if not _ATTACHERS:
        raise ScheduleError("a cache policy needs lees.tune loaded (import lees) to attach diffusers' caches")
    return _ATTACHERS[0](denoiser, policy.cache or {})
