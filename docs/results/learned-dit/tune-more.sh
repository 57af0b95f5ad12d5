#!/bin/sh
# The 1,000-sample evaluation of tune-1000.sh (same seed 83, noise, labels and rows) with the schedules
# searched after it as further rows: against the ODE solution (search-ode.sh) and with the fd_clf guard
# (search-guard.sh). Its pieces start as a copy of tune-1000's, so only the new rows are sampled, each
# timed round paired with the full model's stored one (one thread, as tune-1000's).
[ -d tune-more/pieces ] || { mkdir -p tune-more && cp -r tune-1000/pieces tune-more/; }
OUT=tune-more MORE_SCHEDULES="search-ode-0.50/schedule.json search-ode-0.35/schedule.json \
search-guard-0.50/schedule.json search-guard-0.35/schedule.json" exec sh tune-1000.sh
