#!/bin/sh
# The evaluation: every row from the same noise and labels on seed 71 (never used before by the project),
# 16 samples per timed round, paired bootstrap intervals (200 resamples). Run from this folder.
OMP_NUM_THREADS=2 PYTHONPATH=../../../src nice -n 10 lees tune --model embedded-dit --guidance-scale 2 \
  --steps 30 --budgets 0.5 0.35 -n "${N:-1024}" --batch-size 16 --seed 71 --data fashion-mnist \
  --only euler@15 euler@10 dpm++@15 dpm++@10 \
    "TaylorSeer(cache_interval=3, disable_cache_before_step=3)" \
    "TaylorSeer(cache_interval=4, disable_cache_before_step=3)" \
  --schedules search-0.50/schedule.json search-0.35/schedule.json uniform-3-forecast/schedule.json \
  --out "${OUT:-tune}"
