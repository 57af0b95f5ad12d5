"""Start a search folder with the action costs (and guard statistics) another search timed.

The first guarded DPM-Solver++ search at 0.35 had its costs timed while other jobs ran; it was run again
with the costs that `search-guard-dpm-0.50` timed on a machine of its own: the new folder's state holds
the same settings but the budget, those costs and no scores, and the guard statistics file beside it
(the same solver, steps and seed: the same statistics). `lees route` then reads the costs from the state
instead of timing them.

    python reuse_costs.py search-guard-dpm-0.50 search-guard-dpm-0.35 0.35
    SAMPLER=dpm++ STEPS=20 sh search-guard.sh 0.35

The adaptive schedules' threshold searches (`search-probe.sh`) start the same way from `search-guard-0.50`,
with the probe's settings (`lees route --objective probe`'s defaults) added to the state:

    python reuse_costs.py search-guard-0.50 search-probe-0.50 0.5 probe
    python reuse_costs.py search-guard-0.50 search-probe-on-0.35-0.50 0.5 probe \
        search-guard-0.35/schedule.json

the solver chosen with the table (`search-on.sh`: UniPC at 10 steps scored and timed against DPM-Solver++
at 20, the costs per call of `search-guard-dpm-0.50`):

    python reuse_costs.py search-guard-dpm-0.50 search-guard-unipc10-0.35 0.35 --on unipc@10

and the guarded DPM search at 0.35 started from the run-scored table `search-dpm-0.35` (search-guard.sh
with START=search-dpm-0.35):

    python reuse_costs.py search-guard-dpm-0.50 search-guard-dpm-0.35-from-run 0.35 search \
        search-dpm-0.35/schedule.json

and with FD to the full model's samples in the score as well (search-on.sh with FD=20: `--fd-weight 20`).
"""

import argparse
import json
import shutil
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("source", type=Path)
parser.add_argument("target", type=Path)
parser.add_argument("budget", type=float)
parser.add_argument("objective", nargs="?", default="search", choices=("search", "probe"))
parser.add_argument("table", nargs="?", default=None, help="the probe's base, or the search's start")
parser.add_argument("--guard-weight", type=float, default=None, help="another guard weight than the source's")
parser.add_argument("--fd-weight", type=float, default=None, help="lees route --fd-weight")
parser.add_argument("--on", default=None, metavar="SOLVER@STEPS",
                    help="the table on another solver and steps, scored and timed against the source's run")
parser.add_argument("--trajectories", type=int, default=None, help="another training batch than the source's")
args = parser.parse_args()
source, target, budget, objective, table = args.source, args.target, args.budget, args.objective, args.table
stored = json.loads((source / "search_state.json").read_text())
target.mkdir()
config = {**stored["config"], "target_latency_ratio": budget}
if objective == "probe":
    config |= {"warmup": 3, "segments": 5, "groups": 2, "base": table}
elif table is not None:
    config |= {"start": table}
if args.guard_weight is not None:
    config["guard_weight"] = args.guard_weight
if args.fd_weight is not None:
    config["fd_weight"] = args.fd_weight
if args.trajectories is not None:  # the guard's statistics are the full model's: the same for any batch
    config["samples"] = args.trajectories
if args.on is not None:  # the costs are per call: the source's hold for the same model and batch
    solver, steps = args.on.split("@")
    against = config.get("reference_run") or f"{config['sampler']}@{config['steps']}"
    config |= {"sampler": solver, "steps": int(steps), "reference_run": against}
state = {"config": config, "scores": {}, "costs": stored["costs"]}
(target / f"{objective}_state.json").write_text(json.dumps(state))
shutil.copy(source / "guard-statistics.safetensors", target)
print(f"wrote {target}/{objective}_state.json (the costs of {source}), {target}/guard-statistics.safetensors")
