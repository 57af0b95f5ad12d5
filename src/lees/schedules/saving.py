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
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import nn

from .._version import __version__
from ..utils.files import atomic_write_bytes
from .gates import SigmoidTimeGate
from .schedule import Schedule, ScheduleError

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

    found = {"lees_version": __version__, **info}
    if model is not None:
        found["model_fingerprint"] = model_fingerprint(model)
    return found


def target_folder(folder: str | Path) -> Path:
    """Where lees writes into ``folder``: its ``lees/`` subfolder for a diffusers folder, else itself."""
    folder = Path(folder)
    is_diffusers = (folder / "config.json").is_file() or (folder / "model_index.json").is_file()
    return folder / SUBFOLDER if is_diffusers else folder


def save_pretrained(
    policy: Schedule | SigmoidTimeGate, folder: str | Path, model: nn.Module | None = None, **info: Any
) -> Path:
    """Write ``policy`` with its provenance into ``folder`` (``lees/`` of a diffusers folder)."""

    target = target_folder(folder)
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


def save_gate(gate: SigmoidTimeGate, block_names: Sequence[str], path: str | Path, **info: Any) -> Path:
    """Write the gate parameters as safetensors, with the block names and ``info`` as metadata."""
    metadata = {"block_names": json.dumps(list(block_names)), **{k: json.dumps(v) for k, v in info.items()}}
    tensors = {"a": gate.a.detach().cpu().contiguous(), "b": gate.b.detach().cpu().contiguous()}
    return atomic_write_bytes(path, save(tensors, metadata=metadata))


def read_safetensors(path: str | Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; a ValueError naming ``what`` if it cannot be read."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
        return load_file(path), metadata
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is not a readable {what}: {err}") from None


def load_gate(path: str | Path) -> tuple[SigmoidTimeGate, list[str]]:
    """Read a gate written by :func:`save_gate`: the gate and the block names it was trained for."""
    tensors, metadata = read_safetensors(path, "gate file")
    try:
        names = json.loads(metadata.get("block_names", "null"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not a readable gate file: {err}") from None
    if names is None or set(tensors) != {"a", "b"} or tensors["a"].shape != (len(names),):
        raise ValueError(f"{path} is not a lees gate file")
    gate = SigmoidTimeGate(len(names), names)
    with torch.no_grad():
        gate.a.copy_(tensors["a"])
        gate.b.copy_(tensors["b"])
    return gate, names
