"""Schedules: what each block does at each sampling step, as data.

A :class:`Schedule` is a K x T table of block actions (run, reuse its last residual, forecast it from
its last runs, or skip; see :mod:`lees.engine.hooks`) with the model's block names, the timesteps of
its T columns, where it came from and its settings. Column j is the j-th model call of a sampling run
(of one guidance branch), at the timestep the scheduler gives it: integers, or floats (flow matching's
lie in (0, 1000]), repeated where the scheduler calls the model more than once at one timestep (Heun,
PNDM). Learned, router, ASE, DeepCache, random and hand-made schedules are all this one object, saved
as the same JSON, so every sampler, benchmark and plot takes any of them.

JSON (version 2): one string per block, one character per step: ``1`` run, ``r`` reuse, ``0``
skip. Version 3 adds ``f`` forecast and the schedule's ``forecast_order`` (1: the line through a
block's last two runs, 2: the parabola through its last three, 0: reuse; :mod:`lees.engine.forecast`);
a schedule that forecasts nothing is still written as version 2, so older lees reads it. Version 4 adds
``thresholds`` (an adaptive schedule, :mod:`lees.engine.probe`): one list per block, one number per step,
null where the cell follows the table; older lees refuses it rather than run the table alone. Version 1
files (run/skip only, written by lees 0.1) load unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..diffusion.samplers import gate_time, timestep_values
from ..engine.actions import FORECAST, REUSE, RUN, SKIP, open_mask
from ..engine.blocks import Blocks
from ..engine.forecast import ORDERS
from ..engine.hooks import ReuseCache
from ..engine.probe import PROBE_BLOCK, Probe
from ..utils.files import atomic_write_text
from .gates import SigmoidTimeGate

FORMAT = "lees.schedule"

VERSION = 3  # written for a schedule that forecasts; one that does not is written as version 2

ADAPTIVE_VERSION = 4  # written for a schedule with thresholds

READS = (1, 2, 3, 4)  # file versions this one reads

SOURCES = ("full", "learned", "router", "ase", "deepcache", "uniform", "random", "manual", "search")

CHARS = {RUN: "1", REUSE: "r", FORECAST: "f", SKIP: "0"}


class ScheduleError(ValueError):
    """A schedule file or table that is malformed."""


class ScheduleMismatchError(ScheduleError):
    """A schedule applied to a model whose blocks differ from the ones it was made for."""


def _names_and_shares(blocks: Blocks | Sequence[str]) -> tuple[list[str], list[float] | None]:
    if isinstance(blocks, Blocks):
        return blocks.names, blocks.shares
    return list(blocks), None


def _checked_timesteps(timesteps: Sequence[Any], num_train: int) -> list[int | float]:
    """The column timesteps as plain numbers: integers in [0, N), floats in [0, N] (flow matching's
    first step is t = N)."""
    try:
        values = timestep_values(timesteps)
    except ValueError as err:
        raise ScheduleError(str(err)) from None
    for t in values:
        inside = 0 <= t < num_train if isinstance(t, int) else math.isfinite(t) and 0 <= t <= num_train
        if not inside:
            raise ScheduleError(f"timesteps must lie in [0, {num_train}) (floats: [0, {num_train}]), got {t}")
    return values


def _read_thresholds(rows: Any) -> np.ndarray | None:
    """A schedule file's thresholds (lists of numbers, null for inf) as an array; None when absent."""
    if rows is None:
        return None
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise ScheduleError("thresholds must be a list of lists of numbers or null, one per block")
    if not all(v is None or type(v) in (int, float) for r in rows for v in r):
        raise ScheduleError("a threshold is a number, or null where the table decides")
    try:
        return np.array([[math.inf if v is None else v for v in r] for r in rows], dtype=np.float64)
    except ValueError:
        raise ScheduleError("thresholds rows must be of equal length") from None


@dataclass
class Schedule:
    """What each of K named blocks does at each of T sampler timesteps.

    ``table`` may be given as booleans (run/skip) or as action codes (``SKIP``, ``RUN``, ``REUSE``,
    ``FORECAST``); afterwards ``actions`` holds the codes and ``table`` the booleans "block k computes
    at step j" (what FLOP and executed ratios count: a reused or forecast block saves its compute like
    a skipped one). ``forecast_order`` (0, 1 or 2) is the degree of the polynomial a ``FORECAST`` cell
    extrapolates its block's residual with. ``thresholds`` (K x T floats, ``inf`` where the table decides
    alone; None: none) makes the schedule adaptive: a reusing or forecasting cell runs where the probe's
    accumulated change exceeds its threshold (:mod:`lees.engine.probe`); the table is then the floor of
    what a run computes, and ``table``, ``flop_ratio`` count the table's runs only.
    """

    table: np.ndarray
    block_names: list[str]
    timesteps: list[int | float]
    source: str = "manual"
    settings: dict[str, Any] = field(default_factory=dict)
    block_shares: list[float] | None = None
    num_train_timesteps: int = 1000
    forecast_order: int = 1
    thresholds: np.ndarray | None = None

    def __post_init__(self) -> None:
        table = np.asarray(self.table)
        if table.ndim != 2 or not (table.dtype == bool or np.issubdtype(table.dtype, np.integer)):
            raise ScheduleError(
                f"the table must be a 2-D boolean or action array, got {table.dtype} {table.shape}"
            )
        if table.dtype == bool:
            table = np.where(table, RUN, SKIP)
        if not np.isin(table, (SKIP, RUN, REUSE, FORECAST)).all():
            raise ScheduleError("block actions are skip (0), run (1), reuse (2) or forecast (3)")
        if type(self.forecast_order) is not int or self.forecast_order not in ORDERS:
            raise ScheduleError(f"forecast_order must be one of {ORDERS}, got {self.forecast_order!r}")
        self.actions = table.astype(np.int8)
        self.table = self.actions == RUN
        k, t = table.shape
        if len(self.block_names) != k:
            raise ScheduleError(f"the table has {k} rows for {len(self.block_names)} block names")
        if len(set(self.block_names)) != k:
            raise ScheduleError("block names must be distinct")
        if len(self.timesteps) != t:
            raise ScheduleError(f"the table has {t} columns for {len(self.timesteps)} timesteps")
        if self.source not in SOURCES:
            raise ScheduleError(f"source must be one of {SOURCES}, got {self.source!r}")
        self.timesteps = _checked_timesteps(self.timesteps, self.num_train_timesteps)
        if self.block_shares is not None:
            if len(self.block_shares) != k:
                raise ScheduleError(f"{len(self.block_shares)} block shares for {k} blocks")
            if not all(math.isfinite(s) and 0 <= s <= 1 for s in self.block_shares):
                raise ScheduleError("block shares must be FLOP fractions in [0, 1]")
            if sum(self.block_shares) > 1 + 1e-6:
                raise ScheduleError("block shares add up to more than the whole model")
        if self.thresholds is not None:
            self.thresholds = self._checked_thresholds(np.asarray(self.thresholds, dtype=np.float64))

    def _checked_thresholds(self, thresholds: np.ndarray) -> np.ndarray:
        """Thresholds of the table's shape, not negative, finite only on reusing or forecasting cells, with
        the probe block run at every call (it drives the decisions)."""
        if thresholds.shape != self.actions.shape or np.isnan(thresholds).any() or (thresholds < 0).any():
            raise ScheduleError(
                f"thresholds must be a {self.actions.shape} table of numbers >= 0 (inf: the table decides)"
            )
        finite = np.isfinite(thresholds)
        if (finite & ~np.isin(self.actions, (REUSE, FORECAST))).any():
            raise ScheduleError("a threshold belongs on a cell that reuses or forecasts (the others: inf)")
        if finite.any() and not (self.actions[PROBE_BLOCK] == RUN).all():
            raise ScheduleError(f"an adaptive schedule runs its probe block {PROBE_BLOCK} at every step")
        return thresholds if finite.any() else None

    @property
    def adaptive(self) -> bool:
        """Whether cells decide from the probe at sampling time (:attr:`thresholds`)."""
        return self.thresholds is not None

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def full(cls, blocks: Blocks | Sequence[str], timesteps: Sequence[int], **kwargs: Any) -> Schedule:
        """Every block at every step: the full model (baseline B1)."""
        names, shares = _names_and_shares(blocks)
        table = np.ones((len(names), len(timesteps)), dtype=bool)
        return cls(table, names, list(timesteps), "full", block_shares=shares, **kwargs)

    @classmethod
    def from_gate(
        cls,
        gate: SigmoidTimeGate,
        blocks: Blocks | Sequence[str],
        timesteps: Sequence[int],
        num_train_timesteps: int = 1000,
        settings: dict[str, Any] | None = None,
    ) -> Schedule:
        """Evaluate a learned gate's hard decisions at any sampler's timesteps."""
        names, shares = _names_and_shares(blocks)
        if gate.num_blocks != len(names):
            raise ScheduleMismatchError(f"the gate has {gate.num_blocks} blocks, the model {len(names)}")
        values = timestep_values(timesteps)
        with torch.no_grad():
            t = gate_time(values, num_train_timesteps)
            table = open_mask(gate(t.to(gate.a.device))).T.cpu().numpy()
        return cls(
            table,
            names,
            values,
            "learned",
            dict(settings or {}),
            shares,
            num_train_timesteps,
        )

    # -- what it costs ------------------------------------------------------------------------

    @property
    def num_blocks(self) -> int:
        return self.table.shape[0]

    @property
    def num_steps(self) -> int:
        return self.table.shape[1]

    @property
    def executed_ratio(self) -> float:
        """Share of (block, step) pairs that run."""
        return float(self.table.mean())

    def step_flop_ratios(self) -> np.ndarray:
        """FLOPs of each step over the full model's, from the measured block shares."""
        if self.block_shares is None:
            raise ScheduleError("this schedule has no block FLOP shares; build it from find_blocks(model)")
        saved = np.asarray(self.block_shares) @ (~self.table)
        return 1.0 - saved

    @property
    def flop_ratio(self) -> float:
        """FLOPs of the whole sampling run over the full model's."""
        return float(self.step_flop_ratios().mean())

    def flop_ratio_vs(self, steps: int) -> float:
        """FLOPs of the whole sampling run over the full model's at ``steps`` sampler steps (a schedule
        with fewer steps than the full run costs less than its own :attr:`flop_ratio` says)."""
        return self.flop_ratio * self.num_steps / steps

    def run_sets(self) -> int:
        """How many distinct per-step block behaviours the schedule uses (a compiled denoiser makes one
        graph for each): the column's actions, and for a forecast block how many stored runs its
        extrapolation sums (fewer than ``forecast_order + 1`` in the steps after its first runs)."""
        stored = np.zeros(len(self.block_names), dtype=int)
        seen = set()
        for j in range(self.num_steps):
            column = self.actions[:, j]
            forecast_terms = np.where(column == FORECAST, np.minimum(stored, self.forecast_order + 1), 0)
            seen.add((tuple(column), tuple(forecast_terms)))
            stored += column == RUN
        return len(seen)

    @property
    def reuses(self) -> bool:
        """Whether any block reuses or forecasts a cached residual (the run then needs a
        :class:`ReuseCache`: :meth:`new_cache`)."""
        return bool(np.isin(self.actions, (REUSE, FORECAST)).any())

    @property
    def forecasts(self) -> bool:
        """Whether any block forecasts its residual (the file is then written as version 3)."""
        return bool((self.actions == FORECAST).any())

    def kept_blocks(self) -> list[bool]:
        """Which blocks' residuals a sampling run must keep: those the schedule ever reuses or forecasts."""
        return np.isin(self.actions, (REUSE, FORECAST)).any(axis=1).tolist()

    def forecast_blocks(self) -> list[bool]:
        """Which blocks keep their last runs to extrapolate from: those the schedule ever forecasts."""
        return (self.actions == FORECAST).any(axis=1).tolist()

    def new_cache(self) -> ReuseCache | None:
        """An empty cache for one sampling run of this schedule (one per guidance branch); None when it
        neither reuses nor forecasts."""
        if not self.reuses:
            return None
        probe = Probe(self.thresholds) if self.adaptive else None
        return ReuseCache(
            self.num_blocks, self.kept_blocks(), self.forecast_blocks(), self.forecast_order, probe
        )

    def cache_bytes_per_sample(self, blocks: Blocks, element_size: int = 4) -> int:
        """Peak memory of the reuse cache per sample: every block the schedule reuses keeps one
        residual (its output's size) from its first run to the end of the sampling run, every block it
        forecasts ``forecast_order + 1`` of them (at least one)."""
        self.check_blocks(blocks)
        runs = max(1, self.forecast_order + 1)
        kept = zip(blocks, self.kept_blocks(), self.forecast_blocks(), strict=True)
        return sum(b.out_numel * element_size * (runs if f else 1) for b, k, f in kept if k)

    def actions_at(self, step: int) -> list[int]:
        """The block actions (RUN, REUSE, FORECAST, SKIP codes) at sampling step ``step`` (0 = first
        step of the sampler): the ``mask=`` a :class:`GatedModel` call takes. ``table`` is the booleans."""
        return self.actions[:, step].tolist()

    def check_blocks(self, blocks: Blocks | Sequence[str]) -> None:
        """Fail clearly unless ``blocks`` are the blocks this schedule was made for, in order."""
        names, _ = _names_and_shares(blocks)
        if names == self.block_names:
            return
        if len(names) != len(self.block_names):
            raise ScheduleMismatchError(
                f"the schedule is for {len(self.block_names)} blocks, the model has {len(names)}"
            )
        k = next(i for i, (a, b) in enumerate(zip(names, self.block_names, strict=True)) if a != b)
        raise ScheduleMismatchError(
            f"block {k} of the model is {names[k]!r}, the schedule expects {self.block_names[k]!r}"
        )

    # -- JSON ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        forecast = {"forecast_order": self.forecast_order} if self.forecasts else {}
        if self.adaptive:
            rows = [[None if math.isinf(v) else float(v) for v in row] for row in self.thresholds]
            forecast["thresholds"] = rows
        version = ADAPTIVE_VERSION if self.adaptive else VERSION if self.forecasts else 2
        return {
            "format": FORMAT,
            "version": version,
            "source": self.source,
            "settings": self.settings,
            "num_train_timesteps": self.num_train_timesteps,
            "timesteps": list(self.timesteps),
            "block_names": list(self.block_names),
            "block_shares": self.block_shares,
            "executed_ratio": self.executed_ratio,
            "flop_ratio": self.flop_ratio if self.block_shares is not None else None,
            "table": ["".join(CHARS[int(v)] for v in row) for row in self.actions],
            **forecast,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Schedule:
        """Rebuild a schedule from :meth:`to_dict`; a :class:`ScheduleError` for anything malformed."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ScheduleError(f'not a lees schedule (no "format": "{FORMAT}")')
        if data.get("version") not in READS:
            raise ScheduleError(f"schedule version {data.get('version')!r} is not supported")
        try:
            rows = data["table"]
            names = data["block_names"]
            timesteps = data["timesteps"]
            shares = data.get("block_shares")
            settings = data.get("settings", {})
            num_train = data.get("num_train_timesteps", 1000)
            order = data.get("forecast_order", 1)
            thresholds = _read_thresholds(data.get("thresholds"))
        except (KeyError, TypeError) as err:
            raise ScheduleError(f"schedule is missing {err}") from None
        codes = {c: a for a, c in CHARS.items()}
        if not isinstance(rows, list) or not all(isinstance(r, str) and set(r) <= set(codes) for r in rows):
            raise ScheduleError(
                "table must be a list of strings of 1 (run), r (reuse), f (forecast) and 0 (skip), "
                "one per block"
            )
        if not rows or len({len(r) for r in rows}) != 1 or not rows[0]:
            raise ScheduleError("table rows must be non-empty and of equal length")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ScheduleError("block_names must be a list of strings")
        if not isinstance(timesteps, list) or not all(type(s) in (int, float) for s in timesteps):
            raise ScheduleError("timesteps must be a list of numbers")
        if shares is not None and (
            not isinstance(shares, list) or not all(type(s) in (int, float) for s in shares)
        ):
            raise ScheduleError("block_shares must be a list of numbers or null")
        if type(num_train) is not int or num_train < 1 or not isinstance(settings, dict):
            raise ScheduleError("num_train_timesteps must be a positive integer and settings an object")
        table = np.array([[codes[c] for c in r] for r in rows], dtype=np.int8)
        return cls(
            table,
            names,
            timesteps,
            data.get("source", "manual"),
            settings,
            None if shares is None else [float(s) for s in shares],
            num_train,
            order,
            thresholds,
        )

    def save(self, path: str | Path) -> Path:
        """Write the schedule as JSON (atomically: a crash never leaves half a file)."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path, blocks: Blocks | Sequence[str] | None = None) -> Schedule:
        """Read a schedule JSON; with ``blocks``, also check that it was made for them."""
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ScheduleError(f"no schedule file at {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ScheduleError(f"{path} is not valid JSON: {err}") from None
        schedule = cls.from_dict(data)
        if blocks is not None:
            schedule.check_blocks(blocks)
        return schedule
