"""Schedules and gates saved with the model: ``save_pretrained`` / ``load_policy``, with provenance.

Beside a diffusers model or pipeline folder (one holding ``config.json`` or ``model_index.json``)
lees writes into its ``lees/`` subfolder, so ``lees.enable(pipe, "path/to/pipeline")`` finds it;
any other folder is written as given. A schedule is ``schedule.json``, a sigmoid gate
``gates.safetensors`` (safetensors, never pickle). Provenance goes into the file: the model's
fingerprint, lees' version and whatever the caller knows (sampler, steps, objective, lambda or
budget, seed).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from torch import nn

from .gates import SigmoidTimeGate
from .schedules import Schedule, ScheduleError

SUBFOLDER = "lees"
SCHEDULE_FILE = "schedule.json"
GATE_FILE = "gates.safetensors"


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of the model's class, parameters (names, shapes, first values)."""
    digest = hashlib.sha256(type(model).__name__.encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().float().cpu().flatten()[:64].numpy().tobytes())
    return digest.hexdigest()[:16]


def provenance(model: nn.Module | None = None, **info: Any) -> dict[str, Any]:
    """What a saved policy records about where it came from."""
    from . import __version__

    found = {"lees_version": __version__, **info}
    if model is not None:
        found["model_fingerprint"] = model_fingerprint(model)
    return found


def _target_folder(folder: str | Path) -> Path:
    folder = Path(folder)
    is_diffusers = (folder / "config.json").is_file() or (folder / "model_index.json").is_file()
    return folder / SUBFOLDER if is_diffusers else folder


def save_pretrained(
    policy: Schedule | SigmoidTimeGate, folder: str | Path, model: nn.Module | None = None, **info: Any
) -> Path:
    """Write ``policy`` with its provenance into ``folder`` (``lees/`` of a diffusers folder)."""
    from .training import save_gate

    target = _target_folder(folder)
    target.mkdir(parents=True, exist_ok=True)
    found = provenance(model, **info)
    if isinstance(policy, Schedule):
        policy.settings = {**policy.settings, "provenance": found}
        return policy.save(target / SCHEDULE_FILE)
    if policy.block_names is None:
        raise ValueError("this gate has no block names; set gate.block_names before saving")
    return save_gate(policy, policy.block_names, target / GATE_FILE, provenance=found)


def load_policy(path: str | Path) -> Schedule | SigmoidTimeGate:
    """A schedule (``.json``) or gate (``.safetensors``) file, or a folder holding one (or its ``lees/``)."""
    from .training import load_gate

    path = Path(path)
    if path.is_dir():
        for folder in (path / SUBFOLDER, path):
            for name in (SCHEDULE_FILE, GATE_FILE):
                if (folder / name).is_file():
                    return load_policy(folder / name)
        raise ScheduleError(f"no {SCHEDULE_FILE} or {GATE_FILE} in {path} or {path / SUBFOLDER}")
    if path.suffix == ".json":
        return Schedule.load(path)
    if path.suffix == ".safetensors":
        return load_gate(path)[0]
    raise ScheduleError(f"{path} is neither a schedule (.json) nor a gate file (.safetensors)")
