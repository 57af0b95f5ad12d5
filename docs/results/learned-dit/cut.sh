#!/bin/sh
# The evaluation on its first K complete rounds of 16 samples: the pieces tune-command.sh stored in tune/
# (sample i depends only on the seed and i, so the first K rounds are those of a run of -n 16K), copied
# into tune-N/, where the same command with -n 16K samples nothing again and scores them.
set -e
K=$1; N=$((K * 16)); OUT=tune-$N
for run in tune/pieces/*/; do
  mkdir -p "$OUT/pieces/$(basename "$run")"
  for first in $(seq 0 16 $((N - 16))); do cp "$run/from$first.safetensors" "$OUT/pieces/$(basename "$run")/"; done
done
N=$N OUT=$OUT ./tune-command.sh
