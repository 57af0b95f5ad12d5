#!/bin/sh
# tune-dpm.sh's evaluation (DPM-Solver++ 20 steps, 496 samples on seed 89, same rows) with the tables
# searched with the fd_clf guard (SAMPLER=dpm++ STEPS=20 sh search-guard.sh BUDGET) as further rows; its
# pieces start as a copy of tune-dpm's, so only the new rows are sampled (one thread, as tune-dpm's).
[ -d tune-dpm-more/pieces ] || { mkdir -p tune-dpm-more && cp -r tune-dpm/pieces tune-dpm-more/; }
OUT=tune-dpm-more MORE_SCHEDULES="search-guard-dpm-0.50/schedule.json search-guard-dpm-0.35/schedule.json" \
  exec sh tune-dpm.sh
