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
    guidance_scale: float = 1.0,
) -> Score:
    """Sample ``n`` images with ``schedule`` (None: full model), time it, score them against ``reference``.

    Streams (each batch is sampled, turned into features and dropped: memory flat in ``n``, FD from
    running moments); only sampling is timed; under torchrun each rank samples its slice.

    Args:
        model, scheduler: the denoiser and its noise scheduler (the sampler is made from its config).
        schedule: what each block does at each step; it sets the steps (None: the full model).
        extractor, reference: the metric's feature network and the real images' features.
        n, steps, seed, batch_size, device, sampler, guidance_scale: as for :func:`lees.sample`.
        kid_n: the first ``kid_n`` samples give KID.
        state: save the progress there after every batch; an interrupted run resumes to the same result.
        progress: show a progress bar.
        also: further metrics (extractor, reference) whose FD is taken on the same samples.

    Example:
        >>> score = score_schedule(model, scheduler, schedule, extractor, reference, n=256)  # doctest: +SKIP
        >>> score.fd, score.seconds_per_100  # doctest: +SKIP
    """
    part = shard(n)  # under torchrun this rank's slice of the samples; else all of them
    also = dict(also or {})
    if state is not None and world()[1] > 1:
        state = Path(f"{state}.rank{world()[0]}")
    guided = {"guidance_scale": guidance_scale} if guidance_scale != 1.0 else {}  # older states stay valid
    key = {"n": n, "steps": steps, "seed": seed, "sampler": sampler, "batch_size": batch_size, **guided,
           **_what_is_scored(schedule, extractor, also)}  # what a stored state must match  # fmt: skip
    fresh = _Tally(RunningGaussian(), [], 0.0, part.start, {name: RunningGaussian() for name in also})
    tally = _load_state(state, key) if state is not None and Path(state).is_file() else fresh
    bar = tqdm(total=len(part), initial=tally.done - part.start, desc="sampling + features", unit="img",
               disable=not (progress and is_main()))  # fmt: skip
    while tally.done < part.stop:
        count = min(batch_size, part.stop - tally.done)
        started = time.perf_counter()
        images = sample(model, schedule, count, steps, sampler, seed=seed, scheduler=scheduler, device=device,
                        batch_size=batch_size, first=tally.done, guidance_scale=guidance_scale,
                        progress=False, timesteps=getattr(schedule, "timesteps", None))  # fmt: skip
        tally.add(images, time.perf_counter() - started, extractor, also, kid_n)
        bar.update(count)
        if state is not None:
            _save_state(state, key, tally)
    bar.close()
    return (_gather(tally) if world()[1] > 1 else tally).score(reference, also, n)


def _what_is_scored(schedule: Schedule | None, extractor, also: Mapping) -> dict:
    """The schedule's table and the feature definitions, as a stored scoring state records them."""
    table = None if schedule is None else schedule.actions.tobytes().hex()
    if schedule is not None and schedule.forecasts:  # a forecast's order changes what is sampled
        table += f"/forecast order {schedule.forecast_order}"
    return {"schedule": table,
            "features": [definition(e) for e in (extractor, *(also[m][0] for m in sorted(also)))],
            "also": sorted(also)}  # fmt: skip


@dataclass
class _Tally:
    """What a scoring run has gathered: running feature moments (its metric's, and each further one's),
    the first samples' features for KID, the seconds sampling took, and the next sample's index."""

    moments: RunningGaussian
    kid_feats: list
    seconds: float
    done: int
    extra: dict[str, RunningGaussian]

    def add(self, images: torch.Tensor, seconds: float, extractor, also: Mapping, kid_n: int) -> None:
        """Take in one batch of samples and the seconds it took."""
        self.seconds += seconds
        feats = extractor(images)
        self.moments.update(feats)
        for name, (other, _) in also.items():
            self.extra[name].update(other(images))
        self.kid_feats.extend(feats[: max(0, kid_n - self.done)])
        self.done += len(images)

    def score(self, reference: np.ndarray, also: Mapping, n: int) -> Score:
        kid_mean, kid_std = kid(np.asarray(self.kid_feats), reference)
        further = {
            name: frechet_distance(m.mean, m.cov, *gaussian(also[name][1])) for name, m in self.extra.items()
        }
        fd = frechet_distance(self.moments.mean, self.moments.cov, *gaussian(reference))
        return Score(fd, kid_mean, kid_std, self.seconds, n, further)


def _gather(tally: _Tally) -> _Tally:
    """Moments summed over ranks, KID features in sample order, the slowest rank's time."""
    parts: list = [None] * world()[1]
    dist.all_gather_object(parts, tally)
    merged = _Tally(RunningGaussian(), [], 0.0, 0, {name: RunningGaussian() for name in tally.extra})
    for part in parts:
        merged.moments.merge(part.moments)
        for name, m in part.extra.items():
            merged.extra[name].merge(m)
        merged.kid_feats += part.kid_feats
        merged.seconds = max(merged.seconds, part.seconds)
    return merged


def _save_state(path, key: dict, tally: _Tally) -> None:
    buffer = io.BytesIO()
    named = [("", tally.moments)] + [(f"{name}.", m) for name, m in tally.extra.items()]
    arrays = {
        f"{prefix}{part}": getattr(m, part) for prefix, m in named for part in ("total", "outer", "count")
    }
    kid_feats = np.asarray(tally.kid_feats)
    np.savez(buffer, key=json.dumps(key), kid=kid_feats, seconds=tally.seconds, done=tally.done, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def _load_state(path, key: dict) -> _Tally:
    def moments_of(z, prefix: str = "") -> RunningGaussian:
        m = RunningGaussian()
        m.total, m.outer, m.count = z[f"{prefix}total"], z[f"{prefix}outer"], int(z[f"{prefix}count"])
        return m

    with np.load(path) as z:
        if json.loads(str(z["key"])) != key:
            raise ValueError(f"{path} belongs to another scoring run; delete it to start over")
        extra = {name: moments_of(z, f"{name}.") for name in key["also"]}
        return _Tally(moments_of(z), list(z["kid"]), float(z["seconds"]), int(z["done"]), extra)


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
