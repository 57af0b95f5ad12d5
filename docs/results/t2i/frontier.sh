#!/bin/bash
# lees frontier through the pipeline's own call on the tiny random-weight SD and Flux folders (built
# offline by tests/t2i_pipelines.py). Run from the repository root:
#   bash docs/results/t2i/frontier.sh [WORK]     (WORK: the folders and runs, default /tmp/lees-t2i)
# (on a CPU shared with other jobs, OMP_NUM_THREADS=1 keeps torch's threads from waiting on each other)
# Each command's output goes to docs/results/t2i/KIND/frontier.txt (stderr beside it, .err), its rows and
# plots (frontier.jsonl, frontier-*.png) to docs/results/t2i/KIND/frontier/.
set -u
W=${1:-/tmp/lees-t2i}
R=docs/results/t2i
bash $R/folders.sh "$W" sd flux
PROMPTS=("a red car" "a cat on a sofa")
for kind in sd flux; do
  size=(); other=dpm++
  [ "$kind" = flux ] && size=(--height 16 --width 16) && other=unipc  # Flux passes sigmas: not to dpm++
  F=$W/$kind; O=$W/frontier-$kind; mkdir -p $R/$kind/frontier; rm -rf "$O"
  args=(--model "$F" --prompts "${PROMPTS[@]}" -n 8 --batch-size 2 --steps 10 --fewer 8 6 4 --solvers $other
        --solver-steps 10 6 4 --reuse-steps 6 "${size[@]}" --out "$O")
  echo "\$ lees frontier $(printf '%q ' "${args[@]}")" > $R/$kind/frontier.txt
  lees frontier "${args[@]}" >> $R/$kind/frontier.txt 2> $R/$kind/frontier.err
  echo "exit $?" >> $R/$kind/frontier.txt
  cp "$O"/frontier.jsonl "$O"/frontier-*.png $R/$kind/frontier/ 2>/dev/null
done
