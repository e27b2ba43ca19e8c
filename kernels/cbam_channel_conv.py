"""The seed article's "Conv" channel attention of CBAM on [N, C]:

    ca = gate(conv1d_k(mean) + conv1d_k(max)) = gate(conv1d_k(a * mean + a * max))

(the conv is linear; a = 1, or 0.5 for the light block, whose input is the
average of the two), one odd filter across channels with zero padding.
Forward: ``conv_channel_gate``, evaluated per channel chunk inside the
per-pixel statistics kernel from the pooling partials (no launch of its
own). Backward: ``cbam_conv_gate_backward_kernel``, one launch between the
channel-gradient pass and the dx pass, the conv weight's gradient partials
folded by the dx pass's program 0.
"""
import triton
import triton.language as tl

from .gate_math import apply_gate, gate_backward_from_output
from .pooled import fold_split


@triton.jit
def conv_channel_gate(part_ptr, w_ptr, n64, c, c_mask, C, SPLIT, split_stride, row_stride, scale,
                      CONV_K: tl.constexpr, GATE: tl.constexpr):
    """(ca, mean, max) for a vector of channels of one sample, the pooled
    statistics folded from the pooling partials ``part_ptr`` [2, SPLIT, N, C]
    (row 0 means, row 1 maxima; ``row_stride`` = SPLIT * N * C)."""
    ACC = part_ptr.dtype.element_ty
    PAD: tl.constexpr = (CONV_K - 1) // 2
    z = tl.zeros(c.shape, dtype=ACC)
    mean_c = z
    max_c = z
    for j in tl.static_range(CONV_K):
        src = c + (j - PAD)
        ok = c_mask & (src >= 0) & (src < C)
        mean = fold_split(part_ptr, n64 * C + src, ok, SPLIT, split_stride, False)
        mx = fold_split(part_ptr + row_stride, n64 * C + src, ok, SPLIT, split_stride, True)
        z += tl.load(w_ptr + j).to(ACC) * tl.where(ok, scale * mean + scale * mx, 0.0)
        if j == PAD:
            mean_c = mean
            max_c = mx
    return apply_gate(z, GATE), mean_c, max_c


@triton.jit
def _dz(dg_part_ptr, ca_ptr, offs, mask, SPLIT, NC, GATE: tl.constexpr):
    # The channel gate's gradient: both gradient passes' partials, folded.
    dg = fold_split(dg_part_ptr, offs, mask, SPLIT, NC, False) + fold_split(dg_part_ptr + SPLIT * NC, offs, mask, SPLIT, NC, False)
    return tl.where(mask, gate_backward_from_output(tl.load(ca_ptr + offs, mask=mask, other=0.0), dg, GATE), 0.0)


@triton.jit
def cbam_conv_gate_backward_kernel(
    dg_part_ptr,
    cnt_part_ptr,
    ca_ptr,
    pooled_ptr,
    w_ptr,
    dmean_ptr,
    dmax_ptr,
    dw_part_ptr,
    N,
    C,
    HW,
    SPLIT,
    c_per_program,
    scale,
    CONV_K: tl.constexpr,
    GATE: tl.constexpr,
    NEED_DX: tl.constexpr,
    FOLD_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Args:
        dg_part_ptr: [2, SPLIT, N, C] partial sums of the channel gate's
            gradient (the two gradient passes' per-pixel-strip partials).
        cnt_part_ptr: [SPLIT, N, C] partial tie counts of the pooled max.
        ca_ptr: [N, C] the gate; pooled_ptr: [2, N, C] (mean, max).
        w_ptr: [CONV_K] taps (any float dtype).
        dmean_ptr, dmax_ptr: [N, C] out (NEED_DX): the dx pass's coefficients,
            d mean / H*W and d max / ties (NaN where the max is NaN).
        dw_part_ptr: [PROGRAMS, FOLD_K] out: the taps' gradient partials.
    Grid: (PROGRAMS,), each program a range of channels and every sample.
    """
    ACC = ca_ptr.dtype.element_ty
    PAD: tl.constexpr = (CONV_K - 1) // 2
    pid = tl.program_id(0)
    c_start = pid * c_per_program
    c_stop = tl.minimum(c_start + c_per_program, C)
    NC = (tl.zeros([], dtype=tl.int64) + N) * C  # (an int 1 arrives as a constant)
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
            dz = _dz(dg_part_ptr, ca_ptr, offs, mask, SPLIT, NC, GATE)
            ds = tl.zeros([BLOCK_N, BLOCK_C], dtype=ACC)
            # A loop, not unrolled: unrolled, every tap's addresses are
            # hoisted and live at once (~150 registers a thread).
            for j in range(CONV_K):
                # forward: z[c] += w[j] * s[c + j - pad], s = a * mean + a * max
                src = c + (j - PAD)
                m2 = n_mask[:, None] & (c_mask & (src >= 0) & (src < C))[None, :]
                mean = tl.load(pooled_ptr + row + src[None, :], mask=m2, other=0.0)
                mx = tl.load(pooled_ptr + NC + row + src[None, :], mask=m2, other=0.0)
                s = tl.where(m2, scale * mean + scale * mx, 0.0)
                dw = tl.where(k == j, dw + tl.sum(tl.sum(dz * s, axis=1), axis=0), dw)
                if NEED_DX:
                    # transpose: ds[c] += w[j] * dz[c - j + pad]
                    dst = c + (PAD - j)
                    m3 = n_mask[:, None] & (c_mask & (dst >= 0) & (dst < C))[None, :]
                    ds += tl.load(w_ptr + j).to(ACC) * _dz(dg_part_ptr, ca_ptr, row + dst[None, :], m3, SPLIT, NC, GATE)
            if NEED_DX:
                ds = ds * scale
                tl.store(dmean_ptr + offs, ds / HW, mask=mask)
                cnt = fold_split(cnt_part_ptr, offs, mask, SPLIT, NC, False)
                tl.store(dmax_ptr + offs, tl.where(cnt > 0, ds / tl.maximum(cnt, 1.0), float("nan")), mask=mask)
    tl.store(dw_part_ptr + pid * FOLD_K + k, dw)
