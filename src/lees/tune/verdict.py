"""The verdict per latency budget: the best run within it, and the best fewer-steps point beside it.

A row is one measured run (``name``, ``kind``, ``solver``, ``steps``, ``latency_ratio``, ``flop_ratio``,
``psnr``, ``ssim``, ``fd_full``, ...). Within a budget b (latency ratio <= b) the best row has the
lowest FD to the full model's samples (the highest PSNR where no feature space was available). When
the best row is itself the full model at fewer steps, the verdict says fewer steps win. Where the
rows hold ``fd_clf`` against real data (``--data``), the line also names the best run and the best
fewer-steps point under it: the two metrics can disagree, and the policy follows fidelity.

With each row's figures on the paired bootstrap resamples (``boot``, by row name; see
:mod:`lees.evaluation.bootstrap`), the line also says whether the winner lies above, on or below the
runner it is set against (the best fewer-steps point; where fewer steps win, the best other run; under
fd_clf, the full model): above or below only where the interval of the difference excludes a tie.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..evaluation.bootstrap import LEVEL, percentile_interval, tie_verdict
from .runs import FULL

Row = dict[str, Any]
Boot = Mapping[str, Mapping[str, np.ndarray]]  # by row name, by figure: its value on each resample


def quality_key(row: Row) -> float:
    """Lower is better: the FD to the full model, else minus the PSNR."""
    return row["fd_full"] if row.get("fd_full") is not None else -row["psnr"]


def best_within(
    rows: Sequence[Row], budget: float, kind: str | None = None, key: Callable[[Row], float] = quality_key
) -> Row | None:
    """The best row by ``key`` (of ``kind``, if given) with a latency ratio within ``budget``; None if
    none fits."""
    fits = [
        r for r in rows
        if r["name"] != FULL and r["latency_ratio"] <= budget and (kind is None or r["kind"] == kind)
    ]  # fmt: skip
    return min(fits, key=key, default=None)


def describe(row: Row) -> str:
    """A row's name with its latency ratio and quality, on one line."""
    parts = [f"latency {row['latency_ratio']:.2f}x"]
    if row.get("fd_full") is not None:
        parts.append(f"FD to full {max(row['fd_full'], 0.0):.3g}")  # the full model's own rounds below 0
    parts += [f"PSNR {row['psnr']:.1f} dB", f"SSIM {row['ssim']:.3f}"]
    if row.get("fd_clf") is not None:
        parts.append(f"fd_clf {row['fd_clf']:.2f}")
    return f"{row['name']} ({', '.join(parts)})"


def versus(a: Row, b: Row, boot: Boot, metric: str | None = None) -> str:
    """``a`` against ``b`` on ``metric`` (default: the quality key's, FD to the full model or PSNR): the
    paired difference (positive: ``a`` better), its interval and the verdict."""
    metric = metric or ("fd_full" if a.get("fd_full") is not None else "psnr")
    sign = -1 if metric.startswith("psnr") or metric.startswith("ssim") else 1  # those: higher is better
    diff = sign * (np.asarray(boot[b["name"]][metric]) - np.asarray(boot[a["name"]][metric]))
    low, high = percentile_interval(diff)
    return (
        f"{a['name']} {tie_verdict((low, high))} {b['name']} under {metric}: "
        f"{sign * (b[metric] - a[metric]):+.3g} ({LEVEL:.0%} interval {low:+.3g} to {high:+.3g})"
    )


def verdict(rows: Sequence[Row], budget: float, boot: Boot | None = None) -> tuple[str, Row | None]:
    """One line for ``budget`` and the winning row (None when nothing measured fits within it); with
    ``boot``, the winner against its runner with the paired interval."""
    best, steps = best_within(rows, budget), best_within(rows, budget, "steps")
    if best is None:
        fastest = min((r for r in rows if r["name"] != FULL), key=lambda r: r["latency_ratio"], default=None)
        hint = f"; the fastest measured is {describe(fastest)}" if fastest else ""
        return f"budget {budget:g}: nothing measured runs within {budget:g}x of the full model{hint}", None
    line = f"budget {budget:g}: best {describe(best)}"
    other = steps
    if best is steps:
        line += " -- fewer steps win"
        other = best_within([r for r in rows if r["kind"] != "steps"], budget)
    elif steps is not None:
        line += f"; best fewer steps {describe(steps)}"
    else:
        line += "; no fewer-steps point within the budget"
    if boot is not None and other is not None:
        line += f" [{versus(best, other, boot)}]"
    return line + _under_data(rows, budget, boot), best


def _under_data(rows: Sequence[Row], budget: float, boot: Boot | None) -> str:
    """The best run and fewer-steps point within ``budget`` by fd_clf to the data, where measured (and
    with ``boot``, the best against the full model)."""
    if any(r.get("fd_clf") is None for r in rows):
        return ""
    by_data = lambda r: r["fd_clf"]  # noqa: E731
    best, steps = best_within(rows, budget, key=by_data), best_within(rows, budget, "steps", by_data)
    full = next(r for r in rows if r["name"] == FULL)
    line = f"; under fd_clf to the data (full model {full['fd_clf']:.2f}): "
    line += f"best {best['name']} ({best['fd_clf']:.2f})"
    line += (
        ""
        if steps is None or steps is best
        else f", best fewer steps {steps['name']} ({steps['fd_clf']:.2f})"
    )
    return line + ("" if boot is None else f" [{versus(best, full, boot, 'fd_clf')}]")


def verdicts(
    rows: Sequence[Row], budgets: Sequence[float], boot: Boot | None = None
) -> list[tuple[str, Row | None]]:
    """:func:`verdict` for each budget, in the order given."""
    return [verdict(rows, b, boot) for b in budgets]
