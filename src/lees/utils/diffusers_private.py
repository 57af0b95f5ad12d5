"""Every private name lees reads from diffusers, in one place, for the pinned diffusers version.

diffusers' cache hooks register under private hook names and keep their state in private classes;
lees' glue (:mod:`lees.tune.diffusers_caches`) has to find and reset them, and the block adapters
read diffusers' private ``TransformerBlockRegistry``. None of these is a public API: a diffusers
release may rename or drop any of them. Importing them here, and nowhere else, makes the dependency
one list that tests/test_diffusers_private.py checks against the version pinned in pyproject.toml.
"""

from __future__ import annotations

from diffusers.hooks._common import _ALL_TRANSFORMER_BLOCK_IDENTIFIERS
from diffusers.hooks._helpers import TransformerBlockRegistry
from diffusers.hooks.faster_cache import (
    _FASTER_CACHE_BLOCK_HOOK,
    _FASTER_CACHE_DENOISER_HOOK,
    _UNCOND_COND_INPUT_KWARGS_IDENTIFIERS,
)
from diffusers.hooks.first_block_cache import _FBC_BLOCK_HOOK, _FBC_LEADER_BLOCK_HOOK
from diffusers.hooks.hooks import BaseState, CacheContext, StateManager, _set_cache_context
from diffusers.hooks.mag_cache import _MAG_CACHE_BLOCK_HOOK, _MAG_CACHE_LEADER_BLOCK_HOOK
from diffusers.hooks.pyramid_attention_broadcast import _PYRAMID_ATTENTION_BROADCAST_HOOK
from diffusers.hooks.taylorseer_cache import _TAYLORSEER_CACHE_HOOK

PINNED_DIFFUSERS = "0.42.1"  # the version these names were read from (pyproject.toml pins the same)

__all__ = [
    "PINNED_DIFFUSERS",
    "BaseState",
    "CacheContext",
    "StateManager",
    "TransformerBlockRegistry",
    "_ALL_TRANSFORMER_BLOCK_IDENTIFIERS",
    "_FASTER_CACHE_BLOCK_HOOK",
    "_FASTER_CACHE_DENOISER_HOOK",
    "_FBC_BLOCK_HOOK",
    "_FBC_LEADER_BLOCK_HOOK",
    "_MAG_CACHE_BLOCK_HOOK",
    "_MAG_CACHE_LEADER_BLOCK_HOOK",
    "_PYRAMID_ATTENTION_BROADCAST_HOOK",
    "_TAYLORSEER_CACHE_HOOK",
    "_UNCOND_COND_INPUT_KWARGS_IDENTIFIERS",
    "_set_cache_context",
]
