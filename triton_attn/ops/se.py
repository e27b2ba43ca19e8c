"""Fused squeeze-and-excitation: ``triton_attn::se_fwd`` / ``se_bwd``.

Forward, 3 launches: pool (pass 1: read x) -> the gate MLP on [N, C]
(launch/se_gate.py, folding the pooling's split partials) -> scale (pass 2:
read x, pass 3: write y). Backward, 4 launches: sum(dy * x) (passes 1-2:
read dy and x) -> the MLP backward in two [N, C] launches (weight gradients
in the weights' dtype, the dx pass's coefficients) -> dx = dy * g + pooled
gradient broadcast (pass 3: read dy, pass 4: write dx; pass 5 reads x again
only for max pooling, to find the tied maxima).

Saved for backward: x and one small ``state`` tensor (the pooled statistics
[P, N, C], the gate [N, C], fc1's output [N, RD]).

Eager calls on plain tensors run ``_SEFunction`` (direct launches, no
dispatcher); torch.compile, torch.export and tracing see the registered ops.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..launch.channel_pool import gate_grad, gate_grad_spec, pool_spec
from ..launch.channel_pool import pool as pool_launch
from ..launch.channel_scale import scale, scale_backward, scale_backward_spec, scale_spec
from ..launch.layout import empty_like_4d, nc_hw
from ..launch.se_gate import (
    forward_scratch_size, gate_backward_spec, gate_spec, scratch_sizes, se_gate, se_gate_backward, weights_for,
)
from ..runtime import NO_CONTEXT, acc_dtype, eager_call, new_buffer, new_grad_buffer, no_autocast, use_triton

POOL_MODES = ("avg", "max", "avgmax")


def pooled_rows(pool: str) -> int:
    return 2 if pool == "avgmax" else 1


def state_numel(N: int, C: int, width: int, pool: str) -> int:
    """pooled [P, N, C] | g [N, C] | h [N, width]."""
    return pooled_rows(pool) * N * C + N * C + N * width


def _state_views(state, N: int, C: int, width: int, P: int):
    a, b = P * N * C, P * N * C + N * C
    return state[:a].view(P, N, C), state[a:b].view(N, C), state[b:].view(N, width)


def se_forward_impl(x, w1, b1, w2, b2, pool: str, act: str, act_param: float, gate: str):
    """(y, state) of the SE block."""
    x, xs = nc_hw(x)
    N, C, H, W = x.shape
    acc = acc_dtype(x.dtype)
    has_fc2 = w2 is not None
    RD = w1.shape[0]
    width = RD if has_fc2 else C
    P = 2 if pool == "avgmax" else 1
    use_kernel = use_triton(x) and x.numel() > 0
    if acc == torch.float64:
        w1, b1, w2, b2 = weights_for(acc, w1, b1, w2, b2)
    want_mean, want_max = pool != "max", pool != "avg"
    pspec = pool_spec(x, xs, want_mean, want_max)
    split = pspec.split
    n_part = P * split * N * C
    y = empty_like_4d(x)
    _, ys = nc_hw(y)
    state = new_buffer((state_numel(N, C, width, pool),), like=x, dtype=acc)
    if use_kernel:
        # flat buffers: the kernels index them (no views on the launch path)
        gspec = gate_spec(N, C, RD, has_fc2, acc)
        scratch = new_buffer((n_part + forward_scratch_size(gspec, N, RD, has_fc2),), like=x, dtype=acc)
        a, b = P * N * C, P * N * C + N * C
        g = state[a:b]
        pool_launch(pspec, x, xs, scratch, want_mean, want_max)
        se_gate(gspec, True, scratch, split, state, w1, b1, w2, b2, state[b:], scratch[n_part:], g,
                pool, act, act_param, gate, N=N, C=C, P=P)
        scale(scale_spec(x, xs, y, ys, 0), x, xs, y, ys, g)
        return y, state
    part = new_buffer((P, split, N, C), like=x, dtype=acc)
    pooled, g, h = _state_views(state, N, C, width, P)
    with no_autocast():
        pool_launch(pspec, x, xs, part, want_mean, want_max)
        se_gate(None, False, part, split, pooled, w1, b1, w2, b2, h, g, g, pool, act, act_param, gate)
        scale(scale_spec(x, xs, y, ys, 0), x, xs, y, ys, g)
    return y, state



def se_backward_impl(dy, x, state, w1, b1, w2, b2, pool: str, act: str, act_param: float, gate: str, need_dx: bool):
    """(dx or None, dw1, db1, dw2, db2): gradients in the parameters' dtypes,
    None for absent parameters."""
    x, xs = nc_hw(x)
    dy, dys = nc_hw(dy)
    N, C, H, W = x.shape
    HW = H * W
    acc = acc_dtype(x.dtype)
    has_fc2 = w2 is not None
    RD = w1.shape[0]
    width = RD if has_fc2 else C
    P = pooled_rows(pool)
    use_kernel = use_triton(x) and x.numel() > 0
    grads = [new_grad_buffer(w) for w in (w1, b1, w2, b2)]
    w1, b1, w2, b2 = weights_for(acc, w1, b1, w2, b2)
    pooled, g, h = _state_views(state, N, C, width, P)
    amax = pooled[P - 1] if pool != "avg" else None
    ties = need_dx and amax is not None
    gspec = gate_grad_spec(x, xs, dys, True, ties)
    split = gspec.split
    rows = 2 if ties else 1
    bspec = gate_backward_spec(N, C, RD, has_fc2, acc)
    n_dz, n_dhp, n_dh = scratch_sizes(bspec, N, C, RD, has_fc2)
    n_part = rows * split * N * C
    n_coef = N * C if need_dx else 0
    ws = new_buffer((n_part + n_dz + n_dhp + n_dh + 2 * n_coef,), like=x, dtype=acc)
    o = n_part
    parts = ws[:n_part].view(rows, split, N, C)
    dz, o = ws[o:o + n_dz], o + n_dz
    dhp, o = ws[o:o + n_dhp].view(n_dhp // max(N * width, 1), N, width), o + n_dhp
    dh, o = ws[o:o + n_dh], o + n_dh
    dmean = ws[o:o + n_coef].view(N, C) if need_dx and pool != "max" else None
    dmax = ws[o + n_coef:o + 2 * n_coef].view(N, C) if ties else None
    dw1, db1, dw2, db2 = grads
    with no_autocast() if not use_kernel else NO_CONTEXT:
        gate_grad(gspec, dy, x, xs, dys, amax if ties else None, parts)
        se_gate_backward(
            bspec, use_kernel, parts[0], parts[1] if ties else None, split, g, h, pooled, w1, b1, w2, b2,
            pool, act, act_param, gate, HW, need_dx, dz, dhp, dh, dw1, db1, dw2, db2, dmean, dmax,
        )
        dx = None
        if need_dx:
            dx = empty_like_4d(x)
            _, dxs = nc_hw(dx)
            scale_backward(scale_backward_spec(x, xs, dy, dys, dx, dxs), dy, x, xs, dys, dx, dxs, g, dmean, dmax, amax)
    return dx, dw1, db1, dw2, db2


# --- eager: autograd.Function with direct launches ---------------------------

class _SEFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, pool, act, act_param, gate):
        y, state = se_forward_impl(x, w1, b1, w2, b2, pool, act, act_param, gate)
        ctx.save_for_backward(x, state, w1, b1, w2, b2)
        ctx.cfg = (pool, act, act_param, gate)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, state, w1, b1, w2, b2 = ctx.saved_tensors
        need = ctx.needs_input_grad
        dx, dw1, db1, dw2, db2 = se_backward_impl(dy, x, state, w1, b1, w2, b2, *ctx.cfg, need[0])
        return dx, dw1 if need[1] else None, db1 if need[2] else None, dw2 if need[3] else None, db2 if need[4] else None, None, None, None, None


# --- torch.library: what compile / export / tracing see ---------------------

@torch.library.custom_op("triton_attn::se_fwd", mutates_args=())
def se_fwd(
    x: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor], w2: Optional[torch.Tensor],
    b2: Optional[torch.Tensor], pool: str, act: str, act_param: float, gate: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    return se_forward_impl(x, w1, b1, w2, b2, pool, act, act_param, gate)


@se_fwd.register_fake
def _(x, w1, b1, w2, b2, pool, act, act_param, gate):
    N, C = x.shape[:2]
    width = w1.shape[0] if w2 is not None else C
    return empty_like_4d(x), x.new_empty((state_numel(N, C, width, pool),), dtype=acc_dtype(x.dtype))


def _empty_if_none(g, spare):
    # Outputs of a custom op may not alias each other: a fresh empty per slot.
    return g if g is not None else spare.new_empty(0)


@torch.library.custom_op("triton_attn::se_bwd", mutates_args=())
def se_bwd(
    dy: torch.Tensor, x: torch.Tensor, state: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor],
    w2: Optional[torch.Tensor], b2: Optional[torch.Tensor], pool: str, act: str, act_param: float,
    gate: str, need_dx: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    dx, dw1, db1, dw2, db2 = se_backward_impl(dy, x, state, w1, b1, w2, b2, pool, act, act_param, gate, need_dx)
    return tuple(_empty_if_none(t, w1) for t in (dx, dw1, db1, dw2, db2))


@se_bwd.register_fake
def _(dy, x, state, w1, b1, w2, b2, pool, act, act_param, gate, need_dx):
    empty = w1.new_empty(0)
    return (
        empty_like_4d(x) if need_dx else x.new_empty(0),
        torch.empty_like(w1, memory_format=torch.contiguous_format),
        torch.empty_like(b1) if b1 is not None else empty.clone(),
        torch.empty_like(w2, memory_format=torch.contiguous_format) if w2 is not None else empty.clone(),
        torch.empty_like(b2) if b2 is not None else empty.clone(),
    )


def _se_setup_context(ctx, inputs, output):
    x, w1, b1, w2, b2, pool, act, act_param, gate = inputs
    _, state = output
    ctx.save_for_backward(x, state, w1, b1, w2, b2)
    ctx.cfg = (pool, act, act_param, gate)
    ctx.mark_non_differentiable(state)
    ctx.set_materialize_grads(False)


def _se_backward(ctx, dy, _dstate):
    x, state, w1, b1, w2, b2 = ctx.saved_tensors
    if dy is None:
        dy = torch.zeros_like(x)
    need_dx = ctx.needs_input_grad[0]
    dx, dw1, db1, dw2, db2 = se_bwd(dy, x, state, w1, b1, w2, b2, *ctx.cfg, need_dx)
    return (
        dx if need_dx else None, dw1,
        db1 if b1 is not None else None,
        dw2 if w2 is not None else None,
        db2 if b2 is not None else None,
        None, None, None, None,
    )


se_fwd.register_autograd(_se_backward, setup_context=_se_setup_context)


def se(x, w1, b1, w2, b2, pool: str, act: str, act_param: float, gate: str) -> torch.Tensor:
    """The SE block on validated arguments (``functional.se`` and the modules
    validate, once): y = x * gate(fc2(act(fc1(pool(x)))))."""
    if eager_call(x):
        if torch.is_grad_enabled() and (
            x.requires_grad or w1.requires_grad or (w2 is not None and w2.requires_grad)
            or (b1 is not None and b1.requires_grad) or (b2 is not None and b2.requires_grad)
        ):
            return _SEFunction.apply(x, w1, b1, w2, b2, pool, act, act_param, gate)
        return se_forward_impl(x, w1, b1, w2, b2, pool, act, act_param, gate)[0]
    y, _ = se_fwd(x, w1, b1, w2, b2, pool, act, act_param, gate)
    return y
