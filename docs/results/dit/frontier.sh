#!/bin/bash
# The DiT frontier (issue 30 item 5): embedded-dit, Euler, guidance 2, 1000 samples per method (fd_clf),
# the first 500 of them scored by Inception FID, seed 23 (no other stored result uses it).
# Rows: the full model at 50 and at 40/30/25/20/15/10 Euler steps and at 20/10 DPM-Solver++ steps, ASE,
# uniform reuse every 2nd and 3rd step, uniform forecasting every 3rd step, and the learned schedules
# stored beside this script: the step router at 0.70 and 0.50 of the FLOPs and LEES gates (lambda 0.05),
# trained on this model's Euler-50 trajectory by:
#   lees train --model embedded-dit --sampler euler --steps 50 --lambda 0.05 --out runs/dit/lees-0.05
#   lees route --model embedded-dit --sampler euler --steps 50 --guidance-scale 2 --target-flop-ratio R \
#     --out runs/dit/router-R        (R = 0.70, 0.50)
# Run from the repository root; run again after an interruption (pieces in runs/dit-frontier/pieces).
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
here=docs/results/dit
lees frontier --model embedded-dit -n 1000 --fid-n 500 --steps 50 --fewer 40 30 25 20 15 10 --rows dit \
  --solvers dpm++ --solver-steps 20 10 \
  --schedules $here/router-0.70/schedule.json $here/router-0.50/schedule.json $here/lees-0.05/schedule.json \
  --seed 23 --out runs/dit-frontier | tee runs/dit-frontier-stdout.txt
cp runs/dit-frontier/frontier.jsonl runs/dit-frontier/frontier-*.png $here/
grep -v "img-step" runs/dit-frontier-stdout.txt > $here/frontier-stdout.txt
