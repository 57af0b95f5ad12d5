"""Ablation A1 (soft gating at inference) before and after the block-mapping fix, on the same seeds.

lees 0.1 mixed the shipped lambda=0.05 gates onto ``candidate_blocks(model)`` (module registration
order) although they were trained in execution order; gates now carry their block names. This
samples both mappings side by side and prints fd_clf for each.

    python benchmarks/a1_mapping.py -n 256 --seed 0
"""

from __future__ import annotations

import argparse
import copy
import json

import lees
from lees.engine.blocks import candidate_blocks
from lees.evaluation.metrics import ClassifierFeatures, fd, features, reference_features
from lees.models.backbones import EMBEDDED_DIR, load_noise_scheduler
from lees.schedules.saving import load_gate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model, noise = lees.load_backbone("embedded"), load_noise_scheduler("embedded")
    gate, names = load_gate(EMBEDDED_DIR / "lees-0.05" / "gates.safetensors")
    old = copy.deepcopy(gate)
    old.block_names = candidate_blocks(model)  # what lees 0.1 mixed
    moved = sum(a != b for a, b in zip(names, old.block_names, strict=True))
    print(f"# {moved} of {len(names)} gate positions name another block in registration order")
    extractor = ClassifierFeatures()
    ref = reference_features(extractor, "fashion-mnist", "train", n=10_000, progress=False)
    methods = {"A1 before (registration order)": old, "A1 after (by name)": gate}
    runs = lees.sample_lockstep(model, methods, args.n, seed=args.seed, scheduler=noise, progress=False)
    for name, run in runs.items():
        row = {
            "row": name,
            "n": args.n,
            "seed": args.seed,
            "fd_clf": round(fd(features(extractor, run.images), ref), 3),
        }
        print(json.dumps(row))


if __name__ == "__main__":
    main()
