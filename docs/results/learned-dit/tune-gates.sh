#!/bin/sh
# tune-more's evaluation (Euler 30 steps, 1,000 samples on seed 83, the same rows, pieces reused) with the
# paper's gates trained for a FLOP share of 0.35 (issue 34 item 6: `lees train --model embedded-dit --data
# fashion-mnist --target-gated-share 0.35 --cost flops --steps 30 --sampler euler --no-held-out --out
# gates-0.35`) as a further row, beside gates-0.45. Its latency pairs with tune-1000's full-model rounds.
[ -d tune-gates/pieces ] || { mkdir -p tune-gates && cp -r tune-more/pieces tune-gates/; }
OUT=tune-gates MORE_SCHEDULES="search-ode-0.50/schedule.json search-ode-0.35/schedule.json \
search-guard-0.50/schedule.json search-guard-0.35/schedule.json gates-0.35/schedule.json" exec sh tune-1000.sh
