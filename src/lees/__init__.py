"""lees: learn which blocks of a frozen diffusion model to skip at each timestep."""

from .backbones import BackboneError, load_backbone
from .blocks import Block, Blocks, find_blocks
from .engine import GatedModel
from .gates import SigmoidTimeGate, open_mask
from .sampling import sample, sample_lockstep
from .schedules import Schedule, ScheduleError, ScheduleMismatchError
from .training import GateTrainConfig, train_gates

__version__ = "0.1.0"

__all__ = [
    "BackboneError",
    "Block",
    "Blocks",
    "GateTrainConfig",
    "GatedModel",
    "Schedule",
    "ScheduleError",
    "ScheduleMismatchError",
    "SigmoidTimeGate",
    "find_blocks",
    "load_backbone",
    "open_mask",
    "sample",
    "sample_lockstep",
    "train_gates",
]
