"""Method names: one grammar for every method a command, report or benchmark names, and one function
that turns a name into a :class:`Schedule`.

Grammar: ``NAME[@STEPS]``, where NAME is

- ``full``: every block at every step (the full model);
- ``uniform-N``: every block every N-th step; in between the first and the last block run and the
  others reuse their last residual (``uniform-N-skip``: the others are skipped; ``uniform-N-forecast``:
  they forecast it from their last two runs, TaylorSeer-like; ``uniform-N-forecast-2``: from their
  last three, a parabola);
- ``deepcache-N``: DeepCache for a diffusers UNet, a full step every N steps, the outer resolution
  level always running;
- ``ase``: ASE's drop schedule as released;
- ``random``: random fixed gates (options ``ratio`` and ``seed``);
- a learned schedule shipped with lees, a folder of ``src/lees/embedded`` holding ``gates.safetensors``
  or ``schedule.json``: ``lees-0.05`` (the paper's gates, lambda 0.05), ``router-0.70`` (the step
  router at 0.70 of the FLOPs);
- a path to a schedule (``.json``) or gate (``.safetensors``) file, or to a folder holding one.

``@STEPS`` builds the method for STEPS sampler steps instead of the run's own (``full@25``: the full
model at 25 steps; ``uniform-2@35``). Gates are evaluated at the sampler's timesteps; a stored
schedule samples at its own. Options (``build_schedule(..., interval=3)``, the flags of ``lees
schedule``) set what the name leaves open; one that contradicts the name is an error.

Older names, as stored results and the docs of earlier runs spell them, are read as aliases:
``reuse-N`` and ``uniform-N-reuse`` are ``uniform-N``, ``full-K`` is ``full@K``. A new kind of method
is one :func:`register` call.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffusers import SchedulerMixin

from ..diffusion.samplers import sampler_timesteps
from ..engine.actions import ACTIONS
from ..engine.blocks import Blocks
from ..models.backbones import EMBEDDED_DIR
from .baselines import ase_schedule, deepcache_schedule, random_schedule, uniform_schedule
from .gates import SigmoidTimeGate
from .saving import GATE_FILE, SCHEDULE_FILE, load_policy
from .schedule import Schedule, ScheduleError

ALIASES = (  # older spellings -> the grammar's (applied in order, to the part before @STEPS)
    (re.compile(r"^reuse-(\d+)$"), r"uniform-\1"),
    (re.compile(r"^uniform-(\d+)-reuse$"), r"uniform-\1"),
    (re.compile(r"^full-(\d+)$"), r"full@\1"),
)
_STEPS = re.compile(r"^(?P<name>.+?)@(?P<steps>\d+)$")


@dataclass(frozen=True)
class Context:
    """What a method is built for: the model's blocks, the timesteps its sampler visits (the run's, or
    those of ``@STEPS``), and the noise scheduler (its training timesteps normalise a gate's time)."""

    blocks: Blocks
    timesteps: list[int]
    scheduler: SchedulerMixin | None = None

    @property
    def num_train_timesteps(self) -> int:
        return 1000 if self.scheduler is None else int(self.scheduler.config.num_train_timesteps)


@dataclass(frozen=True)
class Kind:
    """A kind of method: how the rest of its name (``2-skip`` of ``uniform-2-skip``) sets its options,
    and how it is built from a :class:`Context` and those options."""

    name: str
    build: Callable[..., Schedule]
    help: str
    suffix: re.Pattern | None = None  # named groups: the options the name sets ("" where it sets none)
    options: tuple[str, ...] = field(default_factory=tuple)  # what may be given besides the name


KINDS: dict[str, Kind] = {}


def register(name: str, help: str, suffix: str | None = None, options: Sequence[str] = ()) -> Callable:
    """Register the decorated ``build(ctx, **options) -> Schedule`` as the method kind ``name``.

    ``suffix`` is a regular expression for the rest of the name after ``name-``, its named groups the
    options it sets (a group that matched nothing sets none); ``options`` are those a caller may set.
    """

    def add(build: Callable[..., Schedule]) -> Callable[..., Schedule]:
        if name in KINDS:
            raise ValueError(f"the method kind {name!r} is registered twice")
        pattern = None if suffix is None else re.compile(f"^(?:{suffix})$")
        KINDS[name] = Kind(name, build, help, pattern, tuple(options))
        return build

    return add


def canonical(name: str) -> str:
    """``name`` as the grammar spells it (older spellings rewritten; anything else unchanged)."""
    match = _STEPS.match(name)
    base, steps = (match["name"], match["steps"]) if match else (name, None)
    for pattern, replacement in ALIASES:
        if pattern.match(base):
            base = pattern.sub(replacement, base)
            break
    if steps is None:
        return base
    return name if "@" in base else f"{base}@{steps}"  # full-25@35 names nothing: parse refuses it


@dataclass(frozen=True)
class Method:
    """A parsed method name: its kind (a registered one, ``shipped`` or ``file``), the options its
    name sets, the sampler steps it is built for (None: the run's), and its canonical spelling."""

    kind: str
    options: dict[str, Any]
    steps: int | None
    name: str


def shipped() -> dict[str, Path]:
    """The learned schedules shipped with lees, by name (folders of ``src/lees/embedded``)."""
    return {
        p.name: p
        for p in sorted(EMBEDDED_DIR.iterdir())
        if (p / GATE_FILE).is_file() or (p / SCHEDULE_FILE).is_file()
    }


def parse(name: str) -> Method:
    """Read a method name (see the module doc); a :class:`ScheduleError` naming the known ones if it is
    none of them."""
    text = canonical(name)
    if "@" in text and Path(text).expanduser().exists():  # a saved schedule whose path holds an @
        return Method("file", {"path": Path(text).expanduser()}, None, text)
    match = _STEPS.match(text)
    base, steps = (match["name"], int(match["steps"])) if match else (text, None)
    if steps is not None and steps < 1:
        raise ScheduleError(f"{name}: the steps after @ must be positive")
    if base in shipped():
        return Method("shipped", {"path": shipped()[base]}, steps, text)
    head, _, rest = base.partition("-")
    kind = KINDS.get(head)
    if kind is not None:
        found = kind.suffix.match(rest) if kind.suffix is not None else (None if rest else True)
        if found:
            options = {} if found is True else {k: v for k, v in found.groupdict().items() if v}
            return Method(head, options, steps, text)
    if Path(base).expanduser().exists():
        return Method("file", {"path": Path(base).expanduser()}, steps, text)
    raise ScheduleError(f"unknown method {name!r}; {known_names()}")


def options_of(name: str) -> tuple[str, ...]:
    """The options a caller may give the method ``name`` besides its name (none for a stored one)."""
    method = parse(name)
    return KINDS[method.kind].options if method.kind in KINDS else ()


def known_names() -> str:
    """The grammar in one line, for error messages and ``--help``."""
    kinds = ", ".join(kind.help for kind in KINDS.values())
    return f"known: {kinds}, {', '.join(shipped())} (shipped), or a schedule file; NAME@STEPS for other steps"


def build_schedule(
    name: str,
    blocks: Blocks,
    timesteps: Sequence[int],
    scheduler: SchedulerMixin | None = None,
    sampler: str = "ddpm",
    **options: Any,
) -> Schedule:
    """The schedule the method ``name`` names, for ``blocks`` and the sampler's ``timesteps``.

    Args:
        name: a method name (see the module doc), e.g. ``full``, ``uniform-2@35``, ``router-0.70``.
        blocks: the model's blocks (:func:`lees.find_blocks`).
        timesteps: the timesteps the run's sampler visits (:func:`lees.diffusion.samplers.sampler_timesteps`).
        scheduler: the model's noise scheduler: needed for ``@STEPS`` (the sampler's timesteps at
            those steps) and for gates (its training timesteps).
        sampler: the sampler ``@STEPS`` computes timesteps for (``ddpm`` or ``ddim``).
        **options: what the name leaves open (``interval``, ``ratio``, ``seed``, ...).

    Example:
        >>> schedule = build_schedule("uniform-2", blocks, timesteps)  # doctest: +SKIP
        >>> fewer = build_schedule("full@25", blocks, timesteps, scheduler)  # doctest: +SKIP
    """
    method = parse(name)
    if method.steps is not None:
        if scheduler is None:
            raise ValueError(f"{name}: building at other steps needs the model's noise scheduler")
        timesteps = sampler_timesteps(scheduler, method.steps, sampler)
    ctx = Context(blocks, list(timesteps), scheduler)
    if method.kind in ("shipped", "file"):
        return _stored(ctx, method, **options)
    kind = KINDS[method.kind]
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - set(kind.options))
    if unknown:
        raise ValueError(f"{method.kind} takes no {', '.join(unknown)}")
    clash = [k for k, v in method.options.items() if k in given and str(given[k]) != v]
    if clash:
        raise ValueError(f"{name} sets {clash[0]} itself; drop the option or the name's part")
    return kind.build(ctx, **{**given, **method.options})


def _stored(ctx: Context, method: Method, **options: Any) -> Schedule:
    """A shipped or saved method: a gate evaluated at the run's timesteps, or a schedule as stored."""
    if any(v is not None for v in options.values()):
        raise ValueError(f"{method.name} is a stored method; it takes no options")
    path = method.options["path"]
    gates = path / GATE_FILE
    policy = load_policy(gates if gates.is_file() else path)  # a folder's gates work at any timesteps
    if isinstance(policy, SigmoidTimeGate):
        return gate_schedule(policy, ctx)
    policy.check_blocks(ctx.blocks)
    if method.steps is not None and method.steps != policy.num_steps:
        raise ScheduleError(f"{method.name}: a stored schedule samples at its own {policy.num_steps} steps")
    return policy


def gate_schedule(gate: SigmoidTimeGate, ctx: Context) -> Schedule:
    """A learned gate's hard decisions at the run's timesteps (the blocks checked by name)."""
    if gate.block_names is not None and gate.block_names != ctx.blocks.names:
        raise ScheduleError("the gate was trained for other blocks than the model's")
    return Schedule.from_gate(gate, ctx.blocks, ctx.timesteps, ctx.num_train_timesteps)


@register("full", "full")
def _full(ctx: Context) -> Schedule:
    return Schedule.full(ctx.blocks, ctx.timesteps)


@register(
    "uniform",
    "uniform-N[-skip|-forecast[-ORDER]]",
    r"(?:(?P<interval>\d+)(?:-(?P<between>skip|forecast)(?:-(?P<order>\d+))?)?)?",
    ("interval", "outer", "between", "order"),
)
def _uniform(
    ctx: Context,
    interval: int | str = 3,
    outer: int = 1,
    between: str = "reuse",
    order: int | str | None = None,
) -> Schedule:
    if between not in ACTIONS:
        raise ValueError(f"between is one of reuse, forecast or skip, got {between!r}")
    if order is not None and between != "forecast":
        raise ValueError("an order is for forecasting: uniform-N-forecast-ORDER or between=forecast")
    order = 1 if order is None else int(order)
    return uniform_schedule(ctx.blocks, ctx.timesteps, int(interval), int(outer), ACTIONS[between], order)


@register("deepcache", "deepcache-N", r"(?P<interval>\d+)?", ("interval", "levels", "between"))
def _deepcache(ctx: Context, interval: int | str = 3, levels: int = 1, between: str = "reuse") -> Schedule:
    return deepcache_schedule(ctx.blocks, ctx.timesteps, int(interval), int(levels), between=ACTIONS[between])


@register("ase", "ase", None, ("drop_length", "drop_step", "start"))
def _ase(ctx: Context, drop_length: int = 200, drop_step: int | None = None, start: int = 0) -> Schedule:
    return ase_schedule(ctx.blocks, ctx.timesteps, drop_length, drop_step, start)


@register("random", "random", None, ("ratio", "seed"))
def _random(ctx: Context, ratio: float = 0.6, seed: int = 0) -> Schedule:
    return random_schedule(ctx.blocks, ctx.timesteps, ratio, seed)


@register("learned", "learned (with gates=FILE)", None, ("gates",))
def _learned(ctx: Context, gates: str | Path | None = None) -> Schedule:
    if gates is None:
        raise ValueError("learned needs --gates FILE (gates=FILE from Python): the gates lees train wrote")
    policy = load_policy(gates)
    if not isinstance(policy, SigmoidTimeGate):
        raise ScheduleError(f"{gates} holds a schedule, not gates")
    return gate_schedule(policy, ctx)
