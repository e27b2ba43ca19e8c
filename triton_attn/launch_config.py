"""Block sizes, warps and H*W split of the channel-attention kernels.

Heuristics, not tuning: each rule says where it came from. Tests override
them (``override``) to drive multi-block and split paths on small shapes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools

import torch
import triton


@dataclasses.dataclass(frozen=True)
class TileConfig:
    block_c: int
    block_hw: int
    num_warps: int


_overrides: dict = {}


@contextlib.contextmanager
def override(**kw):
    """Force ``block_c``, ``block_hw``, ``split`` or ``num_warps`` (tests)."""
    previous = dict(_overrides)
    _overrides.update(kw)
    try:
        yield
    finally:
        _overrides.clear()
        _overrides.update(previous)


# Elements per program tile. 4096 fp32 accumulators over 4 warps is 32 per
# thread: enough bytes in flight per SM for a streaming kernel, few enough
# registers to keep several programs resident.
_TILE_ELEMS = 4096


def tile_config(C: int, HW: int, chan_contiguous: bool) -> TileConfig:
    """Tile shape along the contiguous axis first, so each warp reads whole
    128-byte lines: channels for channels_last, H*W for NCHW."""
    if chan_contiguous:
        block_c = min(triton.next_power_of_2(C), 256)
        block_hw = min(triton.next_power_of_2(HW), max(1, _TILE_ELEMS // block_c))
    else:
        block_hw = min(triton.next_power_of_2(HW), 1024)
        block_c = min(triton.next_power_of_2(C), max(1, _TILE_ELEMS // block_hw))
    num_warps = 8 if block_c * block_hw >= 4096 else 4
    cfg = TileConfig(block_c, block_hw, num_warps)
    if _overrides:
        cfg = dataclasses.replace(cfg, **{k: v for k, v in _overrides.items() if k in ("block_c", "block_hw", "num_warps")})
    return cfg


@functools.lru_cache(maxsize=None)
def _num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def reduction_split(programs: int, HW: int, block_hw: int, device: torch.device) -> int:
    """Splits H*W across programs when N * C-blocks alone cannot fill the GPU
    (1x64x112x112 gives 1 program per C-block). Partial results are combined
    in a fixed order on the host, so the split costs no determinism."""
    if "split" in _overrides:
        return max(1, min(_overrides["split"], triton.cdiv(HW, block_hw)))
    if device.type != "cuda":
        return 1
    target = 4 * _num_sms(device.index if device.index is not None else torch.cuda.current_device())
    if programs >= target:
        return 1
    return max(1, min(triton.cdiv(HW, block_hw), triton.cdiv(target, programs)))
