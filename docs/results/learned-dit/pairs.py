"""Head-to-head paired bootstrap intervals between rows of a stored tune (tune-command.sh / cut.sh).

`lees tune` prints one interval per budget (the winner against the best fewer-steps point); this sets
each searched schedule against every other row near its budget, on the same resamples of the sample
indices the tune used (its seed, 200 resamples), under FD to the full model, PSNR and fd_clf to the data
(against the full model itself: fd_clf only), and gives the spread of each row's per-round latency ratio
(the tune's figure is their median).

    PYTHONPATH=../../../src python pairs.py tune-N
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from lees.evaluation.bootstrap import resample_indices
from lees.tune.quality import Scorer
from lees.tune.verdict import versus

RESAMPLES, DATA = 200, "fashion-mnist"
PAIRS = {
    "search-0.50": ["TaylorSeer(cache_interval=3, disable_cache_before_step=3)", "dpm++@15", "euler@15",
                    "uniform-3-forecast", "search-0.35", "MagCache(threshold=0.06)", "full"],
    "search-0.35": ["TaylorSeer(cache_interval=4, disable_cache_before_step=3)", "dpm++@10", "euler@10",
                    "TaylorSeer(cache_interval=3, disable_cache_before_step=3)", "MagCache(threshold=0.12)",
                    "full"],
    "search-ode-0.50": ["TaylorSeer(cache_interval=3, disable_cache_before_step=3)", "dpm++@15", "euler@15",
                        "search-0.50", "full"],
    "search-ode-0.35": ["TaylorSeer(cache_interval=4, disable_cache_before_step=3)", "dpm++@10", "euler@10",
                        "TaylorSeer(cache_interval=3, disable_cache_before_step=3)", "search-0.35", "full"],
}  # fmt: skip
PAIRS |= {f"search-guard-{b}": [*PAIRS[f"search-{b}"][:3], f"search-{b}", "full"] for b in ("0.50", "0.35")}
PAIRS |= {  # the DPM-Solver++-20 reference (tune-dpm-more)
    "search-guard-dpm-0.50": ["TaylorSeer(cache_interval=3, disable_cache_before_step=3)", "unipc@10",
                              "dpm++@10", "search-dpm-0.50", "full"],
    "search-guard-dpm-0.35": ["TaylorSeer(cache_interval=4, disable_cache_before_step=3)", "unipc@7",
                              "dpm++@7", "search-dpm-0.35", "full"],
}  # fmt: skip
PAIRS |= {  # the adaptive schedules (search-probe.sh) beside the static guarded tables, same score and costs
    "search-probe-0.50": ["search-guard-0.50", *PAIRS["search-0.50"][:3], "full"],
    "search-probe-0.35": ["search-guard-0.35", *PAIRS["search-0.35"][:3], "full"],
    "search-probe-on-0.35-0.50": ["search-guard-0.50", "search-probe-0.50", "search-guard-0.35",
                                  PAIRS["search-0.50"][0], "full"],
    "search-guard-dpm-0.35-from-run": [*PAIRS["search-guard-dpm-0.35"][:3], "search-dpm-0.35",
                                       "search-guard-dpm-0.35", "full"],
    "search-guard-dpm-0.35-from-run-w20": [*PAIRS["search-guard-dpm-0.35"][:3], "search-dpm-0.35",
                                           "search-guard-dpm-0.35-from-run", "full"],
}  # fmt: skip
PAIRS |= {  # the solver chosen with the table (search-on.sh)
    "search-guard-unipc10-0.35": [*PAIRS["search-guard-dpm-0.35"][:3], "search-dpm-0.35",
                                  "search-guard-dpm-0.35-from-run", "search-guard-dpm-0.35-from-run-w20",
                                  "full"],
    "search-guard-unipc14-0.50": [*PAIRS["search-guard-dpm-0.50"][:3], "search-guard-dpm-0.50", "full"],
}  # fmt: skip
PAIRS |= {f"search-guard-unipc{k}-0.35": PAIRS["search-guard-unipc10-0.35"] for k in (8, 12)}
PAIRS |= {  # 96 training samples, the costs timed at 16 samples a batch (N=96 BATCH=16 sh search-on.sh ...)
    f"{name}-n96-b16": [*PAIRS[name][:-1], name, "full"]
    for name in ("search-guard-unipc14-0.50", "search-guard-unipc10-0.35")
} | {
    "search-guard-dpm20-0.35-n96-b16-from-run": [*PAIRS["search-guard-unipc10-0.35"][:-1],
                                                 "search-guard-unipc10-0.35-n96-b16", "full"],
}  # fmt: skip
PAIRS |= {  # FD to the full model's samples scored too (FD=W sh search-on.sh ...: lees route --fd-weight W)
    f"search-guard-{on}-0.35-n96-b16{start}-fd{w}": [
        *PAIRS["search-guard-dpm-0.35"][:3], "search-dpm-0.35", "search-guard-dpm20-0.35-n96-b16-from-run",
        "MagCache(threshold=0.12)", "full"]
    for on, start in (("dpm20", "-from-run"), *((f"unipc{k}", "") for k in (8, 9, 10, 12)))
    for w in (10, 20, 40)
}  # fmt: skip


def load(folder: Path) -> dict:
    """Each run's images and per-round seconds, by its name in the table."""
    runs = {}
    for piece in sorted((folder / "pieces").glob("*-*/")):
        name = piece.name.rsplit("-", 1)[0]
        files = sorted(piece.glob("from*.safetensors"), key=lambda p: int(p.stem[4:]))
        tensors = [load_file(str(f)) for f in files]
        runs[name] = ([t["images"] for t in tensors], [float(t["seconds"]) for t in tensors])
    return runs


def main(folder: Path) -> None:
    runs = load(folder)
    names = {"TaylorSeer_cache_interval_3_disable_cache_before_step_3": PAIRS["search-0.50"][0],
             "TaylorSeer_cache_interval_4_disable_cache_before_step_3": PAIRS["search-0.35"][0]}  # fmt: skip
    names |= {
        "MagCache_threshold_0.06": "MagCache(threshold=0.06)",
        "MagCache_threshold_0.12": "MagCache(threshold=0.12)",
        "FirstBlockCache_threshold_0.08": "FirstBlockCache(threshold=0.08)",
    }
    runs = {names.get(k, k): v for k, v in runs.items()}
    full = torch.cat(runs["full"][0])
    seed = json.loads((folder / "tune.json").read_text())["config"]["seed"]
    scorer = Scorer(full, resample_indices(len(full), RESAMPLES, seed), DATA)
    rows, boot = {}, {}
    for name, (images, seconds) in runs.items():
        scores, boot[name] = scorer(torch.cat(images))
        ratios = np.asarray(seconds) / np.asarray(runs["full"][1])
        rows[name] = {"name": name, **scores, "latency_ratio": float(np.median(ratios))}
        q1, q3 = np.percentile(ratios, [25, 75])
        print(f"{name}: latency {np.median(ratios):.3f}x (per-round quartiles {q1:.3f}-{q3:.3f}, "
              f"{len(ratios)} rounds)")  # fmt: skip
    print(f"n = {len(full)}; paired intervals over {RESAMPLES} resamples (seed {seed}); positive: the first "
          "better")  # fmt: skip
    for mine, others in ((m, o) for m, o in PAIRS.items() if m in rows):
        for other in (o for o in others if o in rows):
            for metric in ("fd_full", "psnr", "fd_clf") if other != "full" else ("fd_clf",):
                print(versus(rows[mine], rows[other], boot, metric))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
