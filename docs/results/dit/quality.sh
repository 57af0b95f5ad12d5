#!/bin/bash
# Steps vs quality of embedded-dit under Euler and DPM-Solver++ (500 samples, seed 11, guidance 2),
# its class agreement (500 samples, Euler 50), and the embedded UNet's DDPM-50 on the same samples and
# seed for the 3x bar. Run from the repository root; each command resumes from OUT/work when run again.
set -euo pipefail
export OMP_NUM_THREADS=1
for s in euler dpm++; do
  lees eval --model embedded-dit --sampler $s --steps 50 \
    --schedule full@10 --schedule full@20 --schedule full@30 --schedule full \
    -n 500 --seeds 11 --metric clf inception --out runs/dit-quality/$s
done
lees agreement --model embedded-dit -n 500 --steps 50 --seed 11 --out runs/dit-quality/agreement
lees eval --model embedded -n 500 --seeds 11 --metric clf inception --out runs/dit-quality/unet-ddpm50
