"""More than one process: torch.distributed, launched with ``torchrun``.

``torchrun --nproc-per-node N -m lees.cli train|sample ...`` runs N processes; the CLI joins the
process group that torchrun describes in the environment (``gloo`` on CPU, ``nccl`` on CUDA).
Gate training is data parallel through ``DistributedDataParallel`` (each rank takes its slice of
the same global batch, gradients are averaged, so the gates stay identical on every rank and equal
a one-process run on that global batch). Sampling is sharded: rank r draws a contiguous slice of
the sample indices, and since sample i depends only on (seed, i) the gathered images equal a
one-process run's, with no duplicates or gaps. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on the process that writes results (rank 0, or the only process)."""
    return world()[0] == 0


def init_from_env(device: str = "cpu") -> bool:
    """Join the process group torchrun set up in the environment; False when not launched by it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    backend = "nccl" if torch.device(device).type == "cuda" and dist.is_nccl_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return True


def leave_processes() -> None:
    """After a command succeeded on every rank: wait for the others, then tear the group down.

    Left to destructors at interpreter exit, a rank that finishes first can abort (SIGABRT) in
    gloo's teardown while rank 0 still writes, and torchrun then fails the whole run.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def local_device(device: str) -> str:
    """``device`` for this process: under torchrun each rank gets its own GPU (``cuda:LOCAL_RANK``)."""
    if torch.device(device).type == "cuda" and device == "cuda" and world()[1] > 1:
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return device


def shard(n: int) -> range:
    """The contiguous slice of ``range(n)`` this rank handles (sizes differ by at most one)."""
    rank, size = world()
    return range(n * rank // size, n * (rank + 1) // size)


def sample_sharded(sample_fn: Callable[..., torch.Tensor], n: int, **kwargs) -> torch.Tensor:
    """All ``n`` samples in order, each rank drawing its shard with ``sample_fn(n=..., first=...)``."""
    part = shard(n)
    images = sample_fn(n=len(part), first=part.start, **kwargs)
    if world()[1] == 1:
        return images
    gathered: list = [None] * world()[1]
    dist.all_gather_object(gathered, images.cpu())
    return torch.cat(gathered)


def all_mean(*values: float) -> list[float]:
    """Each scalar's mean over all ranks, in one reduction (the values themselves when not distributed)."""
    if world()[1] == 1:
        return list(values)
    on = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor(values, dtype=torch.float64, device=on)
    dist.all_reduce(tensor)
    return (tensor / world()[1]).tolist()
