"""The protocol's methods in report order, and the runs behind them."""

from __future__ import annotations

# The protocol's methods, in report order (paper names in brackets). The rows of the hand-made
# methods are named as lees.schedules.registry names them; reports of earlier runs name uniform-2
# reuse-2 and full@35 full-35 (the registry reads those names as aliases).
METHODS = {
    "full": "B1 full model",
    "ase": "B2 ASE default",
    "ase-grid": "B3 ASE grid-tuned",
    "lees-0.01": "LEES hard, lambda=0.01",
    "lees-0.05": "LEES hard, lambda=0.05",
    "lees-0.1": "LEES hard, lambda=0.1",
    "ste": "LEES trained with the paper's STE (lambda=0.05)",
    "soft": "A1 LEES soft gating (lambda=0.05)",
    "lambda-0": "A2 LEES lambda=0",
    "random": "A3 random fixed gates (LEES-0.05 ratio)",
    "budget": "LEES budget mode (ours)",
    "router": "Router: learned run-or-reuse (ours)",
    "uniform-2": "uniform reuse, all blocks every 2nd step",
    "deepcache-3": "DeepCache N=3 (outer level runs)",
    "full@35": "full model, 35 steps",
    "full@25": "full model, 25 steps",
    "full@15": "full model, 15 steps",
}

FEWER_STEPS = ("full@35", "full@25", "full@15")  # with "full": the curve every method must beat
# The rows built from their method names (lees.schedules.registry); the others are trained or searched.
NAMED_ROWS = ("full", "ase", "uniform-2", "deepcache-3", *FEWER_STEPS)

GATE_RUNS = {
    "lees-0.01": {"lam": 0.01},
    "lees-0.05": {"lam": 0.05},
    "lees-0.1": {"lam": 0.1},
    "lambda-0": {"lam": 0.0},
    "budget": {"lam": 0.0, "target_gated_share": None},  # the config's budget ratio
    "ste": {"lam": 0.05, "estimator": "ste"},  # the paper's estimator, for comparison
}

# Inception FID on the CPU goes to the rows the conclusions rest on (every row on a GPU).
FID_KEY_ROWS = ("full", "ase", "ase-grid", "lees-0.05", "router", "uniform-2", "deepcache-3", *FEWER_STEPS)

# lees frontier --rows: which methods beside the full model's rows (all: every one it knows)
ROW_SETS: dict[str, list[str] | None] = {
    "all": None,
    "reuse-vs-skip": ["ase", "lees-0.05", "uniform-2-skip", "uniform-2", "uniform-3", "uniform-5",
                      "router-0.70", "router-0.50"],
    "reuse": ["uniform-2", "uniform-3", "deepcache-2", "deepcache-3", "router-0.70"],
    "learned": ["uniform-2", "deepcache-3", "router-0.70"],
    "dit": ["ase", "uniform-2", "uniform-3", "uniform-3-forecast"],  # a transformer's hand-made rows
}  # fmt: skip
