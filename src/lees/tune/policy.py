"""The tune's winner saved as a policy ``lees.enable`` applies (:mod:`lees.schedules.tuned` reads it).

A built-in model name (``embedded``) has no folder of the user's to write into: its policy goes to the
tune's output folder. Importing this module registers how a cache policy is attached (diffusers' cache
with lees' glue), which ``lees.enable`` cannot import itself (it lies below the tuner).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..schedules.saving import target_folder
from ..schedules.tuned import TunedPolicy, register_cache_attacher
from .diffusers_caches import NotApplicable, NotApplicableError, apply_cache
from .runs import Run, cache_calls, cache_config
from .verdict import Row


def policy_folder(model: str, out: str | Path) -> Path:
    """Where the policy goes: the model folder's ``lees/`` (a diffusers folder), else ``out``."""
    path = Path(model).expanduser()
    return target_folder(path) if path.is_dir() else Path(out)


def to_policy(
    run: Run, reference: Run, rows: list[Row], budget: float, call: dict[str, Any] | None = None
) -> TunedPolicy:
    """The policy of the winning ``run``, with the reference it was measured against (and the pipeline
    ``call``: prompts, guidance, size) and the table."""
    policy = run.tuned()
    policy.measured = {r["name"]: {k: v for k, v in r.items() if k != "name"} for r in rows}
    guidance = (
        reference.guidance_scale if call is None or call["guidance_scale"] is None else call["guidance_scale"]
    )
    policy.reference = {"solver": reference.solver, "steps": reference.steps, "guidance_scale": guidance,
                        "budget": budget, **({"call": call} if call is not None else {})}  # fmt: skip
    return policy


def _attach(denoiser: nn.Module, cache: dict[str, Any]) -> Any:
    """Attach a saved cache policy with the glue; the handle's ``remove()`` detaches it."""
    applied = apply_cache(denoiser, cache_config(cache), cache_calls(cache))
    if isinstance(applied, NotApplicable):
        raise NotApplicableError(str(applied))
    return applied


register_cache_attacher(_attach)
