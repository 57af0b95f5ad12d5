#!/bin/sh
# The DPM-Solver++-20 rows that decide the bar, timed again in one session with nothing else running (the
# latency of a cached row moved with the machine's state by up to 0.1 between sessions: README, "The solver
# chosen with the table"): lees tune in a new folder, every row sampled afresh, 256 samples (16 rounds of
# 16) on seed 89 (the first 256 of tune-dpm-on's: the same images), one thread.
# OUT=tune-dpm-timed2 SCHEDULES="..." for another set of searched rows (the default: the first session's).
OMP_NUM_THREADS=1 PYTHONPATH=../../../src lees tune --model embedded-dit --guidance-scale 2 --sampler dpm++ \
  --steps 20 --budgets 0.5 0.35 -n 256 --batch-size 16 --seed 89 --data fashion-mnist \
  --only dpm++@10 dpm++@7 unipc@10 unipc@7 \
    "TaylorSeer(cache_interval=3, disable_cache_before_step=3)" \
    "TaylorSeer(cache_interval=4, disable_cache_before_step=3)" \
  --schedules ${SCHEDULES:-search-dpm-0.35/schedule.json search-guard-dpm-0.50/schedule.json \
    search-guard-dpm-0.35-from-run/schedule.json search-guard-dpm-0.35-from-run-w20/schedule.json \
    search-guard-unipc10-0.35/schedule.json search-guard-unipc14-0.50/schedule.json} \
  --out "${OUT:-tune-dpm-timed}"
