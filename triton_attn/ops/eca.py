"""Fused efficient channel attention: ``triton_attn::eca_fwd`` / ``eca_bwd``.

Forward: two launches. Pool (pass 1: read x), then one scale kernel that
computes the K-tap channel convolution and the gate per tile from the pooled
means (pass 2: read x, pass 3: write y). Backward: sum(dy * x) (passes 1-2),
the transposed convolution on [N, C] in torch, dx = dy * g + dmean (pass 3:
read dy, pass 4: write dx).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..runtime import autocast_off
from ..activations import gate_backward, gate_forward
from ..launch.channel_pool import channel_gate_grad, channel_pool
from ..launch.channel_scale import channel_scale, channel_scale_backward, conv_across_channels, shift_channels
from ..launch.layout import empty_like_4d


@torch.library.custom_op("triton_attn::eca_fwd", mutates_args=())
@autocast_off
def eca_fwd(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor], circular: bool, gate: str) -> tuple[torch.Tensor, torch.Tensor]:
    mean, _ = channel_pool(x, True, False)
    mean = mean.contiguous()
    return channel_scale(x, s=mean, conv_w=w.reshape(-1).contiguous(), conv_b=b, circular=circular, gate=gate), mean


@eca_fwd.register_fake
def _(x, w, b, circular, gate):
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    return empty_like_4d(x), x.new_empty(x.shape[:2], dtype=acc)


@torch.library.custom_op("triton_attn::eca_bwd", mutates_args=())
@autocast_off
def eca_bwd(
    dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor],
    circular: bool, gate: str, need_dx: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    HW = x.shape[2] * x.shape[3]
    K = w.numel()
    pad = (K - 1) // 2
    wf = w.reshape(-1).to(mean.dtype)
    z = conv_across_channels(mean, wf, b, circular)
    g = gate_forward(z, gate).contiguous()
    dg, _ = channel_gate_grad(dy, x, None)
    dz = gate_backward(z, dg, gate)
    dw = torch.stack([(dz * shift_channels(mean, pad - j, circular)).sum() for j in range(K)])
    db = dz.sum().reshape(b.shape).to(b.dtype) if b is not None else w.new_empty(0)
    if need_dx:
        ds = torch.zeros_like(mean)
        for j in range(K):
            ds = ds + wf[j] * shift_channels(dz, j - pad, circular)
        dx = channel_scale_backward(dy, x, g, (ds / HW).contiguous(), None, None)
    else:
        dx = x.new_empty(0)
    return dx, dw.to(w.dtype).reshape(w.shape), db


@eca_bwd.register_fake
def _(dy, x, mean, w, b, circular, gate, need_dx):
    return (
        empty_like_4d(x) if need_dx else x.new_empty(0),
        torch.empty_like(w),
        torch.empty_like(b) if b is not None else w.new_empty(0),
    )


def _eca_setup_context(ctx, inputs, output):
    x, w, b, circular, gate = inputs
    ctx.save_for_backward(x, output[1], w, b)
    ctx.cfg = (circular, gate)
    ctx.mark_non_differentiable(output[1])


def _eca_backward(ctx, dy, _dmean):
    x, mean, w, b = ctx.saved_tensors
    if dy is None:
        dy = torch.zeros_like(x)
    need_dx = ctx.needs_input_grad[0]
    dx, dw, db = eca_bwd(dy, x, mean, w, b, *ctx.cfg, need_dx)
    return dx if need_dx else None, dw, db if b is not None else None, None, None


eca_fwd.register_autograd(_eca_backward, setup_context=_eca_setup_context)


def eca(x, w, b, circular: bool, gate: str) -> torch.Tensor:
    """The ECA block on validated arguments (``functional.eca`` and the
    modules validate, once)."""
    y, _ = eca_fwd(x, w, b, circular, gate)
    return y
