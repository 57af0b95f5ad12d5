"""Writing result files so that a crash never leaves a half-written file that looks valid."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def claim_folder(path: str | Path, settings: dict[str, Any], hint: str = "use another folder") -> None:
    """Tie the folder of ``path`` to one run's ``settings`` (written there as JSON): the pieces stored
    in it are only reused by a run with the same settings, never silently mixed with another's."""
    path = Path(path)
    text = json.dumps(settings, sort_keys=True)
    if path.is_file() and path.read_text() != text:
        raise ValueError(
            f"{path.parent} holds the pieces of a run with other settings ({path}); {hint} or delete it"
        )
    atomic_write_text(path, text)
