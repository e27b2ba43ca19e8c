"""Host side of the broadcast multiply y = x * g[n, c] (forward, optionally
with ECA's channel convolution + gate computed in the kernel) and of the
fused backward dx = dy * g + pooled-gradient broadcast."""
from __future__ import annotations

import torch
import triton

from ..runtime import launch, acc_dtype, use_triton
from ..activations import GATE_CODES, gate_forward
from ..kernels.channel_scale import channel_scale_kernel
from ..kernels.channel_scale_backward import channel_scale_backward_kernel
from .config import run_tuned, tile_heuristic
from .layout import empty_like_4d, nc_hw


def conv_across_channels(s: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, circular: bool) -> torch.Tensor:
    """z[n, c] = sum_j w[j] * s[n, c + j - pad] (+ b), zero or circular padding.

    Written as K shifted adds rather than F.conv1d so that the circular case
    needs no F.pad (which refuses pad > C) and CUDA picks no nondeterministic
    cuDNN algorithm; K is small and s is [N, C]."""
    K = w.numel()
    pad = (K - 1) // 2
    w = w.reshape(-1).to(s.dtype)
    z = torch.zeros_like(s)
    for j in range(K):
        z = z + w[j] * shift_channels(s, pad - j, circular)
    if b is not None:
        z = z + b.reshape(()).to(s.dtype)
    return z


def shift_channels(t: torch.Tensor, shift: int, circular: bool) -> torch.Tensor:
    """u[:, c] = t[:, c - shift], wrapping or zero-filling."""
    C = t.shape[1]
    if shift == 0:
        return t
    if circular:
        idx = (torch.arange(C, device=t.device) - shift) % C
        return t.index_select(1, idx)
    if abs(shift) >= C:
        return torch.zeros_like(t)
    if shift > 0:
        return torch.cat([t.new_zeros(t.shape[0], shift), t[:, : C - shift]], 1)
    return torch.cat([t[:, -shift:], t.new_zeros(t.shape[0], -shift)], 1)


def channel_scale(
    x: torch.Tensor,
    g: torch.Tensor | None = None,
    *,
    s: torch.Tensor | None = None,
    conv_w: torch.Tensor | None = None,
    conv_b: torch.Tensor | None = None,
    circular: bool = False,
    gate: str = "identity",
) -> torch.Tensor:
    """y = x * g[n, c]; with ``conv_w``, g = gate(conv_across_channels(s)).

    g / s: [N, C] in the accumulation dtype. y has x's dtype and layout."""
    N, C, H, W = x.shape
    HW = H * W
    acc = acc_dtype(x.dtype)
    if not use_triton(x) or x.numel() == 0:  # no launch on an empty grid
        if conv_w is not None:
            g = gate_forward(conv_across_channels(s, conv_w, conv_b, circular), gate)
        y = empty_like_4d(x)
        return y.copy_(x.to(acc) * g[:, :, None, None])

    y = empty_like_4d(x)
    x, x_strides = nc_hw(x)
    y_view, y_strides = nc_hw(y)
    assert y_view.data_ptr() == y.data_ptr()
    gv = g if g is not None else s
    sv = s if s is not None else g
    wv = conv_w.reshape(-1) if conv_w is not None else gv
    bv = conv_b.reshape(-1) if conv_b is not None else wv

    def run(cfg):
        # Tuning calls this once per candidate: each writes all of y, the
        # chosen config last, so sharing y between trials is harmless.
        num_c_blocks = triton.cdiv(C, cfg.block_c)
        num_hw_blocks = triton.cdiv(HW, cfg.block_hw)
        launch(channel_scale_kernel, (N * num_c_blocks * num_hw_blocks,),
            x, y, gv, sv, wv, bv,
            C, HW, num_c_blocks, num_hw_blocks,
            *x_strides, *y_strides,
            CONV_K=conv_w.numel() if conv_w is not None else 0,
            CIRCULAR=circular, HAS_BIAS=conv_b is not None,
            GATE=GATE_CODES[gate] if conv_w is not None else 0,
            BLOCK_C=cfg.block_c, BLOCK_HW=cfg.block_hw, **cfg.launch_kwargs(),
        )
        return y

    variant = "conv" if conv_w is not None else "gate"
    heuristic = tile_heuristic(C, HW, x_strides)
    return run_tuned("channel_scale", x, x_strides, variant, heuristic, run)


def channel_scale_backward(
    dy: torch.Tensor | None,
    x: torch.Tensor,
    g: torch.Tensor | None,
    dmean: torch.Tensor | None,
    dmax: torch.Tensor | None,
    amax: torch.Tensor | None,
) -> torch.Tensor:
    """dx = dy * g + dmean + (x == amax) * dmax, all [N, C] terms broadcast
    over H*W; dmean is already / (H*W), dmax already / tie count."""
    N, C, H, W = x.shape
    HW = H * W
    acc = acc_dtype(x.dtype)
    if not use_triton(x) or x.numel() == 0:
        dx = torch.zeros(x.shape, device=x.device, dtype=acc)
        if dy is not None:
            dx = dx + dy.to(acc) * g[:, :, None, None]
        if dmean is not None:
            dx = dx + dmean[:, :, None, None]
        if dmax is not None:
            hit = (x.to(acc) == amax[:, :, None, None]) | amax.isnan()[:, :, None, None]
            dx = dx + torch.where(hit, dmax[:, :, None, None], torch.zeros((), dtype=acc, device=x.device))
        return empty_like_4d(x).copy_(dx)

    dx = empty_like_4d(x)
    x, x_strides = nc_hw(x)
    _, dx_strides = nc_hw(dx)
    if dy is not None:
        dy, dy_strides = nc_hw(dy)
    else:
        dy, dy_strides = x, x_strides
    some = next(t for t in (dmean, g, dmax) if t is not None)
    has_dy = g is not None and dy is not None

    def run(cfg):
        # Each tuning trial writes all of dx (nothing accumulates into it).
        num_c_blocks = triton.cdiv(C, cfg.block_c)
        num_hw_blocks = triton.cdiv(HW, cfg.block_hw)
        launch(channel_scale_backward_kernel, (N * num_c_blocks * num_hw_blocks,),
            dy, x, dx,
            g if g is not None else some,
            dmean if dmean is not None else some,
            dmax if dmax is not None else some,
            amax if amax is not None else some,
            C, HW, num_c_blocks, num_hw_blocks,
            *dy_strides, *x_strides, *dx_strides,
            HAS_DY=has_dy, HAS_MEAN=dmean is not None, HAS_MAX=dmax is not None,
            BLOCK_C=cfg.block_c, BLOCK_HW=cfg.block_hw, **cfg.launch_kwargs(),
        )
        return dx

    variant = "+".join(n for n, on in (("dy", has_dy), ("mean", dmean is not None), ("max", dmax is not None)) if on)
    heuristic = tile_heuristic(C, HW, x_strides)
    return run_tuned(
        "channel_scale_backward", x, x_strides, variant, heuristic, run,
        other_strides=(dy_strides if has_dy else None,),
    )
