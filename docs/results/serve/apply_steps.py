"""A policy tuned at two step counts, applied to a pipeline called at 20, 30 and 25 steps.

`lees tune --model embedded-dit --steps 20 30 ...` (tune-stdout.txt beside this file) saved a winner for
20 and one for 30 steps in one policy.json (copied beside this file). This enables it on the embedded DiT
as a diffusers pipeline (lees' ClassFlowPipeline) with on_mismatch="full", calls it at 20, 30 and 25
steps (8 images, guidance 2, the same noise each time) and prints what ran each time: the policy it
picked, the scheduler and the number of denoiser calls, the warnings, and the output against the same
call of the plain pipeline (PSNR; at 25 steps, which no winner was tuned for, it must equal it exactly).

    python docs/results/serve/apply_steps.py [FOLDER]   # FOLDER holding policy.json (default: beside it)
"""

import sys
import warnings
from pathlib import Path

import torch

import lees
from lees.evaluation.fidelity import psnr
from lees.models.pipelines import ClassFlowPipeline


def sample(pipe, steps: int) -> torch.Tensor:
    gens = [torch.Generator().manual_seed(i) for i in range(8)]
    out = pipe(class_labels=list(range(8)), guidance_scale=2.0, num_inference_steps=steps, generator=gens,
               output_type="pt")  # fmt: skip
    return out.images * 2 - 1


folder = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).parent)
plain = ClassFlowPipeline.from_pretrained(lees.EMBEDDED_DIT_DIR)
pipe = ClassFlowPipeline.from_pretrained(lees.EMBEDDED_DIT_DIR)
for p in (plain, pipe):
    p.set_progress_bar_config(disable=True)
calls = []
pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
lees.enable(pipe, folder, on_mismatch="full")
for steps in (20, 30, 25, 20):
    calls.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = sample(pipe, steps)
    policy = pipe.scheduler.policy
    scheduler = type(pipe.scheduler.current).__name__
    ran = "no tuned winner: the plain pipeline" if policy is None else f"{policy.name} ({policy.kind})"
    full = sample(plain, steps)
    score = "identical" if torch.equal(images, full) else f"PSNR {psnr(images, full).mean():.1f} dB"
    print(
        f"pipe(num_inference_steps={steps}): ran {ran}; {scheduler}, {len(calls)} denoiser calls; "
        f"to the plain pipeline at {steps} steps: {score}"
    )
    for w in caught:
        print(f"  warning: {w.message}")
lees.disable(pipe)
print(f"after disable: pipe.scheduler is {type(pipe.scheduler).__name__}")
