"""Measuring a schedule: sample with it, time it, and score the samples against real data."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from diffusers import DDPMScheduler
from torch import nn
from tqdm.auto import tqdm

from ..sampling.lockstep import sample
from ..schedules.schedule import Schedule
from ..utils.distributed import is_main, shard, world
from ..utils.files import atomic_write_bytes
from .metrics import METRIC_NAMES, RunningGaussian, definition, frechet_distance, gaussian, kid


def metric_name(extractor: Callable[[torch.Tensor], np.ndarray]) -> str:
    """The name outputs give a Fréchet distance in ``extractor``'s features (fd_clf, fid, or fd_NAME),
    so a search's result says which metric chose it."""
    name = getattr(extractor, "name", None)
    return METRIC_NAMES.get(name, f"fd_{name}" if name else "fd")


@dataclass
class Score:
    """Quality and speed of one sampling run."""

    fd: float
    kid: float
    kid_std: float
    seconds: float
    n: int
    also: dict[str, float] = field(default_factory=dict)  # FD under each further metric, same samples

    @property
    def seconds_per_100(self) -> float:
        """Latency of a 100-image batch over the whole sampling run."""
        return 100 * self.seconds / self.n


def score_schedule(
    model: nn.Module,
    scheduler: DDPMScheduler,
    schedule: Schedule | None,
    extractor: Callable[[torch.Tensor], np.ndarray],
    reference: np.ndarray,
    n: int = 256,
    steps: int = 50,
    seed: int = 0,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    sampler: str = "ddpm",
    kid_n: int = 1000,
    state: str | Path | None = None,
    progress: bool = False,
    also: Mapping[str, tuple[Callable[[torch.Tensor], np.ndarray], np.ndarray]] | None = None,
) -> Score:
    """Sample ``n`` images with ``schedule`` (None: full model), time it, score them against ``reference``.

    Streams: each batch is sampled, turned into features and dropped, so memory stays flat in ``n``
    (FD from running moments; KID on the first ``kid_n`` samples). Only sampling is timed. With a
    schedule the sampler visits the schedule's own timesteps. With ``state`` the progress is saved
    after every batch and an interrupted run picks up where it stopped, to the same result. ``also``
    names further metrics (feature extractor, reference features) whose FD is taken on the same
    samples, e.g. Inception FID beside fd_clf.
    """
    part = shard(n)  # under torchrun this rank's slice of the samples; else all of them
    also = dict(also or {})
    moments, kid_feats, seconds, done = RunningGaussian(), [], 0.0, part.start
    extra = {name: RunningGaussian() for name in also}
    if state is not None and world()[1] > 1:
        state = Path(f"{state}.rank{world()[0]}")
    key = {"n": n, "steps": steps, "seed": seed, "sampler": sampler, "batch_size": batch_size,
           "schedule": None if schedule is None else schedule.actions.tobytes().hex(),
           "features": [definition(extractor), *(definition(also[m][0]) for m in sorted(also))],
           "also": sorted(also)}  # fmt: skip
    if state is not None and Path(state).is_file():
        moments, kid_feats, seconds, done, extra = _load_state(state, key)
    bar = tqdm(total=len(part), initial=done - part.start, desc="sampling + features", unit="img",
               disable=not (progress and is_main()))  # fmt: skip
    while done < part.stop:
        count = min(batch_size, part.stop - done)
        started = time.perf_counter()
        images = sample(
            model, schedule, count, steps, sampler, seed=seed, scheduler=scheduler, batch_size=batch_size,
            device=device, progress=False, first=done,
            timesteps=schedule.timesteps if schedule is not None else None,
        )  # fmt: skip
        seconds += time.perf_counter() - started
        feats = extractor(images)
        moments.update(feats)
        for name, (other, _) in also.items():
            extra[name].update(other(images))
        kid_feats.extend(feats[: max(0, kid_n - done)])
        done += count
        bar.update(count)
        if state is not None:
            _save_state(state, key, moments, kid_feats, seconds, done, extra)
    bar.close()
    if world()[1] > 1:
        moments, kid_feats, seconds, extra = _gather(moments, kid_feats, seconds, extra)
    kid_feats = np.asarray(kid_feats)
    kid_mean, kid_std = kid(kid_feats, reference)
    further = {name: frechet_distance(m.mean, m.cov, *gaussian(also[name][1])) for name, m in extra.items()}
    return Score(
        frechet_distance(moments.mean, moments.cov, *gaussian(reference)),
        kid_mean,
        kid_std,
        seconds,
        n,
        further,
    )


def _gather(moments: RunningGaussian, kid_feats: list, seconds: float, extra: dict[str, RunningGaussian]):
    """Moments summed over ranks, KID features in sample order, the slowest rank's time."""
    parts: list = [None] * world()[1]
    dist.all_gather_object(parts, (moments, kid_feats, seconds, extra))
    merged, more = RunningGaussian(), {name: RunningGaussian() for name in extra}
    for part_moments, _, _, part_extra in parts:
        merged.merge(part_moments)
        for name, m in part_extra.items():
            more[name].merge(m)
    return merged, [f for part in parts for f in part[1]], max(part[2] for part in parts), more


def _save_state(path, key, moments, kid_feats, seconds, done, extra) -> None:
    buffer = io.BytesIO()
    named = [("", moments)] + [(f"{name}.", m) for name, m in extra.items()]
    arrays = {
        f"{prefix}{part}": getattr(m, part) for prefix, m in named for part in ("total", "outer", "count")
    }
    np.savez(buffer, key=json.dumps(key), kid=np.asarray(kid_feats), seconds=seconds, done=done, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def _load_state(path, key):
    def moments_of(z, prefix: str = "") -> RunningGaussian:
        m = RunningGaussian()
        m.total, m.outer, m.count = z[f"{prefix}total"], z[f"{prefix}outer"], int(z[f"{prefix}count"])
        return m

    with np.load(path) as z:
        if json.loads(str(z["key"])) != key:
            raise ValueError(f"{path} belongs to another scoring run; delete it to start over")
        extra = {name: moments_of(z, f"{name}.") for name in key["also"]}
        return moments_of(z), list(z["kid"]), float(z["seconds"]), int(z["done"]), extra


def score_under(
    model: nn.Module,
    scheduler: DDPMScheduler,
    schedules: dict[str, Schedule],
    scorers: dict[str, tuple[Callable[[torch.Tensor], np.ndarray], np.ndarray]],
    n: int = 256,
    seed: int = 0,
    device: str | torch.device = "cpu",
    sampler: str = "ddpm",
) -> dict[str, dict[str, float]]:
    """Each schedule's Fréchet distance under each metric (``{metric: (extractor, reference)}``).

    Scored as :func:`ase_grid` scores its candidates (same ``n`` and ``seed``: the same images), so a
    choice made under one metric is seen under the others at the cost of a few schedules, not the
    whole search.
    """
    (first, (extractor, reference)), *rest = scorers.items()
    scores = {}
    for name, s in schedules.items():
        score = score_schedule(model, scheduler, s, extractor, reference, n, len(s.timesteps), seed,
                               device=device, sampler=sampler, also=dict(rest))  # fmt: skip
        scores[name] = {first: score.fd, **score.also}
    return scores
