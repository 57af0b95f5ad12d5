"""Does a schedule fit the sampling run it is applied to? Its columns are the run's model calls, in order.

``lees.enable`` maps each denoiser call to a schedule column by position: the j-th call of a sampling run
(of one guidance branch: one :class:`RunState` per diffusers cache context) takes column j, so Heun's
2n - 1 calls, PNDM's repeated timesteps and flow matching's float timesteps all have their own column.
The timestep a call passes only checks that the run is the one the schedule was built for:

* At the first call of a run, the scheduler's timestep list (when it is known: a pipeline's
  ``scheduler.timesteps``, from the first call's timestep on, so an img2img tail counts) must equal the
  schedule's; otherwise :class:`ScheduleError` names both grids, before any block runs. Without a
  scheduler (a hand loop) each call's timestep is checked against its column as it comes.
* The time scale is found at a run's first call: t as the scheduler gives it, or t / 1000 (Flux and
  QwenImage pipelines pass that).
* A run starts at the first call, after the last column, when the scheduler's timestep list is a new
  object (a pipeline calls ``set_timesteps`` at the start of each call, so a run broken off at any point
  is never continued by the next ``pipe()``), and at a call whose timestep is the schedule's first again
  where the next column expects another (a hand loop's new run after an interrupted one); each run gets
  a new, empty reuse cache.
* Several candidate schedules (a tuned policy for several step counts): a run follows the first whose
  grid is the scheduler's. A run that fits none raises :class:`ScheduleError` or, with
  ``on_mismatch="full"``, runs the full model, with one warning per new grid (:class:`Fitting`).
* Two calls at one timestep where the schedule has one column are split classifier-free guidance
  outside cache contexts: refused, since both branches would share one reuse cache.

Timesteps match within :func:`tolerance`: half a step (schedule files of lees < 0.3 hold rounded
integers) plus the rounding of the dtype the pipeline passed t in. A sigmoid gate needs no grid: its
time is found at each call; only the scale is fixed at a run's first call (t <= 1 there means t / 1000).
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.hooks.hooks import BaseState

from ..engine.hooks import ReuseCache
from .schedule import Schedule, ScheduleError

SCALES = (1.0, 1000.0)  # what a call's timestep is multiplied by to be the scheduler's: t, or t / 1000

Grid = Callable[[], tuple[str, Sequence[float]] | None]  # (scheduler class, timesteps), read at a run's start


def tolerance(t: float, dtype: torch.dtype = torch.float32) -> float:
    """How far a call's timestep may lie from its column's: half a step (rounded integer schedules) plus
    two roundings of the dtype the call passed it in (a bf16 Flux pipeline casts t, then divides it)."""
    eps = torch.finfo(dtype).eps if dtype.is_floating_point else 0.0
    return 0.5 + 2 * max(eps, torch.finfo(torch.float32).eps) * abs(t)


def close(t: float, column: float, dtype: torch.dtype = torch.float32) -> bool:
    return abs(t - column) <= tolerance(column, dtype)


def head(timesteps: Sequence[float]) -> str:
    """``a, b, c, ...``: the first timesteps of a grid, for a message."""
    shown = ", ".join(f"{float(t):g}" for t in timesteps[:3])
    return shown + (", ..." if len(timesteps) > 3 else "")


FIX = (
    "build the schedule for this scheduler's timesteps (lees.pipeline_timesteps(pipe.scheduler)) "
    "or re-route it for them"
)

SPLIT = (
    "two denoiser calls at t = {t:g}{where} where the schedule has one column: split classifier-free "
    "guidance shares one reuse cache between its branches; wrap each branch's call in "
    'model.cache_context("cond") / model.cache_context("uncond") (lees.models.pipelines.cache_context '
    "for models without CacheMixin), or batch the guidance into one call"
)


def schedule_label(schedule: Schedule) -> str:
    """``the schedule has T columns (sampler) at t = a, b, c, ...``"""
    sampler = schedule.settings.get("sampler") or schedule.settings.get("provenance", {}).get("sampler")
    made_for = f" ({sampler})" if sampler else ""
    return f"the schedule has {schedule.num_steps} columns{made_for} at t = {head(schedule.timesteps)}"


MISMATCH = ("raise", "full")  # what a run that fits no schedule does: ScheduleError, or run the full model


@dataclass
class Fitting:
    """What a run may follow: the candidate schedules (one is picked at each run's first call, the first
    that fits its grid; a gate needs none), and what a run that fits none does (``on_mismatch``: "raise" a
    :class:`ScheduleError`, or run the "full" model with one warning per new grid). Shared by every
    :class:`RunState` of one enabled denoiser."""

    candidates: list[Schedule]
    on_mismatch: str = "raise"
    warned: set = field(default_factory=set)  # the grids a "full" warning was given for
    states: weakref.WeakSet = field(default_factory=weakref.WeakSet)  # every RunState made with it

    def __post_init__(self) -> None:
        if self.on_mismatch not in MISMATCH:
            raise ValueError(f"on_mismatch is one of {', '.join(MISMATCH)}, not {self.on_mismatch!r}")


class RunState(BaseState):
    """Where one sampling run of one guidance branch is: the schedule it follows (None: a plain run), its
    next column, time scale and reuse cache (a new one each run, so a run of another resolution or batch
    size never meets the last run's residuals)."""

    def __init__(self, fitting: Fitting) -> None:
        self.fitting = fitting
        fitting.states.add(self)
        self.reset()

    def reset(self, *args, **kwargs) -> None:
        """Forget the run (the next call starts one)."""
        self.position, self.scale, self.previous, self.token, self.first = 0, None, None, None, None
        self.schedule: Schedule | None = None
        self.timesteps: Sequence[float] | None = None  # the run's: its schedule's, else its scheduler's
        self.cache: ReuseCache | None = None

    @property
    def in_progress(self) -> bool:
        """Whether a run has started and not reached its last call."""
        return self.position > 0 and (self.timesteps is None or self.position < len(self.timesteps))

    def gate_timestep(self, t: float) -> float:
        """A gate's call at ``t`` in the scheduler's scale (t / 1000 is found at a run's first call)."""
        if self.scale is None or self.previous is not None and t * self.scale > self.previous + 0.5:
            self.scale = SCALES[1] if t <= 1 else SCALES[0]  # a run's first call at t <= 1: t / 1000
        self.previous = t * self.scale
        return self.previous

    def column(
        self, t: float, dtype: torch.dtype, grid: Grid, context: str | None, token: Any = None
    ) -> int | None:
        """The schedule column of a call at ``t`` (see the module doc), None in a plain run; a
        :class:`ScheduleError` if the run fits no schedule and ``on_mismatch`` is "raise". ``token`` is
        the scheduler's timestep list as an object: a new one (``set_timesteps`` again) starts a new run."""
        p, timesteps = self.position, self.timesteps
        if p > 0 and (token is None or token is self.token) and (timesteps is None or p < len(timesteps)):
            u = t * self.scale
            if timesteps is None:  # a plain run on an unknown grid goes on until its first timestep returns
                if not close(u, self.first, dtype):
                    self.position, self.previous = p + 1, u
                    return None
            elif close(u, timesteps[p], dtype):
                self.position, self.previous = p + 1, u
                return p if self.schedule is not None else None
            elif self.schedule is not None and close(u, self.previous, dtype):
                where = "" if context is None else f' in cache context "{context}"'
                raise ScheduleError(SPLIT.format(t=u, where=where))
            elif self.schedule is not None and _scale_of(self.schedule, t, dtype) is None:
                raise ScheduleError(
                    f"the schedule does not fit this run: call {p} is at t = {u:g}, column {p} at "
                    f"t = {float(timesteps[p]):g} ({schedule_label(self.schedule)}); {FIX}"
                )
        return self._start(t, dtype, grid, token)

    def _start(self, t: float, dtype: torch.dtype, grid: Grid, token: Any) -> int | None:
        """A run starts at a call at ``t``: it follows the first candidate schedule whose grid is the
        scheduler's, else it fails or runs plain (``on_mismatch``)."""
        self.reset()
        scheduler = grid()
        self.token, self.position, self.first = token, 1, t
        for schedule in self.fitting.candidates:
            scale = _scale_of(schedule, t, dtype)
            run = None if scheduler is None else run_grid(scheduler[1], t * (scale or 1.0), dtype)
            if scale is not None and _fits(run, schedule):
                self.schedule, self.timesteps, self.cache = schedule, schedule.timesteps, schedule.new_cache()
                self.scale, self.previous = scale, t * scale
                return 0
        run = None if scheduler is None else run_grid(scheduler[1], t, dtype)
        self.scale, self.previous, self.timesteps = 1.0, t, run
        if self.fitting.candidates:
            self._mismatch(t, scheduler, run)
        return None

    def _mismatch(
        self, t: float, scheduler: tuple[str, Sequence[float]] | None, run: list[float] | None
    ) -> None:
        """A run that fits no candidate: a :class:`ScheduleError`, or one warning per new grid."""
        found = (
            f"its first call is at t = {t:g}"
            if run is None
            else f"{scheduler[0]} calls the model {len(run)} times at t = {head(run)}"
        )
        candidates = self.fitting.candidates
        label = (
            schedule_label(candidates[0])
            if len(candidates) == 1
            else f"the {len(candidates)} schedules have "
            + ", ".join(str(s.num_steps) for s in candidates)
            + " columns"
        )
        message = f"the schedule does not fit this run: {label}, {found}; {FIX}"
        if self.fitting.on_mismatch == "raise":
            self.reset()
            raise ScheduleError(message)
        key = (t,) if run is None else (scheduler[0], *run)
        if key not in self.fitting.warned:
            self.fitting.warned.add(key)
            warnings.warn(
                f"{message}. This run goes plain (on_mismatch='full'; said once per grid)", stacklevel=2
            )


def _scale_of(schedule: Schedule, t: float, dtype: torch.dtype) -> float | None:
    """The scale that puts ``t`` on the schedule's first timestep, if one does."""
    return next((s for s in SCALES if close(t * s, schedule.timesteps[0], dtype)), None)


def _fits(run: list[float] | None, schedule: Schedule) -> bool:
    """Whether the scheduler's grid of this run (None: unknown) is the schedule's."""
    return run is None or (
        len(run) == len(schedule.timesteps)
        and all(close(a, b) for a, b in zip(run, schedule.timesteps, strict=True))
    )


IMAGE_SEQ_LEN = "image_seq_len"

"""The settings key of the resolution a schedule's timesteps were made for, in latent tokens of one image
(``lees.pipeline_timesteps(..., image_seq_len=)``): a scheduler with ``use_dynamic_shifting`` shifts its
timesteps by it, so a run at another resolution is another grid."""


def check_resolution(fitting: Fitting, seq_len: int | None) -> None:
    """A :class:`ScheduleError` for a call at a resolution none of the schedules records, where each
    records one (and a run that fits none raises)."""
    made = [s.settings.get(IMAGE_SEQ_LEN) for s in fitting.candidates]
    if not made or None in made or seq_len is None or seq_len in made or fitting.on_mismatch != "raise":
        return
    sizes = " or ".join(str(n) for n in sorted(set(made)))
    raise ScheduleError(
        f"the schedule was made for images of {sizes} latent tokens and this run's have {seq_len}: "
        "its timesteps are shifted for the resolution it was made at (use_dynamic_shifting); build "
        "it at this resolution (lees.pipeline_timesteps(pipe, steps, height=, width=))"
    )


def run_grid(timesteps: Sequence[float], first: float, dtype: torch.dtype) -> list[float] | None:
    """The scheduler's timesteps from the one nearest a run's first call on (img2img runs a tail), or
    None when they are not set."""
    if len(timesteps) == 0:
        return None
    values = [float(t) for t in timesteps]
    start = min(range(len(values)), key=lambda i: abs(values[i] - first))
    return values[start:] if close(first, values[start], dtype) else values
