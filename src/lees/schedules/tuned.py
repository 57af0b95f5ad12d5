"""A tuned policy (``lees tune``'s winner) as a file: ``policy.json`` beside the model, read by ``enable``.

A tune at several step counts (``lees tune --steps 20 30``) saves one winner per step count in one file;
``lees.enable(pipe, folder)`` swaps the pipeline's scheduler for a :class:`TunedScheduler`, which picks
at each call's ``set_timesteps(n)`` the winner tuned against n steps and runs it (its solver, its
steps, its schedule or cache). No winner is mapped to a step count it was not measured at: a call at
another count raises or runs the pipeline's own scheduler in full (``on_mismatch``).

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

import functools
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..diffusion.solvers import make_solver
from ..utils.files import atomic_write_text
from .saving import SUBFOLDER
from .schedule import Schedule, ScheduleError

POLICY_FILE = "policy.json"
SCHEDULE_NAME = "tuned-schedule.json"
FORMAT, VERSION = "lees.tuned", 2  # version 1: one policy (its fields at the top level)
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
        scores = ", ".join(  # an FD that rounds below 0 (the full model's own) as 0
            f"{k} {max(row[k], 0.0) if k == 'fd_full' else row[k]:.3g}"
            for k in ("latency_ratio", "fd_full", "psnr")
            if row.get(k)
        )
        ref = self.reference
        guided = (
            f" with guidance scale {ref['guidance_scale']:g}" if ref.get("guidance_scale", 1.0) != 1.0 else ""
        )
        return (
            f"lees: tuned policy {self.name}: the {self.solver} solver at {self.steps} steps "
            f"(measured{guided} against {ref.get('solver')} at {ref.get('steps')} steps"
            f"{': ' + scores if scores else ''}); "
            f"runs at pipe(num_inference_steps={self.reference_steps})"
        )

    @property
    def reference_steps(self) -> int:
        """The step count it was tuned against: the calls it answers (``pipe(num_inference_steps=...)``)."""
        return int(self.reference.get("steps") or self.steps)

    def save(self, folder: str | Path) -> Path:
        """Write ``policy.json`` (and the schedule beside it) into ``folder``; returns the policy file."""
        return save_policies([self], folder)

    def entry(self, schedule_file: str) -> dict[str, Any]:
        """Its fields in the policy file (the schedule by the name of its file beside it)."""
        return {
            "kind": self.kind, "name": self.name, "solver": self.solver, "steps": self.steps,
            "schedule": schedule_file if self.schedule is not None else None, "cache": self.cache,
            "reference": self.reference, "measured": self.measured,
        }  # fmt: skip


def check_step_counts(counts: Sequence[int]) -> None:
    """A policy's step counts (``--steps`` of tune and route): distinct, each 2 or more."""
    if len(set(counts)) != len(counts) or not all(n >= 2 for n in counts):
        raise ValueError(f"--steps takes distinct step counts of 2 or more, not {list(counts)}")


def save_policies(policies: list[TunedPolicy], folder: str | Path) -> Path:
    """Write the winners of one tune, one per reference step count, as ``policy.json`` in ``folder`` (each
    schedule beside it); returns the policy file."""
    counts = [p.reference_steps for p in policies]
    if not policies or len(set(counts)) != len(counts):
        raise ScheduleError(f"a policy file holds one winner per step count, not {counts}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for policy in policies:
        name = SCHEDULE_NAME if len(policies) == 1 else f"tuned-schedule-{policy.reference_steps}.json"
        if policy.schedule is not None:
            policy.schedule.save(folder / name)
        entries.append(policy.entry(name))
    data = {"format": FORMAT, "version": VERSION, "policies": entries}
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


def load_policies(path: str | Path) -> dict[int, TunedPolicy] | None:
    """The tuned policies saved at ``path`` (a ``policy.json``, or a folder holding one or its ``lees/``),
    by the step count each was tuned against; None where there is none."""
    found = policy_file(path)
    if found is None:
        return None
    data = json.loads(found.read_text())
    if data.get("format") != FORMAT or data.get("version") not in (1, VERSION):
        raise ScheduleError(f"{found} is not a lees tuned policy (format {FORMAT} version 1 or {VERSION})")
    keys = ("kind", "name", "solver", "steps", "cache", "reference", "measured")
    policies = {}
    for entry in data["policies"] if data["version"] == VERSION else [data]:
        schedule = Schedule.load(found.parent / entry["schedule"]) if entry.get("schedule") else None
        policy = TunedPolicy(**{k: entry[k] for k in keys}, schedule=schedule)
        policies[policy.reference_steps] = policy
    return policies


def load_tuned(path: str | Path, steps: int | None = None) -> TunedPolicy | None:
    """The tuned policy saved at ``path`` for ``steps`` (the step count it was tuned against; None: the
    file's only one), None where there is no policy file."""
    policies = load_policies(path)
    if policies is None:
        return None
    if steps is None and len(policies) == 1:
        return next(iter(policies.values()))
    if steps not in policies:
        counts = ", ".join(str(n) for n in policies)
        raise ScheduleError(
            f"the tuned policy at {path} is for {counts} steps: name one (steps=), not {steps}"
        )
    return policies[steps]


def tuned(folder: str | Path, steps: int | None = None) -> dict[str, Any]:
    """The call arguments of the tuned pipeline: ``pipe(**lees.tuned(folder))``.

    ``lees.enable(pipe, folder)`` has already swapped the pipeline's scheduler for one that runs the
    policy's solver at the policy's steps when called at the step count it was tuned against (and says
    which); that step count is the one thing left for the call.

    Args:
        folder: the model folder ``lees tune`` wrote into (or its policy file).
        steps: which of a several-step-count policy's (None: the file's only one).
    """
    policy = load_tuned(folder, steps)
    if policy is None:
        raise ScheduleError(f"no tuned policy ({POLICY_FILE}) in {folder} or {Path(folder) / SUBFOLDER}")
    return {"num_inference_steps": policy.reference_steps}


def register_cache_attacher(attach: CacheAttacher) -> None:
    """Set how a cache policy attaches to a denoiser (the tuner registers diffusers' caches with its glue)."""
    _ATTACHERS[:] = [attach]


def attach_cache(denoiser: nn.Module, policy: TunedPolicy) -> Any:
    """Attach a cache policy's cache to ``denoiser``; the handle's ``remove()`` detaches it."""
    if not _ATTACHERS:
        raise ScheduleError("a cache policy needs lees.tune loaded (import lees) to attach diffusers' caches")
    return _ATTACHERS[0](denoiser, policy.cache or {})


def flux_sigmas(steps: int) -> np.ndarray:
    """The sigmas Flux-style pipelines pass to ``set_timesteps`` for ``steps`` steps (before shifting)."""
    return np.linspace(1.0, 1 / steps, steps)


def _default_sigmas(sigmas: Any) -> bool:
    """Whether ``sigmas`` are :func:`flux_sigmas` of their length: a plain call, not a custom grid."""
    if sigmas is None or len(sigmas) < 1:
        return False
    return bool(np.allclose(np.asarray(sigmas, dtype=float), flux_sigmas(len(sigmas))))


class TunedScheduler:
    """The pipeline's scheduler while a tuned policy is enabled (``lees.enable(pipe, folder)``).

    Each ``set_timesteps(n)`` (a pipeline call's start) picks the winner tuned against n steps, sets its
    solver (a scheduler made once per solver from the pipeline's) to the winner's steps, and tells
    ``select`` (which attaches its schedule or cache, or None: a plain run); every other attribute is the
    current scheduler's. Flux-style default ``sigmas`` (:func:`flux_sigmas` of n, passed without n) count
    as a call at n steps. A step count with no winner, or custom ``timesteps``/``sigmas``, raises a
    :class:`ScheduleError` (``on_mismatch="raise"``) or runs the pipeline's own scheduler, with one
    warning per step count (``"full"``). ``isinstance`` checks on the pipeline's scheduler see this class.
    """

    def __init__(self, own: Any, policies: dict[int, TunedPolicy], on_mismatch: str,
                 select: Callable[[TunedPolicy | None], None]) -> None:  # fmt: skip
        for name, value in dict(own=own, policies=policies, on_mismatch=on_mismatch, select=select,
                                solvers={}, current=own, warned=set(), policy=None).items():  # fmt: skip
            object.__setattr__(self, f"_lees_{name}", value)

        def set_timesteps(*args: Any, **kwargs: Any) -> None:
            self._lees_set_timesteps(*args, **kwargs)

        # with the own scheduler's signature: pipelines read it for ``sigmas`` or ``timesteps``
        object.__setattr__(self, "set_timesteps", functools.update_wrapper(set_timesteps, own.set_timesteps))

    def _lees_set_timesteps(self, num_inference_steps: int | None = None, *args: Any, **kwargs: Any) -> None:
        steps = num_inference_steps
        plain = steps is None and _default_sigmas(kwargs.get("sigmas"))
        if plain:  # Flux's default grid for n steps, passed as sigmas: it counts as n steps
            steps = len(kwargs["sigmas"])
        custom = not plain and (kwargs.get("timesteps") is not None or kwargs.get("sigmas") is not None)
        policy = None if custom else self._lees_policies.get(steps)
        if policy is None:
            self._lees_mismatch(steps, custom)
            current, steps = self._lees_own, num_inference_steps
        else:
            if policy.solver not in self._lees_solvers:
                self._lees_solvers[policy.solver] = make_solver(self._lees_own, policy.solver)
            current, steps = self._lees_solvers[policy.solver], policy.steps
            if plain:  # the same default grid, at the winner's steps
                steps, kwargs = None, {**kwargs, "sigmas": flux_sigmas(policy.steps)}
        object.__setattr__(self, "_lees_current", current)
        object.__setattr__(self, "_lees_policy", policy)
        current.set_timesteps(steps, *args, **kwargs)
        self._lees_select(policy)

    @property
    def current(self) -> Any:
        """The scheduler the current (or last) pipeline call steps with: the winner's solver, or the own."""
        return self._lees_current

    @property
    def policy(self) -> TunedPolicy | None:
        """The winner the current (or last) pipeline call runs; None: the pipeline's own scheduler."""
        return self._lees_policy

    def _lees_mismatch(self, steps: int | None, custom: bool) -> None:
        counts = ", ".join(str(n) for n in self._lees_policies)
        asked = "custom timesteps or sigmas" if custom else f"{steps} steps"
        message = f"lees: the tuned policy is for {counts} steps, this call asks for {asked}"
        if self._lees_on_mismatch == "raise":
            raise ScheduleError(f"{message}: call at one of those, or enable with on_mismatch='full'")
        if (steps, custom) not in self._lees_warned:
            self._lees_warned.add((steps, custom))
            warnings.warn(
                f"{message}: it runs the pipeline's own scheduler in full (said once)", stacklevel=3
            )

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_lees_current"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._lees_current, name, value)
