"""Host side of the H*W reductions: pooled mean/amax of x (forward), and
sum(dy * x) with the amax tie count (backward pass 1)."""
from __future__ import annotations

import torch
import triton

from ..runtime import launch, acc_dtype, new_buffer, use_triton
from ..kernels.channel_gate_grad import channel_gate_grad_kernel
from ..kernels.channel_pool import channel_pool_kernel
from .config import reduction_config, run_tuned
from .layout import chan_contiguous, nc_hw


def _split_layout(C: int, HW: int, cfg):
    """C-blocks, the split actually run (H*W per split is whole blocks, so a
    split tuned on another H*W of the same bucket still fits) and H*W per split."""
    num_c_blocks = triton.cdiv(C, cfg.block_c)
    hw_per_split = triton.cdiv(triton.cdiv(HW, cfg.split), cfg.block_hw) * cfg.block_hw
    return num_c_blocks, triton.cdiv(HW, hw_per_split), hw_per_split


def _heuristic(N: int, C: int, HW: int, strides, device):
    return lambda: reduction_config(C, HW, chan_contiguous(strides, C), N, device)


def channel_pool(x: torch.Tensor, want_mean: bool, want_max: bool):
    """[N, C, H, W] -> (mean [N, C] or None, amax [N, C] or None), in fp32
    (fp64 for fp64 x), both from a single read of x."""
    N, C, H, W = x.shape
    HW = H * W
    acc = acc_dtype(x.dtype)
    if not use_triton(x) or x.numel() == 0:  # no launch on an empty grid
        xf = x.to(acc)
        return (xf.mean((2, 3)) if want_mean else None, xf.amax((2, 3)) if want_max else None)

    x, strides = nc_hw(x)

    def run(cfg):
        num_c_blocks, split, hw_per_split = _split_layout(C, HW, cfg)
        mean = new_buffer((split, N, C), like=x, dtype=acc) if want_mean else None
        amax = new_buffer((split, N, C), like=x, dtype=acc) if want_max else None
        launch(channel_pool_kernel, (N * num_c_blocks, split),
            x, mean if want_mean else amax, amax if want_max else mean,
            C, HW, hw_per_split, num_c_blocks,
            *strides, N * C,
            COMPUTE_MEAN=want_mean, COMPUTE_MAX=want_max,
            BLOCK_C=cfg.block_c, BLOCK_HW=cfg.block_hw, **cfg.launch_kwargs(),
        )
        # Fixed-order combine of the split partials: deterministic, and a no-op
        # view when the reduction was not split.
        if want_mean:
            mean = mean[0] if split == 1 else mean.sum(0)
        if want_max:
            amax = amax[0] if split == 1 else amax.amax(0)
        return mean, amax

    variant = "+".join(name for name, on in (("mean", want_mean), ("max", want_max)) if on)
    return run_tuned("channel_pool", x, strides, variant, _heuristic(N, C, HW, strides, x.device), run)


def max_grad_per_element(dmax: torch.Tensor, cnt: torch.Tensor) -> torch.Tensor:
    """torch.amax's gradient for each maximum: dmax split evenly between the
    ``cnt`` tied maxima. A NaN max has no ties (NaN != NaN): torch then gives
    the whole slice NaN (grad / 0 * mask), and so does the dx pass, which
    sends this NaN to every element of a slice whose max is NaN."""
    return torch.where(cnt > 0, dmax / cnt.clamp_min(1), torch.full_like(dmax, float("nan")))


def channel_gate_grad(dy: torch.Tensor | None, x: torch.Tensor, amax: torch.Tensor | None):
    """(sum_hw dy * x [N, C] or None, count of x == amax [N, C] or None)."""
    N, C, H, W = x.shape
    HW = H * W
    acc = acc_dtype(x.dtype)
    want_dg, want_cnt = dy is not None, amax is not None
    if not use_triton(x) or x.numel() == 0:
        xf = x.to(acc)
        dg = (dy.to(acc) * xf).sum((2, 3)) if want_dg else None
        cnt = (xf == amax[:, :, None, None]).sum((2, 3)).to(acc) if want_cnt else None
        return dg, cnt

    x, x_strides = nc_hw(x)
    if want_dg:
        dy, dy_strides = nc_hw(dy)
    else:
        dy, dy_strides = x, x_strides

    def run(cfg):
        num_c_blocks, split, hw_per_split = _split_layout(C, HW, cfg)
        dg = new_buffer((split, N, C), like=x, dtype=acc) if want_dg else None
        cnt = new_buffer((split, N, C), like=x, dtype=acc) if want_cnt else None
        some = dg if want_dg else cnt
        launch(channel_gate_grad_kernel, (N * num_c_blocks, split),
            dy, x, amax if want_cnt else some, some, cnt if want_cnt else some,
            C, HW, hw_per_split, num_c_blocks,
            *x_strides, *dy_strides, N * C,
            HAS_DY=want_dg, COUNT_TIES=want_cnt,
            BLOCK_C=cfg.block_c, BLOCK_HW=cfg.block_hw, **cfg.launch_kwargs(),
        )
        if want_dg:
            dg = dg[0] if split == 1 else dg.sum(0)
        if want_cnt:
            cnt = cnt[0] if split == 1 else cnt.sum(0)
        return dg, cnt

    variant = "+".join(name for name, on in (("dy", want_dg), ("ties", want_cnt)) if on)
    return run_tuned(
        "channel_gate_grad", x, x_strides, variant, _heuristic(N, C, HW, x_strides, x.device), run,
        other_strides=(dy_strides,),
    )
