#!/bin/sh
# tune-dpm-from-run's evaluation (DPM-Solver++ 20 steps, 496 samples on seed 89, same rows) with the tables
# searched on another solver's fewer steps against the DPM-Solver++-20 run (search-on.sh: UniPC at 8, 10
# and 12 steps for 0.35, at 14 for 0.5; -n96-b16: 96 training samples, the costs timed at 16 a batch) as
# further rows, sampled with their own solver; pieces start as tune-dpm-from-run's. EXTRA: more files.
[ -d tune-dpm-on/pieces ] || { mkdir -p tune-dpm-on && cp -r tune-dpm-from-run/pieces tune-dpm-on/; }
OUT=tune-dpm-on MORE_SCHEDULES="search-guard-dpm-0.50/schedule.json search-guard-dpm-0.35/schedule.json \
search-guard-dpm-0.35-from-run/schedule.json search-guard-dpm-0.35-from-run-w20/schedule.json \
search-guard-unipc8-0.35/schedule.json search-guard-unipc10-0.35/schedule.json \
search-guard-unipc12-0.35/schedule.json search-guard-unipc14-0.50/schedule.json \
search-guard-unipc14-0.50-n96-b16/schedule.json ${EXTRA:-}" exec sh tune-dpm.sh
