"""lees: learn which blocks of a frozen diffusion model to run, reuse or skip at each sampling step."""

from . import baselines
from .backbones import EMBEDDED_DIR, BackboneError, load_backbone, load_noise_scheduler
from .blocks import Block, Blocks, find_blocks
from .data import fit_images
from .enable import disable, enable, pipeline_timesteps, reset
from .engine import REUSE, RUN, SKIP, CompiledModelError, GatedModel, ReuseCache
from .gates import SigmoidTimeGate, open_mask
from .router import RouterConfig, train_router
from .sampling import sample, sample_lockstep
from .saving import load_policy, save_pretrained
from .schedules import Schedule, ScheduleError, ScheduleMismatchError
from .training import GateTrainConfig, train_gates

__version__ = "0.1.0"

__all__ = [
    "baselines",
    "BackboneError",
    "EMBEDDED_DIR",
    "Block",
    "Blocks",
    "CompiledModelError",
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
    "reset",
    "sample",
    "sample_lockstep",
    "save_pretrained",
    "train_gates",
    "train_router",
]
