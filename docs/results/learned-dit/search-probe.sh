#!/bin/sh
# Issue 34 item 4: an adaptive schedule (lees route --objective probe, lees.learn.probe_search): block 0
# runs at every call, 3 warm-up calls in full, every other cell forecasts unless its block's accumulated
# change of block 0's output exceeds a threshold per stretch of calls (5) and of blocks (2), the thresholds
# searched by rollouts with the guarded search's score (run reference, fd_clf guard, 32 training samples)
# and its action costs (python reuse_costs.py search-guard-0.50 search-probe-B B probe, run first).
# Usage: sh search-probe.sh BUDGET; run it again after an interruption (OUT/probe_state.json).
b=$1 out="search-probe-$1"
[ -d "$out" ] || python reuse_costs.py search-guard-0.50 "$out" "$b" probe
OMP_NUM_THREADS=1 PYTHONPATH=../../../src nice lees route --model embedded-dit --sampler euler \
  --steps 30 --guidance-scale 2 --objective probe --target-latency-ratio "$b" --trajectories 32 \
  --max-rollouts 120 --data fashion-mnist --out "$out" > "$out.stdout.txt" 2> "$out.stderr.txt"
