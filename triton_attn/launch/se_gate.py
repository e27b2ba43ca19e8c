"""Host side of the SE gate MLP on [N, C] (kernels/se_gate.py forward,
kernels/se_gate_backward.py backward): one launch forward, two backward,
for any batch, with the weights read in their own dtype inside the kernels
and their gradients written in it. Each launcher has a pure-PyTorch twin
with the same arithmetic (the CPU path when Triton does not run)."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..activations import GATE_CODES, HIDDEN_ACT_CODES, act_backward, act_forward, gate_forward
from ..kernels.se_gate import se_gate_kernel
from ..kernels.se_gate_backward import se_gate_backward_a_kernel, se_gate_backward_b_kernel
from ..runtime import launch
from .config import cdiv, next_pow2, symbolic

#: "pair": CBAM's channel attention, z = fc2(act(fc1(mean))) + fc2(act(fc1(max))).
POOL_CODES = {"avg": 0, "max": 1, "avgmax": 2, "pair": 3}


def hidden_rows(pool: str) -> int:
    """Rows of fc1's output the gate keeps: 2 in pair mode."""
    return 2 if pool == "pair" else 1


#: Channels and hidden units per chunk of the [N, C] loops (any C and RD
#: fit: chunks loop; the dot tiles need >= 16 a side). 32 x 32: with 3xTF32
#: dots, 64 x 128 chunks (the old cap, reached at RD >= 128) took 255
#: registers and spilled up to 1.2 KB per thread on sm_90; 32 x 32 spills
#: <= 24 B in the backward, 16 x 16 none but runs 4x the loop steps of a
#: latency-bound single wave (tests/test_hopper_compile.py reports each).
_BLOCK_C = 32
_BLOCK_R_MAX = 32
#: Samples per program: tl.dot needs 16 rows; 32 halves the weight reads at
#: larger batch (weights are read once per sample block).
_BLOCK_N_SMALL, _BLOCK_N_LARGE = 16, 32
#: Programs of the backward phases: each owns a channel range and every
#: sample, so its partials (phase A -> B) stay small: 8 x N x RD.
_MAX_PROGRAMS = 8


def precision(acc: torch.dtype) -> str:
    # 3xTF32 reaches fp32 accuracy on tensor cores; fp64 (tests) is exact.
    return "ieee" if acc == torch.float64 else "tf32x3"


def _matrix(w: torch.Tensor) -> torch.Tensor:
    # [out, in] or [out, in, 1, 1]: the kernels take the first two strides.
    return w if w.dim() == 2 else w.reshape(w.shape[0], w.shape[1])


def weights_for(acc: torch.dtype, *ws):
    """The weights as the kernels read them. fp64 accumulation (tests,
    gradcheck) takes fp64 weights: the fp64 dot cannot widen other dtypes in
    registers. Everything else is read in its own dtype, never copied."""
    if acc != torch.float64:
        return ws
    return tuple(w if w is None or w.dtype == acc else w.to(acc) for w in ws)


class GateSpec(NamedTuple):
    grid: tuple
    c_per_slice: int
    kwargs: dict


_gate_specs: dict = {}


def gate_spec(N: int, C: int, RD: int, has_fc2: bool, acc: torch.dtype) -> GateSpec:
    if symbolic(N, C, RD):  # traced on the PyTorch path: one slice, no kernel
        return GateSpec((1, 1), C, {})
    spec = _gate_specs.get((N, C, RD, has_fc2, acc))
    if spec is None:
        spec = _gate_specs[(N, C, RD, has_fc2, acc)] = _gate_spec(N, C, RD, has_fc2, acc)
    return spec


def _gate_spec(N: int, C: int, RD: int, has_fc2: bool, acc: torch.dtype) -> GateSpec:
    """Sample blocks x output slices. Slices only at small batch (N < 8):
    there a block of samples is one program and the weights its only work,
    so splitting the output spreads them over SMs; from 8 samples on one
    slice keeps the weights read once per sample block (under one x pass at
    7x7 with C = 2048)."""
    block_n = _BLOCK_N_SMALL if N <= _BLOCK_N_SMALL else _BLOCK_N_LARGE
    slices = max(1, min(8, C // 256)) if N < 8 else 1
    c_per_slice = cdiv(cdiv(C, slices), _BLOCK_C) * _BLOCK_C
    slices = cdiv(C, c_per_slice)
    out = RD if has_fc2 else C
    block_r = max(16, min(next_pow2(out), _BLOCK_R_MAX))
    kwargs = dict(PREC=precision(acc), BLOCK_N=block_n, BLOCK_C=_BLOCK_C, BLOCK_R=block_r,
                  num_warps=4 if block_n == _BLOCK_N_SMALL else 8)
    return GateSpec((cdiv(N, block_n), slices), c_per_slice, kwargs)


def se_gate(spec, use_kernel: bool, part, split: int, pooled, w1, b1, w2, b2, h, h_scratch, g,
            pool: str, act: str, act_param: float, gate: str, N: int | None = None, C: int | None = None,
            P: int | None = None) -> None:
    """Forward: fold the pooling partials ``part`` [P, SPLIT, N, C] into
    ``pooled`` [P, N, C], fc1's output (before the activation) into ``h``
    [ROWS, N, RD] (without fc2: the gate's input z, [N, C]) and the gate
    into ``g`` [N, C]. ``h_scratch``: [SLICES - 1, ROWS, N, RD] (any buffer
    for 1 slice). With the kernel the buffers may be flat ([N, C, P] then
    given)."""
    if N is None:
        P, _, N, C = part.shape
    if not use_kernel:
        first = part[0].amax(0) if pool == "max" else part[0].sum(0)
        pooled[0] = first
        if pool in ("avgmax", "pair"):
            pooled[1] = part[1].amax(0)
        acc = part.dtype
        w1m, bias1 = _matrix(w1).to(acc), None if b1 is None else b1.to(acc)
        if pool == "pair":
            h = h.view(2, N, _matrix(w1).shape[0])
            h[0] = F.linear(pooled[0], w1m, bias1)
            h[1] = F.linear(pooled[1], w1m, bias1)
            a = act_forward(h[0], act, act_param) + act_forward(h[1], act, act_param)
            z = F.linear(a, _matrix(w2).to(acc), None if b2 is None else 2 * b2.to(acc))
        else:
            q = 0.5 * pooled[0] + 0.5 * pooled[1] if pool == "avgmax" else pooled[0]
            hh = F.linear(q, w1m, bias1)
            h.copy_(hh.view(h.shape))
            z = hh if w2 is None else F.linear(act_forward(hh, act, act_param), _matrix(w2).to(acc), None if b2 is None else b2.to(acc))
        g.copy_(gate_forward(z, gate))
        return
    w2m = w2 if w2 is not None else w1
    s1, s2 = w1.stride(), w2m.stride()
    launch(
        se_gate_kernel, spec.grid,
        part, pooled, w1, b1 if b1 is not None else w1, w2m, b2 if b2 is not None else w1, h, h_scratch, g,
        N, C, w1.shape[0], split, spec.c_per_slice, float(act_param),
        s1[0], s1[1], s2[0], s2[1],
        POOL=POOL_CODES[pool], HAS_B1=b1 is not None, HAS_FC2=w2 is not None, HAS_B2=b2 is not None,
        ACT=HIDDEN_ACT_CODES[act] if w2 is not None else 0, GATE=GATE_CODES[gate], **spec.kwargs,
    )


class GateBackwardSpec(NamedTuple):
    programs_a: int
    c_per_a: int
    programs_b: int
    c_per_b: int
    kwargs: dict


_backward_specs: dict = {}


def gate_backward_spec(N: int, C: int, RD: int, has_fc2: bool, acc: torch.dtype) -> GateBackwardSpec:
    if symbolic(N, C, RD):
        return GateBackwardSpec(1, C, 1, C, {})
    spec = _backward_specs.get((N, C, RD, has_fc2, acc))
    if spec is None:
        spec = _backward_specs[(N, C, RD, has_fc2, acc)] = _gate_backward_spec(N, C, RD, has_fc2, acc)
    return spec


def _gate_backward_spec(N: int, C: int, RD: int, has_fc2: bool, acc: torch.dtype) -> GateBackwardSpec:
    block_n = _BLOCK_N_SMALL if N <= _BLOCK_N_SMALL else _BLOCK_N_LARGE
    block_r = max(16, min(next_pow2(RD if has_fc2 else C), _BLOCK_R_MAX))
    programs = max(1, min(_MAX_PROGRAMS, cdiv(C, _BLOCK_C)))
    c_per = cdiv(cdiv(C, programs), _BLOCK_C) * _BLOCK_C
    programs = cdiv(C, c_per)
    kwargs = dict(PREC=precision(acc), BLOCK_N=block_n, BLOCK_C=_BLOCK_C, BLOCK_R=block_r,
                  num_warps=4 if block_n == _BLOCK_N_SMALL else 8)
    return GateBackwardSpec(programs, c_per, programs, c_per, kwargs)


def forward_scratch_size(spec: GateSpec, N: int, RD: int, has_fc2: bool, pool: str = "avg") -> int:
    """Elements of ``h_scratch``: fc1's output of the slices past the first."""
    return (spec.grid[1] - 1) * hidden_rows(pool) * N * RD if has_fc2 else 0


def scratch_sizes(spec: GateBackwardSpec, N: int, C: int, RD: int, has_fc2: bool, pool: str = "avg") -> tuple[int, int, int]:
    """Elements of the backward's scratch buffers: dz, dh partials, dh."""
    width = RD if has_fc2 else C
    return (N * C if has_fc2 else 0), (spec.programs_a if has_fc2 else 1) * N * width, spec.programs_b * hidden_rows(pool) * N * width


def se_gate_backward(
    spec, use_kernel: bool, dg_part, cnt_part, split: int, g, h, pooled, w1, b1, w2, b2,
    pool: str, act: str, act_param: float, gate: str, HW: int, need_dx: bool,
    dz, dhp, dh, dw1, db1, dw2, db2, dmean, dmax, dg_mode: int = 0, coef=None,
) -> None:
    """Backward of ``se_gate``: from the partial sums of the gate's gradient
    ``dg_part`` ([SPLIT, N, C]; [2, SPLIT, N, C] with ``dg_mode`` 1: the sum
    of two rows, or 2: coef[0] * row 0 + coef[1] * row 1 per channel) and the
    max's tie counts ``cnt_part``, the weight gradients
    ``dw1``/``db1``/``dw2``/``db2`` (the weights' dtypes; None where the
    parameter is absent) and, with ``need_dx``, the dx pass's coefficients
    ``dmean``/``dmax`` [N, C] (pair mode: the mean row's and the max row's).
    ``dz``/``dhp``/``dh`` are scratch."""
    N, C = g.shape
    has_fc2 = w2 is not None
    if not use_kernel:
        acc = g.dtype
        if dg_mode == 0:
            dg = dg_part.sum(tuple(range(dg_part.dim() - 2)))
        else:
            rows = dg_part.sum(1)
            dg = rows[0] + rows[1] if dg_mode == 1 else coef[0] * rows[0] + coef[1] * rows[1]
        dz_ = gate_backward_from_output(g, dg, gate)
        share = 0.5 if pool == "avgmax" else 1.0
        if pool == "pair":
            hh = h.view(2, N, _matrix(w1).shape[0])
            a = act_forward(hh[0], act, act_param) + act_forward(hh[1], act, act_param)
            dw2.copy_((dz_.t() @ a).reshape(dw2.shape))
            if db2 is not None:
                db2.copy_(2 * dz_.sum(0))
            da = dz_ @ _matrix(w2).to(acc)
            dhm, dhx = act_backward(hh[0], da, act, act_param), act_backward(hh[1], da, act, act_param)
            dw1.copy_((dhm.t() @ pooled[0] + dhx.t() @ pooled[1]).reshape(dw1.shape))
            if b1 is not None:
                db1.copy_(dhm.sum(0) + dhx.sum(0))
            if need_dx:
                w1m = _matrix(w1).to(acc)
                dmean.copy_(dhm @ w1m / HW)
                cnt = cnt_part.sum(tuple(range(cnt_part.dim() - 2)))
                dq = dhx @ w1m
                dmax.copy_(torch.where(cnt > 0, dq / cnt.clamp_min(1), torch.full_like(dq, float("nan"))))
            return
        q = 0.5 * pooled[0] + 0.5 * pooled[1] if pool == "avgmax" else pooled[0]
        if has_fc2:
            hh = h.view(h.shape[-2], h.shape[-1])
            a = act_forward(hh, act, act_param)
            dw2.copy_((dz_.t() @ a).reshape(dw2.shape))
            if db2 is not None:
                db2.copy_(dz_.sum(0))
            dh_ = act_backward(hh, dz_ @ _matrix(w2).to(acc), act, act_param)
        else:
            dh_ = dz_
        dw1.copy_((dh_.t() @ q).reshape(dw1.shape))
        if b1 is not None:
            db1.copy_(dh_.sum(0))
        if need_dx:
            dq = dh_ @ _matrix(w1).to(acc)
            if pool != "max":
                dmean.copy_(dq * (share / HW) if HW else torch.full_like(dq, float("nan")))  # H*W = 0: no element to reach
            if pool != "avg":
                cnt = cnt_part.sum(tuple(range(cnt_part.dim() - 2)))
                dmax.copy_(torch.where(cnt > 0, dq * share / cnt.clamp_min(1), torch.full_like(dq, float("nan"))))
        return
    w1m = w1
    w2m = w2 if has_fc2 else w1
    RD = w1.shape[0]
    kw = spec.kwargs
    spare = g
    launch(
        se_gate_backward_a_kernel, (spec.programs_a,),
        dg_part, coef if coef is not None else spare, g, h, w2m, dz if has_fc2 else spare, dw2 if has_fc2 else spare,
        (db2 if db2 is not None else spare) if has_fc2 else (db1 if db1 is not None else spare), dhp,
        N, C, RD, split, spec.c_per_a, float(act_param), *w2m.stride()[:2],
        HAS_FC2=has_fc2, HAS_B2=(db2 if has_fc2 else db1) is not None, PAIR=pool == "pair", DG_MODE=dg_mode,
        ACT=HIDDEN_ACT_CODES[act] if has_fc2 else 0, GATE=GATE_CODES[gate], **kw,
    )
    launch(
        se_gate_backward_b_kernel, (spec.programs_b,),
        dhp, h, pooled, cnt_part if cnt_part is not None else spare, w1m, dh, dw1,
        db1 if db1 is not None else spare, dmean if dmean is not None else spare, dmax if dmax is not None else spare,
        N, C, RD, HW, spec.programs_a if has_fc2 else 1, split, spec.c_per_b, float(act_param),
        *w1m.stride()[:2],
        POOL=POOL_CODES[pool], HAS_FC2=has_fc2, HAS_B1=has_fc2 and db1 is not None, NEED_DX=need_dx,
        ACT=HIDDEN_ACT_CODES[act] if has_fc2 else 0, **kw,
    )


#: 1/6 rounded to fp32, as the kernels' literal and torch's own
#: hardsigmoid_backward use it (also in fp64).
SIXTH = float(torch.tensor(1 / 6, dtype=torch.float32))


def gate_backward_from_output(g: torch.Tensor, grad: torch.Tensor, gate: str) -> torch.Tensor:
    """grad * d gate / d z through the gate's output (kernels/gate_math.py's
    twin): selected where torch selects, multiplied where it multiplies."""
    if gate == "sigmoid":
        return grad * (1 - g) * g
    if gate == "hard_sigmoid":
        return torch.where((g > 0) & (g < 1), grad * SIXTH, torch.zeros_like(grad))
    return grad


def mlp_forward(p, w1, b1, w2, b2, act, act_param):
    """z = fc2(act(fc1(p))) in p's dtype with fc1's output and activation
    (z = fc1(p) without fc2): the torch form of the gate MLP (CBAM's channel
    branch runs it on the [2N, C] mean and max rows)."""
    acc = p.dtype
    h = F.linear(p, _matrix(w1).to(acc), None if b1 is None else b1.to(acc))
    if w2 is None:
        return h, h, None
    a = act_forward(h, act, act_param)
    return F.linear(a, _matrix(w2).to(acc), None if b2 is None else b2.to(acc)), h, a
