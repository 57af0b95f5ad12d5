"""Does lees run on a GPU as it does on the CPU? Correctness on CUDA, then paired timings there.

1. One denoiser call of the embedded model on the same input, CPU vs CUDA: the full model and the
   shipped LEES schedule's skips give the same noise prediction (max abs difference printed).
2. Gate training runs on CUDA (a few steps on Fashion-MNIST): finite loss, gates stay on the GPU.
3. The full model, ASE's default and the shipped LEES schedule sampled side by side on CUDA at
   several batch sizes: latency ratio against FLOP ratio and executed-block ratio.

Prints one JSON line per check; exits non-zero if a check fails. Needs a CUDA device.

    python benchmarks/cuda_check.py --batches 16 64 256
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from lees import GatedModel, Schedule, find_blocks, sample_lockstep
from lees.diffusion.samplers import sampler_timesteps
from lees.learn.gate_training import GateTrainConfig, train_gates
from lees.models.backbones import load_backbone, load_noise_scheduler
from lees.models.data import load_images
from lees.models.denoisers import denoise
from lees.reporting.demo import SHIPPED_GATES
from lees.schedules.baselines import ase_schedule
from lees.schedules.saving import load_gate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--train-steps", type=int, default=30)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this check needs one")
    ok = True

    cpu, gpu = load_backbone("embedded"), load_backbone("embedded", device=args.device)
    noise = load_noise_scheduler("embedded")
    blocks = find_blocks(cpu)
    timesteps = sampler_timesteps(noise, args.steps)
    gate, _ = load_gate(SHIPPED_GATES)
    lees = Schedule.from_gate(gate, blocks, timesteps, noise.config.num_train_timesteps)
    x = torch.randn(8, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.full((8,), timesteps[len(timesteps) // 2])
    for name, mask in (("full", None), ("lees", lees.actions_at(len(timesteps) // 2))):
        with torch.no_grad():
            a = denoise(GatedModel(cpu, blocks), x, t, mask=mask)
            b = denoise(GatedModel(gpu, blocks), x.to(args.device), t.to(args.device), mask=mask)
        diff = float((a - b.cpu()).abs().max())
        ok &= diff < 1e-3
        print(json.dumps({"check": "cpu-vs-cuda", "schedule": name, "max_abs_diff": diff}))

    images, _ = load_images("fashion-mnist", "train")
    config = GateTrainConfig(train_steps=args.train_steps, lam=0.05)
    result = train_gates(gpu, images[:2048], noise, config, blocks, args.device, progress=False)
    losses = [row["loss"] for row in result.log if "loss" in row]
    finite = all(torch.isfinite(torch.tensor(losses)).tolist())
    on_gpu = result.gate.a.device.type == "cuda"
    ok &= finite and on_gpu
    print(json.dumps({"check": "train-on-cuda", "steps": len(result.log), "finite": finite,
                      "gate_on_cuda": on_gpu, "seconds": round(result.seconds, 2)}))  # fmt: skip

    methods = {"full": None, "ase": ase_schedule(blocks, timesteps), "lees": lees}
    for batch in args.batches:
        for seed in (0, 1):  # seed 0 warms up (kernels for this batch size), seed 1 is timed
            runs = sample_lockstep(gpu, methods, batch, args.steps, seed=seed, scheduler=noise,
                                   batch_size=batch, device=args.device, progress=False)  # fmt: skip
        full = runs["full"].seconds
        for name in ("ase", "lees"):
            s = methods[name]
            print(json.dumps({
                "check": "timing", "device": torch.cuda.get_device_name(), "batch": batch, "method": name,
                "latency_ratio": round(runs[name].seconds / full, 4), "flop_ratio": round(s.flop_ratio, 4),
                "executed_ratio": round(s.executed_ratio, 4), "full_s": round(full, 3),
            }))  # fmt: skip
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
