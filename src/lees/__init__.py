"""lees: learn which blocks of a frozen diffusion model to run, reuse or skip at each sampling step.

The public names below load on first use (:func:`__getattr__`), so ``import lees`` and ``lees --help``
do not pay for torch and diffusers; ``from lees import enable`` works as a plain import would.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from ._version import __version__ as __version__

# Each public name and the module (below lees) that defines it.
_WHERE = {
    "pipeline_timesteps": "diffusion.samplers",
    "disable": "enable",
    "enable": "enable",
    "reset": "enable",
    "FORECAST": "engine.actions",
    "REUSE": "engine.actions",
    "RUN": "engine.actions",
    "SKIP": "engine.actions",
    "open_mask": "engine.actions",
    "BlockAdapter": "engine.adapters",
    "register_block_adapter": "engine.adapters",
    "Block": "engine.blocks",
    "Blocks": "engine.blocks",
    "find_blocks": "engine.blocks",
    "CompiledModelError": "engine.hooks",
    "GatedModel": "engine.hooks",
    "ReuseCache": "engine.hooks",
    "GateTrainConfig": "learn.gate_training",
    "train_gates": "learn.gate_training",
    "RouterConfig": "learn.router",
    "train_router": "learn.router",
    "EMBEDDED_DIR": "models.backbones",
    "EMBEDDED_DIT_DIR": "models.backbones",
    "BackboneError": "models.backbones",
    "load_backbone": "models.backbones",
    "load_noise_scheduler": "models.backbones",
    "fit_images": "models.data",
    "sample": "sampling.lockstep",
    "sample_lockstep": "sampling.lockstep",
    "SigmoidTimeGate": "schedules.gates",
    "load_policy": "schedules.saving",
    "save_pretrained": "schedules.saving",
    "Schedule": "schedules.schedule",
    "ScheduleError": "schedules.schedule",
    "ScheduleMismatchError": "schedules.schedule",
    "tuned": "schedules.tuned",
    "TuneConfig": "tune.tuner",
}

# The public names that are modules themselves.
_MODULES = {"baselines": "schedules.baselines"}

# Public names whose use needs another module loaded with them: lees.enable applies a tuned policy's
# diffusers cache through the glue that lees.tune.policy registers when imported (enable lies below it).
_BRINGS = {"enable": "tune.policy"}

__all__ = sorted([*_WHERE, *_MODULES], key=str.lower)


def __getattr__(name: str) -> Any:
    """``lees.NAME``: imports NAME's module the first time it is asked for and keeps the name here."""
    if name in _MODULES:
        value = importlib.import_module(f".{_MODULES[name]}", __name__)
    elif name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        if name in _BRINGS:
            importlib.import_module(f".{_BRINGS[name]}", __name__)
    else:
        raise AttributeError(f"module 'lees' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """``lees`` itself. The import system binds a loaded submodule to its name here, which would put the
    module ``lees.enable`` over the function ``lees.enable`` (``import lees`` loads neither); that binding
    is left out for the public names, so each stays what ``__all__`` says it is."""

    def __setattr__(self, name: str, value: Any) -> None:
        if not (name in _WHERE and isinstance(value, types.ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
