"""Host side of CBAM's reductions over channels, one strip of pixels per
program: the spatial statistics of x1 = x * ca (forward pass 2), the gate
gradients with tie counts (backward passes 1-2) and the channel gate's
gradient through the statistics (backward pass 3). Each writes its partial
results into caller-allocated buffers for the consuming kernel to fold, or
runs the pure-PyTorch twin (one split, one strip) where Triton does not run.

``*_spec`` resolves a launch (tuned config or heuristic, memoised per shape).
The two backward passes write [STRIPS, N, C] partials that the channel
gate's backward folds together, so they share one strip geometry: the
second takes the first's ``block_hw``."""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch

from ..activations import GATE_CODES, gate_forward
from ..kernels.cbam_gate_grad_backward import cbam_gate_grad_kernel
from ..kernels.cbam_stats_backward import cbam_stats_backward_kernel
from ..kernels.spatial_stats import spatial_stats_kernel
from ..runtime import launch, sm_count_override, use_triton
from . import config as launch_config
from .channel_scale import conv_across_channels
from .config import LaunchConfig, cached_spec, cdiv, next_pow2, reduction_split, tile_config
from .layout import chan_contiguous

#: Fewest channels a C split keeps: each split writes a [N, H*W] partial per
#: statistic, so a split of under 64 channels would write (and its consumer
#: read) more than ~1/16 of x's bytes again.
_MIN_SPLIT_CHANNELS = 64
#: Channels per tile with channels_last: 32 fp32 (128 bytes) or bf16 (64
#: bytes, two full sectors) per pixel; the rest of the 4K-element tile goes
#: to pixels, so a strip is 128 pixels and the [STRIPS, N, C] partials of the
#: backward stay under 1/32 of x.
_CL_BLOCK_C = 32


class StripSpec(NamedTuple):
    grid: tuple
    split: int
    c_per_split: int
    num_hw_blocks: int
    block_hw: int
    kwargs: dict


#: The pure-PyTorch twins: one split, one strip.
TORCH = StripSpec((), 1, 0, 1, 0, {})


def _heuristic(N: int, C: int, HW: int, strides, device):
    def heuristic():
        cl = chan_contiguous(strides, C)
        cfg = tile_config(C, HW, cl)
        overridden = launch_config._overrides
        if cl and not ({"block_c", "block_hw"} & overridden.keys()):
            block_c = min(next_pow2(C), _CL_BLOCK_C)
            cfg = dataclasses.replace(cfg, block_c=block_c, block_hw=min(next_pow2(HW), 4096 // block_c))
        split = reduction_split(N * cdiv(HW, cfg.block_hw), C, cfg.block_c, device)
        if "split" not in overridden:
            split = min(split, max(1, C // _MIN_SPLIT_CHANNELS))
        warps = cfg.num_warps
        if cfg.block_c * cfg.block_hw >= 2048 and "num_warps" not in overridden:
            # Two operands' 64-bit address tiles and the slab's values: 8
            # elements a thread keep these under ~128 registers (25% occupancy).
            warps = 8
        return LaunchConfig(cfg.block_c, cfg.block_hw, warps, cfg.num_stages, split)
    return heuristic


#: Elements of one slab of the loop over C: larger tiles (the autotune
#: spaces' 8K) are walked in slabs of this size, so that the slab, two
#: operands' addresses and the reductions stay in registers (no spills).
_MAX_SLAB = 4096


def _build(cfg: LaunchConfig, N: int, C: int, HW: int) -> StripSpec:
    # Whole C blocks per split, so a split tuned on another C still fits.
    c_per_split = cdiv(cdiv(C, cfg.split), cfg.block_c) * cfg.block_c
    split = cdiv(C, c_per_split)
    strips = cdiv(HW, cfg.block_hw)
    slab_c = max(1, min(cfg.block_c, _MAX_SLAB // cfg.block_hw))  # a power of two dividing block_c
    kwargs = dict(BLOCK_C=slab_c, BLOCK_HW=cfg.block_hw, **cfg.launch_kwargs())
    return StripSpec((N * strips, split), split, c_per_split, strips, cfg.block_hw, kwargs)


def _acc(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _spec(kernel, variant, x, strides, other, trial, block_hw=None):
    if not use_triton(x) or x.numel() == 0:
        return TORCH
    N, C, H, W = x.shape
    HW = H * W
    key = (kernel, variant, N, C, HW, strides, other, x.dtype, x.device, block_hw, sm_count_override())

    def build(cfg):
        if block_hw is not None:  # the strip geometry of the pass whose partials it shares
            cfg = dataclasses.replace(cfg, block_hw=block_hw)
        return _build(cfg, N, C, HW)

    return cached_spec(kernel, key, x.shape, strides, x.dtype, x.device, variant,
                       _heuristic(N, C, HW, strides, x.device), build, trial, other_strides=other)


# --- forward pass 2: the per-pixel statistics of x1 = x * ca ----------------

def stats_spec(x: torch.Tensor, strides, conv_k: int) -> StripSpec:
    N, C, H, W = x.shape

    def trial(spec):
        acc = _acc(x)
        ca = torch.zeros((N, C), device=x.device, dtype=acc)
        part = torch.empty((2, spec.split, N, H * W), device=x.device, dtype=acc)
        pool_part = torch.zeros((2, 1, N, C), device=x.device, dtype=acc)
        w = torch.zeros(max(conv_k, 1), device=x.device, dtype=acc)
        _stats_launch(spec, x, strides, ca, part, pool_part, 1, torch.empty_like(pool_part[:, 0]), w, 1.0, conv_k, "sigmoid")

    return _spec("spatial_stats", "conv" if conv_k else "mean+max", x, strides, (), trial)


def _stats_launch(spec, x, strides, ca, part, pool_part, pool_split, pooled, conv_w, conv_scale, conv_k, gate):
    N, C, H, W = x.shape
    launch(
        spatial_stats_kernel, spec.grid,
        x, ca, part, pool_part, pooled, conv_w,
        C, H * W, spec.c_per_split, spec.num_hw_blocks, *strides, N * H * W, pool_split, N * C, float(conv_scale),
        CONV_K=conv_k, GATE=GATE_CODES[gate], **spec.kwargs,
    )


def stats(spec: StripSpec, x, strides, ca, part, *, pool_part=None, pool_split: int = 1, pooled=None, conv_w=None,
          conv_scale: float = 1.0, gate: str = "sigmoid") -> None:
    """Forward pass 2 (read x): the partial means (already / C) and maxima
    over C of x1 = x * ca into ``part`` [2, SPLIT, N, H*W]. With ``conv_w``
    (the "Conv" channel attention) ``ca`` [N, C] is computed first from the
    pooling partials ``pool_part`` [2, POOL_SPLIT, N, C] and stored, with
    the folded statistics in ``pooled`` [2, N, C]."""
    conv_k = conv_w.numel() if conv_w is not None else 0
    if spec.grid:
        _stats_launch(spec, x, strides, ca, part, pool_part if pool_part is not None else ca, pool_split,
                      pooled if pooled is not None else ca, conv_w if conv_w is not None else ca, conv_scale, conv_k, gate)
        return
    N, C, H, W = x.shape
    if conv_k:
        pooled[0] = pool_part[0].sum(0)
        pooled[1] = pool_part[1].amax(0)
        s = conv_scale * pooled[0] + conv_scale * pooled[1]
        ca.copy_(gate_forward(conv_across_channels(s, conv_w, None, False), gate))
    x1 = x.to(ca.dtype) * ca[:, :, None, None]
    part[0, 0] = x1.mean(1).reshape(N, H * W)
    part[1, 0] = x1.amax(1).reshape(N, H * W)


# --- backward passes 1-2: the gate gradients and tie counts -----------------

def grad_spec(x: torch.Tensor, x_strides, dy_strides) -> StripSpec:
    N, C, H, W = x.shape
    other = (dy_strides,) if dy_strides != x_strides else ()

    def trial(spec):
        acc = _acc(x)
        small_c = torch.zeros((N, C), device=x.device, dtype=acc)
        small_p = torch.zeros((N, H * W), device=x.device, dtype=acc)
        pix = torch.empty((2, spec.split, N, H * W), device=x.device, dtype=acc)
        chan = torch.empty((2, spec.num_hw_blocks, N, C), device=x.device, dtype=acc)
        _grad_launch(spec, x, x, x_strides, x_strides, small_c, small_p, small_p, small_c, pix, chan[0], chan[1])

    return _spec("cbam_gate_grad", "dy+ties", x, x_strides, other, trial)


def _grad_launch(spec, dy, x, x_strides, dy_strides, ca, sa, smax, amax, pix_part, dca_part, cnt_part):
    N, C, H, W = x.shape
    HW = H * W
    launch(
        cbam_gate_grad_kernel, spec.grid,
        dy, x, ca, sa, smax, amax, pix_part[0], pix_part[1], dca_part, cnt_part,
        C, HW, spec.c_per_split, spec.num_hw_blocks, *x_strides, *dy_strides, N * HW, N * C,
        **spec.kwargs,
    )


def grad(spec: StripSpec, dy, x, x_strides, dy_strides, ca, sa, smax, amax, pix_part, dca_part, cnt_part) -> None:
    """Backward passes 1-2 (read dy and x): ``pix_part`` [2, SPLIT, N, H*W]
    gets the partial sums over C of dy * x * ca (row 0) and the tie counts
    of smax (row 1); ``dca_part`` / ``cnt_part`` [STRIPS, N, C] the partial
    sums over H*W of dy * x * sa and the tie counts of amax."""
    if spec.grid:
        _grad_launch(spec, dy, x, x_strides, dy_strides, ca, sa, smax, amax, pix_part, dca_part, cnt_part)
        return
    N, C, H, W = x.shape
    acc = ca.dtype
    xf = x.to(acc)
    x1 = xf * ca[:, :, None, None]
    dyx = dy.to(acc) * xf
    pix_part[0, 0] = (dyx * ca[:, :, None, None]).sum(1).reshape(N, H * W)
    pix_part[1, 0] = (x1 == smax.reshape(N, 1, H, W)).sum(1).reshape(N, H * W).to(acc)
    dca_part[0] = (dyx * sa.reshape(N, 1, H, W)).sum((2, 3))
    cnt_part[0] = (xf == amax[:, :, None, None]).sum((2, 3)).to(acc)


# --- backward pass 3: the channel gate's gradient through the statistics ----

def stats_grad_spec(x: torch.Tensor, strides, block_hw: int) -> StripSpec:
    N, C, H, W = x.shape

    def trial(spec):
        acc = _acc(x)
        small_c = torch.zeros((N, C), device=x.device, dtype=acc)
        small_p = torch.zeros((N, H * W), device=x.device, dtype=acc)
        out = torch.empty((spec.num_hw_blocks, N, C), device=x.device, dtype=acc)
        _stats_grad_launch(spec, x, strides, small_c, small_p, small_p, small_p, out, None, 0, 0, None, None, None)

    return _spec("cbam_stats_grad", "mean+max", x, strides, (), trial, block_hw=block_hw)


def _stats_grad_launch(spec, x, strides, ca, smax, dmean_px, dmax_px, dca_part, wpart, rows, T, dsw, dgamma, dbeta):
    N, C, H, W = x.shape
    fold_w = wpart.shape[-1] if wpart is not None else 0
    launch(
        cbam_stats_backward_kernel, spec.grid,
        x, ca, smax, dmean_px, dmax_px, dca_part,
        wpart if wpart is not None else ca, dsw if dsw is not None else ca,
        dgamma if dgamma is not None else ca, dbeta if dbeta is not None else ca,
        C, H * W, spec.c_per_split, spec.num_hw_blocks, *strides, N * C, rows, T,
        HAS_GAMMA=dgamma is not None, HAS_BETA=dbeta is not None, FOLD_W=fold_w, **spec.kwargs,
    )


def stats_grad(spec: StripSpec, x, strides, ca, smax, coef, dca_part, wpart=None, T: int = 0, dsw=None, dgamma=None,
               dbeta=None) -> None:
    """Backward pass 3 (read x): ``dca_part`` [STRIPS, N, C] = partial sums
    over H*W of x * (dmean_px + (x * ca == smax) * dmax_px), ``coef`` =
    (dmean_px, dmax_px) [2, N, H*W]. With ``wpart`` [ROWS, FOLD_W] also the
    spatial branch's weight gradients: columns [0, T) into ``dsw``, T into
    ``dgamma``, T + 1 into ``dbeta`` (each in its own dtype; None: absent)."""
    if spec.grid:
        _stats_grad_launch(spec, x, strides, ca, smax, coef[0], coef[1], dca_part, wpart,
                           wpart.shape[0] if wpart is not None else 0, T, dsw, dgamma, dbeta)
        return
    N, C, H, W = x.shape
    acc = ca.dtype
    xf = x.to(acc)
    sx = smax.reshape(N, 1, H, W)
    hit = (xf * ca[:, :, None, None] == sx) | sx.isnan()
    zero = torch.zeros((), dtype=acc, device=x.device)
    c = coef[0].reshape(N, 1, H, W) + torch.where(hit, coef[1].reshape(N, 1, H, W), zero)
    dca_part[0] = (xf * c).sum((2, 3))
    if wpart is not None:
        total = wpart.sum(0)
        dsw.copy_(total[:T].reshape(dsw.shape))
        if dgamma is not None:
            dgamma.copy_(total[T:T + 1].reshape(dgamma.shape))
        if dbeta is not None:
            dbeta.copy_(total[T + 1:T + 2].reshape(dbeta.shape))
