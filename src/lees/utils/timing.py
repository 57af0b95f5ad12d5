"""What a timing ran on, and the wait for a device's queued work before a clock is read."""

from __future__ import annotations

import platform
from collections.abc import Callable

import torch


def device_name(device: str | torch.device) -> str:
    """What a timing ran on, for reports: the GPU's name, or the CPU's threads and architecture."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"the CPU ({torch.get_num_threads()} threads, {platform.machine()})"


def synchronizer(device: str | torch.device) -> Callable[[], None]:
    """What waits for the work queued on ``device`` before a clock is read: CUDA's synchronize, else
    nothing (the CPU runs eagerly)."""
    return torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
