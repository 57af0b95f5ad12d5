"""Counting FLOPs with torch's counter, attention on the CPU included."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# torch counts fused attention on CUDA but not its CPU kernel; count both the same way.
_CUSTOM_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}


def flop_counter() -> FlopCounterMode:
    """A FLOP counter (matmul, conv and attention FLOPs, as torch counts them) that prints nothing."""
    return FlopCounterMode(display=False, custom_mapping=_CUSTOM_FLOPS)


def _module_flops(counts: dict[str, dict], root: str, name: str) -> int:
    return int(sum(counts.get(f"{root}.{name}", {}).values()))
