"""Apply a saved `lees tune` policy to a diffusers pipeline and check it samples what the tune measured.

The DiT tune (docs/results/tune/README.md) saved its winner in runs/tune/dit/policy.json (a copy is
stored beside this script). This loads the embedded DiT as a diffusers pipeline (lees'
ClassFlowPipeline), samples 16 images with the full model at the tune's reference (Euler, 30 steps,
guidance 2), then with the policy enabled, from the same noise, and prints the PSNR between the two
sets (the tune measured 43.0 dB on its 500 samples) and the seconds each took.

    python docs/results/tune/apply.py [FOLDER]     # FOLDER holding policy.json (default: beside this file)
"""

import sys
import time
from pathlib import Path

import torch

import lees
from lees.evaluation.fidelity import psnr
from lees.models.pipelines import ClassFlowPipeline


def sample(pipe, steps: int) -> tuple[torch.Tensor, float]:
    gens = [torch.Generator().manual_seed(i) for i in range(16)]
    start = time.perf_counter()
    out = pipe(class_labels=[i % 10 for i in range(16)], guidance_scale=2.0, num_inference_steps=steps,
               generator=gens, output_type="pt")  # fmt: skip
    return out.images * 2 - 1, time.perf_counter() - start


folder = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).parent / "dit")
pipe = ClassFlowPipeline.from_pretrained(lees.EMBEDDED_DIT_DIR)
full, full_s = sample(pipe, 30)
lees.enable(pipe, folder)
print(f"pipe.scheduler is now {type(pipe.scheduler).__name__}; lees.tuned: {lees.tuned(folder)}")
fast, fast_s = sample(pipe, lees.tuned(folder)["num_inference_steps"])
lees.disable(pipe)
print(f"full model: {full_s:.1f} s; with the policy: {fast_s:.1f} s ({fast_s / full_s:.2f}x)")
print(f"PSNR of the policy's samples to the full model's, same noise: {psnr(fast, full).mean():.1f} dB")
