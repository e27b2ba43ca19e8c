"""Fused CBAM: ``triton_attn::cbam_fwd`` / ``cbam_bwd``.

Forward, 5 launches (4 with the "Conv" channel attention), 4 passes over
x-sized memory (P = the bytes of x):
  1 pool        channel_pool: mean and amax over H*W, [2, SPLIT, N, C]
                partials (pass 1: read x).
  2 gate        se_gate in pair mode: ca = gate(f(mean) + f(amax)), f the
                shared MLP (light: gate(f(0.5 * mean + 0.5 * amax))), folding
                the partials; the Conv mode computes ca inside launch 3.
  3 stats       per-pixel mean and amax over C of x1 = x * ca, [2, SPLIT, N,
                H*W] partials (pass 2: read x; x1 is never written).
  4 spatial     the small map: fold the partials, k x k conv, eval BN folded
                into an affine, sa = gate(.); training BN: the conv output
                and per-program (count, mean, M2).
  5 scale       y = x * ca * sa (passes 3-4: read x, write y); training BN:
                the batch statistics folded per program, program 0 updates
                the running statistics and num_batches_tracked in-kernel.
Backward, 6 launches (7 with training BN; 5 / 6 in Conv mode), 6 passes:
  1 grad        read dy and x: sum_c dy * x * ca and the ties of the
                per-pixel max (per C split), sum_hw dy * x * sa and the ties
                of the channel max (per pixel strip) (passes 1-2).
  2 (+3) spatial backward: gate, BN (training: two launches, its backward
                needs two global sums), the conv transpose -> the per-pixel
                coefficients of the dx pass; weight-gradient partials.
  4 stats grad  read x: the channel gate's gradient through the spatial
                statistics (pass 3); program 0 folds the conv / BN weight
                gradients into the parameters' dtypes.
  5-6 gate bwd  se_gate_backward in pair mode over the two passes' partials
                (Conv mode: one launch, its taps' gradient folded by 7).
  7 dx          read dy and x, write dx, all five paths (passes 4-6).
x1 is recomputed, never stored; the saved state is x and one small buffer.

Eager calls on plain tensors run ``_CbamFunction`` (direct launches, no
dispatcher) and update the BatchNorm's running statistics in place inside
the scale kernel; torch.compile, torch.export and tracing see the
registered ops, which return the updated statistics for the caller to copy
(``cbam``).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from ..launch.cbam_channel_conv import conv_gate_backward, conv_gate_backward_spec
from ..launch.cbam_scale import BatchNormArgs, dx_spec, scale, scale_spec
from ..launch.cbam_scale import dx as dx_launch
from ..launch.cbam_spatial import BN_EVAL, BN_NONE, BN_TRAIN, spatial, spatial_backward, spatial_spec
from ..launch.channel_pool import pool_spec
from ..launch.channel_pool import pool as pool_launch
from ..launch.layout import empty_like_4d, nc_hw
from ..launch.se_gate import (
    forward_scratch_size, gate_backward_spec, gate_spec, scratch_sizes, se_gate, se_gate_backward, weights_for,
)
from ..launch.spatial_stats import grad, grad_spec, stats, stats_grad, stats_grad_spec, stats_spec
from ..runtime import NO_CONTEXT, acc_dtype, eager_call, new_buffer, new_grad_buffer, no_autocast, use_triton

SPATIAL_CONCATS = ("mean_max", "max_mean")


class _State(NamedTuple):
    pooled: torch.Tensor  # [2, N, C] mean, amax over H*W
    ca: torch.Tensor      # [N, C]
    h: torch.Tensor       # [ROWS, N, RD] fc1's output (MLP mode)
    maps: torch.Tensor    # [2, N, H*W] mean, amax over C of x * ca
    z: torch.Tensor       # [N, H*W] spatial conv output
    sa: torch.Tensor      # [N, H*W] spatial gate
    bnstat: torch.Tensor  # [2] batch mean, invstd (training BN)


def _hidden(w1, conv, light: bool) -> tuple[int, int]:
    """(rows, width) of fc1's saved output: 2 x RD in pair mode, 1 x RD for
    the light block, nothing in Conv mode."""
    if conv is not None:
        return 0, 0
    return (1 if light else 2), w1.shape[0]


def state_numel(N: int, C: int, HW: int, rows: int, width: int, train_bn: bool) -> int:
    return 3 * N * C + rows * N * width + 4 * N * HW + (2 if train_bn else 0)


def _state_views(state, N: int, C: int, HW: int, rows: int, width: int, train_bn: bool) -> _State:
    # Every element is written by the forward (opcheck compares the whole state).
    o = 0
    nb = 2 if train_bn else 0
    sizes = (2 * N * C, N * C, rows * N * width, 2 * N * HW, N * HW, N * HW, nb)
    shapes = ((2, N, C), (N, C), (rows, N, width), (2, N, HW), (N, HW), (N, HW), (nb,))
    out = []
    for size, shape in zip(sizes, shapes):
        out.append(state[o:o + size].view(shape))
        o += size
    return _State(*out)


def _flat(w: torch.Tensor) -> torch.Tensor:
    # The kernels index the conv weights densely; weights are read in their dtype.
    w = w.reshape(-1)
    return w if w.stride(0) == 1 else w.contiguous()


def _bn_mode(use_bn: bool, bn_training: bool) -> int:
    return (BN_TRAIN if bn_training else BN_EVAL) if use_bn else BN_NONE


def cbam_forward_impl(x, w1, b1, w2, b2, conv, sw, bw, bb, rm, rv, nbt, use_bn: bool, bn_training: bool,
                      momentum: Optional[float], eps: float, concat: str, act: str, act_param: float, gate: str,
                      light: bool, rm_out=None, rv_out=None, nbt_out=None):
    """(y, state). With training BatchNorm the updated running statistics go
    to ``rm_out``/``rv_out`` and num_batches_tracked + 1 to ``nbt_out``
    (each None: not updated; the buffers themselves for an in-place update)."""
    x, xs = nc_hw(x)
    N, C, H, W = x.shape
    HW = H * W
    acc = acc_dtype(x.dtype)
    use_kernel = use_triton(x) and x.numel() > 0
    rows, width = _hidden(w1, conv, light)
    bn = _bn_mode(use_bn, bn_training)
    state = new_buffer((state_numel(N, C, HW, rows, width, bn == BN_TRAIN),), like=x, dtype=acc)
    st = _state_views(state, N, C, HW, rows, width, bn == BN_TRAIN)
    y = empty_like_4d(x)
    if x.numel() == 0:
        if bn == BN_TRAIN:  # nothing to normalise: only the batch is counted, as nn.BatchNorm2d does
            for src, dst in ((rm, rm_out), (rv, rv_out)):
                if dst is not None and dst is not src:
                    dst.copy_(src)
            if nbt_out is not None:
                nbt_out.copy_(nbt + 1)
        return y, state
    _, ys = nc_hw(y)
    train = bn == BN_TRAIN
    pool = "avgmax" if light else "pair"
    K = sw.shape[-1]
    maps_in = 1 if light else 2
    taps = _flat(conv) if conv is not None else None
    conv_k = taps.numel() if taps is not None else 0
    if conv is None:
        w1, b1, w2, b2 = weights_for(acc, w1, b1, w2, b2)
        gspec = gate_spec(N, C, width, True, acc)
        n_gate = forward_scratch_size(gspec, N, width, True, pool) if use_kernel else 0
    else:
        n_gate = 0
    pspec = pool_spec(x, xs, True, True)
    sspec = stats_spec(x, xs, conv_k)
    bspec = spatial_spec(N, H, W, maps_in, K, x.device, use_kernel)
    tspec = scale_spec(x, xs, y, ys, train)
    sp, ss, P = pspec.split, sspec.split, bspec.programs
    n_pool, n_stats, n_work = 2 * sp * N * C, 2 * ss * N * HW, P * 2 * bspec.win
    ws = new_buffer((n_pool + n_gate + n_stats + n_work + 3 * P,), like=x, dtype=acc)
    o = 0
    ppart, o = ws[o:o + n_pool].view(2, sp, N, C), o + n_pool
    hscratch, o = ws[o:o + n_gate], o + n_gate
    spart, o = ws[o:o + n_stats].view(2, ss, N, HW), o + n_stats
    work, o = ws[o:o + n_work], o + n_work
    bnp = ws[o:o + 3 * P].view(P, 3)
    swf = _flat(sw) if use_kernel else sw
    with no_autocast() if not use_kernel else NO_CONTEXT:
        pool_launch(pspec, x, xs, ppart, True, True)
        if conv is None:
            se_gate(gspec, use_kernel, ppart, sp, st.pooled, w1, b1, w2, b2, st.h, hscratch if n_gate else st.ca, st.ca,
                    pool, act, act_param, gate)
            stats(sspec, x, xs, st.ca, spart)
        else:
            stats(sspec, x, xs, st.ca, spart, pool_part=ppart, pool_split=sp, pooled=st.pooled, conv_w=taps,
                  conv_scale=0.5 if light else 1.0, gate=gate)
        spatial(bspec, use_kernel, spart, ss, st.maps, work, swf, st.z, st.sa, bnp,
                bw, bb, rm, rv, eps, bn, H, W, light, concat == "max_mean", gate)
        bn_args = None
        if train:
            bn_args = BatchNormArgs(bw, bb, rm if rm_out is not None else None, rv if rv_out is not None else None,
                                    nbt if nbt_out is not None else None, rm_out, rv_out, nbt_out, momentum, eps)
        scale(tspec, x, xs, y, ys, st.ca, st.z, st.sa, bnp=bnp if train else None, bnstat=st.bnstat, bn=bn_args,
              gate=gate)
    return y, state



def cbam_backward_impl(dy, x, state, w1, b1, w2, b2, conv, sw, bw, bb, rm, rv, use_bn: bool, bn_training: bool,
                       eps: float, concat: str, act: str, act_param: float, gate: str, light: bool, need_dx: bool):
    """(dx or None, dw1, db1, dw2, db2, d conv, d spatial weight, d bn
    weight, d bn bias): gradients in the parameters' dtypes, None for absent
    parameters."""
    x, xs = nc_hw(x)
    dy, dys = nc_hw(dy)
    N, C, H, W = x.shape
    HW = H * W
    acc = acc_dtype(x.dtype)
    use_kernel = use_triton(x) and x.numel() > 0
    rows, width = _hidden(w1, conv, light)
    bn = _bn_mode(use_bn, bn_training)
    grads = [new_grad_buffer(w) for w in (w1, b1, w2, b2, conv, sw, bw, bb)]
    dw1, db1, dw2, db2, dconv, dsw, dbw, dbb = grads
    if x.numel() == 0:
        for g in grads:
            if g is not None:
                g.zero_()
        return (empty_like_4d(x) if need_dx else None), *grads
    st = _state_views(state, N, C, HW, rows, width, bn == BN_TRAIN)
    pool = "avgmax" if light else "pair"
    K = sw.shape[-1]
    maps_in = 1 if light else 2
    taps = _flat(conv) if conv is not None else None
    gspec = grad_spec(x, xs, dys)
    sg, strips = gspec.split, gspec.num_hw_blocks
    tspec = stats_grad_spec(x, xs, gspec.block_hw)
    bspec = spatial_spec(N, H, W, maps_in, K, x.device, use_kernel)
    P, fold_w = bspec.programs, bspec.fold_w
    if conv is None:
        w1, b1, w2, b2 = weights_for(acc, w1, b1, w2, b2)
        mspec = gate_backward_spec(N, C, width, True, acc)
        n_dz, n_dhp, n_dh = scratch_sizes(mspec, N, C, width, True, pool)
        n_conv = 0
    else:
        cspec = conv_gate_backward_spec(N, C, taps.numel())
        n_dz = n_dhp = n_dh = 0
        n_conv = (cspec.programs if use_kernel else 1) * cspec.fold_k
    n_pix, n_chan, n_cnt = 2 * sg * N * HW, 2 * strips * N * C, strips * N * C
    n_du = N * HW if bn == BN_TRAIN else 0
    n_work = P * bspec.win
    n_coef = N * C if need_dx else 0
    sizes = (n_pix, n_chan, n_cnt, 2 * N * HW, n_du, n_work, P * fold_w, n_dz, n_dhp, n_dh, n_coef, n_coef, n_conv)
    ws = new_buffer((sum(sizes),), like=x, dtype=acc)
    parts, o = [], 0
    for size in sizes:
        parts.append(ws[o:o + size])
        o += size
    pix = parts[0].view(2, sg, N, HW)
    chan = parts[1].view(2, strips, N, C)
    cnt = parts[2].view(strips, N, C)
    coef = parts[3].view(2, N, HW)
    du = parts[4].view(N, HW) if n_du else None
    work, wpart = parts[5], parts[6].view(P, fold_w)
    dz, dhp, dh = parts[7], parts[8], parts[9]
    dmean = parts[10].view(N, C) if need_dx else None
    dmax = parts[11].view(N, C) if need_dx else None
    dw_part = parts[12].view(-1, cspec.fold_k) if conv is not None else None
    swf = _flat(sw) if use_kernel else sw
    dswf = dsw.view(-1) if use_kernel else dsw
    max_first = concat == "max_mean"
    with no_autocast() if not use_kernel else NO_CONTEXT:
        grad(gspec, dy, x, xs, dys, st.ca, st.sa, st.maps[1], st.pooled[1], pix, chan[0], cnt)
        args = (pix, sg, st.sa, st.z, st.maps, st.bnstat, du, work, swf, coef, wpart, bw, rm, rv, eps, bn, C, H, W, light,
                max_first, gate)
        if bn == BN_TRAIN:
            spatial_backward(bspec, use_kernel, 1, *args)
            spatial_backward(bspec, use_kernel, 2, *args)
        else:
            spatial_backward(bspec, use_kernel, 0, *args)
        stats_grad(tspec, x, xs, st.ca, st.maps[1], coef, chan[1], wpart, bspec.taps, dswf, dbw, dbb)
        if conv is None:
            se_gate_backward(
                mspec, use_kernel, chan, cnt, strips, st.ca, st.h, st.pooled, w1, b1, w2, b2, pool, act, act_param,
                gate, HW, need_dx, dz, dhp, dh, dw1, db1, dw2, db2, dmean, dmax, dg_mode=1,
            )
        else:
            conv_gate_backward(cspec, use_kernel, chan, cnt, strips, st.ca, st.pooled, taps, 0.5 if light else 1.0, gate,
                               HW, need_dx, dmean, dmax, dw_part)
        out = None
        fold = (dw_part, dconv.view(-1)) if conv is not None else None
        if need_dx:
            out = empty_like_4d(x)
            _, outs = nc_hw(out)
            dx_launch(dx_spec(x, xs, dy, dys, out, outs), dy, x, xs, dys, out, outs, st.ca, st.pooled[1], dmean, dmax,
                      st.sa, st.maps[1], coef[0], coef[1], fold=fold)
        elif fold is not None:
            dconv.copy_(dw_part.sum(0)[: taps.numel()].view(dconv.shape))
    return (out, dw1, db1, dw2, db2, dconv, dsw, dbw, dbb)


def _needs_grad(*ts) -> bool:
    return any(t is not None and t.requires_grad for t in ts)


# --- eager: autograd.Function with direct launches ---------------------------

class _CbamFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, conv, sw, bw, bb, rm, rv, nbt, cfg):
        use_bn, bn_training, momentum, eps, concat, act, act_param, gate, light = cfg
        train = use_bn and bn_training
        y, state = cbam_forward_impl(
            x, w1, b1, w2, b2, conv, sw, bw, bb, rm, rv, nbt, use_bn, bn_training, momentum, eps, concat, act, act_param,
            gate, light, rm if train else None, rv if train else None, nbt if train else None,
        )
        keep = not train  # eval BN reads the running statistics backward; training mutates them
        ctx.save_for_backward(x, state, w1, b1, w2, b2, conv, sw, bw, bb, rm if keep else None, rv if keep else None)
        ctx.cfg = (use_bn, bn_training, eps, concat, act, act_param, gate, light)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, state, *params, rm, rv = ctx.saved_tensors
        need = ctx.needs_input_grad
        dx, *grads = cbam_backward_impl(dy, x, state, *params, rm, rv, *ctx.cfg, need[0])
        return (dx, *(g if need[i + 1] else None for i, g in enumerate(grads)), None, None, None, None)


# --- torch.library: what compile / export / tracing see ---------------------

def _bn_outputs(bn_mean, bn_var, bn_nbt, use_bn: bool, bn_training: bool):
    train = use_bn and bn_training
    return tuple(torch.empty(t.shape, dtype=t.dtype, device=t.device) if (train and t is not None) else None
                 for t in (bn_mean, bn_var, bn_nbt))


@torch.library.custom_op("triton_attn::cbam_fwd", mutates_args=())
def cbam_fwd(
    x: torch.Tensor, w1: Optional[torch.Tensor], b1: Optional[torch.Tensor], w2: Optional[torch.Tensor],
    b2: Optional[torch.Tensor], channel_conv: Optional[torch.Tensor], spatial_weight: torch.Tensor,
    bn_weight: Optional[torch.Tensor], bn_bias: Optional[torch.Tensor], bn_mean: Optional[torch.Tensor],
    bn_var: Optional[torch.Tensor], bn_nbt: Optional[torch.Tensor], use_bn: bool, bn_training: bool,
    bn_momentum: Optional[float], bn_eps: float, concat: str, act: str, act_param: float, gate: str, light: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, state, updated running mean, running var, num_batches_tracked);
    the last three are empty unless training BatchNorm updates them."""
    outs = _bn_outputs(bn_mean, bn_var, bn_nbt, use_bn, bn_training)
    y, state = cbam_forward_impl(
        x, w1, b1, w2, b2, channel_conv, spatial_weight, bn_weight, bn_bias, bn_mean, bn_var, bn_nbt, use_bn,
        bn_training, bn_momentum, bn_eps, concat, act, act_param, gate, light, *outs,
    )
    return (y, state, *(t if t is not None else x.new_empty(0) for t in outs))


@cbam_fwd.register_fake
def _(x, w1, b1, w2, b2, channel_conv, spatial_weight, bn_weight, bn_bias, bn_mean, bn_var, bn_nbt, use_bn,
      bn_training, bn_momentum, bn_eps, concat, act, act_param, gate, light):
    N, C, H, W = x.shape
    rows, width = _hidden(w1, channel_conv, light)
    outs = _bn_outputs(bn_mean, bn_var, bn_nbt, use_bn, bn_training)
    return (
        empty_like_4d(x),
        x.new_empty((state_numel(N, C, H * W, rows, width, use_bn and bn_training),), dtype=acc_dtype(x.dtype)),
        *(t if t is not None else x.new_empty(0) for t in outs),
    )


@torch.library.custom_op("triton_attn::cbam_bwd", mutates_args=())
def cbam_bwd(
    dy: torch.Tensor, x: torch.Tensor, state: torch.Tensor, w1: Optional[torch.Tensor], b1: Optional[torch.Tensor],
    w2: Optional[torch.Tensor], b2: Optional[torch.Tensor], channel_conv: Optional[torch.Tensor],
    spatial_weight: torch.Tensor, bn_weight: Optional[torch.Tensor], bn_bias: Optional[torch.Tensor],
    bn_mean: Optional[torch.Tensor], bn_var: Optional[torch.Tensor], use_bn: bool, bn_training: bool, bn_eps: float,
    concat: str, act: str, act_param: float, gate: str, light: bool, need_dx: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
           torch.Tensor, torch.Tensor]:
    """(dx, dw1, db1, dw2, db2, d channel_conv, d spatial_weight, d bn_weight,
    d bn_bias); an absent parameter (or dx without need_dx) gets an empty tensor."""
    outs = cbam_backward_impl(
        dy, x, state, w1, b1, w2, b2, channel_conv, spatial_weight, bn_weight, bn_bias, bn_mean, bn_var, use_bn,
        bn_training, bn_eps, concat, act, act_param, gate, light, need_dx,
    )
    # Outputs of a custom op may not alias each other: a fresh empty per slot.
    return tuple(t if t is not None else spatial_weight.new_empty(0) for t in outs)


@cbam_bwd.register_fake
def _(dy, x, state, w1, b1, w2, b2, channel_conv, spatial_weight, bn_weight, bn_bias, bn_mean, bn_var, use_bn,
      bn_training, bn_eps, concat, act, act_param, gate, light, need_dx):
    params = (w1, b1, w2, b2, channel_conv, spatial_weight, bn_weight, bn_bias)
    return (empty_like_4d(x) if need_dx else spatial_weight.new_empty(0),) + tuple(
        torch.empty(p.shape, dtype=p.dtype, device=p.device) if p is not None else spatial_weight.new_empty(0)
        for p in params
    )


def _cbam_setup_context(ctx, inputs, output):
    x, w1, b1, w2, b2, conv, sw, bw, bb, bm, bv, _nbt, use_bn, bn_training, _momentum, eps, *cfg = inputs
    state = output[1]
    # Training reads no running statistics, and the caller updates them in
    # place after this op: saving them would trip autograd's version check.
    if bn_training:
        bm = bv = None
    ctx.save_for_backward(x, state, w1, b1, w2, b2, conv, sw, bw, bb, bm, bv)
    ctx.cfg = (use_bn, bn_training, eps, *cfg)
    ctx.mark_non_differentiable(*output[1:])
    ctx.set_materialize_grads(False)


def _cbam_backward(ctx, dy, *_):
    x, state, *params = ctx.saved_tensors
    if dy is None:
        dy = torch.zeros_like(x)
    need_dx = ctx.needs_input_grad[0]
    dx, *grads = cbam_bwd(dy, x, state, *params, *ctx.cfg, need_dx)
    trainable = params[:8]  # w1, b1, w2, b2, conv, spatial weight, bn weight, bn bias
    grads = [g if p is not None else None for g, p in zip(grads, trainable)]
    return (dx if need_dx else None, *grads) + (None,) * 12


cbam_fwd.register_autograd(_cbam_backward, setup_context=_cbam_setup_context)


def cbam(
    x, w1, b1, w2, b2, channel_conv, spatial_weight, *, spatial_concat="mean_max", light=False, spatial_bn=False,
    bn_weight=None, bn_bias=None, bn_running_mean=None, bn_running_var=None, bn_training=False, bn_momentum=0.1,
    bn_eps=1e-5, bn_num_batches_tracked=None, act="relu", act_param=0.0, gate="sigmoid",
) -> torch.Tensor:
    """The CBAM block on validated arguments (``functional.cbam`` and the
    modules validate, once). In training the spatial BatchNorm's running
    statistics are updated as ``nn.BatchNorm2d`` does: with ``bn_momentum``,
    or (None) the cumulative average over ``bn_num_batches_tracked``, which
    is counted up by one when given."""
    train = spatial_bn and bn_training
    rm, rv = bn_running_mean, bn_running_var
    nbt = bn_num_batches_tracked if train else None
    momentum = None if bn_momentum is None else float(bn_momentum)
    if eager_call(x):
        cfg = (spatial_bn, bn_training, momentum, bn_eps, spatial_concat, act, act_param, gate, light)
        if torch.is_grad_enabled() and _needs_grad(x, w1, b1, w2, b2, channel_conv, spatial_weight, bn_weight, bn_bias):
            y = _CbamFunction.apply(x, w1, b1, w2, b2, channel_conv, spatial_weight, bn_weight, bn_bias, rm, rv, nbt, cfg)
        else:
            y, _ = cbam_forward_impl(
                x, w1, b1, w2, b2, channel_conv, spatial_weight, bn_weight, bn_bias, rm, rv, nbt, spatial_bn,
                bn_training, momentum, bn_eps, spatial_concat, act, act_param, gate, light,
                rm if train else None, rv if train else None, nbt,
            )
        if train:
            # The kernels wrote the buffers behind autograd's back.
            torch.autograd.graph.increment_version([t for t in (rm, rv, nbt) if t is not None])
        return y
    y, _, new_mean, new_var, new_nbt = cbam_fwd(
        x, w1, b1, w2, b2, channel_conv, spatial_weight, bn_weight, bn_bias, rm, rv, nbt, spatial_bn, bn_training,
        momentum, bn_eps, spatial_concat, act, act_param, gate, light,
    )
    if train:
        if rm is not None:
            rm.copy_(new_mean)
            rv.copy_(new_var)
        if nbt is not None:
            nbt.copy_(new_nbt)
    return y
