"""Backward of ECA's gate on [N, C], one launch between the gradient pass
(sum_hw dy * x) and the dx pass. Touches no activation memory.

    dz[n, c]  = dg[n, c] * gate'(g[n, c])               dg folded from the split partials
    ds[n, c]  = sum_j w[j] * dz[n, c - j + pad]          the conv's transpose
    dmean     = ds / HW                                  the dx pass's coefficient
    dw[j]    += sum_{n, c in range} dz[n, c] * s[n, c + j - pad]   per-program partials,
    db       += sum dz                                   folded by the dx pass's program 0

Zero or circular padding, as the forward. Grid (PROGRAMS,), each program a
range of channels and every sample.
"""
import triton
import triton.language as tl

from .gate_math import gate_backward_from_output
from .pooled import fold_split


@triton.jit
def _shifted(c, shift, c_mask, C, CIRCULAR: tl.constexpr):
    src = c + shift
    if CIRCULAR:
        src = ((src % C) + C) % C
        ok = c_mask
    else:
        ok = c_mask & (src >= 0) & (src < C)
    return src, ok


@triton.jit
def eca_gate_backward_kernel(
    dg_part_ptr,
    g_ptr,
    part_ptr,
    w_ptr,
    dmean_ptr,
    dw_part_ptr,
    N,
    C,
    HW,
    SPLIT_G,
    SPLIT_P,
    c_per_program,
    CONV_K: tl.constexpr,
    CIRCULAR: tl.constexpr,
    GATE: tl.constexpr,
    NEED_DX: tl.constexpr,
    FOLD_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Args:
        dg_part_ptr: [SPLIT_G, N, C] partial sums of dy * x.
        g_ptr: [N, C] the forward's gate.
        part_ptr: [SPLIT_P, N, C] the forward's pooling partials (means).
        w_ptr: [CONV_K] taps.
        dmean_ptr: [N, C] out (NEED_DX).
        dw_part_ptr: [PROGRAMS, FOLD_K] out: columns 0..CONV_K-1 the taps'
            gradient partials, column CONV_K the bias's.
    Grid: (PROGRAMS,).
    """
    ACC = g_ptr.dtype.element_ty
    PAD: tl.constexpr = (CONV_K - 1) // 2
    pid = tl.program_id(0)
    c_start = pid * c_per_program
    c_stop = tl.minimum(c_start + c_per_program, C)
    NC = tl.cast(N, tl.int64) * C
    k = tl.arange(0, FOLD_K)
    dw = tl.zeros([FOLD_K], dtype=ACC)
    for n0 in range(0, N, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        n_mask = n < N
        row = n.to(tl.int64)[:, None] * C
        for c0 in range(c_start, c_stop, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            c_mask = c < c_stop
            mask = n_mask[:, None] & c_mask[None, :]
            offs = row + c[None, :]
            dz = gate_backward_from_output(
                tl.load(g_ptr + offs, mask=mask, other=0.0), fold_split(dg_part_ptr, offs, mask, SPLIT_G, NC, False), GATE)
            dz = tl.where(mask, dz, 0.0)
            dw = tl.where(k == CONV_K, dw + tl.sum(tl.sum(dz, axis=1), axis=0), dw)
            ds = tl.zeros([BLOCK_N, BLOCK_C], dtype=ACC)
            for j in tl.static_range(CONV_K):
                # forward: z[c] += w[j] * s[c + j - pad]
                src, ok = _shifted(c, j - PAD, c_mask, C, CIRCULAR)
                m2 = n_mask[:, None] & ok[None, :]
                s = fold_split(part_ptr, row + src[None, :], m2, SPLIT_P, NC, False)
                dw = tl.where(k == j, dw + tl.sum(tl.sum(dz * s, axis=1), axis=0), dw)
                if NEED_DX:
                    # transpose: ds[c] += w[j] * dz[c - j + pad]
                    dst, ok2 = _shifted(c, PAD - j, c_mask, C, CIRCULAR)
                    m3 = n_mask[:, None] & ok2[None, :]
                    dzj = gate_backward_from_output(
                        tl.load(g_ptr + row + dst[None, :], mask=m3, other=0.0),
                        fold_split(dg_part_ptr, row + dst[None, :], m3, SPLIT_G, NC, False), GATE)
                    ds += tl.load(w_ptr + j).to(ACC) * tl.where(m3, dzj, 0.0)
            if NEED_DX:
                tl.store(dmean_ptr + offs, ds / HW, mask=mask)
    tl.store(dw_part_ptr + pid * FOLD_K + k, dw)
