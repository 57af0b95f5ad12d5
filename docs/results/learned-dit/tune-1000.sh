#!/bin/sh
# The 1,000-sample evaluation: every row from the same noise and labels on seed 83 (never used before by
# the project), one thread (a second process on the other core moves a one-thread timing least), 16
# samples per timed round, paired bootstrap intervals (200 resamples). Run from this folder; run it again
# after an interruption: the stored pieces are reused. MORE_SCHEDULES: further schedule files, as rows.
OMP_NUM_THREADS=1 PYTHONPATH=../../../src lees tune --model embedded-dit --guidance-scale 2 \
  --steps 30 --budgets 0.5 0.35 -n "${N:-1000}" --batch-size 16 --seed 83 --data fashion-mnist \
  --only euler@15 euler@10 dpm++@15 dpm++@10 \
    "TaylorSeer(cache_interval=3, disable_cache_before_step=3)" \
    "TaylorSeer(cache_interval=4, disable_cache_before_step=3)" \
    "MagCache(threshold=0.12)" "MagCache(threshold=0.06)" "FirstBlockCache(threshold=0.08)" \
  --schedules search-0.50/schedule.json search-0.35/schedule.json uniform-3-forecast/schedule.json \
    gates-0.45/schedule.json ${MORE_SCHEDULES:-} \
  --out "${OUT:-tune-1000}"
