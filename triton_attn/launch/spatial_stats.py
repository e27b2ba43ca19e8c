"""Host side of CBAM's reductions over channels, one strip of pixels per
program: the spatial statistics of x1 = x * ca (forward pass 2) and the two
backward reductions (gate gradients with tie counts, passes 1-2; the channel
gate's gradient through the statistics, pass 3). Each has a pure-torch
fallback with the same arithmetic (x1 rounded to the accumulation dtype)."""
from __future__ import annotations

import torch
import triton

from ..runtime import launch, acc_dtype, new_buffer, use_triton
from ..kernels.cbam_gate_grad_backward import cbam_gate_grad_kernel
from ..kernels.cbam_stats_backward import cbam_stats_backward_kernel
from ..kernels.spatial_stats import spatial_stats_kernel
from .config import LaunchConfig, reduction_split, run_tuned, tile_config
from .layout import chan_contiguous, nc_hw


def _pixel_heuristic(N: int, C: int, HW: int, strides, device):
    """Tiles as the channel kernels use them; the channel loop is split when
    N * pixel strips alone cannot fill the GPU (a 7x7 map with C = 2048)."""
    def heuristic():
        cfg = tile_config(C, HW, chan_contiguous(strides, C))
        split = reduction_split(N * triton.cdiv(HW, cfg.block_hw), C, cfg.block_c, device)
        return LaunchConfig(cfg.block_c, cfg.block_hw, cfg.num_warps, cfg.num_stages, split)
    return heuristic


def _pixel_layout(C: int, HW: int, cfg):
    """Pixel strips, the split actually run (whole C blocks per split) and C per split."""
    c_per_split = triton.cdiv(triton.cdiv(C, cfg.split), cfg.block_c) * cfg.block_c
    return triton.cdiv(HW, cfg.block_hw), triton.cdiv(C, c_per_split), c_per_split


def _gated(x: torch.Tensor, ca: torch.Tensor):
    xf = x.to(acc_dtype(x.dtype))
    return xf, xf * ca[:, :, None, None]


def spatial_stats(x: torch.Tensor, ca: torch.Tensor):
    """(mean_c(x * ca), amax_c(x * ca)), each [N, H*W] in the accumulation
    dtype, from one read of x; ca: [N, C] contiguous, accumulation dtype."""
    N, C, H, W = x.shape
    HW = H * W
    if not use_triton(x) or x.numel() == 0:
        _, x1 = _gated(x, ca)
        return x1.mean(1).reshape(N, HW), x1.amax(1).reshape(N, HW)

    x, strides = nc_hw(x)

    def run(cfg):
        num_hw_blocks, split, c_per_split = _pixel_layout(C, HW, cfg)
        mean = new_buffer((split, N, HW), like=x, dtype=ca.dtype)
        amax = new_buffer((split, N, HW), like=x, dtype=ca.dtype)
        launch(spatial_stats_kernel, (N * num_hw_blocks, split),
            x, ca, mean, amax,
            C, HW, c_per_split, num_hw_blocks,
            *strides, N * HW,
            BLOCK_C=cfg.block_c, BLOCK_HW=cfg.block_hw, **cfg.launch_kwargs(),
        )
        # Fixed-order combine of the split partials (deterministic).
        return (mean[0], amax[0]) if split == 1 else (mean.sum(0), amax.amax(0))

    return run_tuned("spatial_stats", x, strides, "mean+max", _pixel_heuristic(N, C, HW, strides, x.device), run)


def cbam_gate_grad(dy, x, ca, sa, smax, amax):
    """Backward passes 1-2 (read dy and x). Returns
    (dsa [N, HW] = sum_c dy*x*ca, ties of smax [N, HW],
    dca1 [N, C] = sum_hw dy*x*sa, ties of amax [N, C])."""
    N, C, H, W = x.shape
    HW = H * W
    acc = ca.dtype
    if not use_triton(x) or x.numel() == 0:
        xf, x1 = _gated(x, ca)
        dyx = dy.to(acc) * xf
        sx = smax.reshape(N, 1, H, W)
        return (
            (dyx * ca[:, :, None, None]).sum(1).reshape(N, HW),
            (x1 == sx).sum(1).reshape(N, HW).to(acc),
            (dyx * sa.reshape(N, 1, H, W)).sum((2, 3)),
            (xf == amax[:, :, None, None]).sum((2, 3)).to(acc),
        )

    x, x_strides = nc_hw(x)
    dy, dy_strides = nc_hw(dy)

    def run(cfg):
        num_hw_blocks, split, c_per_split = _pixel_layout(C, HW, cfg)
        dsa = new_buffer((split, N, HW), like=x, dtype=acc)
        cnt_sx = new_buffer((split, N, HW), like=x, dtype=acc)
        dca = new_buffer((num_hw_blocks, N, C), like=x, dtype=acc)
        cnt_max = new_buffer((num_hw_blocks, N, C), like=x, dtype=acc)
        launch(cbam_gate_grad_kernel, (N * num_hw_blocks, split),
            dy, x, ca, sa, smax, amax, dsa, cnt_sx, dca, cnt_max,
            C, HW, c_per_split, num_hw_blocks,
            *x_strides, *dy_strides, N * HW, N * C,
            BLOCK_C=cfg.block_c, BLOCK_HW=cfg.block_hw, **cfg.launch_kwargs(),
        )
        return dsa.sum(0), cnt_sx.sum(0), dca.sum(0), cnt_max.sum(0)

    return run_tuned(
        "cbam_gate_grad", x, x_strides, "dy+ties", _pixel_heuristic(N, C, HW, x_strides, x.device), run,
        other_strides=(dy_strides,),
    )


def cbam_stats_grad(x, ca, smax, dmean_px, dmax_px):
    """Backward pass 3 (read x): dca2 [N, C] = sum_hw x * (dmean_px +
    (x*ca == smax) * dmax_px), the per-pixel coefficients being [N, HW]."""
    N, C, H, W = x.shape
    HW = H * W
    acc = ca.dtype
    if not use_triton(x) or x.numel() == 0:
        xf, x1 = _gated(x, ca)
        sx = smax.reshape(N, 1, H, W)
        hit = (x1 == sx) | sx.isnan()
        zero = torch.zeros((), dtype=acc, device=x.device)
        coef = dmean_px.reshape(N, 1, H, W) + torch.where(hit, dmax_px.reshape(N, 1, H, W), zero)
        return (xf * coef).sum((2, 3))

    x, strides = nc_hw(x)

    def run(cfg):
        num_hw_blocks, split, c_per_split = _pixel_layout(C, HW, cfg)
        dca = new_buffer((num_hw_blocks, N, C), like=x, dtype=acc)
        launch(cbam_stats_backward_kernel, (N * num_hw_blocks, split),
            x, ca, smax, dmean_px, dmax_px, dca,
            C, HW, c_per_split, num_hw_blocks,
            *strides, N * C,
            BLOCK_C=cfg.block_c, BLOCK_HW=cfg.block_hw, **cfg.launch_kwargs(),
        )
        return dca.sum(0)

    return run_tuned("cbam_stats_grad", x, strides, "mean+max", _pixel_heuristic(N, C, HW, strides, x.device), run)
