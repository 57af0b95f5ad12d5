#!/bin/sh
# Issue 34 item 4: an adaptive schedule (lees route --objective probe, lees.learn.probe_search): block 0
# runs at every call, 3 warm-up calls in full, every other cell forecasts unless its block's accumulated
# change of block 0's output exceeds a threshold per stretch of calls (5) and of blocks (2), the thresholds
# searched by rollouts with the guarded search's score (run reference, fd_clf guard, 32 training samples)
# and its action costs (python reuse_costs.py search-guard-0.50 OUT BUDGET probe [BASE], run first).
# Usage: sh search-probe.sh BUDGET (search-probe-BUDGET), or BASE=NAME sh search-probe.sh BUDGET: the
# probe adds runs to NAME/schedule.json's table (search-probe-on-NAME-BUDGET; NAME e.g. search-guard-0.35).
# Run it again after an interruption (OUT/probe_state.json).
b=$1 out="search-probe-$1" base=""
if [ -n "$BASE" ]; then out="search-probe-on-${BASE#search-guard-}-$b" base="$BASE/schedule.json"; fi
[ -d "$out" ] || python reuse_costs.py search-guard-0.50 "$out" "$b" probe $base
OMP_NUM_THREADS=1 PYTHONPATH=../../../src nice lees route --model embedded-dit --sampler euler \
  --steps 30 --guidance-scale 2 --objective probe --target-latency-ratio "$b" --trajectories 32 \
  --max-rollouts 120 --data fashion-mnist ${base:+--probe-base "$base"} --out "$out" \
  > "$out.stdout.txt" 2> "$out.stderr.txt"
