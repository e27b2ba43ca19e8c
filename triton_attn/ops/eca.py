"""Fused efficient channel attention: ``triton_attn::eca_fwd`` / ``eca_bwd``.

Forward, 2 launches: pool (pass 1: read x), then one scale kernel that
folds the pooling partials, computes the K-tap channel convolution and the
gate per tile (pass 2: read x, pass 3: write y). Backward, 3 launches:
sum(dy * x) (passes 1-2), the gate's backward on [N, C] (the conv's
transpose and its weight-gradient partials), dx = dy * g + dmean (pass 3:
read dy, pass 4: write dx), whose program 0 also folds the weight gradient.

Saved for backward: x and ``state`` = the gate and the pooled means (2 N C).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..launch.channel_pool import gate_grad, gate_grad_spec, pool_spec
from ..launch.channel_pool import pool as pool_launch
from ..launch.channel_scale import fold_sums, scale, scale_backward, scale_backward_spec, scale_spec
from ..launch.eca_gate_backward import eca_backward_spec, eca_gate_backward
from ..launch.layout import empty_like_4d, nc_hw
from ..runtime import NO_CONTEXT, acc_dtype, eager_call, new_buffer, new_grad_buffer, no_autocast, use_triton


def _taps(w: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """[k] or [1, 1, k], read by the kernels densely in its own dtype (fp64
    runs take fp64 taps)."""
    if acc == torch.float64 and w.dtype != acc:
        return w.reshape(-1).to(acc).contiguous()
    return w if w.is_contiguous() else w.contiguous()


def eca_forward_impl(x, w, b, circular: bool, gate: str):
    x, xs = nc_hw(x)
    N, C, H, W = x.shape
    acc = acc_dtype(x.dtype)
    pspec = pool_spec(x, xs, True, False)
    y = empty_like_4d(x)
    _, ys = nc_hw(y)
    taps = _taps(w, acc)
    bias = None if b is None else (b.to(acc) if acc == torch.float64 else b)
    state = new_buffer((2 * N * C,), like=x, dtype=acc)  # the gate, then the pooled means
    part = new_buffer((pspec.split * N * C,), like=x, dtype=acc)
    sspec = scale_spec(x, xs, y, ys, taps.numel())
    if use_triton(x) and x.numel() > 0:  # flat buffers: the kernels index them
        pool_launch(pspec, x, xs, part, True, False)
        scale(sspec, x, xs, y, ys, state, part=part, mean=state[N * C:], split=pspec.split, conv_w=taps, conv_b=bias,
              circular=circular, gate=gate)
        return y, state
    with no_autocast():
        part = part.view(pspec.split, N, C)
        pool_launch(pspec, x, xs, part[None], True, False)
        scale(sspec, x, xs, y, ys, state[:N * C].view(N, C), part=part, mean=state[N * C:].view(N, C), split=pspec.split,
              conv_w=taps, conv_b=bias, circular=circular, gate=gate)
    return y, state


def eca_backward_impl(dy, x, state, w, b, circular: bool, gate: str, need_dx: bool):
    """(dx or None, dw, db or None) in the parameters' dtypes."""
    x, xs = nc_hw(x)
    dy, dys = nc_hw(dy)
    N, C, H, W = x.shape
    NC = N * C
    acc = acc_dtype(x.dtype)
    use_kernel = use_triton(x) and x.numel() > 0
    taps = _taps(w, acc)
    K = taps.numel()
    gspec = gate_grad_spec(x, xs, dys, True, False)
    espec = eca_backward_spec(N, C, K)
    programs = espec.programs if use_kernel else 1
    n_part = gspec.split * NC
    ws = new_buffer((n_part + NC + programs * espec.fold_k,), like=x, dtype=acc)
    dw_part = ws[n_part + NC:].view(programs, espec.fold_k)
    # the weight gradients, written by the fold in the weights' own dtypes
    dw, db = new_grad_buffer(w), new_grad_buffer(b)
    fold = (dw_part, dw, db)
    dx = empty_like_4d(x) if need_dx else None
    if use_kernel:  # flat buffers: the kernels index them
        dmean, mean = ws[n_part:], state[NC:]
        gate_grad(gspec, dy, x, xs, dys, None, ws)
        eca_gate_backward(espec, True, ws, gspec.split, state, mean, 1, taps, circular, gate, H * W, need_dx, dmean, dw_part,
                          N=N, C=C)
        if need_dx:
            _, dxs = nc_hw(dx)
            scale_backward(scale_backward_spec(x, xs, dy, dys, dx, dxs), dy, x, xs, dys, dx, dxs, state, dmean, None, None,
                           fold=fold)
        else:
            fold_sums(*fold)
        return dx, dw, db
    with no_autocast():
        dg_part = ws[:n_part].view(1, gspec.split, N, C)
        dmean = ws[n_part:n_part + NC].view(N, C)
        g, mean = state[:NC].view(N, C), state[NC:].view(N, C)
        gate_grad(gspec, dy, x, xs, dys, None, dg_part)
        eca_gate_backward(espec, False, dg_part[0], gspec.split, g, mean, 1, taps, circular, gate, H * W, need_dx,
                          dmean, dw_part)
        if need_dx:
            _, dxs = nc_hw(dx)
            scale_backward(scale_backward_spec(x, xs, dy, dys, dx, dxs), dy, x, xs, dys, dx, dxs, g, dmean, None, None,
                           fold=fold)
        else:
            fold_sums(*fold)
    return dx, dw, db


class _EcaFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, circular, gate):
        y, state = eca_forward_impl(x, w, b, circular, gate)
        ctx.save_for_backward(x, state, w, b)
        ctx.cfg = (circular, gate)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, state, w, b = ctx.saved_tensors
        need = ctx.needs_input_grad
        dx, dw, db = eca_backward_impl(dy, x, state, w, b, *ctx.cfg, need[0])
        return dx, dw if need[1] else None, db if need[2] else None, None, None


@torch.library.custom_op("triton_attn::eca_fwd", mutates_args=())
def eca_fwd(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor], circular: bool, gate: str) -> tuple[torch.Tensor, torch.Tensor]:
    return eca_forward_impl(x, w, b, circular, gate)


@eca_fwd.register_fake
def _(x, w, b, circular, gate):
    return empty_like_4d(x), x.new_empty((2 * x.shape[0] * x.shape[1],), dtype=acc_dtype(x.dtype))


@torch.library.custom_op("triton_attn::eca_bwd", mutates_args=())
def eca_bwd(
    dy: torch.Tensor, x: torch.Tensor, state: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor],
    circular: bool, gate: str, need_dx: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dx, dw, db = eca_backward_impl(dy, x, state, w, b, circular, gate, need_dx)
    # Outputs of a custom op may not alias each other (or anything): copies
    # where the eager path returns views of one buffer.
    return (dx if dx is not None else x.new_empty(0)), dw.clone(), (db.clone() if db is not None else w.new_empty(0))


@eca_bwd.register_fake
def _(dy, x, state, w, b, circular, gate, need_dx):
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
    ctx.set_materialize_grads(False)


def _eca_backward(ctx, dy, _dstate):
    x, state, w, b = ctx.saved_tensors
    if dy is None:
        dy = torch.zeros_like(x)
    need_dx = ctx.needs_input_grad[0]
    dx, dw, db = eca_bwd(dy, x, state, w, b, *ctx.cfg, need_dx)
    return dx if need_dx else None, dw, db if b is not None else None, None, None


eca_fwd.register_autograd(_eca_backward, setup_context=_eca_setup_context)


def eca(x, w, b, circular: bool, gate: str) -> torch.Tensor:
    """The ECA block on validated arguments (``functional.eca`` and the
    modules validate, once)."""
    if eager_call(x):
        if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad or (b is not None and b.requires_grad)):
            return _EcaFunction.apply(x, w, b, circular, gate)
        return eca_forward_impl(x, w, b, circular, gate)[0]
    y, _ = eca_fwd(x, w, b, circular, gate)
    return y
