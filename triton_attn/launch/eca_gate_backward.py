"""Host side of ECA's gate backward on [N, C] (kernels/eca_gate_backward.py):
one launch from the gradient pass's partial sums to the dx pass's
coefficient and the conv's per-program weight-gradient partials, with its
pure-PyTorch twin."""
from __future__ import annotations

from typing import NamedTuple

import torch

from ..activations import GATE_CODES
from ..kernels.eca_gate_backward import eca_gate_backward_kernel
from ..runtime import launch
from .channel_scale import shift_channels
from .config import cdiv, next_pow2, symbolic
from .se_gate import gate_backward_from_output

#: 64 channels per chunk took 254 registers on sm_90 at 32 samples; 32: 153.
_BLOCK_C = 32
_MAX_PROGRAMS = 8


class EcaBackwardSpec(NamedTuple):
    programs: int
    c_per_program: int
    fold_k: int
    kwargs: dict


_specs: dict = {}


def eca_backward_spec(N: int, C: int, K: int) -> EcaBackwardSpec:
    if symbolic(N, C):  # traced on the PyTorch path
        return EcaBackwardSpec(1, C, next_pow2(K + 1), {})
    spec = _specs.get((N, C, K))
    if spec is None:
        spec = _specs[(N, C, K)] = _eca_backward_spec(N, C, K)
    return spec


def _eca_backward_spec(N: int, C: int, K: int) -> EcaBackwardSpec:
    """Programs over channel ranges, every sample each: few enough that the
    weight-gradient partials ([PROGRAMS, K + 1]) stay tiny."""
    block_n = 16 if N <= 16 else 32
    programs = max(1, min(_MAX_PROGRAMS, cdiv(C, _BLOCK_C)))
    c_per = cdiv(cdiv(C, programs), _BLOCK_C) * _BLOCK_C
    fold_k = next_pow2(K + 1)
    return EcaBackwardSpec(cdiv(C, c_per), c_per, fold_k, dict(BLOCK_N=block_n, BLOCK_C=_BLOCK_C, num_warps=4))


def eca_gate_backward(spec, use_kernel: bool, dg_part, split_g: int, g, part, split_p: int, w, circular: bool, gate: str,
                      HW: int, need_dx: bool, dmean, dw_part, N: int | None = None, C: int | None = None) -> None:
    """``dmean`` [N, C] (= ds / H*W, with ``need_dx``) and ``dw_part``
    [PROGRAMS, FOLD_K] (taps' gradients in columns 0..K-1, the bias's in
    column K) from the partial sums of dy * x ``dg_part`` [SPLIT_G, N, C].
    With the kernel the buffers may be flat (then N and C come from
    ``dmean``'s caller: pass them, or g shaped [N, C])."""
    if N is None:
        N, C = g.shape
    K = w.numel()
    if not use_kernel:
        dz = gate_backward_from_output(g, dg_part.reshape(split_g, N, C).sum(0), gate)
        s = part.reshape(split_p, N, C).sum(0)
        pad = (K - 1) // 2
        dw_part.zero_()
        for j in range(K):
            dw_part[0, j] = (dz * shift_channels(s, pad - j, circular)).sum()
        dw_part[0, K] = dz.sum()
        if need_dx:
            wf = w.reshape(-1).to(dz.dtype)
            ds = torch.zeros_like(dz)
            for j in range(K):
                ds = ds + wf[j] * shift_channels(dz, j - pad, circular)
            dmean.copy_(ds / HW if HW else torch.full_like(ds, float("nan")))
        return
    launch(
        eca_gate_backward_kernel, (spec.programs,),
        dg_part, g, part, w, dmean if dmean is not None else g, dw_part,
        N, C, HW, split_g, split_p, spec.c_per_program,
        CONV_K=K, CIRCULAR=circular, GATE=GATE_CODES[gate], NEED_DX=need_dx, FOLD_K=spec.fold_k, **spec.kwargs,
    )
