#!/bin/bash
# Builds the tiny random-weight text-to-image folders (tests/t2i_pipelines.py) that WORK lacks:
#   bash docs/results/t2i/folders.sh WORK KIND ...     (KIND: sd, pixart, sd3, flux; from the repository root)
W=$1; shift
mkdir -p "$W"
python -c "
import sys
from pathlib import Path
from tests.t2i_pipelines import build_pipeline
for kind in sys.argv[2:]:
    if not (Path(sys.argv[1]) / kind / 'model_index.json').exists():
        build_pipeline(kind, Path(sys.argv[1]) / kind)
" "$W" "$@" 2>/dev/null
