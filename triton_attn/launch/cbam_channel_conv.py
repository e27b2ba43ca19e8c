"""Host side of the backward of CBAM's "Conv" channel attention on [N, C]
(kernels/cbam_channel_conv.py): one launch from the two gradient passes'
partials to the dx pass's coefficients and the taps' gradient partials,
with its pure-PyTorch twin. (The forward runs inside the per-pixel
statistics kernel: launch/spatial_stats.py.)"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ..activations import GATE_CODES
from ..kernels.cbam_channel_conv import cbam_conv_gate_backward_kernel
from ..runtime import launch
from .channel_scale import shift_channels
from .config import cdiv, next_pow2, symbolic
from .se_gate import gate_backward_from_output

_BLOCK_C = 64
_MAX_PROGRAMS = 8


class ConvGateBackwardSpec(NamedTuple):
    programs: int
    c_per_program: int
    fold_k: int
    kwargs: dict


def conv_gate_backward_spec(N: int, C: int, K: int) -> ConvGateBackwardSpec:
    """Programs over channel ranges, every sample each: few enough that the
    taps' gradient partials ([PROGRAMS, FOLD_K]) stay tiny."""
    if symbolic(N, C):  # traced on the PyTorch path
        return ConvGateBackwardSpec(1, C, next_pow2(K), {})
    block_n = 16 if N <= 16 else 32
    programs = max(1, min(_MAX_PROGRAMS, cdiv(C, _BLOCK_C)))
    c_per = cdiv(cdiv(C, programs), _BLOCK_C) * _BLOCK_C
    return ConvGateBackwardSpec(cdiv(C, c_per), c_per, next_pow2(K), dict(BLOCK_N=block_n, BLOCK_C=_BLOCK_C, num_warps=8))


def conv_gate_backward(spec, use_kernel: bool, dg_part, cnt_part, split: int, ca, pooled, w, scale: float, gate: str,
                       HW: int, need_dx: bool, dmean, dmax, dw_part) -> None:
    """``dmean``/``dmax`` [N, C] (with ``need_dx``) and the taps' gradient
    partials ``dw_part`` [PROGRAMS, FOLD_K] from the partial sums of the
    channel gate's gradient ``dg_part`` [2, SPLIT, N, C] (summed) and the
    max's tie counts ``cnt_part`` [SPLIT, N, C]."""
    N, C = ca.shape
    K = w.numel()
    if not use_kernel:
        rows = dg_part.sum(1)
        dz = gate_backward_from_output(ca, rows[0] + rows[1], gate)
        s = scale * pooled[0] + scale * pooled[1]
        pad = (K - 1) // 2
        dw_part.zero_()
        for j in range(K):
            dw_part[0, j] = (dz * shift_channels(s, pad - j, False)).sum()
        if need_dx:
            wf = w.reshape(-1).to(dz.dtype)
            ds = torch.zeros_like(dz)
            for j in range(K):
                ds = ds + wf[j] * shift_channels(dz, j - pad, False)
            ds = ds * scale
            cnt = cnt_part.sum(0)
            dmean.copy_(ds / HW)
            dmax.copy_(torch.where(cnt > 0, ds / cnt.clamp_min(1), torch.full_like(ds, float("nan"))))
        return
    launch(
        cbam_conv_gate_backward_kernel, (spec.programs,),
        dg_part, cnt_part, ca, pooled, w, dmean if dmean is not None else ca, dmax if dmax is not None else ca, dw_part,
        N, C, HW, split, spec.c_per_program, float(scale),
        CONV_K=K, GATE=GATE_CODES[gate], NEED_DX=need_dx, FOLD_K=spec.fold_k, **spec.kwargs,
    )
