#!/bin/sh
# The adaptive schedules (search-probe.sh) as further rows of the 1,000-sample evaluation (tune-more.sh:
# same seed 83, noise, labels and rows; its stored samples reused, only the new rows sampled, each timed
# round paired with the full model's stored one, one thread).
[ -d tune-probe/pieces ] || { mkdir -p tune-probe && cp -r tune-more/pieces tune-probe/; }
OUT=tune-probe MORE_SCHEDULES="search-ode-0.50/schedule.json search-ode-0.35/schedule.json \
search-guard-0.50/schedule.json search-guard-0.35/schedule.json search-probe-0.50/schedule.json \
search-probe-0.35/schedule.json search-probe-on-0.35-0.50/schedule.json" exec sh tune-1000.sh
