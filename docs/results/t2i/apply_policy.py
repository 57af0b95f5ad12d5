"""The tuned policy applied as a user applies it, inside pipe(prompt=...), against the tune's own run.

python docs/results/t2i/apply_policy.py FOLDER TUNE_OUT [--height H --width W]: loads the pipeline,
enables the policy `lees tune` saved in FOLDER/lees, samples the tune's 8 images (prompt i mod 2,
generator i) in one call, and compares them with the images the tune stored for its winner in
TUNE_OUT/pieces.
"""

import inspect
import re
import sys
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file

import lees

folder = Path(sys.argv[1])
tune = Path(sys.argv[2]) / "pieces"
extra = dict(zip(sys.argv[3::2], map(int, sys.argv[4::2]), strict=True))
call = {k.lstrip("-"): v for k, v in extra.items()}
pipe = DiffusionPipeline.from_pretrained(folder)
pipe.set_progress_bar_config(disable=True)
if "use_resolution_binning" in inspect.signature(pipe.__call__).parameters:  # PixArt: no bins for a tiny size
    call["use_resolution_binning"] = False
print(f">>> pipe = DiffusionPipeline.from_pretrained({str(folder)!r}); lees.enable(pipe, FOLDER)")
lees.enable(pipe, folder)
prompts = ["a red car", "a cat on a sofa"] * 4
print(
    f">>> pipe(prompt=8 prompts, generator=[Generator().manual_seed(i) for i in range(8)], "
    f"output_type='pt', **{lees.tuned(folder)}, **{call})"
)
images = pipe(
    prompt=prompts,
    generator=[torch.Generator().manual_seed(i) for i in range(8)],
    output_type="pt",
    **lees.tuned(folder),
    **call,
).images
lees.disable(pipe)
name = lees.schedules.tuned.load_tuned(folder).name
(piece,) = [
    p
    for p in tune.iterdir()
    if p.name.rsplit("-", 1)[0] == re.sub(r"[^A-Za-z0-9@.+-]+", "_", name).strip("_")
]
stored = load_file(piece / "from0.safetensors")["images"]
print(
    f"images {tuple(images.shape)}; equal to the tuned run's stored images ({name}): "
    f"{torch.equal(images * 2 - 1, stored)}"
)
