"""The fused attention tail of a ResNet block: ``triton_attn::tail_fwd`` /
``tail_bwd``, computing ``y = act(drop_path(attn(bn(z))) + shortcut)`` with
``z`` the last conv's output, bn a BatchNorm2d (batch statistics in
training, running ones in eval), attn SE / EffectiveSE / ECA / CECA or none.

Forward (SE, training): pass 1 reads z once for BatchNorm's statistics and
the attention's pooling together (launch/tail.py ``stats``), BatchNorm's
statistics on [C] and the pooled statistics of bn(z) on [N, C] (``bn_stats``;
folded into pass 1 in eval), the gate MLP on [N, C] (launch/se_gate.py), and
pass 2 reads z and the shortcut and writes y (``apply``): 3 x-sized passes +
the shortcut, 4 launches (ECA: 3, the conv is computed in pass 2; eval: one
fewer). bn(z) and the attention's output are never written.

Backward: pass 1 reads dy, y (ReLU) and z, writes the shortcut's gradient e
and the N x C sums of e and e * xhat (``grad``); the gate's backward on
[N, C]; BatchNorm's backward composed from those sums (``bn_backward``);
pass 2 reads e and z and writes dz (``dz_pass``): 7 x-sized passes, 5
launches (ECA: 4).

Saved for backward: z, y (or the shortcut, for activations other than ReLU
and identity) and one small state tensor; eager saves z, bn(z), the
attention's output and y.

Where Triton does not run, the tail is its reference composition
(``reference.attention_tail_reference``), autograd and all.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..launch import tail as tail_launch
from ..launch.channel_scale import fold_sums
from ..launch.eca_gate_backward import eca_backward_spec, eca_gate_backward
from ..launch.layout import empty_like_4d, nc_hw
from ..launch.se_gate import (
    forward_scratch_size, gate_backward_spec, gate_spec, scratch_sizes, se_gate, se_gate_backward, weights_for,
)
from ..reference import attention_tail_reference
from ..runtime import acc_dtype, eager_call, new_buffer, new_grad_buffer, use_triton

ATTNS = ("none", "se", "eca")


def _pool_rows(attn: str, pool: str) -> tuple[int, bool, bool]:
    """(rows of the gate's input, pool the mean, pool the max)."""
    if attn == "se":
        return (2 if pool == "avgmax" else 1), pool != "max", pool != "avg"
    if attn == "eca":
        return 1, True, False
    return 0, False, False


class _Layout:
    """Offsets of the saved state (its size depends on the shapes only):
    m and ext of z [2, N, C], BatchNorm's per-channel a, b, mu, rstd [4, C],
    the gate [N, C], ECA's pooled means of bn(z) [N, C], the SE gate's folded
    input [P, N, C] and fc1's output [N, width]."""

    __slots__ = ("zstat", "chan", "g", "mean", "pooled", "h", "total", "P", "width")

    def __init__(self, N, C, attn, pool, rd):
        P = _pool_rows(attn, pool)[0]
        width = (rd if rd else C) if attn == "se" else 0
        sizes = (2 * N * C, 4 * C, N * C, N * C if attn == "eca" else 0, P * N * C if attn == "se" else 0, N * width)
        offsets, o = [], 0
        for n in sizes:
            offsets.append((o, o + n))
            o += n
        self.zstat, self.chan, self.g, self.mean, self.pooled, self.h = offsets
        self.total, self.P, self.width = o, P, width


def _view(state, span):
    return state[span[0]:span[1]]


_layouts: dict = {}


def _layout(z, attn, pool, w1, w2):
    rd = w1.shape[0] if (attn == "se" and w2 is not None) else 0
    N, C = z.shape[:2]
    key = (N, C, attn, pool, rd)
    try:
        return _layouts[key]
    except (KeyError, TypeError):  # TypeError: symbolic sizes (dynamic shapes) are not hashable
        L = _Layout(N, C, attn, pool, rd)
        if all(isinstance(v, int) for v in (N, C, rd)):
            _layouts[key] = L
        return L


def tail_forward_impl(z, shortcut, gamma, beta, rmean, rvar, nbt, bn_training, momentum, eps,
                      attn, w1, b1, w2, b2, pool, attn_act, attn_act_param, gate, circular, drop, act, act_param):
    """(y, state); the running statistics (and num_batches_tracked) are
    updated in place. Kernels where Triton runs, else the reference."""
    if not (use_triton(z) and z.numel() > 0):
        return _twin_forward(z, shortcut, gamma, beta, rmean, rvar, nbt, bn_training, momentum, eps, attn, w1, b1, w2, b2,
                             pool, attn_act, attn_act_param, gate, circular, drop, act, act_param)
    z, zs = nc_hw(z)
    s, ss = nc_hw(shortcut) if shortcut is not None else (None, None)
    N, C, H, W = z.shape
    HW = H * W
    NC = N * C
    acc = acc_dtype(z.dtype)
    eval_mode = not bn_training
    L = _layout(z, attn, pool, w1, w2)
    sspec = tail_launch.stats_spec(z, zs, eval_mode)
    split = sspec.split
    P, pool_mean, pool_max = _pool_rows(attn, pool)
    pool_split = split if eval_mode else 1
    state = new_buffer((L.total,), like=z, dtype=acc)
    # scratch: pass 1's partials, the gate's input in its format, the SE gate's extra slices
    n_stats, n_pool = 4 * split * NC, P * pool_split * NC
    scratch = new_buffer((n_stats + n_pool,), like=z, dtype=acc)
    stats_buf, chan, g = scratch, _view(state, L.chan), _view(state, L.g)
    pool_part = scratch[n_stats:] if P else None
    bn = (gamma, beta, rmean, rvar, eps)
    update = bn_training and rmean is not None
    tail_launch.stats(sspec, z, zs, stats_buf, pool_part, chan, bn, eval_mode, pool_mean, pool_max)
    if bn_training:
        tail_launch.bn_stats(stats_buf, split, sspec.hw_per_split, _view(state, L.zstat), chan, pool_part, bn, update,
                             momentum, nbt, N, C, HW, pool_mean, pool_max)
    conv_w = conv_b = None
    gate_src = tail_launch.GATE_NONE
    if attn == "se":
        if acc == torch.float64:
            w1, b1, w2, b2 = weights_for(acc, w1, b1, w2, b2)
        RD = w1.shape[0]
        gspec = gate_spec(N, C, RD, w2 is not None, acc)
        h_scratch = new_buffer((max(forward_scratch_size(gspec, N, RD, w2 is not None), 1),), like=z, dtype=acc)
        se_gate(gspec, True, pool_part, pool_split, _view(state, L.pooled), w1, b1, w2, b2, _view(state, L.h), h_scratch,
                g, pool, attn_act, attn_act_param, gate, N=N, C=C, P=P)
        gate_src = tail_launch.GATE_GIVEN
    elif attn == "eca":
        conv_w = w1 if (w1.is_contiguous() and acc != torch.float64) else w1.reshape(-1).to(acc if acc == torch.float64 else w1.dtype).contiguous()
        conv_b = None if b1 is None else (b1.to(acc) if acc == torch.float64 else b1)
        gate_src = tail_launch.GATE_ECA
    y = empty_like_4d(z)
    _, ys = nc_hw(y)
    tail_launch.apply(
        tail_launch.apply_spec(z, zs, s, ss, y, ys), z, zs, s, ss, y, ys, chan, g, gate_src,
        pool_part if attn == "eca" else None, pool_split, conv_w, conv_b, circular, gate, drop, nbt,
        update and nbt is not None, act, act_param, stats_buf, split, sspec.hw_per_split, _view(state, L.zstat),
        _view(state, L.mean) if attn == "eca" else None,
    )
    return y, state



def tail_backward_impl(dy, z, y, shortcut, state, gamma, beta, rmean, rvar, nbt, bn_training, momentum, eps,
                       attn, w1, b1, w2, b2, pool, attn_act, attn_act_param, gate, circular, drop, act, act_param,
                       need_dz: bool):
    """(dz or None, d shortcut, dgamma, dbeta, dw1, db1, dw2, db2): None for
    absent parameters."""
    if not (use_triton(z) and z.numel() > 0):
        return _twin_backward(dy, z, shortcut, state, gamma, beta, bn_training, eps, attn, w1, b1, w2, b2, pool,
                              attn_act, attn_act_param, gate, circular, drop, act, act_param, need_dz)
    z, zs = nc_hw(z)
    dy, dys = nc_hw(dy)
    y, ys = nc_hw(y) if y is not None else (None, None)
    s, ss = nc_hw(shortcut) if shortcut is not None else (None, None)
    N, C, H, W = z.shape
    HW = H * W
    acc = acc_dtype(z.dtype)
    L = _layout(z, attn, pool, w1, w2)
    chan, g = _view(state, L.chan), _view(state, L.g)
    zstat = _view(state, L.zstat)
    has_gate = attn != "none"
    _, pool_mean, pool_max = _pool_rows(attn, pool)
    ties = attn == "se" and pool_max
    e = empty_like_4d(z)
    _, es = nc_hw(e)
    gspec = tail_launch.grad_spec(z, zs, dys, ys if act == "relu" else None, ss if act not in ("relu", "identity") else None, es)
    bsplit = gspec.split
    part = new_buffer((4, bsplit, N, C), like=z, dtype=acc)
    tail_launch.grad(gspec, dy, dys, y if act == "relu" else None, ys, z, zs, s if act not in ("relu", "identity") else None,
                     ss, e, es, chan, g if has_gate else None, drop, part, zstat, act, act_param, ties)
    grads = [new_grad_buffer(t) for t in (gamma, beta, w1, b1, w2, b2)]
    dgamma, dbeta, dw1, db1, dw2, db2 = grads
    dmean = dmax = None
    fold = None
    if attn == "se":
        w1c, b1c, w2c, b2c = weights_for(acc, w1, b1, w2, b2)
        RD = w1c.shape[0]
        has_fc2 = w2 is not None
        width = RD if has_fc2 else C
        bspec = gate_backward_spec(N, C, RD, has_fc2, acc)
        n_dz, n_dhp, n_dh = scratch_sizes(bspec, N, C, RD, has_fc2)
        ws = new_buffer((n_dz + n_dhp + n_dh + 2 * N * C,), like=z, dtype=acc)
        o1, o2, o3 = n_dz, n_dz + n_dhp, n_dz + n_dhp + n_dh
        dmean = ws[o3:o3 + N * C].view(N, C) if pool_mean else None
        dmax = ws[o3 + N * C:].view(N, C) if pool_max else None
        se_gate_backward(
            bspec, True, part[0], part[3] if ties else None, bsplit, g.view(N, C), _view(state, L.h),
            _view(state, L.pooled).view(L.P, N, C), w1c, b1c, w2c, b2c, pool, attn_act, attn_act_param, gate, HW, True,
            ws[:o1], ws[o1:o2].view(n_dhp // max(N * width, 1), N, width), ws[o2:o3], dw1, db1, dw2, db2, dmean, dmax,
        )
    elif attn == "eca":
        taps = w1.reshape(-1)
        taps = taps.to(acc).contiguous() if acc == torch.float64 else (taps if taps.stride(0) == 1 else taps.contiguous())
        K = taps.numel()
        espec = eca_backward_spec(N, C, K)
        ws = new_buffer((N * C + espec.programs * espec.fold_k,), like=z, dtype=acc)
        dmean = ws[:N * C].view(N, C)
        dw_part = ws[N * C:].view(espec.programs, espec.fold_k)
        eca_gate_backward(espec, True, part[0], bsplit, g.view(N, C), _view(state, L.mean), 1, taps, circular, gate, HW,
                          True, dmean, dw_part)
        fold = (dw_part, dw1.view(-1), None if db1 is None else db1.view(-1))
    coef = new_buffer((3, N, C), like=z, dtype=acc)
    kz = new_buffer((C,), like=z, dtype=acc)
    tail_launch.bn_backward(part, bsplit, zstat, chan, g if has_gate else None, dmean, dmax, drop, coef, kz,
                            dgamma, dbeta, N, C, HW, bn_training)
    dz = None
    if need_dz:
        dz = empty_like_4d(z)
        _, dzs = nc_hw(dz)
        tail_launch.dz_pass(tail_launch.dz_spec(z, zs, e, es, dz, dzs), e, es, z, zs, dz, dzs, coef, kz,
                            zstat[N * C:] if ties else None, fold)
    elif fold is not None:
        fold_sums(*fold)
    return dz, e, dgamma, dbeta, dw1, db1, dw2, db2


# --- eager: autograd.Function with direct launches ---------------------------

class _TailFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, shortcut, gamma, beta, w1, b1, w2, b2, drop, rmean, rvar, nbt, cfg):
        bn_training, momentum, eps, attn, pool, attn_act, attn_act_param, gate, circular, act, act_param = cfg
        y, state = tail_forward_impl(z, shortcut, gamma, beta, rmean, rvar, nbt, bn_training, momentum, eps,
                                     attn, w1, b1, w2, b2, pool, attn_act, attn_act_param, gate, circular, drop, act, act_param)
        keep_y = act == "relu"
        ctx.save_for_backward(z, y if keep_y else None, None if keep_y else shortcut, state, gamma, beta, w1, b1, w2, b2, drop)
        ctx.has_shortcut = shortcut is not None
        ctx.cfg = cfg
        return y

    @staticmethod
    def backward(ctx, dy):
        z, y, shortcut, state, gamma, beta, w1, b1, w2, b2, drop = ctx.saved_tensors
        bn_training, momentum, eps, attn, pool, attn_act, attn_act_param, gate, circular, act, act_param = ctx.cfg
        need = ctx.needs_input_grad
        dz, ds, dgamma, dbeta, dw1, db1, dw2, db2 = tail_backward_impl(
            dy, z, y, shortcut, state, gamma, beta, None, None, None, bn_training, momentum, eps,
            attn, w1, b1, w2, b2, pool, attn_act, attn_act_param, gate, circular, drop, act, act_param, need[0],
        )
        keep = lambda t, i: t if need[i] else None  # noqa: E731
        return (keep(dz, 0), ds if (ctx.has_shortcut and need[1]) else None, keep(dgamma, 2), keep(dbeta, 3),
                keep(dw1, 4), keep(db1, 5), keep(dw2, 6), keep(db2, 7), None, None, None, None, None)


# --- torch.library: what compile / export / tracing see ---------------------

@torch.library.custom_op("triton_attn::tail_fwd", mutates_args=())
def tail_fwd(
    z: torch.Tensor, shortcut: Optional[torch.Tensor], gamma: Optional[torch.Tensor], beta: Optional[torch.Tensor],
    running_mean: Optional[torch.Tensor], running_var: Optional[torch.Tensor], num_batches_tracked: Optional[torch.Tensor],
    bn_training: bool, momentum: Optional[float], eps: float, attn: str, w1: Optional[torch.Tensor],
    b1: Optional[torch.Tensor], w2: Optional[torch.Tensor], b2: Optional[torch.Tensor], pool: str, attn_act: str,
    attn_act_param: float, gate: str, circular: bool, drop: Optional[torch.Tensor], act: str, act_param: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Functional (autograd needs it): the updated running statistics and
    count come back as outputs (empty when not updated); the caller writes
    them into the buffers."""
    update = bn_training and running_mean is not None
    rm = running_mean.clone() if update else None
    rv = running_var.clone() if update else None
    nbt = num_batches_tracked.clone() if (update and num_batches_tracked is not None) else None
    y, state = tail_forward_impl(z, shortcut, gamma, beta, rm if update else running_mean, rv if update else running_var,
                                 nbt, bn_training, momentum, eps, attn, w1, b1, w2, b2, pool, attn_act, attn_act_param,
                                 gate, circular, drop, act, act_param)
    empty = z.new_empty(0)
    return y, state, rm if rm is not None else empty, rv if rv is not None else empty.clone(), nbt if nbt is not None else empty.clone()


@tail_fwd.register_fake
def _(z, shortcut, gamma, beta, running_mean, running_var, num_batches_tracked, bn_training, momentum, eps, attn, w1,
      b1, w2, b2, pool, attn_act, attn_act_param, gate, circular, drop, act, act_param):
    L = _layout(z, attn, pool, w1, w2)
    update = bn_training and running_mean is not None
    empty = z.new_empty(0)
    return (
        empty_like_4d(z), z.new_empty((L.total,), dtype=acc_dtype(z.dtype)),
        torch.empty_like(running_mean) if update else empty, torch.empty_like(running_var) if update else empty.clone(),
        torch.empty_like(num_batches_tracked) if (update and num_batches_tracked is not None) else empty.clone(),
    )


@torch.library.custom_op("triton_attn::tail_bwd", mutates_args=())
def tail_bwd(
    dy: torch.Tensor, z: torch.Tensor, y: Optional[torch.Tensor], shortcut: Optional[torch.Tensor], state: torch.Tensor,
    gamma: Optional[torch.Tensor], beta: Optional[torch.Tensor], bn_training: bool, momentum: Optional[float],
    eps: float, attn: str, w1: Optional[torch.Tensor], b1: Optional[torch.Tensor], w2: Optional[torch.Tensor],
    b2: Optional[torch.Tensor], pool: str, attn_act: str, attn_act_param: float, gate: str, circular: bool,
    drop: Optional[torch.Tensor], act: str, act_param: float, need_dz: bool,
) -> list[torch.Tensor]:
    out = tail_backward_impl(dy, z, y, shortcut, state, gamma, beta, None, None, None, bn_training, momentum, eps,
                             attn, w1, b1, w2, b2, pool, attn_act, attn_act_param, gate, circular, drop, act, act_param,
                             need_dz)
    # Outputs of a custom op may not alias each other: copies where the
    # eager path returns views of one buffer, empties for absent slots.
    return [t.clone() if t is not None else z.new_empty(0) for t in out]


@tail_bwd.register_fake
def _(dy, z, y, shortcut, state, gamma, beta, bn_training, momentum, eps, attn, w1, b1, w2, b2, pool, attn_act,
      attn_act_param, gate, circular, drop, act, act_param, need_dz):
    like = lambda t: torch.empty_like(t, memory_format=torch.contiguous_format) if t is not None else z.new_empty(0)  # noqa: E731
    return [empty_like_4d(z) if need_dz else z.new_empty(0), empty_like_4d(z)] + [like(t) for t in (gamma, beta, w1, b1, w2, b2)]


def _tail_setup_context(ctx, inputs, output):
    (z, shortcut, gamma, beta, rmean, rvar, nbt, bn_training, momentum, eps, attn, w1, b1, w2, b2, pool, attn_act,
     attn_act_param, gate, circular, drop, act, act_param) = inputs
    y, state, rm, rv, nbt = output
    keep_y = act == "relu"
    ctx.save_for_backward(z, y if keep_y else None, None if keep_y else shortcut, state, gamma, beta, w1, b1, w2, b2, drop)
    ctx.has_shortcut = shortcut is not None
    ctx.cfg = (bn_training, momentum, eps, attn, pool, attn_act, attn_act_param, gate, circular, act, act_param)
    ctx.mark_non_differentiable(state, rm, rv, nbt)
    ctx.set_materialize_grads(False)


def _tail_backward(ctx, dy, _dstate, _drm, _drv, _dnbt):
    z, y, shortcut, state, gamma, beta, w1, b1, w2, b2, drop = ctx.saved_tensors
    bn_training, momentum, eps, attn, pool, attn_act, attn_act_param, gate, circular, act, act_param = ctx.cfg
    if dy is None:
        dy = torch.zeros_like(z)
    need = ctx.needs_input_grad
    dz, ds, dgamma, dbeta, dw1, db1, dw2, db2 = tail_bwd(
        dy, z, y, shortcut, state, gamma, beta, bn_training, momentum, eps, attn, w1, b1, w2, b2, pool, attn_act,
        attn_act_param, gate, circular, drop, act, act_param, need[0],
    )
    grads = [dz if need[0] else None, ds if ctx.has_shortcut and need[1] else None]
    grads += [dgamma if gamma is not None else None, dbeta if beta is not None else None]
    grads += [None] * 7  # running_mean, running_var, num_batches_tracked, bn_training, momentum, eps, attn
    grads += [dw1 if w1 is not None else None, db1 if b1 is not None else None,
              dw2 if w2 is not None else None, db2 if b2 is not None else None]
    grads += [None] * 8
    return tuple(grads)


tail_fwd.register_autograd(_tail_backward, setup_context=_tail_setup_context)


def attention_tail(
    z, shortcut, gamma, beta, running_mean, running_var, num_batches_tracked, bn_training: bool, momentum, eps: float,
    attn: str = "none", w1=None, b1=None, w2=None, b2=None, *, pool: str = "avg", attn_act: str = "relu",
    attn_act_param: float = 0.0, gate: str = "sigmoid", circular: bool = False, drop=None, act: str = "relu",
    act_param: float = 0.0,
) -> torch.Tensor:
    """The tail on validated arguments (``functional.attention_tail`` and
    the modules validate). ``bn_training``: use batch statistics (and update
    the running ones, if given, with ``momentum``: a float, or None for
    the cumulative average over ``num_batches_tracked``, which is counted)."""
    if not (use_triton(z) and z.numel() > 0):
        return _reference_path(z, shortcut, gamma, beta, running_mean, running_var, num_batches_tracked, bn_training,
                               momentum, eps, attn, w1, b1, w2, b2, pool, attn_act, attn_act_param, gate, circular, drop,
                               act, act_param)
    cfg = (bool(bn_training), momentum, float(eps), attn, pool, attn_act, float(attn_act_param), gate, bool(circular), act,
           float(act_param))
    if eager_call(z):
        params = (z, shortcut, gamma, beta, w1, b1, w2, b2)
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in params):
            return _TailFunction.apply(z, shortcut, gamma, beta, w1, b1, w2, b2, drop, running_mean, running_var,
                                       num_batches_tracked, cfg)
        return tail_forward_impl(z, shortcut, gamma, beta, running_mean, running_var, num_batches_tracked, *cfg[:3],
                                 attn, w1, b1, w2, b2, pool, attn_act, cfg[6], gate, cfg[8], drop, act, cfg[10])[0]
    y, _, rm, rv, nbt = tail_fwd(z, shortcut, gamma, beta, running_mean, running_var, num_batches_tracked, *cfg[:3], attn,
                                 w1, b1, w2, b2, pool, attn_act, cfg[6], gate, cfg[8], drop, act, cfg[10])
    if bn_training and running_mean is not None:
        running_mean.copy_(rm)
        running_var.copy_(rv)
        if num_batches_tracked is not None:
            num_batches_tracked.copy_(nbt)
    return y


def _reference_path(z, shortcut, gamma, beta, rmean, rvar, nbt, bn_training, momentum, eps, attn, w1, b1, w2, b2,
                    pool, attn_act, attn_act_param, gate, circular, drop, act, act_param):
    """The composition itself, as PyTorch runs the unfused block (fp32 math
    for half inputs, like the kernels)."""
    update = bn_training and rmean is not None
    if update and nbt is not None:
        nbt.add_(1)
        if momentum is None:
            momentum = 1.0 / float(nbt)
    acc = acc_dtype(z.dtype)
    cast = lambda t: None if t is None else t.to(acc)  # noqa: E731
    zf = z.to(acc)
    sf = cast(shortcut)
    if update and (rmean.dtype != acc):
        # F.batch_norm updates the buffers in their dtype; keep that exact.
        stats_m, stats_v = rmean.to(acc), rvar.to(acc)
    else:
        stats_m, stats_v = rmean, rvar
    y = attention_tail_reference(
        zf, sf, cast(gamma), cast(beta), stats_m, stats_v, bn_training, 0.0 if momentum is None else momentum, eps,
        attn, cast(w1), cast(b1), cast(w2), cast(b2), pool=pool, attn_act=attn_act, attn_act_param=attn_act_param,
        gate=gate, circular=circular, drop=drop, act=act, act_param=act_param,
    )
    if stats_m is not rmean and update:
        rmean.copy_(stats_m)
        rvar.copy_(stats_v)
    out = torch.empty_like(z, memory_format=torch.preserve_format)
    return out.copy_(y) if not y.requires_grad else y.to(z.dtype).contiguous(memory_format=_format_of(z))


def _format_of(t):
    return torch.channels_last if (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()) else torch.contiguous_format


def _twin_forward(z, shortcut, gamma, beta, rmean, rvar, nbt, bn_training, momentum, eps, attn, w1, b1, w2, b2, pool,
                  attn_act, attn_act_param, gate, circular, drop, act, act_param):
    """The ops' pure-PyTorch path (also their decomposition): the reference
    in the accumulation dtype, the running statistics updated as
    ``nn.BatchNorm2d`` does, and a state holding what the twin backward
    needs (the running statistics used, in eval)."""
    N, C = z.shape[:2]
    L = _layout(z, attn, pool, w1, w2)
    y = _reference_path(z, shortcut, gamma, beta, rmean, rvar, nbt, bn_training, momentum, eps, attn, w1, b1, w2, b2,
                        pool, attn_act, attn_act_param, gate, circular, drop, act, act_param)
    state = torch.zeros((L.total,), device=z.device, dtype=acc_dtype(z.dtype))
    if not bn_training:
        chan = _view(state, L.chan)
        chan[2 * C:3 * C] = rmean.to(state.dtype)
        chan[3 * C:] = rvar.to(state.dtype)
    return y, state


def _twin_backward(dy, z, shortcut, state, gamma, beta, bn_training, eps, attn, w1, b1, w2, b2, pool, attn_act,
                   attn_act_param, gate, circular, drop, act, act_param, need_dz):
    """Gradients of the reference, recomputed under autograd (batch
    statistics in training, the saved running ones in eval)."""
    C = z.shape[1]
    L = _layout(z, attn, pool, w1, w2)
    rm = rv = None
    if not bn_training:
        chan = _view(state, L.chan)
        rm, rv = chan[2 * C:3 * C].clone(), chan[3 * C:].clone()
    tensors = (z, shortcut, gamma, beta, w1, b1, w2, b2)
    leaves = [None if t is None else t.detach().requires_grad_() for t in tensors]
    with torch.enable_grad():
        y = _reference_path(leaves[0], leaves[1], leaves[2], leaves[3], rm, rv, None, bn_training, None, eps, attn,
                            *leaves[4:], pool, attn_act, attn_act_param, gate, circular, drop, act, act_param)
        inputs = [t for t in leaves if t is not None]
        grads = torch.autograd.grad(y, inputs, dy, allow_unused=True)
    it = iter(grads)
    out = [None if t is None else next(it) for t in leaves]
    out = [g if (g is not None or t is None) else torch.zeros_like(t) for g, t in zip(out, leaves)]
    dz, ds, dgamma, dbeta, dw1, db1, dw2, db2 = out
    if ds is None:
        ds = torch.zeros_like(z)
    return (dz if need_dz else None), ds, dgamma, dbeta, dw1, db1, dw2, db2
