"""Block sizes, warps and H*W split of the channel-attention kernels.

Every launcher resolves its launch spec through ``cached_spec`` (or
``run_tuned``): a config tuned for the launch's key (``triton_attn.tuning``)
when the cache has one, otherwise the heuristics below, each rule saying
where it came from; the resolved spec is memoised per shape, so the hot path
is one dict lookup. Tests override the heuristics (``override``) to drive
multi-block and split paths on small shapes; an override beats any tuned
config.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, TypeVar

import torch

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


# Elements per program tile: 2048 over 8 warps is 8 a thread, one 16-byte
# vector of bf16 per operand. Measured on sm_90 code (tests/test_hopper_compile.py):
# at 16 a thread (4096 over 8 warps, 2048 over 4) the kernels with two
# operands or several accumulators take 150-220 registers (12-19%
# occupancy); at 8 a thread 64-128 (25-75%).
_TILE_ELEMS = 2048


def cdiv(a: int, b: int) -> int:
    # Plain integer arithmetic: triton.cdiv / next_power_of_2 cost ~1.4 us a
    # call (they are constexpr functions), and the launch path makes dozens.
    return -(-a // b)


def symbolic(*sizes) -> bool:
    """True when a size is a SymInt: an export's decomposition runs the
    pure-PyTorch path on a dynamic batch, so launch planning must neither
    hash the size (memo keys) nor branch on it (a guard would specialise
    the exported batch)."""
    return not all(type(s) is int for s in sizes)


def next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def tile_config(C: int, HW: int, chan_contiguous: bool, elems: int = _TILE_ELEMS, warps: int | None = None) -> TileConfig:
    """Tile shape along the contiguous axis first, so each warp reads whole
    128-byte lines: channels for channels_last, H*W for NCHW. ``elems`` and
    ``warps``: a smaller tile for kernels with many operands per element."""
    if chan_contiguous:
        block_c = min(next_pow2(C), 256)
        block_hw = min(next_pow2(HW), max(1, elems // block_c))
    else:
        block_hw = min(next_pow2(HW), 1024)
        block_c = min(next_pow2(C), max(1, elems // block_hw))
    num_warps = warps or (8 if block_c * block_hw >= _TILE_ELEMS else 4)
    cfg = TileConfig(block_c, block_hw, num_warps)
    if _overrides:
        cfg = dataclasses.replace(cfg, **{k: v for k, v in _overrides.items() if k in ("block_c", "block_hw", "num_warps")})
    return cfg


def flat_block(cfg: LaunchConfig, C: int, HW: int) -> tuple[int, int]:
    """(elements per flat tile, channels such a tile can span): a tile config
    (block_c x block_hw elements) read as one flat run of a dense NCHW
    sample, clamped to the sample."""
    block = min(max(cfg.block_c * cfg.block_hw, 16), next_pow2(C * HW))
    return block, next_pow2((block - 1) // HW + 2)


def flat_ok(C: int, HW: int, *tensors: torch.Tensor) -> bool:
    """Flat tiles need every x-sized operand dense NCHW, and a sample small
    enough for int32 offsets within it."""
    return C * HW < 2**31 and HW > 1 and all(t.is_contiguous() for t in tensors)


def reduction_split(programs: int, HW: int, block_hw: int, device: torch.device) -> int:
    """Splits H*W across programs when N * C-blocks alone cannot fill the GPU
    (1x64x112x112 gives 1 program per C-block). Partial results are folded
    in a fixed order by the kernel that consumes them, so the split costs
    no determinism and no launch."""
    if "split" in _overrides:
        return max(1, min(_overrides["split"], cdiv(HW, block_hw)))
    sms = num_sms(device)
    if sms is None:
        return 1
    target = 4 * sms
    if programs >= target:
        return 1
    return max(1, min(cdiv(HW, block_hw), cdiv(target, programs)))


def tile_heuristic(C: int, HW: int, strides) -> Callable[[], LaunchConfig]:
    """``run_tuned``'s fallback for the one-tile-per-program kernels."""
    return lambda: tile_config(C, HW, layout.chan_contiguous(strides, C))


def reduction_config(C: int, HW: int, chan_contiguous: bool, N: int, device: torch.device,
                     elems: int = _TILE_ELEMS, warps: int | None = None) -> LaunchConfig:
    """Heuristic tile and split of the H*W reductions (pool, sum dy*x)."""
    cfg = tile_config(C, HW, chan_contiguous, elems, warps)
    split = reduction_split(N * cdiv(C, cfg.block_c), HW, cfg.block_hw, device)
    return LaunchConfig(cfg.block_c, cfg.block_hw, cfg.num_warps, cfg.num_stages, split)


_specs: dict = {}


def cached_spec(kernel: str, memo_key: tuple, x_shape, strides, dtype, device, variant,
                heuristic: Callable[[], LaunchConfig], build: Callable[[LaunchConfig], T],
                trial: Callable[[T], object] | None = None, other_strides: tuple = ()) -> T:
    """``build(cfg)`` -- a launcher's launch spec (grid, block sizes, buffer
    sizes) -- for the config tuned for this launch, else the heuristic's,
    memoised per ``memo_key`` (which must hold everything ``build`` reads):
    the hot path is one dict lookup. ``variant`` may be a callable (called
    only on a miss).

    With tuning on and no tuned choice yet, the candidates are timed first,
    each with ``trial(build(cfg))`` (a launch on scratch buffers, so nothing
    a caller allocated depends on the candidate). Overrides (tests) bypass
    the memo and the table."""
    if _overrides:
        return build(heuristic())
    recording = tuner._recorder is not None
    hit = _specs.get(memo_key)
    gen = table.generation()
    if hit is not None and hit[0] == gen and not recording and (hit[2] or not tuner.enabled()):
        return hit[1]
    N, C, H, W = x_shape
    if callable(variant):  # built only on a miss: the hot path never pays for the string
        variant = variant()
    key = tune_key(N, C, H * W, layouts_name(C, strides, *other_strides), dtype, variant)
    entry = table.lookup(kernel, device, key)
    from_table = entry is not None
    if entry is not None:
        if recording:
            tuner.note(kernel, key, entry, "cache")
        cfg = entry.config
    elif trial is not None and tuner.enabled() and not (device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
        problem = Problem(N, C, H * W, layout.chan_contiguous(strides, C), num_sms(device), device.type != "cuda")
        cfg = tuner.tune(kernel, key, problem, heuristic(), lambda c: trial(build(c)), device).config
        gen, from_table = table.generation(), True
    else:
        cfg = heuristic()
    spec = build(cfg)
    _specs[memo_key] = (gen, spec, from_table)
    return spec


def run_tuned(
    kernel: str,
    x: torch.Tensor,
    strides: tuple[int, int, int],
    variant: str,
    heuristic: Callable[[], LaunchConfig],
    run: Callable[[LaunchConfig], T],
    other_strides: tuple = (),
) -> T:
    """``run(cfg)`` with the config tuned for this launch, else ``heuristic()``
    (CBAM's launchers, which allocate per call).

    ``kernel`` names a kernel registered in ``triton_attn.tuning.registry``;
    ``x`` is the [N, C, H, W] operand the key is taken from, ``strides`` its
    [N, C, H*W] strides and ``other_strides`` those of operands whose layout
    may differ (dy); ``variant`` names the constexpr flags that change the
    work (e.g. "mean+max"). ``run`` must launch with every field of the
    config it is given: when tuning is on and the key has no cached choice,
    it is called once per candidate, so anything a kernel accumulates into
    must be allocated inside ``run`` (outputs it only overwrites may be
    shared)."""
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
