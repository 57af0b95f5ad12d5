"""lees: learn which blocks of a frozen diffusion model to run, reuse or skip at each sampling step."""

from __future__ import annotations

from ._version import __version__ as __version__
from .diffusion.samplers import pipeline_timesteps
from .enable import disable, enable, reset
from .engine.actions import FORECAST, REUSE, RUN, SKIP, open_mask
from .engine.adapters import BlockAdapter, register_block_adapter
from .engine.blocks import Block, Blocks, find_blocks
from .engine.hooks import CompiledModelError, GatedModel, ReuseCache
from .learn.gate_training import GateTrainConfig, train_gates
from .learn.router import RouterConfig, train_router
from .models.backbones import (
    EMBEDDED_DIR,
    EMBEDDED_DIT_DIR,
    BackboneError,
    load_backbone,
    load_noise_scheduler,
)
from .models.data import fit_images
from .sampling.lockstep import sample, sample_lockstep
from .schedules import baselines
from .schedules.gates import SigmoidTimeGate
from .schedules.saving import load_policy, save_pretrained
from .schedules.schedule import Schedule, ScheduleError, ScheduleMismatchError
from .schedules.tuned import tuned
from .tune.tuner import TuneConfig

__all__ = [
    "baselines",
    "BackboneError",
    "EMBEDDED_DIR",
    "EMBEDDED_DIT_DIR",
    "Block",
    "BlockAdapter",
    "Blocks",
    "CompiledModelError",
    "FORECAST",
    "GateTrainConfig",
    "GatedModel",
    "REUSE",
    "RUN",
    "ReuseCache",
    "RouterConfig",
    "SKIP",
    "Schedule",
    "ScheduleError",
    "ScheduleMismatchError",
    "SigmoidTimeGate",
    "disable",
    "enable",
    "find_blocks",
    "fit_images",
    "load_backbone",
    "load_noise_scheduler",
    "load_policy",
    "open_mask",
    "pipeline_timesteps",
    "register_block_adapter",
    "reset",
    "sample",
    "sample_lockstep",
    "save_pretrained",
    "train_gates",
    "train_router",
    "TuneConfig",
    "tuned",
]
