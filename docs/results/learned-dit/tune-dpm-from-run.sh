#!/bin/sh
# tune-dpm-more's evaluation (DPM-Solver++ 20 steps, 496 samples on seed 89, same rows) with the guarded
# DPM table searched from the run-scored search-dpm-0.35 (START=search-dpm-0.35 SAMPLER=dpm++ STEPS=20 sh
# search-guard.sh 0.35, and with WEIGHT=20) as further rows; its pieces start as a copy of tune-dpm-more's.
[ -d tune-dpm-from-run/pieces ] || { mkdir -p tune-dpm-from-run && cp -r tune-dpm-more/pieces tune-dpm-from-run/; }
OUT=tune-dpm-from-run MORE_SCHEDULES="search-guard-dpm-0.50/schedule.json search-guard-dpm-0.35/schedule.json \
search-guard-dpm-0.35-from-run/schedule.json search-guard-dpm-0.35-from-run-w20/schedule.json" exec sh tune-dpm.sh
