#!/bin/sh
# Inception FID (samples 0-299 of the rows that decide the bar) and fidelity to the converged ODE solution
# (samples 0-299 of every row) on the DPM-Solver++-20 evaluation of 1,000 samples on seed 97
# (tune-dpm-1000-fd, read only). Run it again after an interruption: features and ODE pieces are kept.
OMP_NUM_THREADS=1 PYTHONPATH=../../../src python more_metrics.py tune-dpm-1000-fd --out metrics-dpm-1000 \
  --ode-n 300 --fid-n 300 --fid-rows full unipc@7 unipc@10 dpm++@7 dpm++@10 \
  "TaylorSeer(cache_interval=3, disable_cache_before_step=3)" \
  "TaylorSeer(cache_interval=4, disable_cache_before_step=3)" \
  search-guard-unipc14-0.50-n96-b16 search-guard-unipc10-0.35-n96-b16-fd20
