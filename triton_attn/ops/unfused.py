"""Building-block ops for gates the fused paths do not cover (an arbitrary
activation or norm module, timm's ECA ``use_mlp``): Triton pooling
``triton_attn::pool_hw`` and Triton scale ``triton_attn::scale``, each with its
own backward, and any torch code between them.

Costs more passes than the fused ops (the two dx contributions are summed by
autograd) but stays correct for every gate."""
from __future__ import annotations

import torch

from ..runtime import acc_dtype
from ..launch.channel_pool import channel_gate_grad, channel_pool, max_grad_per_element
from ..launch.channel_scale import channel_scale, channel_scale_backward
from ..launch.layout import empty_like_4d


@torch.library.custom_op("triton_attn::pool_hw", mutates_args=())
def pool_hw(x: torch.Tensor, want_mean: bool, want_max: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [N, C], amax [N, C]) in fp32 (fp64 for fp64 x); an unwanted one is empty."""
    mean, amax = channel_pool(x, want_mean, want_max)
    empty = x.new_empty(0, dtype=acc_dtype(x.dtype))
    if mean is not None and amax is not None:
        amax = amax.clone()  # both rows of one buffer: outputs of an op may not alias
    return (mean if mean is not None else empty), (amax if amax is not None else empty)


@pool_hw.register_fake
def _(x, want_mean, want_max):
    acc = acc_dtype(x.dtype)
    shape = x.shape[:2]
    return x.new_empty(shape if want_mean else (0,), dtype=acc), x.new_empty(shape if want_max else (0,), dtype=acc)


@torch.library.custom_op("triton_attn::pool_hw_bwd", mutates_args=())
def pool_hw_bwd(dmean: torch.Tensor, dmax: torch.Tensor, x: torch.Tensor, amax: torch.Tensor, want_mean: bool, want_max: bool) -> torch.Tensor:
    HW = x.shape[2] * x.shape[3]
    acc = acc_dtype(x.dtype)
    dm = (dmean.to(acc) / HW).contiguous() if want_mean else None
    dx_max = None
    if want_max:
        _, cnt = channel_gate_grad(None, x, amax.contiguous())
        dx_max = max_grad_per_element(dmax.to(acc), cnt).contiguous()
    return channel_scale_backward(None, x, None, dm, dx_max, amax.contiguous() if want_max else None)


@pool_hw_bwd.register_fake
def _(dmean, dmax, x, amax, want_mean, want_max):
    return empty_like_4d(x)


def _pool_setup(ctx, inputs, output):
    x, want_mean, want_max = inputs
    ctx.save_for_backward(x, output[1])
    ctx.flags = (want_mean, want_max)


def _pool_backward(ctx, dmean, dmax):
    x, amax = ctx.saved_tensors
    want_mean, want_max = ctx.flags
    if dmean is None or not want_mean:
        dmean = amax.new_zeros(x.shape[:2]) if want_mean else amax.new_empty(0)
    if dmax is None or not want_max:
        dmax = amax.new_zeros(x.shape[:2]) if want_max else amax.new_empty(0)
    return pool_hw_bwd(dmean, dmax, x, amax, want_mean, want_max), None, None


pool_hw.register_autograd(_pool_backward, setup_context=_pool_setup)


@torch.library.custom_op("triton_attn::scale", mutates_args=())
def scale(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """y = x * g[:, :, None, None], computed in fp32; y has x's dtype and layout."""
    return channel_scale(x, g.to(acc_dtype(x.dtype)).contiguous())


@scale.register_fake
def _(x, g):
    return empty_like_4d(x)


@torch.library.custom_op("triton_attn::scale_bwd", mutates_args=())
def scale_bwd(dy: torch.Tensor, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gf = g.to(acc_dtype(x.dtype)).contiguous()
    dg, _ = channel_gate_grad(dy, x, None)
    dx = channel_scale_backward(dy, x, gf, None, None, None)
    return dx, dg.to(g.dtype)


@scale_bwd.register_fake
def _(dy, x, g):
    return empty_like_4d(x), torch.empty_like(g)


def _scale_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _scale_backward(ctx, dy):
    x, g = ctx.saved_tensors
    dx, dg = scale_bwd(dy, x, g)
    return dx, dg


scale.register_autograd(_scale_backward, setup_context=_scale_setup)
