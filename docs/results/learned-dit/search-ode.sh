#!/bin/sh
# Issue 34's fd_clf bar: the Euler-30 tables searched against the full model's run drift from the data under
# fd_clf (worse than the full model, beyond the paired interval), where solvers nearer the converged ODE
# solution (DPM-Solver++) do better than the full model. These searches score each rollout against the ODE
# solution (DPM-Solver++ 2M at 100 steps from the same noise and labels: --reference ode) or against the
# mean of the PSNRs to it and to the full model's run (--reference both). Same training batch and effort as
# search-0.50/0.35 (8 samples on seed 9001, 150 rollouts), one thread each, two side by side.
# Usage: sh search-ode.sh REFERENCE BUDGET  (e.g. both 0.50); run it again after an interruption.
r=$1 b=$2
OMP_NUM_THREADS=1 PYTHONPATH=../../../src nice lees route --model embedded-dit --sampler euler --steps 30 \
  --guidance-scale 2 --objective search --target-latency-ratio "$b" --trajectories 8 --max-rollouts 150 \
  --reference "$r" --out "search-$r-$b" > "search-$r-$b.stdout.txt" 2> "search-$r-$b.stderr.txt"
