"""Where does a denoiser call's time go? Each block's share of the time beside its share of the FLOPs.

Schedules are costed in FLOPs; a device pays in time. This measures, for one architecture and
batch size, what skipping each block saves in time (its own call on the inputs it sees in a full
forward pass, minus its shortcut's) and what the parts no gate covers cost (the model with every
block skipped), as shares of the full call, all timed in interleaved rounds (medians). Where a
block's time share differs from its FLOP share, skipping it saves more or less time than its FLOPs
promise: this is why latency ratios and FLOP ratios part ways.

    python benchmarks/block_costs.py --arch embedded --batch 64 --plot block-costs.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from lees import GatedModel, Schedule, find_blocks
from lees.engine.blocks import SHORTCUTS, resolve_modules
from lees.models.architectures import ARCHITECTURES
from lees.models.backbones import build_architecture, load_backbone
from lees.models.denoisers import example_inputs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="embedded", choices=["embedded", *sorted(ARCHITECTURES)])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds (median)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--plot", default=None, help="PNG: time share against FLOP share per block")
    args = parser.parse_args()

    model = load_backbone("embedded") if args.arch == "embedded" else build_architecture(args.arch)
    model = model.to(args.device).eval()
    blocks = find_blocks(model)
    modules = resolve_modules(model, blocks.names)
    inputs, kwargs = example_inputs(model, batch=args.batch)
    captured: dict[int, tuple] = {}
    hooks = [
        m.register_forward_pre_hook(lambda mod, a, kw, k=k: captured.setdefault(k, (a, kw)), with_kwargs=True)
        for k, m in enumerate(modules)
    ]
    with torch.inference_mode():
        model(*inputs, **kwargs)
    for h in hooks:
        h.remove()

    gated = GatedModel(model, blocks)
    none = Schedule(np.zeros((len(blocks), 1), bool), blocks.names, [500], "manual", {}, blocks.shares)
    calls = {
        "full": lambda: model(*inputs, **kwargs),
        "remainder": lambda: gated(*inputs, mask=none.actions_at(0), **kwargs),
    }
    for k, (block, module) in enumerate(zip(blocks, modules, strict=True)):
        a, kw = captured[k]
        calls[block.name] = lambda m=module, a=a, kw=kw: m(*a, **kw)
        calls[f"{block.name}:shortcut"] = lambda m=module, a=a, kw=kw, s=SHORTCUTS[block.kind]: s(m, a, kw)
    sync = torch.cuda.synchronize if torch.device(args.device).type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        for round_ in range(args.repeats + 1):  # round 0 warms up
            for name, call in calls.items():
                sync()
                started = time.perf_counter()
                call()
                sync()
                if round_:
                    times[name].append(time.perf_counter() - started)
    median = {name: statistics.median(t) for name, t in times.items()}
    full = median["full"]
    rows = [
        {
            "block": b.name,
            "kind": b.kind,
            "flop_share": round(b.share, 4),
            "time_share": round((median[b.name] - median[f"{b.name}:shortcut"]) / full, 4),
        }
        for b in blocks
    ]
    for row in rows:
        print(json.dumps(row))
    summary = {
        "arch": args.arch,
        "batch": args.batch,
        "device": args.device,
        "full_ms": round(1000 * full, 2),
        "blocks_flop_share": round(sum(r["flop_share"] for r in rows), 4),
        "blocks_time_share": round(sum(r["time_share"] for r in rows), 4),
        "ungated_flop_share": round(1 - sum(blocks.shares), 4),
        "ungated_time_share": round(median["remainder"] / full, 4),
    }
    print(json.dumps(summary))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 5))
        for kind in sorted({r["kind"] for r in rows}):
            pts = [(r["flop_share"], r["time_share"]) for r in rows if r["kind"] == kind]
            ax.scatter(*zip(*pts, strict=True), label=kind, s=18)
        top = max(max(r["flop_share"], r["time_share"]) for r in rows) * 1.1
        ax.plot([0, top], [0, top], color="grey", lw=0.8, ls="--", label="time = FLOPs")
        ax.set_xlabel("share of the FLOPs")
        ax.set_ylabel("share of the time (saved by skipping it)")
        ax.set_title(f"{args.arch}, batch {args.batch}, {args.device}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
