"""An optimiser's state as flat tensors, the form both learners' safetensors checkpoints keep it in."""

from __future__ import annotations

from typing import Any

import torch


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> dict[str, torch.Tensor]:
    """The per-parameter state of ``opt`` (Adam's moments and step counts) as CPU tensors named
    ``{prefix}.{parameter index}.{key}``; the parameter groups are not tensors and are not included."""
    return {
        f"{prefix}.{index}.{key}": torch.as_tensor(value).detach().cpu().contiguous()
        for index, state in opt.state_dict()["state"].items()
        for key, value in state.items()
    }


def load_optimizer(
    opt: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor],
    prefix: str,
    param_groups: list[dict[str, Any]] | None = None,
) -> None:
    """Restore what :func:`optimizer_tensors` stored into ``opt`` (torch moves each value to its
    parameter's device); ``param_groups`` as saved, or ``opt``'s own (the same settings)."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    groups = opt.state_dict()["param_groups"] if param_groups is None else param_groups
    opt.load_state_dict({"state": state, "param_groups": groups})
