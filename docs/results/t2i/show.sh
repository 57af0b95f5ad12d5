#!/bin/bash
# The must-show commands on the four tiny random-weight text-to-image folders (SD, PixArt-alpha,
# SD3, Flux; built offline by tests/t2i_pipelines.py): lees tune, its policy applied inside
# pipe(prompt=...) (apply_policy.py), lees route. Run from the repository root:
#   bash docs/results/t2i/show.sh [WORK]     (WORK: the folders and runs, default /tmp/lees-t2i)
# Each command's output goes to docs/results/t2i/KIND/{tune,policy,route}.txt (stderr beside it, .err).
set -u
W=${1:-/tmp/lees-t2i}
R=docs/results/t2i
PROMPTS=("a red car" "a cat on a sofa")
bash $R/folders.sh "$W" sd pixart sd3 flux
for kind in sd pixart sd3 flux; do
  size=(); [ "$kind" = flux ] && size=(--height 16 --width 16)
  F=$W/$kind; mkdir -p $R/$kind; rm -rf "$F/lees" "$W/tune-$kind" "$W/route-$kind"
  echo "\$ lees tune --model $F --prompts \"a red car\" \"a cat on a sofa\" --budget 0.6 --quick -n 8 ${size[*]} --out $W/tune-$kind" > $R/$kind/tune.txt
  lees tune --model "$F" --prompts "${PROMPTS[@]}" --budget 0.6 --quick -n 8 "${size[@]}" --out "$W/tune-$kind" >> $R/$kind/tune.txt 2> $R/$kind/tune.err
  echo "exit $?" >> $R/$kind/tune.txt
  cp "$W/tune-$kind/tune.json" "$W/tune-$kind/frontier.png" $R/$kind/ 2>/dev/null
  python $R/apply_policy.py "$F" "$W/tune-$kind" "${size[@]}" > $R/$kind/policy.txt 2> $R/$kind/policy.err
  echo "\$ lees route --model $F --prompts \"a red car\" \"a cat on a sofa\" --steps 10 --target-flop-ratio 0.6 ${size[*]} --out $W/route-$kind" > $R/$kind/route.txt
  lees route --model "$F" --prompts "${PROMPTS[@]}" --steps 10 --target-flop-ratio 0.6 "${size[@]}" --out "$W/route-$kind" >> $R/$kind/route.txt 2> $R/$kind/route.err
  echo "exit $?" >> $R/$kind/route.txt
done
