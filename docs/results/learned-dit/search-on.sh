#!/bin/sh
# Issue 34 item 2, the solver chosen with the table: a guarded table on SOLVER at STEPS (fewer than the
# reference's), scored against the full model's run at DPM-Solver++ 20 steps and budgeted as a share of that
# run's latency (lees route --reference-run dpm++@20), from search-guard-dpm-0.50's per-call action costs and
# guard statistics (reuse_costs.py --on). 32 training samples, guard 50, 120 rollouts, one thread.
# Usage: sh search-on.sh SOLVER@STEPS BUDGET (e.g. unipc@10 0.35 -> search-guard-unipc10-0.35);
# N=96: 96 training samples (the guard's change a mean over more of them) -> search-guard-unipc10-0.35-n96;
# BATCH=16: the actions' costs timed afresh at 16 samples a batch, as the evaluation samples (-b16; the
# guard's statistics still search-guard-dpm-0.50's: the full model's, the same for any batch); with
# COSTS=FOLDER as well, that search's costs (timed at the same batch) instead of timing them again;
# START=NAME: start from NAME/schedule.json's table (-from-run), as search-guard.sh does; FD=W: W dB taken
# per unit of FD to the full model's samples, estimated on the training batch (lees route --fd-weight; -fdW).
# Run it again after an interruption (OUT/search_state.json).
on=$1 b=$2 solver=${1%@*} steps=${1#*@}
n=${N:-32} out="search-guard-$(echo "$solver" | tr -d +)$steps-$b${N:+-n$N}${BATCH:+-b$BATCH}${START:+-from-run}${FD:+-fd$FD}"
[ -n "$BATCH" ] && timed="--batch-size $BATCH"
if [ -n "$BATCH" ] && [ -z "$COSTS" ]; then  # the costs timed afresh at the evaluation's batch
  mkdir -p "$out" && cp search-guard-dpm-0.50/guard-statistics.safetensors "$out/"
else  # the per-call costs (and guard statistics) of another search: COSTS, else search-guard-dpm-0.50
  [ -d "$out" ] || python reuse_costs.py "${COSTS:-search-guard-dpm-0.50}" "$out" "$b" search \
    ${START:+"$START/schedule.json"} --on "$on" --trajectories "$n" ${FD:+--fd-weight "$FD"}
fi
[ -n "$START" ] && timed="${timed:-} --schedule $START/schedule.json"
[ -n "$FD" ] && timed="${timed:-} --fd-weight $FD"
OMP_NUM_THREADS=1 PYTHONPATH=../../../src nice lees route --model embedded-dit --sampler "$solver" \
  --steps "$steps" --reference-run dpm++@20 --guidance-scale 2 --objective search \
  --target-latency-ratio "$b" --trajectories "$n" --max-rollouts 120 --data fashion-mnist ${timed:-} --out "$out" \
  > "$out.stdout.txt" 2> "$out.stderr.txt"
