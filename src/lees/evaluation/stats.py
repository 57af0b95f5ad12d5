"""Statistics over seeds: mean and sample standard deviation, and the paired t-test."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def mean(values: Sequence[float]) -> float:
    """The mean over seeds."""
    return mean_std(values)[0]


def paired_t(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Paired t-test over seeds (scipy's ttest_rel): t statistic and two-sided p-value."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError("a paired t-test needs two equally long series of at least 2 seeds")
    from scipy import stats  # imported here: scipy.stats takes a second to import

    result = stats.ttest_rel(a, b)
    return float(result.statistic), float(result.pvalue)


def mean_pm_std(values: Sequence[float], fmt: str = ".3f") -> str:
    """``mean ± std`` over seeds, as every report prints it."""
    m, s = mean_std(values)
    return f"{m:{fmt}} ± {s:{fmt}}"
