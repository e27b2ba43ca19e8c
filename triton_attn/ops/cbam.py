"""Fused CBAM: ``triton_attn::cbam_fwd`` / ``cbam_bwd``.

Forward, 4 passes over x-sized memory (P = the bytes of x):
  pass 1    channel_pool: mean and amax over H*W (read x).
            [N, C] in torch: ca = gate(f(mean) + f(amax)), f the shared MLP or
            ECA's channel conv (light: gate(f(0.5 * mean + 0.5 * amax))).
  pass 2    spatial_stats: mean and amax over C of x1 = x * ca per pixel
            (read x; x1 is never written).
            [N, H, W] in torch: z = conv_kxk(cat(stats)), BN, sa = gate.
  passes 3-4 cbam_scale: y = x * ca * sa (read x, write y).
Backward, 6 passes:
  passes 1-2 cbam_gate_grad: read dy and x -> d sa, tie counts of both maxima,
            the first part of d ca (sum_hw dy * x * sa).
            [N, H, W]: gate, BN and conv backward (aten's own backward ops).
  pass 3    cbam_stats_grad: read x -> d ca through the spatial statistics.
            [N, C]: gate and MLP/conv backward -> d mean, d amax, weight grads.
  passes 4-6 cbam_scale_backward: read dy and x, write dx (all five paths).
x1 is recomputed, never stored; the saved state is x and [N, C] / [N, H, W] maps.

Why the spatial conv and BatchNorm live inside the op rather than as torch ops
between two custom ops: dx needs d mean / d amax, which exist only after the
spatial branch's backward, which needs d sa from dy. With the spatial branch
outside, x's gradient would come from two ops and autograd would add the two
x-sized halves (3 more passes). The BN module's running statistics are still
updated by PyTorch itself: the op returns the conv output z and the caller
runs ``F.batch_norm`` on that small map (``functional.cbam``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..runtime import acc_dtype, autocast_off
from ..activations import act_backward, gate_backward, gate_forward
from ..launch.cbam_scale import cbam_scale, cbam_scale_backward
from ..launch.channel_pool import channel_pool, max_grad_per_element
from ..launch.channel_scale import conv_across_channels, shift_channels
from ..launch.layout import empty_like_4d
from .se import mlp_forward
from ..launch.spatial_stats import cbam_gate_grad, cbam_stats_grad, spatial_stats

SPATIAL_CONCATS = ("mean_max", "max_mean")


def _channel_logits(pooled, w1, b1, w2, b2, conv, act, act_param, light):
    """z = f(mean) + f(amax) (light: f(0.5 * mean + 0.5 * amax)) on [N, C],
    with the rows fed to f and f's hidden activations for the backward."""
    N, C = pooled.shape[1:]
    rows = 0.5 * pooled[0] + 0.5 * pooled[1] if light else pooled.reshape(2 * N, C)
    if conv is not None:
        z, h, a = conv_across_channels(rows, conv, None, False), None, None
    else:
        z, h, a = mlp_forward(rows, w1, b1, w2, b2, act, act_param)
    z = z.reshape(1 if light else 2, N, C)
    return (z[0] if light else z[0] + z[1]), rows, h, a


def _channel_backward(dz, rows, h, a, w1, w2, conv, act, act_param, light):
    """f's backward for the rows that share dz: (d rows, dw1, db1, dw2, db2, dconv)."""
    dz = dz if light else dz.repeat(2, 1)
    if conv is not None:
        K = conv.numel()
        pad = (K - 1) // 2
        wf = conv.reshape(-1).to(rows.dtype)
        dconv = torch.stack([(dz * shift_channels(rows, pad - j, False)).sum() for j in range(K)])
        drows = sum(wf[j] * shift_channels(dz, j - pad, False) for j in range(K))
        return drows, None, None, None, None, dconv
    w1m = w1.reshape(w1.shape[0], w1.shape[1]).to(rows.dtype)
    w2m = w2.reshape(w2.shape[0], w2.shape[1]).to(rows.dtype)
    dh = act_backward(h, dz @ w2m, act, act_param)
    return dh @ w1m, dh.t() @ rows, dh.sum(0), dz.t() @ a, dz.sum(0), None


def _spatial_input(smaps, N, H, W, concat, light):
    sm, sx = smaps[0].reshape(N, 1, H, W), smaps[1].reshape(N, 1, H, W)
    if light:
        return 0.5 * sm + 0.5 * sx
    return torch.cat([sm, sx] if concat == "mean_max" else [sx, sm], 1)


def _cast(t, acc):
    return None if t is None else t.to(acc)


def _spatial_logits(s, sw, bw, bb, bm, bv, use_bn, bn_training, bn_eps):
    """(conv output z, BN output, BN's saved mean and invstd) on the small map.
    Running statistics are read in eval mode only, never written here."""
    acc = s.dtype
    z = F.conv2d(s, sw.to(acc), padding=sw.shape[-1] // 2)
    if not use_bn:
        return z, z, None, None
    rm, rv = (None, None) if bn_training else (_cast(bm, acc), _cast(bv, acc))
    out, save_mean, save_invstd = torch.ops.aten.native_batch_norm(
        z, _cast(bw, acc), _cast(bb, acc), rm, rv, bn_training, 0.0, bn_eps
    )
    return z, out, save_mean, save_invstd


@torch.library.custom_op("triton_attn::cbam_fwd", mutates_args=())
@autocast_off
def cbam_fwd(
    x: torch.Tensor, w1: Optional[torch.Tensor], b1: Optional[torch.Tensor], w2: Optional[torch.Tensor],
    b2: Optional[torch.Tensor], channel_conv: Optional[torch.Tensor], spatial_weight: torch.Tensor,
    bn_weight: Optional[torch.Tensor], bn_bias: Optional[torch.Tensor], bn_mean: Optional[torch.Tensor],
    bn_var: Optional[torch.Tensor], use_bn: bool, bn_training: bool, bn_eps: float, concat: str, act: str,
    act_param: float, gate: str, light: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (y, pooled [2, N, C] = (mean, amax) over H*W, maps [3, N, H*W] =
    (mean, amax) over C of x * ca and the spatial conv output z), the small
    tensors in the accumulation dtype."""
    N, C, H, W = x.shape
    mean, amax = channel_pool(x, True, True)                       # pass 1
    pooled = torch.stack([mean, amax])
    zc, _, _, _ = _channel_logits(pooled, w1, b1, w2, b2, channel_conv, act, act_param, light)
    ca = gate_forward(zc, gate).contiguous()
    smean, smax = spatial_stats(x, ca)                              # pass 2
    s = _spatial_input((smean, smax), N, H, W, concat, light)
    z, out, _, _ = _spatial_logits(s, spatial_weight, bn_weight, bn_bias, bn_mean, bn_var, use_bn, bn_training, bn_eps)
    sa = gate_forward(out, gate).reshape(N, H * W).contiguous()
    y = cbam_scale(x, ca, sa)                                       # passes 3-4
    return y, pooled, torch.stack([smean, smax, z.reshape(N, H * W)])


@cbam_fwd.register_fake
def _(x, w1, b1, w2, b2, channel_conv, spatial_weight, bn_weight, bn_bias, bn_mean, bn_var, use_bn, bn_training,
      bn_eps, concat, act, act_param, gate, light):
    N, C, H, W = x.shape
    acc = acc_dtype(x.dtype)
    return empty_like_4d(x), x.new_empty((2, N, C), dtype=acc), x.new_empty((3, N, H * W), dtype=acc)


def _grad_as(g, like, spare):
    # Outputs of a custom op may not alias each other: a fresh empty per slot.
    return g.to(like.dtype).reshape(like.shape) if (like is not None and g is not None) else spare.new_empty(0)


@torch.library.custom_op("triton_attn::cbam_bwd", mutates_args=())
@autocast_off
def cbam_bwd(
    dy: torch.Tensor, x: torch.Tensor, pooled: torch.Tensor, maps: torch.Tensor, w1: Optional[torch.Tensor],
    b1: Optional[torch.Tensor], w2: Optional[torch.Tensor], b2: Optional[torch.Tensor],
    channel_conv: Optional[torch.Tensor], spatial_weight: torch.Tensor, bn_weight: Optional[torch.Tensor],
    bn_bias: Optional[torch.Tensor], bn_mean: Optional[torch.Tensor], bn_var: Optional[torch.Tensor], use_bn: bool,
    bn_training: bool, bn_eps: float, concat: str, act: str, act_param: float, gate: str, light: bool, need_dx: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
           torch.Tensor, torch.Tensor]:
    """(dx, dw1, db1, dw2, db2, d channel_conv, d spatial_weight, d bn_weight,
    d bn_bias); an absent parameter (or dx without need_dx) gets an empty tensor."""
    N, C, H, W = x.shape
    HW = H * W
    acc = pooled.dtype
    amax = pooled[1].contiguous()
    smax = maps[1].contiguous()
    zc, rows, h, a = _channel_logits(pooled, w1, b1, w2, b2, channel_conv, act, act_param, light)
    ca = gate_forward(zc, gate).contiguous()
    s = _spatial_input(maps, N, H, W, concat, light)
    z, out, save_mean, save_invstd = _spatial_logits(
        s, spatial_weight, bn_weight, bn_bias, bn_mean, bn_var, use_bn, bn_training, bn_eps
    )
    sa = gate_forward(out, gate).reshape(N, HW).contiguous()

    dsa, cnt_sx, dca, cnt_max = cbam_gate_grad(dy, x, ca, sa, smax, amax)        # passes 1-2
    dz = gate_backward(out, dsa.reshape(N, 1, H, W), gate)
    dbw = dbb = None
    if use_bn and z.numel() == 0:  # aten's CPU kernel divides by zero on an empty batch
        dbw, dbb = z.new_zeros(1), z.new_zeros(1)
    elif use_bn:
        rm, rv = (None, None) if bn_training else (_cast(bn_mean, acc), _cast(bn_var, acc))
        dz, dbw, dbb = torch.ops.aten.native_batch_norm_backward(
            dz, z, _cast(bn_weight, acc), rm, rv, save_mean, save_invstd, bn_training, bn_eps,
            [True, bn_weight is not None, bn_bias is not None],
        )
    k = spatial_weight.shape[-1]
    ds, dsw, _ = torch.ops.aten.convolution_backward(
        dz, s, spatial_weight.to(acc), None, [1, 1], [k // 2, k // 2], [1, 1], False, [0, 0], 1, [True, True, False]
    )
    if light:
        dsm = dsx = 0.5 * ds[:, 0]
    else:
        dsm, dsx = (ds[:, 0], ds[:, 1]) if concat == "mean_max" else (ds[:, 1], ds[:, 0])
    dmean_px = (dsm.reshape(N, HW) / C).contiguous()
    dmax_px = max_grad_per_element(dsx.reshape(N, HW), cnt_sx).contiguous()
    dca = dca + cbam_stats_grad(x, ca, smax, dmean_px, dmax_px)                   # pass 3

    dzc = gate_backward(zc, dca, gate)
    drows, dw1, db1, dw2, db2, dconv = _channel_backward(dzc, rows, h, a, w1, w2, channel_conv, act, act_param, light)
    if need_dx:
        dmean, dmax = (0.5 * drows, 0.5 * drows) if light else (drows[:N], drows[N:])
        dx = cbam_scale_backward(                                                  # passes 4-6
            dy, x, ca, amax, (dmean / HW).contiguous(), max_grad_per_element(dmax, cnt_max).contiguous(),
            sa, smax, dmean_px, dmax_px,
        )
    else:
        dx = x.new_empty(0)
    sw = spatial_weight
    return (
        dx, _grad_as(dw1, w1, sw), _grad_as(db1, b1, sw), _grad_as(dw2, w2, sw), _grad_as(db2, b2, sw),
        _grad_as(dconv, channel_conv, sw), _grad_as(dsw, sw, sw), _grad_as(dbw, bn_weight, sw), _grad_as(dbb, bn_bias, sw),
    )


@cbam_bwd.register_fake
def _(dy, x, pooled, maps, w1, b1, w2, b2, channel_conv, spatial_weight, bn_weight, bn_bias, bn_mean, bn_var, use_bn,
      bn_training, bn_eps, concat, act, act_param, gate, light, need_dx):
    params = (w1, b1, w2, b2, channel_conv, spatial_weight, bn_weight, bn_bias)
    return (empty_like_4d(x) if need_dx else x.new_empty(0),) + tuple(
        torch.empty_like(p) if p is not None else spatial_weight.new_empty(0) for p in params
    )


def _cbam_setup_context(ctx, inputs, output):
    x, w1, b1, w2, b2, conv, sw, bw, bb, bm, bv, use_bn, bn_training, *cfg = inputs
    _, pooled, maps = output
    # Training reads no running statistics, and the caller updates them in
    # place after this op: saving them would trip autograd's version check.
    if bn_training:
        bm = bv = None
    ctx.save_for_backward(x, pooled, maps, w1, b1, w2, b2, conv, sw, bw, bb, bm, bv)
    ctx.cfg = (use_bn, bn_training, *cfg)
    ctx.mark_non_differentiable(pooled, maps)


def _cbam_backward(ctx, dy, _dpooled, _dmaps):
    x, pooled, maps, *params = ctx.saved_tensors
    if dy is None:
        dy = torch.zeros_like(x)
    need_dx = ctx.needs_input_grad[0]
    dx, *grads = cbam_bwd(dy, x, pooled, maps, *params, *ctx.cfg, need_dx)
    trainable = params[:8]  # w1, b1, w2, b2, conv, spatial weight, bn weight, bn bias
    grads = [g if p is not None else None for g, p in zip(grads, trainable)]
    return (dx if need_dx else None, *grads, None, None) + (None,) * 8


cbam_fwd.register_autograd(_cbam_backward, setup_context=_cbam_setup_context)


def cbam(
    x, w1, b1, w2, b2, channel_conv, spatial_weight, *, spatial_concat="mean_max", light=False, spatial_bn=False,
    bn_weight=None, bn_bias=None, bn_running_mean=None, bn_running_var=None, bn_training=False, bn_momentum=0.1,
    bn_eps=1e-5, act="relu", act_param=0.0, gate="sigmoid",
) -> torch.Tensor:
    """The CBAM block on validated arguments (``functional.cbam`` and the
    modules validate, once), with ``F.batch_norm``'s running-statistics update
    of the spatial BatchNorm in training."""
    N, _, H, W = x.shape
    y, _, smaps = cbam_fwd(
        x, w1, b1, w2, b2, channel_conv, spatial_weight,
        bn_weight, bn_bias, bn_running_mean, bn_running_var, spatial_bn, bn_training, bn_eps,
        spatial_concat, act, act_param, gate, light,
    )
    if spatial_bn and bn_training and bn_running_mean is not None:
        # PyTorch's own running-statistics update, on the small conv output
        # the op returns (its normalised result is discarded).
        z = smaps[2].reshape(N, 1, H, W).to(bn_running_mean.dtype)
        F.batch_norm(z, bn_running_mean, bn_running_var, None, None, True, bn_momentum, bn_eps)
    return y
