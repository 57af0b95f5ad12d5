"""A model's own noise process: noising x0 to x_t, and what the model predicts there.

x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps, with a_t the cumulative alpha of the scheduler the model
was trained with (linear, cosine ``squaredcos_cap_v2``, ... betas: whatever its config says). What
the model's output means is the config's ``prediction_type``, as in diffusers: the noise eps
(``epsilon``), the velocity v = sqrt(a_t) eps - sqrt(1 - a_t) x0 (``v_prediction``) or the clean
sample x0 (``sample``). Gate training, the held-out loss, backbone training and lees' DDIM all go
through this module, so a model is trained and sampled against its own target, and the noising is
written once.
"""

from __future__ import annotations

import torch
from diffusers import SchedulerMixin

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


class PredictionTypeError(ValueError):
    """A scheduler config whose ``prediction_type`` lees does not handle."""


class MissingSchedulerError(ValueError):
    """No scheduler config for a model: lees does not guess its noise process."""


def _unknown(kind: object) -> PredictionTypeError:
    return PredictionTypeError(f"prediction_type {kind!r} is not one of {', '.join(PREDICTION_TYPES)}")


def prediction_type(scheduler: SchedulerMixin) -> str:
    """The scheduler config's ``prediction_type``; a clear error unless lees handles it."""
    kind = scheduler.config.get("prediction_type", "epsilon")  # diffusers' default when absent
    if kind not in PREDICTION_TYPES:
        raise _unknown(kind)
    return kind


def target(kind: str, x0: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """What a model of prediction type ``kind`` should output at x_t noised from ``x0`` with ``eps``."""
    if kind == "epsilon":
        return eps
    if kind == "v_prediction":
        return alpha.sqrt() * eps - (1 - alpha).sqrt() * x0
    if kind == "sample":
        return x0
    raise _unknown(kind)


def split(
    kind: str, output: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean sample and the noise (x0, eps) that a model output of type ``kind`` at x_t implies."""
    if kind == "epsilon":
        return (x - (1 - alpha).sqrt() * output) / alpha.sqrt(), output
    if kind == "v_prediction":
        return alpha.sqrt() * x - (1 - alpha).sqrt() * output, alpha.sqrt() * output + (1 - alpha).sqrt() * x
    if kind == "sample":
        return output, (x - alpha.sqrt() * output) / (1 - alpha).sqrt()
    raise _unknown(kind)


class Noising:
    """A scheduler's noise process on one device: x_t and the training target at timesteps t."""

    def __init__(self, scheduler: SchedulerMixin, device: str | torch.device) -> None:
        self.alphas = scheduler.alphas_cumprod.to(device)
        self.num_train = int(scheduler.config.num_train_timesteps)
        self.prediction_type = prediction_type(scheduler)

    def __call__(
        self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, target): ``x0`` noised with ``eps`` at timesteps ``t`` (one per row), and what the
        model should predict there."""
        a = self.alphas[t.to(self.alphas.device)].view(-1, *([1] * (x0.dim() - 1)))
        return a.sqrt() * x0 + (1 - a).sqrt() * eps, target(self.prediction_type, x0, eps, a)
