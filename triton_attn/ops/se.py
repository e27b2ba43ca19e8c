"""Fused squeeze-and-excitation: ``triton_attn::se_fwd`` / ``se_bwd``.

Forward: pool (pass 1: read x) -> MLP on [N, C] (launch/se_gate.py) -> scale
(pass 2: read x, pass 3: write y). Backward: sum(dy * x) (passes 1-2: read dy
and x) -> closed-form MLP backward on [N, C] -> dx = dy * g + pooled-gradient
broadcast (pass 3: read dy, pass 4: write dx; pass 5 reads x again only for
max pooling, to find the tied maxima).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..runtime import autocast_off
from ..activations import act_backward, gate_backward, gate_forward
from ..launch.channel_pool import channel_gate_grad, channel_pool, max_grad_per_element
from ..launch.channel_scale import channel_scale, channel_scale_backward
from ..launch.layout import empty_like_4d
from ..launch.se_gate import as_matrix as _mat
from ..launch.se_gate import mlp_forward, se_gate
from ..launch.se_gate import squeeze_pooled as _squeeze

POOL_MODES = ("avg", "max", "avgmax")


def pooled_rows(pool: str) -> int:
    return 2 if pool == "avgmax" else 1


def pool_input(x: torch.Tensor, pool: str) -> torch.Tensor:
    """[P, N, C]: the pooled statistics the gate needs, from one read of x."""
    mean, amax = channel_pool(x, pool in ("avg", "avgmax"), pool in ("max", "avgmax"))
    if pool == "avgmax":
        return torch.stack([mean, amax])
    return (mean if amax is None else amax)[None]  # a view: one launch fewer at batch 1


def _split_pooled(pooled: torch.Tensor, pool: str):
    if pool == "avg":
        return pooled[0], None
    if pool == "max":
        return None, pooled[0]
    return pooled[0], pooled[1]


def se_forward_impl(x, w1, b1, w2, b2, pool, act, act_param, gate):
    pooled = pool_input(x, pool)
    return channel_scale(x, se_gate(pooled, pool, w1, b1, w2, b2, act, act_param, gate)), pooled


@torch.library.custom_op("triton_attn::se_fwd", mutates_args=())
@autocast_off
def se_fwd(
    x: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor], w2: Optional[torch.Tensor],
    b2: Optional[torch.Tensor], pool: str, act: str, act_param: float, gate: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    return se_forward_impl(x, w1, b1, w2, b2, pool, act, act_param, gate)


@se_fwd.register_fake
def _(x, w1, b1, w2, b2, pool, act, act_param, gate):
    N, C = x.shape[:2]
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    return empty_like_4d(x), x.new_empty((pooled_rows(pool), N, C), dtype=acc)


def _grad_or_empty(g, like):
    return g.to(like.dtype).reshape(like.shape) if like is not None else g.new_empty(0)


def se_backward_impl(dy, x, pooled, w1, b1, w2, b2, pool, act, act_param, gate, need_dx):
    HW = x.shape[2] * x.shape[3]
    mean, amax = _split_pooled(pooled, pool)
    p = _squeeze(pooled, pool)
    acc = p.dtype
    z, h, a = mlp_forward(p, w1, b1, w2, b2, act, act_param)
    g = gate_forward(z, gate).contiguous()
    dg, cnt = channel_gate_grad(dy, x, amax.contiguous() if (amax is not None and need_dx) else None)
    dz = gate_backward(z, dg, gate)
    if w2 is not None:
        dw2 = dz.t() @ a
        db2 = dz.sum(0)
        dh = act_backward(h, dz @ _mat(w2, acc), act, act_param)
    else:
        dw2 = db2 = None
        dh = dz
    dw1 = dh.t() @ p
    db1 = dh.sum(0)
    if need_dx:
        dp = dh @ _mat(w1, acc)
        share = 0.5 if pool == "avgmax" else 1.0
        dmean = (dp * share / HW).contiguous() if mean is not None else None
        dmax = max_grad_per_element(dp * share, cnt).contiguous() if amax is not None else None
        dx = channel_scale_backward(dy, x, g, dmean, dmax, amax.contiguous() if amax is not None else None)
    else:
        dx = x.new_empty(0)
    return (
        dx,
        _grad_or_empty(dw1, w1),
        _grad_or_empty(db1, b1),
        _grad_or_empty(dw2, w2) if w2 is not None else dw1.new_empty(0),
        _grad_or_empty(db2, b2) if (b2 is not None and db2 is not None) else dw1.new_empty(0),
    )


@torch.library.custom_op("triton_attn::se_bwd", mutates_args=())
@autocast_off
def se_bwd(
    dy: torch.Tensor, x: torch.Tensor, pooled: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor],
    w2: Optional[torch.Tensor], b2: Optional[torch.Tensor], pool: str, act: str, act_param: float,
    gate: str, need_dx: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return se_backward_impl(dy, x, pooled, w1, b1, w2, b2, pool, act, act_param, gate, need_dx)


@se_bwd.register_fake
def _(dy, x, pooled, w1, b1, w2, b2, pool, act, act_param, gate, need_dx):
    empty = w1.new_empty(0)
    return (
        empty_like_4d(x) if need_dx else x.new_empty(0),
        torch.empty_like(w1),
        torch.empty_like(b1) if b1 is not None else empty,
        torch.empty_like(w2) if w2 is not None else empty,
        torch.empty_like(b2) if b2 is not None else empty,
    )


def _se_setup_context(ctx, inputs, output):
    x, w1, b1, w2, b2, pool, act, act_param, gate = inputs
    _, pooled = output
    ctx.save_for_backward(x, pooled, w1, b1, w2, b2)
    ctx.cfg = (pool, act, act_param, gate)
    ctx.mark_non_differentiable(pooled)


def _se_backward(ctx, dy, _dpooled):
    x, pooled, w1, b1, w2, b2 = ctx.saved_tensors
    if dy is None:
        dy = torch.zeros_like(x)
    need_dx = ctx.needs_input_grad[0]
    dx, dw1, db1, dw2, db2 = se_bwd(dy, x, pooled, w1, b1, w2, b2, *ctx.cfg, need_dx)
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
    y, _ = se_fwd(x, w1, b1, w2, b2, pool, act, act_param, gate)
    return y
