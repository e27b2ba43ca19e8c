"""Block sizes, warps and H*W split of the channel-attention kernels.

Every launcher goes through ``run_tuned``: a config tuned for the launch's
key (``triton_attn.autotune``) when the cache has one, otherwise the
heuristics below, each rule saying where it came from. Tests override them
(``override``) to drive multi-block and split paths on small shapes; an
override beats any tuned config.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, TypeVar

import torch
import triton

from ..tuning import table, tuner
from ..tuning.config import LaunchConfig
from ..tuning.device import num_sms
from ..tuning.key import layouts_name, tune_key
from ..tuning.spaces import Problem
from . import layout

T = TypeVar("T")

#: The heuristics' result type (a LaunchConfig with split 1, default stages).
TileConfig = LaunchConfig

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


#: Orders in which the second pass over x (the scale pass forward, the dx
#: pass backward) can visit its tiles. "reverse" re-reads first what the
#: first pass (the pooling, the gradient sums) touched last, which may still
#: sit in L2; "forward" is the natural order.
TILE_ORDERS = ("forward", "reverse")
_tile_order: str | None = None


@contextlib.contextmanager
def tile_order(order: str | None):
    """Force the second pass's tile order (``"forward"``/``"reverse"``), or
    ``None`` for the heuristic (``second_pass_reversed``): the GPU command's
    L2 experiment times both."""
    global _tile_order
    if order is not None and order not in TILE_ORDERS:
        raise ValueError(f"tile order must be one of {TILE_ORDERS} or None, got {order!r}")
    previous, _tile_order = _tile_order, order
    try:
        yield
    finally:
        _tile_order = previous


def second_pass_reversed(x_bytes: int) -> bool:
    """Whether the second pass walks its tiles backwards. Heuristic until a
    GPU has measured both orders (``python -m perf gpu``, step 3): forward."""
    if _tile_order is not None:
        return _tile_order == "reverse"
    return False


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


def reduction_split(programs: int, HW: int, block_hw: int, device: torch.device) -> int:
    """Splits H*W across programs when N * C-blocks alone cannot fill the GPU
    (1x64x112x112 gives 1 program per C-block). Partial results are combined
    in a fixed order on the host, so the split costs no determinism."""
    if "split" in _overrides:
        return max(1, min(_overrides["split"], triton.cdiv(HW, block_hw)))
    sms = num_sms(device)
    if sms is None:
        return 1
    target = 4 * sms
    if programs >= target:
        return 1
    return max(1, min(triton.cdiv(HW, block_hw), triton.cdiv(target, programs)))


def tile_heuristic(C: int, HW: int, strides) -> Callable[[], LaunchConfig]:
    """``run_tuned``'s fallback for the one-tile-per-program kernels."""
    return lambda: tile_config(C, HW, layout.chan_contiguous(strides, C))


def reduction_config(C: int, HW: int, chan_contiguous: bool, N: int, device: torch.device) -> LaunchConfig:
    """Heuristic tile and split of the H*W reductions (pool, sum dy*x)."""
    cfg = tile_config(C, HW, chan_contiguous)
    split = reduction_split(N * triton.cdiv(C, cfg.block_c), HW, cfg.block_hw, device)
    return LaunchConfig(cfg.block_c, cfg.block_hw, cfg.num_warps, cfg.num_stages, split)


def run_tuned(
    kernel: str,
    x: torch.Tensor,
    strides: tuple[int, int, int],
    variant: str,
    heuristic: Callable[[], LaunchConfig],
    run: Callable[[LaunchConfig], T],
    other_strides: tuple = (),
) -> T:
    """``run(cfg)`` with the config tuned for this launch, else ``heuristic()``.

    ``kernel`` names a kernel registered in ``triton_attn.autotune.registry``;
    ``x`` is the [N, C, H, W] operand the key is taken from, ``strides`` its
    [N, C, H*W] strides and ``other_strides`` those of operands whose layout
    may differ (dy); ``variant`` names the constexpr flags that change the
    work (e.g. "mean+max"). ``run`` must launch with every field of the
    config it is given: when tuning is on and the key has no cached choice,
    it is called once per candidate, so anything a kernel accumulates into
    must be allocated inside ``run`` (outputs it only overwrites may be
    shared). Cost per launch: a key tuple and two dict lookups (~3 us)."""
    if _overrides:
        return run(heuristic())
    N, C, H, W = x.shape
    key = tune_key(N, C, H * W, layouts_name(C, strides, *other_strides), x.dtype, variant)
    device = x.device
    entry = table.lookup(kernel, device, key)
    if entry is not None:
        if tuner._recorder is not None:
            tuner.note(kernel, key, entry, "cache")
        return run(entry.config)
    if not tuner.enabled() or (device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
        return run(heuristic())
    problem = Problem(N, C, H * W, layout.chan_contiguous(strides, C), num_sms(device), device.type != "cuda")
    entry = tuner.tune(kernel, key, problem, heuristic(), run, device)
    return run(entry.config)
