"""Class agreement: how often a class-conditional model's samples are of the class they were asked for.

Each sample's label is drawn as :func:`lees.sample` draws it (from that sample's own generator), the
samples are classified by the project's Fashion-MNIST classifier (the one fd_clf's features come
from), and the share whose predicted class is the conditioned one is reported overall and per class.
It says whether guidance and the sampler keep the conditioning, which a Fréchet distance over all
classes at once does not.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import SchedulerMixin
from torch import nn

from ..diffusion.samplers import sample_generators
from ..models.denoisers import draw_labels, model_device, num_classes
from ..sampling.lockstep import sample
from .classifier import load_classifier
from .metrics import quantise


def drawn_labels(
    model: nn.Module, seed: int, n: int, device: str | torch.device | None = None
) -> torch.Tensor:
    """The class labels :func:`lees.sample` gives samples 0..n-1 of run ``seed`` (each its generator's
    first draw); a clear error for a model that takes none."""
    if num_classes(model) is None:
        raise ValueError(f"{type(model).__name__} is not class-conditional: class agreement needs labels")
    device = model_device(model) if device is None else torch.device(device)
    return draw_labels(model, sample_generators(seed, range(n), device), device).cpu()


@torch.no_grad()
def predicted_classes(
    images: torch.Tensor, classifier: nn.Module | None = None, batch_size: int = 500
) -> torch.Tensor:
    """The classifier's class of each image in [-1, 1], seen as the 8-bit image it would be saved as
    (default classifier: the project's, as fd_clf uses it)."""
    net = load_classifier() if classifier is None else classifier
    device = next(net.parameters()).device
    out = [
        net(quantise(images[i : i + batch_size].to(device)) / 127.5 - 1).argmax(1).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out)


def class_agreement(predicted: torch.Tensor, labels: torch.Tensor, classes: int) -> dict[str, Any]:
    """The share of samples whose predicted class is their label, overall (``agreement``) and per
    class (``per_class``: label -> {n, agree})."""
    hits = predicted == labels
    per_class = {
        int(c): {"n": int((labels == c).sum()), "agree": _share(hits[labels == c])} for c in range(classes)
    }
    return {"agreement": _share(hits), "n": len(labels), "per_class": per_class}


def _share(hits: torch.Tensor) -> float | None:
    return float(hits.float().mean()) if len(hits) else None


def sampled_agreement(
    model: nn.Module, scheduler: SchedulerMixin, n: int, steps: int, sampler: str | None = None,
    guidance_scale: float = 1.0, seed: int = 0, batch_size: int = 100,
) -> tuple[torch.Tensor, dict[str, Any]]:  # fmt: skip
    """Sample ``n`` images (labels drawn per sample) and report their class agreement.

    Args:
        model, scheduler: a class-conditional denoiser and its noise scheduler.
        n, steps, sampler, guidance_scale, seed, batch_size: as for :func:`lees.sample`.

    Returns the images (for other metrics, e.g. fd_clf on the same samples) and the report
    (:func:`class_agreement` plus the sampling settings).
    """
    labels = drawn_labels(model, seed, n)
    images = sample(model, None, n, steps, sampler, seed=seed, scheduler=scheduler, batch_size=batch_size,
                    guidance_scale=guidance_scale)  # fmt: skip
    report = class_agreement(predicted_classes(images), labels, num_classes(model))
    settings = {"steps": steps, "sampler": sampler, "guidance_scale": guidance_scale, "seed": seed}
    return images, settings | report


def agreement_table(report: dict[str, Any], names: list[str] | None = None) -> str:
    """The per-class table of a class-agreement report, as text (a row per class, then all)."""
    lines = [f"{'class':<14} {'n':>5} {'agree':>7}"]
    for c, row in report["per_class"].items():
        name = names[c] if names and c < len(names) else str(c)
        share = "-" if row["agree"] is None else f"{row['agree']:.1%}"
        lines.append(f"{name:<14} {row['n']:>5} {share:>7}")
    lines.append(f"{'all':<14} {report['n']:>5} {report['agreement']:>7.1%}")
    return "\n".join(lines)
