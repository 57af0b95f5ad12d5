"""Long side-by-side sampling runs that survive interruption: stored in pieces as they finish.

:func:`sample_stored` samples ``n`` seeds with several methods side by side (paired timing, as
:func:`lees.sample_lockstep`) in pieces of ``chunk`` images; each piece is written to ``folder`` as
soon as it is done, and a run started again with the same settings reads the finished pieces
instead of sampling them. An interruption loses at most one piece.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save

from ..schedules.registry import canonical
from ..schedules.schedule import Schedule
from ..utils.files import atomic_write_bytes, atomic_write_text, claim_folder
from .lockstep import Method, TimedSamples, sample_lockstep

CHUNK = 100  # images per stored piece


def sample_stored(
    model: torch.nn.Module,
    methods: Mapping[str, Method],
    n: int,
    folder: str | Path,
    chunk: int = CHUNK,
    settings: Mapping[str, Any] | None = None,
    **lockstep: Any,
) -> dict[str, TimedSamples]:
    """:func:`lees.sample_lockstep` over ``n`` images in stored pieces of ``chunk``; seconds add up over
    pieces, cache memory is the largest piece's. ``settings`` (JSON-ready) and each method's digest
    (its table or gate values, so a retrained schedule under the same name counts as another method)
    tie the folder to this run: a folder holding pieces of a run with other settings is an error,
    never silently mixed."""
    folder = Path(folder)
    digests = {name: method_digest(m) for name, m in methods.items()}
    _claim(folder / "settings.json", {"n": n, "chunk": chunk, "methods": digests, **(settings or {})})
    offset = lockstep.pop("first", 0)
    parts = []
    for first, path in _pieces(folder, n, chunk):
        if not path.is_file():
            count = min(chunk, n - first)
            print(f"images {first}-{first + count - 1}: {len(methods)} methods side by side")
            runs = sample_lockstep(model, methods, count, first=offset + first, **lockstep)
            atomic_write_bytes(path, save(_tensors(runs)))
        parts.append(_load_piece(path))
    return {
        name: TimedSamples(
            torch.cat([p[name] for p in parts]),
            float(sum(p[f"{name}.seconds"] for p in parts)),
            max(float(p[f"{name}.cache_bytes"]) for p in parts),
        )
        for name in methods
    }


def method_digest(method: Method) -> str:
    """A short hash of what a method does: a schedule's actions (and forecast order), timesteps and
    block names, or a gate's values; ``"full"`` for None (the plain model)."""
    if method is None:
        return "full"
    digest = hashlib.sha256()
    if isinstance(method, Schedule):
        digest.update(method.actions.tobytes())
        if method.forecasts:  # a schedule without forecasts keeps the digest it had before they existed
            digest.update(f"forecast order {method.forecast_order}".encode())
        if method.adaptive:
            digest.update(method.thresholds.tobytes())
        digest.update(repr((list(method.timesteps), list(method.block_names))).encode())
    else:
        for name, tensor in sorted(method.state_dict().items()):
            digest.update(name.encode() + tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def stored_images(folder: str | Path, n: int, name: str, chunk: int = CHUNK) -> torch.Tensor:
    """The images method ``name`` got in a finished :func:`sample_stored` run in ``folder``."""
    return torch.cat([_load_piece(path)[canonical(name)] for _, path in _pieces(Path(folder), n, chunk)])


def _claim(path: Path, settings: dict[str, Any]) -> None:
    """:func:`claim_folder`, where a folder written under older method names (``reuse-2``) belongs to
    the same run under the registry's (``uniform-2``)."""
    if path.is_file():
        stored = json.loads(path.read_text())
        renamed = {**stored, "methods": {canonical(k): v for k, v in stored.get("methods", {}).items()}}
        if renamed == json.loads(json.dumps(settings)):
            atomic_write_text(path, json.dumps(settings, sort_keys=True))
    claim_folder(path, settings)


def _load_piece(path: Path) -> dict[str, torch.Tensor]:
    """A stored piece's tensors, keyed by the registry's method names (older spellings renamed)."""
    renamed = {}
    for key, tensor in load(path.read_bytes()).items():
        name, dot, part = key.rpartition(".")
        found = f"{canonical(name)}.{part}" if dot and part in ("seconds", "cache_bytes") else canonical(key)
        renamed[found] = tensor
    return renamed


def _pieces(folder: Path, n: int, chunk: int) -> list[tuple[int, Path]]:
    return [(first, folder / f"from{first}.safetensors") for first in range(0, n, chunk)]


def _tensors(runs: Mapping[str, TimedSamples]) -> dict[str, torch.Tensor]:
    tensors = {name: r.images.contiguous() for name, r in runs.items()}
    for name, r in runs.items():
        tensors[f"{name}.seconds"] = torch.tensor(r.seconds, dtype=torch.float64)
        tensors[f"{name}.cache_bytes"] = torch.tensor(r.cache_bytes_per_sample, dtype=torch.float64)
    return tensors
