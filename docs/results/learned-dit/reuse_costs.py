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
"""

import json
import shutil
import sys
from pathlib import Path

source, target, budget = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
objective = sys.argv[4] if len(sys.argv) > 4 else "search"
stored = json.loads((source / "search_state.json").read_text())
target.mkdir()
config = {**stored["config"], "target_latency_ratio": budget}
if objective == "probe":
    config |= {"warmup": 3, "segments": 5, "groups": 2, "base": sys.argv[5] if len(sys.argv) > 5 else None}
state = {"config": config, "scores": {}, "costs": stored["costs"]}
(target / f"{objective}_state.json").write_text(json.dumps(state))
shutil.copy(source / "guard-statistics.safetensors", target)
print(f"wrote {target}/{objective}_state.json (the costs of {source}), {target}/guard-statistics.safetensors")
