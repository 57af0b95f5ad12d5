"""The verdict per latency budget: the best run within it, and the best fewer-steps point beside it.

A row is one measured run (``name``, ``kind``, ``solver``, ``steps``, ``latency_ratio``, ``flop_ratio``,
``psnr``, ``ssim``, ``fd_full``, ...). Within a budget b (latency ratio <= b) the best row has the
lowest FD to the full model's samples (the highest PSNR where no feature space was available). When
the best row is itself the full model at fewer steps, the verdict says fewer steps win. Where the
rows hold ``fd_clf`` against real data (``--data``), the line also names the best run and the best
fewer-steps point under it: the two metrics can disagree, and the policy follows fidelity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .runs import FULL

Row = dict[str, Any]


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
        parts.append(f"FD to full {row['fd_full']:.3g}")
    parts += [f"PSNR {row['psnr']:.1f} dB", f"SSIM {row['ssim']:.3f}"]
    if row.get("fd_clf") is not None:
        parts.append(f"fd_clf {row['fd_clf']:.2f}")
    return f"{row['name']} ({', '.join(parts)})"


def verdict(rows: Sequence[Row], budget: float) -> tuple[str, Row | None]:
    """One line for ``budget`` and the winning row (None when nothing measured fits within it)."""
    best, steps = best_within(rows, budget), best_within(rows, budget, "steps")
    if best is None:
        fastest = min((r for r in rows if r["name"] != FULL), key=lambda r: r["latency_ratio"], default=None)
        hint = f"; the fastest measured is {describe(fastest)}" if fastest else ""
        return f"budget {budget:g}: nothing measured runs within {budget:g}x of the full model{hint}", None
    line = f"budget {budget:g}: best {describe(best)}"
    if best is steps:
        line += " -- fewer steps win"
    elif steps is not None:
        line += f"; best fewer steps {describe(steps)}"
    else:
        line += "; no fewer-steps point within the budget"
    return line + _under_data(rows, budget), best


def _under_data(rows: Sequence[Row], budget: float) -> str:
    """The best run and fewer-steps point within ``budget`` by fd_clf to the data, where measured."""
    if any(r.get("fd_clf") is None for r in rows):
        return ""
    by_data = lambda r: r["fd_clf"]  # noqa: E731
    best, steps = best_within(rows, budget, key=by_data), best_within(rows, budget, "steps", by_data)
    full = next(r["fd_clf"] for r in rows if r["name"] == FULL)
    line = f"; under fd_clf to the data (full model {full:.2f}): best {best['name']} ({best['fd_clf']:.2f})"
    return line + (
        ""
        if steps is None or steps is best
        else f", best fewer steps {steps['name']} ({steps['fd_clf']:.2f})"
    )


def verdicts(rows: Sequence[Row], budgets: Sequence[float]) -> list[tuple[str, Row | None]]:
    """:func:`verdict` for each budget, in the order given."""
    return [verdict(rows, b) for b in budgets]
