"""Every run sampled batch by batch in turn, timed in the same rounds, stored as it finishes.

diffusers' caches keep their state on the model, so runs cannot interleave step by step (as
:func:`lees.sample_lockstep` does for schedules); instead each batch of sample indices is a round in
which every run samples it once, in an order that turns from round to round, so a slow spell of a
noisy machine falls on all runs alike. A run's latency ratio is the median over the rounds of its
seconds over the full model's in the same round, so a stall within one piece moves it little. Each
(run, batch) piece goes to ``OUT/pieces/<run>-<digest>/from<first>.safetensors`` the moment it is
done: a tune started again reads the stored pieces and samples only the missing ones.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import SchedulerMixin
from safetensors.torch import load, save
from torch import nn
from tqdm.auto import tqdm

from ..sampling.pipeline_call import PipelineSource
from ..schedules.saving import model_fingerprint
from ..utils.files import atomic_write_bytes, claim_folder
from .diffusers_caches import NotApplicableError
from .runs import FULL, Run


@dataclass
class Measured:
    """One run's samples (in sample order), the seconds of each batch and, sampled through a pipeline's
    call, the seconds its denoiser took within them."""

    images: torch.Tensor
    seconds: list[float]
    denoiser_seconds: list[float] | None = None

    def denoiser_share(self) -> float | None:
        """The denoiser's share of the run's seconds (None: not sampled through a pipeline's call)."""
        return None if self.denoiser_seconds is None else sum(self.denoiser_seconds) / sum(self.seconds)

    def latency_ratio(self, full: Measured) -> float:
        """The median over the batches of the seconds over the full model's in the same batch (round)."""
        return statistics.median(s / f for s, f in zip(self.seconds, full.seconds, strict=True))


def piece_name(name: str) -> str:
    """A run's name as its piece folder spells it (``TaylorSeer_cache_interval_3_...``)."""
    return re.sub(r"[^A-Za-z0-9@.+-]+", "_", name).strip("_")


def piece_folder(out: Path, run: Run) -> Path:
    """Where ``run``'s pieces are stored: named by the run, tied to what it does by its digest."""
    return out / "pieces" / f"{piece_name(run.name)}-{run.digest()}"


def claim_pieces(
    model: nn.Module | PipelineSource, n: int, batch_size: int, seed: int, out: str | Path
) -> None:
    """Tie ``out/pieces`` to this model (and pipeline call) and sampling settings (a clear error if it
    holds another run's), before any candidate is built or trained."""
    denoiser = model.denoiser if isinstance(model, PipelineSource) else model
    settings = {"model": model_fingerprint(denoiser), "n": n, "batch_size": batch_size, "seed": seed}
    if isinstance(model, PipelineSource):
        settings["call"] = model.prompting.settings()
    claim_folder(Path(out) / "pieces" / "settings.json", settings)


def measure(
    model: nn.Module | PipelineSource,
    scheduler: SchedulerMixin,
    runs: Mapping[str, Run],
    n: int,
    batch_size: int,
    seed: int,
    out: str | Path,
) -> tuple[dict[str, Measured], dict[str, str]]:
    """Sample ``n`` samples with every run (``full`` among them), in rounds of ``batch_size``.

    ``model`` is a denoiser or, to sample through the user's pipeline call, a :class:`PipelineSource`.
    Returns the measured runs and, by name, why a run failed while sampling (a cache that met a call
    it cannot handle); a failed run is dropped, the others go on.
    """
    if FULL not in runs:
        raise ValueError("the runs must include the full model (named 'full')")
    out = Path(out)
    claim_pieces(model, n, batch_size, seed, out)
    firsts = list(range(0, n, batch_size))
    names, failed = list(runs), {}
    fresh: list[set[str]] = []  # per round, the runs sampled now (the others' pieces were read)
    bar = tqdm(total=len(firsts) * len(names), desc="sampling", unit="piece")
    for r, first in enumerate(firsts):
        count = min(batch_size, n - first)
        fresh.append(set())
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if name not in failed:
                try:
                    if _piece(model, scheduler, runs[name], first, count, seed, out):
                        fresh[-1].add(name)
                except NotApplicableError as error:
                    failed[name] = str(error)
            bar.update()
    bar.close()
    if FULL in failed:
        raise RuntimeError(f"the full model failed to sample: {failed[FULL]}")
    warn_other_sessions([name for name in names if name not in failed], fresh)
    return {name: _read(out, runs[name], firsts) for name in names if name not in failed}, failed


def warn_other_sessions(names: list[str], fresh: list[set[str]]) -> None:
    """One line naming the runs whose latency pairs most of its rounds with the full model's rounds
    of another session: sampled now where the full model's pieces were read from an earlier tune (rows
    added to a stored one), or the other way round. Their ratios compare two machine loads."""
    crossed = [n for n in names if n != FULL and 2 * sum((n in f) != (FULL in f) for f in fresh) > len(fresh)]
    if crossed:
        print(
            f"warning: {', '.join(crossed)}: timed in other rounds than the full model's stored ones (pieces "
            "read from an earlier tune): their latency ratios pair two sessions of this machine; for a "
            "paired figure, tune them in a new folder with the full model"
        )


def _piece(
    model: nn.Module | PipelineSource,
    scheduler: SchedulerMixin,
    run: Run,
    first: int,
    count: int,
    seed: int,
    out: Path,
) -> bool:
    """Sample and store one piece unless it is stored already; whether it was sampled now."""
    path = piece_folder(out, run) / f"from{first}.safetensors"
    if path.is_file():
        return False
    sampled = run.sample(model, scheduler, first, count, seed)
    tensors = {
        "images": sampled.images.contiguous(),
        "seconds": torch.tensor(sampled.seconds, dtype=torch.float64),
    }
    if sampled.denoiser_seconds is not None:
        tensors["denoiser_seconds"] = torch.tensor(sampled.denoiser_seconds, dtype=torch.float64)
    atomic_write_bytes(path, save(tensors))
    return True


def _read(out: Path, run: Run, firsts: list[int]) -> Measured:
    pieces = [load((piece_folder(out, run) / f"from{first}.safetensors").read_bytes()) for first in firsts]
    inside = [float(p["denoiser_seconds"]) for p in pieces] if "denoiser_seconds" in pieces[0] else None
    return Measured(torch.cat([p["images"] for p in pieces]), [float(p["seconds"]) for p in pieces], inside)
