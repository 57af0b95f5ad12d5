"""Start a search folder with the action costs (and guard statistics) another search timed.

The first guarded DPM-Solver++ search at 0.35 had its costs timed while other jobs ran; it was run again
with the costs that `search-guard-dpm-0.50` timed on a machine of its own: the new folder's state holds
the same settings but the budget, those costs and no scores, and the guard statistics file beside it
(the same solver, steps and seed: the same statistics). `lees route` then reads the costs from the state
instead of timing them.

    python reuse_costs.py search-guard-dpm-0.50 search-guard-dpm-0.35 0.35
    SAMPLER=dpm++ STEPS=20 sh search-guard.sh 0.35
"""

import json
import shutil
import sys
from pathlib import Path

source, target, budget = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
stored = json.loads((source / "search_state.json").read_text())
target.mkdir()
config = {**stored["config"], "target_latency_ratio": budget}
state = {"config": config, "scores": {}, "costs": stored["costs"]}
(target / "search_state.json").write_text(json.dumps(state))
shutil.copy(source / "guard-statistics.safetensors", target)
print(f"wrote {target}/search_state.json (the costs of {source}) and {target}/guard-statistics.safetensors")
