"""Host side of CBAM's elementwise passes: y = x * ca[n, c] * sa[n, hw]
(forward passes 3-4) and the single dx kernel of the backward (passes 4-6).
Each has a pure-torch fallback with the same arithmetic."""
from __future__ import annotations

import torch
import triton

from ..runtime import launch, acc_dtype, use_triton
from ..kernels.cbam_scale import cbam_scale_kernel
from ..kernels.cbam_scale_backward import cbam_scale_backward_kernel
from .config import run_tuned, tile_heuristic
from .layout import empty_like_4d, nc_hw


def _grid(N, C, HW, cfg):
    num_c_blocks = triton.cdiv(C, cfg.block_c)
    num_hw_blocks = triton.cdiv(HW, cfg.block_hw)
    return num_c_blocks, num_hw_blocks, (N * num_c_blocks * num_hw_blocks,)


def cbam_scale(x: torch.Tensor, ca: torch.Tensor, sa: torch.Tensor) -> torch.Tensor:
    """y = (x * ca[n, c]) * sa[n, hw], rounded once to x's dtype, in x's layout.
    ca: [N, C], sa: [N, H*W], contiguous, accumulation dtype."""
    N, C, H, W = x.shape
    HW = H * W
    y = empty_like_4d(x)
    if not use_triton(x) or x.numel() == 0:
        x1 = x.to(acc_dtype(x.dtype)) * ca[:, :, None, None]
        return y.copy_(x1 * sa.reshape(N, 1, H, W))

    x, x_strides = nc_hw(x)
    y_view, y_strides = nc_hw(y)
    assert y_view.data_ptr() == y.data_ptr()

    def run(cfg):  # each tuning trial writes all of y
        num_c_blocks, num_hw_blocks, grid = _grid(N, C, HW, cfg)
        launch(cbam_scale_kernel, grid,
            x, y, ca, sa,
            C, HW, num_c_blocks, num_hw_blocks,
            *x_strides, *y_strides,
            BLOCK_C=cfg.block_c, BLOCK_HW=cfg.block_hw, **cfg.launch_kwargs(),
        )
        return y

    heuristic = tile_heuristic(C, HW, x_strides)
    return run_tuned("cbam_scale", x, x_strides, "fwd", heuristic, run)


def cbam_scale_backward(dy, x, ca, amax, dmean_ch, dmax_ch, sa, smax, dmean_px, dmax_px) -> torch.Tensor:
    """dx = ca * (dy * sa + dmean_px + (x*ca == smax) * dmax_px)
          + dmean_ch + (x == amax) * dmax_ch.
    ``*_ch``: [N, C]; ``*_px``: [N, H*W]; all contiguous, accumulation dtype."""
    N, C, H, W = x.shape
    HW = H * W
    dx = empty_like_4d(x)
    if not use_triton(x) or x.numel() == 0:
        acc = ca.dtype
        zero = torch.zeros((), dtype=acc, device=x.device)
        xf = x.to(acc)
        g, m = ca[:, :, None, None], amax[:, :, None, None]
        px = [t.reshape(N, 1, H, W) for t in (sa, smax, dmean_px, dmax_px)]
        s, sx, dm_px, dx_px = px
        hit_px = (xf * g == sx) | sx.isnan()
        hit_ch = (xf == m) | m.isnan()
        dx1 = dy.to(acc) * s + dm_px + torch.where(hit_px, dx_px, zero)
        return dx.copy_(g * dx1 + dmean_ch[:, :, None, None] + torch.where(hit_ch, dmax_ch[:, :, None, None], zero))

    x, x_strides = nc_hw(x)
    dy, dy_strides = nc_hw(dy)
    _, dx_strides = nc_hw(dx)

    def run(cfg):  # each tuning trial writes all of dx
        num_c_blocks, num_hw_blocks, grid = _grid(N, C, HW, cfg)
        launch(cbam_scale_backward_kernel, grid,
            dy, x, dx, ca, amax, dmean_ch, dmax_ch, sa, smax, dmean_px, dmax_px,
            C, HW, num_c_blocks, num_hw_blocks,
            *dy_strides, *x_strides, *dx_strides,
            BLOCK_C=cfg.block_c, BLOCK_HW=cfg.block_hw, **cfg.launch_kwargs(),
        )
        return dx

    heuristic = tile_heuristic(C, HW, x_strides)
    return run_tuned("cbam_scale_backward", x, x_strides, "all", heuristic, run, other_strides=(dy_strides,))
