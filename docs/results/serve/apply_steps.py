"""A tuned policy applied to a pipeline called at 20, 30, 25 and 20 steps with on_mismatch="full".

This enables the policy in FOLDER on the embedded DiT as a diffusers pipeline (lees' ClassFlowPipeline)
with on_mismatch="full", calls it at 20, 30, 25 and again 20 steps (2 images, guidance 2, the same noise
each time) and prints what ran each time: the winner it picked (or none), the scheduler and the number of
denoiser calls, the warnings, and the output against the same call of the plain pipeline (PSNR; a call
at a step count no winner was tuned for must equal it exactly). FOLDER defaults to the stored DiT tune
at 30 steps (docs/results/tune/dit: one winner, for 30 steps); a `lees tune --steps 20 30` folder holds
one per step count.

    python docs/results/serve/apply_steps.py [FOLDER]   # FOLDER holding policy.json
"""

import sys
import warnings
from pathlib import Path

import torch

import lees
from lees.evaluation.fidelity import psnr
from lees.models.pipelines import ClassFlowPipeline


def sample(pipe, steps: int) -> torch.Tensor:
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    out = pipe(class_labels=[3, 7], guidance_scale=2.0, num_inference_steps=steps, generator=gens,
               output_type="pt")  # fmt: skip
    return out.images * 2 - 1


folder = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).parents[1] / "tune" / "dit")
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
