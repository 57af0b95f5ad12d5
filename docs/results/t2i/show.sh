#!/bin/bash
# the must-show commands on one tiny folder: tune, the policy applied inside pipe(prompt=...), route
kind=$1; shift
F=/tmp/t2i/show/$kind
R=/work/wt/t2i/docs/results/t2i/$kind
mkdir -p $R
cd /work/wt/t2i
export PYTHONPATH=src
echo "\$ lees tune --model $F --prompts \"a red car\" \"a cat on a sofa\" --budget 0.6 --quick -n 8 $* --out runs/t2i-$kind" > $R/tune.txt
nice -n 10 /work/main/.venv/bin/lees tune --model $F --prompts "a red car" "a cat on a sofa" --budget 0.6 --quick -n 8 "$@" --out /tmp/t2i/show/tune-$kind >> $R/tune.txt 2>$R/tune.err
echo "exit $?" >> $R/tune.txt
cp /tmp/t2i/show/tune-$kind/tune.json /tmp/t2i/show/tune-$kind/frontier.png $R/ 2>/dev/null
nice -n 10 /work/main/.venv/bin/python /work/wt/t2i/docs/results/t2i/apply_policy.py $F "$@" > $R/policy.txt 2>$R/policy.err
echo "\$ lees route --model $F --prompts \"a red car\" \"a cat on a sofa\" --steps 10 --target-flop-ratio 0.6 $* --out runs/route-$kind" > $R/route.txt
nice -n 10 /work/main/.venv/bin/lees route --model $F --prompts "a red car" "a cat on a sofa" --steps 10 --target-flop-ratio 0.6 "$@" --out /tmp/t2i/show/route-$kind >> $R/route.txt 2>$R/route.err
echo "exit $?" >> $R/route.txt
