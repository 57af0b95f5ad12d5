#!/bin/sh
# The second reference (issue 34): schedules searched on DPM-Solver++ at 20 steps, guidance 2, at 0.5 and
# 0.35 of that full model's latency; 16 training samples on seed 9001 (no evaluation's), one thread, one
# search after the other. Run from this folder; run it again after an interruption (search_state.json).
for b in 0.50 0.35; do
  OMP_NUM_THREADS=1 PYTHONPATH=../../../src lees route --model embedded-dit --sampler dpm++ --steps 20 \
    --guidance-scale 2 --objective search --target-latency-ratio $b --trajectories 16 --max-rollouts 120 \
    --out search-dpm-$b > search-dpm-$b.stdout.txt 2> search-dpm-$b.stderr.txt
done
