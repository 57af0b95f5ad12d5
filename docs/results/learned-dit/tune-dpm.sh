#!/bin/sh
# The evaluation against DPM-Solver++ at 20 steps (the second reference): every row from the same noise
# and labels on seed 89 (never used before by the project), one thread, 16 samples per timed round,
# paired bootstrap intervals (200 resamples). Run from this folder; run it again after an interruption.
OMP_NUM_THREADS=1 PYTHONPATH=../../../src lees tune --model embedded-dit --guidance-scale 2 --sampler dpm++ \
  --steps 20 --budgets 0.5 0.35 -n "${N:-496}" --batch-size 16 --seed 89 --data fashion-mnist \
  --only dpm++@10 dpm++@7 euler@10 euler@7 unipc@10 unipc@7 \
    "TaylorSeer(cache_interval=3, disable_cache_before_step=3)" \
    "TaylorSeer(cache_interval=4, disable_cache_before_step=3)" "MagCache(threshold=0.12)" \
  --schedules search-dpm-0.50/schedule.json search-dpm-0.35/schedule.json ${MORE_SCHEDULES:-} \
  --out "${OUT:-tune-dpm}"
