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
* A run starts at the first call, after the last column, and at a call whose timestep is the schedule's
  first again where the next column expects another (a new run after an interrupted one); the run's
  reuse cache starts empty.
* Two calls at one timestep where the schedule has one column are split classifier-free guidance
  outside cache contexts: refused, since both branches would share one reuse cache.

Timesteps match within :func:`tolerance`: half a step (schedule files of lees < 0.3 hold rounded
integers) plus the rounding of the dtype the pipeline passed t in. A sigmoid gate needs no grid: its
time is found at each call; only the scale is fixed at a run's first call (t <= 1 there means t / 1000).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from diffusers.hooks.hooks import BaseState

from ..engine.hooks import ReuseCache
from .gates import SigmoidTimeGate
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


class RunState(BaseState):
    """Where one sampling run of one guidance branch is: its next column, time scale and reuse cache."""

    def __init__(self, policy: Schedule | SigmoidTimeGate) -> None:
        self.policy = policy
        self.cache: ReuseCache | None = policy.new_cache() if isinstance(policy, Schedule) else None
        self.reset()

    def reset(self, *args, **kwargs) -> None:
        """Forget the run (the next call starts one)."""
        self.position, self.scale, self.previous = 0, None, None
        if self.cache is not None:
            self.cache.clear()

    def gate_timestep(self, t: float) -> float:
        """A gate's call at ``t`` in the scheduler's scale (t / 1000 is found at a run's first call)."""
        if self.scale is None or self.previous is not None and t * self.scale > self.previous + 0.5:
            self.scale = SCALES[1] if t <= 1 else SCALES[0]  # a run's first call at t <= 1: t / 1000
        self.previous = t * self.scale
        return self.previous

    def column(self, t: float, dtype: torch.dtype, grid: Grid, context: str | None) -> int:
        """The schedule column of a call at ``t`` (see the module doc); a :class:`ScheduleError` if the
        run does not fit the schedule."""
        timesteps, p = self.policy.timesteps, self.position
        if 0 < p < len(timesteps):
            u = t * self.scale
            if close(u, timesteps[p], dtype):
                self.position, self.previous = p + 1, u
                return p
            if close(u, self.previous, dtype):
                where = "" if context is None else f' in cache context "{context}"'
                raise ScheduleError(SPLIT.format(t=u, where=where))
            if self._scale_of(t, dtype) is None:
                raise ScheduleError(
                    f"the schedule does not fit this run: call {p} is at t = {u:g}, column {p} at "
                    f"t = {float(timesteps[p]):g} ({schedule_label(self.policy)}); {FIX}"
                )
        self._start(t, dtype, grid)
        return 0

    def _scale_of(self, t: float, dtype: torch.dtype) -> float | None:
        """The scale that puts ``t`` on the schedule's first timestep, if one does."""
        first = self.policy.timesteps[0]
        return next((s for s in SCALES if close(t * s, first, dtype)), None)

    def _start(self, t: float, dtype: torch.dtype, grid: Grid) -> None:
        """A run starts at a call at ``t``: check that the scheduler's grid is the schedule's."""
        self.reset()
        scale = self._scale_of(t, dtype)
        scheduler = grid()
        run = None if scheduler is None else run_grid(scheduler[1], t * (scale or 1.0), dtype)
        fits = (
            run is None
            or len(run) == len(self.policy.timesteps)
            and all(close(a, b) for a, b in zip(run, self.policy.timesteps, strict=True))
        )
        if scale is None or not fits:
            found = (
                f"its first call is at t = {t:g}"
                if run is None
                else f"{scheduler[0]} calls the model {len(run)} times at t = {head(run)}"
            )
            raise ScheduleError(
                f"the schedule does not fit this run: {schedule_label(self.policy)}, {found}; {FIX}"
            )
        self.scale, self.position, self.previous = scale, 1, t * scale


IMAGE_SEQ_LEN = "image_seq_len"

"""The settings key of the resolution a schedule's timesteps were made for, in latent tokens of one image
(``lees.pipeline_timesteps(..., image_seq_len=)``): a scheduler with ``use_dynamic_shifting`` shifts its
timesteps by it, so a run at another resolution is another grid."""


def check_resolution(policy: Schedule | SigmoidTimeGate, seq_len: int | None) -> None:
    """A :class:`ScheduleError` for a call at another resolution than the one ``policy`` records."""
    made = policy.settings.get(IMAGE_SEQ_LEN) if isinstance(policy, Schedule) else None
    if made is not None and seq_len is not None and seq_len != made:
        raise ScheduleError(
            f"the schedule was made for images of {made} latent tokens and this run's have {seq_len}: "
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
