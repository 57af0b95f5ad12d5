"""Each row's seconds per timed round (16 samples) in stored tunes: median, lowest and highest.

The DPM-Solver++-20 rows timed in two sessions of their own (tune-dpm-timed, tune-dpm-timed2) disagreed
on every hooked row's latency ratio; this prints what moved: the plain full model's time or the rows'.

    PYTHONPATH=../../../src python seconds.py tune-dpm-timed tune-dpm-timed2
"""

import sys
from pathlib import Path

import numpy as np
from pairs import load

for folder in sys.argv[1:]:
    for name, (_, seconds) in sorted(load(Path(folder)).items()):
        print(f"{folder} {name}: median {np.median(seconds):.2f} s, lowest {min(seconds):.2f}, highest "
              f"{max(seconds):.2f} ({len(seconds)} rounds)")  # fmt: skip
