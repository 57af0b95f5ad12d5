#!/bin/sh
# Issue 34's fd_clf bar, second try: the search scored against the full model's run, less 50 dB per unit
# of fd_clf's first-order rise to fashion-mnist (lees route --data: lees.learn.fd_guard; the full model's
# feature statistics from 640 samples on seed 9501, stored in OUT/guard-statistics.safetensors).
# 32 training samples (the guard's change is a mean over them), 120 rollouts, one thread, two side by side.
# Usage: sh search-guard.sh BUDGET (Euler at 30 steps: search-guard-BUDGET), or
#        SAMPLER=dpm++ STEPS=20 sh search-guard.sh BUDGET (search-guard-dpm-BUDGET);
# START=NAME: start from NAME/schedule.json's table (OUT-from-run; the action costs and guard statistics
# of search-guard[-dpm]-0.50 put in its state first by reuse_costs.py); with WEIGHT=W as well, the guard
# takes W dB per unit of fd_clf's rise instead of 50 (OUT-from-run-wW).
# Run it again after an interruption (OUT/search_state.json).
b=$1 sampler=${SAMPLER:-euler} steps=${STEPS:-30}
out="search-guard-$b"; [ "$sampler" = euler ] || out="search-guard-$(echo "$sampler" | tr -d +)-$b"
if [ -n "$START" ]; then
  source="${out%-"$b"}-0.50" out="$out-from-run${WEIGHT:+-w$WEIGHT}"
  [ -d "$out" ] || python reuse_costs.py "$source" "$out" "$b" search "$START/schedule.json" \
    ${WEIGHT:+--guard-weight "$WEIGHT"}
  start="--schedule $START/schedule.json ${WEIGHT:+--guard-weight $WEIGHT}"
fi
OMP_NUM_THREADS=1 PYTHONPATH=../../../src nice lees route --model embedded-dit --sampler "$sampler" \
  --steps "$steps" --guidance-scale 2 --objective search --target-latency-ratio "$b" --trajectories 32 \
  --max-rollouts 120 --data fashion-mnist ${start:-} --out "$out" > "$out.stdout.txt" 2> "$out.stderr.txt"
