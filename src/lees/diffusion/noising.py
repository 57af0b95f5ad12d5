"""A model's own noise process: noising x0 to x_t, and what the model predicts there.

Two families, told apart by the scheduler config the model comes with (:func:`noise_process`):

x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps, with a_t the cumulative alpha of the scheduler the model
was trained with (linear, cosine ``squaredcos_cap_v2``, ... betas: whatever its config says). What
the model's output means is the config's ``prediction_type``, as in diffusers: the noise eps
(``epsilon``), the velocity v = sqrt(a_t) eps - sqrt(1 - a_t) x0 (``v_prediction``) or the clean
sample x0 (``sample``). Gate training, the held-out loss, backbone training and lees' DDIM all go
through this module, so a model is trained and sampled against its own target, and the noising is
written once.

Flow matching (rectified flow, as SD3, Flux and Wan are trained; diffusers'
``FlowMatchEulerDiscreteScheduler``): x_t = (1 - s) x0 + s eps at s = t / 1000, t a float in
(0, 1000], and the model predicts the velocity eps - x0. Training draws s logit-normally
(s = sigmoid(n), n ~ N(0, 1), SD3's default); samplers shift their grid with the config's ``shift``.
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


def is_flow_matching(scheduler: SchedulerMixin) -> bool:
    """Whether ``scheduler`` samples a flow-matching model (diffusers' ``FlowMatch*`` schedulers)."""
    name = str(scheduler.config.get("_class_name") or type(scheduler).__name__)
    return name.startswith("FlowMatch") or type(scheduler).__name__.startswith("FlowMatch")


class Noising:
    """A scheduler's noise process on one device: x_t and the training target at timesteps t."""

    def __init__(self, scheduler: SchedulerMixin, device: str | torch.device) -> None:
        self.alphas = scheduler.alphas_cumprod.to(device)
        self.device = torch.device(device)
        self.num_train = int(scheduler.config.num_train_timesteps)
        self.prediction_type = prediction_type(scheduler)

    def draw_timesteps(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` training timesteps, uniform over the integers [0, num_train), on the CPU."""
        return torch.randint(0, self.num_train, (n,), generator=generator)

    def __call__(
        self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, target): ``x0`` noised with ``eps`` at timesteps ``t`` (one per row), and what the
        model should predict there."""
        a = self.alphas[t.to(self.alphas.device)].view(-1, *([1] * (x0.dim() - 1)))
        return a.sqrt() * x0 + (1 - a).sqrt() * eps, target(self.prediction_type, x0, eps, a)


class FlowNoising:
    """Rectified flow on one device: x_t = (1 - s) x0 + s eps at s = t / num_train, target eps - x0.

    Timesteps are floats in (0, num_train] as the flow-matching schedulers give them to the model.
    """

    prediction_type = "flow"

    def __init__(self, scheduler: SchedulerMixin, device: str | torch.device) -> None:
        self.device = torch.device(device)
        self.num_train = int(scheduler.config.num_train_timesteps)

    def draw_timesteps(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` training timesteps s * num_train with s logit-normal (sigmoid of a standard normal)."""
        return torch.sigmoid(torch.randn(n, generator=generator)) * self.num_train

    def __call__(
        self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, velocity target) for ``x0`` noised with ``eps`` at timesteps ``t`` (one per row)."""
        s = (t.to(x0.device, x0.dtype) / self.num_train).view(-1, *([1] * (x0.dim() - 1)))
        return (1 - s) * x0 + s * eps, eps - x0


def noise_process(scheduler: SchedulerMixin, device: str | torch.device) -> Noising | FlowNoising:
    """The noise process of the model ``scheduler`` belongs to: flow matching or the DDPM family."""
    return FlowNoising(scheduler, device) if is_flow_matching(scheduler) else Noising(scheduler, device)
