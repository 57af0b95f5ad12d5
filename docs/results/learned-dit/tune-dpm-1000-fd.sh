#!/bin/sh
# tune-dpm-1000's evaluation (DPM-Solver++ 20 steps, 1,000 samples on seed 97, the same rows, pieces
# reused) with the tables searched with FD to the full model's samples in the score (search-on.sh with
# FD=20: lees route --fd-weight 20) as further rows. Their latency here is paired with tune-dpm-1000's
# full-model rounds (another session): alone.py times them in one session. EXTRA: more schedule files.
[ -d tune-dpm-1000-fd/pieces ] || { mkdir -p tune-dpm-1000-fd && cp -r tune-dpm-1000/pieces tune-dpm-1000-fd/; }
OUT=tune-dpm-1000-fd MORE_SCHEDULES="search-guard-unipc12-0.35-n96-b16-fd20/schedule.json \
search-guard-unipc10-0.35-n96-b16-fd20/schedule.json ${EXTRA:-}" exec sh tune-dpm-1000.sh
