#!/bin/sh
# Item 8 with the DPM-Solver++-20 reference at 1,000 samples on seed 97 (never used before by the project;
# the shipped dit-search-dpm-0.50 was chosen on seed 89's 496 samples: this is its confirmation on samples
# it has not seen), every row from the same noise and labels, one thread, 16 samples per timed round,
# paired bootstrap intervals (200 resamples). Run it again after an interruption: stored pieces are reused.
# MORE_SCHEDULES: further schedule files, as rows.
OMP_NUM_THREADS=1 PYTHONPATH=../../../src lees tune --model embedded-dit --guidance-scale 2 --sampler dpm++ \
  --steps 20 --budgets 0.5 0.35 -n "${N:-1000}" --batch-size 16 --seed 97 --data fashion-mnist \
  --only dpm++@10 dpm++@7 euler@10 euler@7 unipc@10 unipc@7 \
    "TaylorSeer(cache_interval=3, disable_cache_before_step=3)" \
    "TaylorSeer(cache_interval=4, disable_cache_before_step=3)" "MagCache(threshold=0.12)" \
    "FirstBlockCache(threshold=0.08)" \
  --schedules search-guard-unipc14-0.50-n96-b16/schedule.json search-dpm-0.35/schedule.json \
    search-guard-dpm20-0.35-n96-b16-from-run/schedule.json search-guard-dpm-0.35-from-run/schedule.json \
    search-guard-dpm-0.35-from-run-w20/schedule.json search-guard-unipc10-0.35/schedule.json \
    ${MORE_SCHEDULES:-} \
  --out "${OUT:-tune-dpm-1000}"
