#!/usr/bin/env bash
# lees route on the embedded DiT (Euler 30, guidance 2) asked for 0.5 and 0.35 of the FLOPs, small
# training settings (20 optimisation steps, 8 teacher trajectories, batch 4: the CPU was shared by 6 agents); prints go to stdout.txt
set -euo pipefail
out=${1:-docs/results/router-budget}
for target in 0.5 0.35; do
  echo "\$ lees route --model embedded-dit --sampler euler --steps 30 --guidance-scale 2 --target-flop-ratio $target --train-steps 20 --trajectories 8 --batch-size 4 --out $out/$target"
  lees route --model embedded-dit --sampler euler --steps 30 --guidance-scale 2 --target-flop-ratio "$target" \
    --train-steps 20 --trajectories 8 --batch-size 4 --out "$out/$target" 2>&1 | tr '\r' '\n' | grep -v "%|\|^ *$" || true
done
