"""Fused attention tail, backward pass 1 (reads dy, z, and y for ReLU or the
shortcut for other activations; writes e): with e = dy * act'(u) and
e' = d[n] e (drop_path's factor),

    e          -> the shortcut's gradient (and the dz pass's input)
    dg[n, c]   = sum_hw e' * bn(z)           the gate's gradient
    S1[n, c]   = sum_hw e'                   } BatchNorm's backward, composed
    T[n, c]    = sum_hw e' * xhat            } later from these N x C sums
    ties[n, c] = #{hw : z == ext[n, c]}      max pooling: torch.amax's even split

per split of H*W (partials folded by their consumers). For ReLU, act'(u)
comes from the saved output (torch's threshold_backward on y); other
activations recompute u = A z + B + shortcut. The tie test compares with
ext = max_hw z (min where a < 0: the extreme of z that is bn(z)'s max),
which the forward stored.
"""
import triton
import triton.language as tl

from .gate_math import act_backward
from .tail_apply import tail_coefficients


@triton.jit
def tail_grad_kernel(
    dy_ptr,
    y_ptr,
    z_ptr,
    s_ptr,
    e_ptr,
    chan_ptr,
    g_ptr,
    d_ptr,
    part_ptr,
    zstat_ptr,
    C,
    HW,
    hw_per_split,
    num_c_blocks,
    act_param,
    dy_batch_stride,
    dy_chan_stride,
    dy_hw_stride,
    y_batch_stride,
    y_chan_stride,
    y_hw_stride,
    z_batch_stride,
    z_chan_stride,
    z_hw_stride,
    s_batch_stride,
    s_chan_stride,
    s_hw_stride,
    e_batch_stride,
    e_chan_stride,
    e_hw_stride,
    split_stride,
    HAS_GATE: tl.constexpr,
    HAS_SHORTCUT: tl.constexpr,
    HAS_DROP: tl.constexpr,
    ACT: tl.constexpr,
    TIES: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    """Args:
        dy_ptr, y_ptr, z_ptr, s_ptr, e_ptr: [N, C, H*W] with their own strides
            (y read for ReLU, s for activations that recompute u).
        chan_ptr: [4, C] a, b, mu, rstd; g_ptr: [N, C] the gate (HAS_GATE);
        d_ptr: [N] drop_path factors (HAS_DROP).
        part_ptr: [4, SPLIT, N, C] out: dg, S1, T, ties; ``split_stride`` = N*C.
        zstat_ptr: [2, N, C] the forward's m and ext of z.
    Grid: (N * num_c_blocks, SPLIT).
    """
    ACC = chan_ptr.dtype.element_ty
    pid = tl.program_id(0)
    split = tl.program_id(1)
    n = pid // num_c_blocks
    n64 = n.to(tl.int64)
    c0 = (pid % num_c_blocks) * BLOCK_C
    c = c0 + tl.arange(0, BLOCK_C)
    c_mask = c < C
    A, B, g, _, _ = tail_coefficients(chan_ptr, g_ptr, chan_ptr, chan_ptr, chan_ptr, d_ptr, n64, c0, C, 1, 0, BLOCK_C,
                                      BLOCK_C, 0 if HAS_GATE else 2, 1, False, False, 0, HAS_DROP)
    a = tl.load(chan_ptr + c, mask=c_mask, other=0.0)
    b = tl.load(chan_ptr + C + c, mask=c_mask, other=0.0)
    mu = tl.load(chan_ptr + 2 * C + c, mask=c_mask, other=0.0)
    rstd = tl.load(chan_ptr + 3 * C + c, mask=c_mask, other=0.0)
    if HAS_DROP:
        dn = tl.load(d_ptr + n64).to(ACC)
    else:
        dn = 1.0

    nc = n64 * C + c
    ext = tl.load(zstat_ptr + split_stride + nc, mask=c_mask, other=0.0)

    hw_start = split * hw_per_split
    hw_stop = tl.minimum(hw_start + hw_per_split, HW)
    c64 = c.to(tl.int64)[:, None]
    acc_s1 = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
    acc_t = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
    acc_ties = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
    for hw0 in range(hw_start, hw_stop, BLOCK_HW):
        hw = hw0 + tl.arange(0, BLOCK_HW)
        hw64 = hw.to(tl.int64)[None, :]
        mask = c_mask[:, None] & (hw < hw_stop)[None, :]
        dy = tl.load(dy_ptr + n64 * dy_batch_stride + c64 * dy_chan_stride + hw64 * dy_hw_stride, mask=mask, other=0.0).to(ACC)
        z = tl.load(z_ptr + n64 * z_batch_stride + c64 * z_chan_stride + hw64 * z_hw_stride, mask=mask, other=0.0).to(ACC)
        if ACT == 1:
            y = tl.load(y_ptr + n64 * y_batch_stride + c64 * y_chan_stride + hw64 * y_hw_stride, mask=mask, other=0.0)
            e = tl.where(y.to(ACC) <= 0.0, 0.0, dy)
        elif ACT == 0:
            e = dy
        else:
            u = A[:, None] * z + B[:, None]
            if HAS_SHORTCUT:
                u += tl.load(s_ptr + n64 * s_batch_stride + c64 * s_chan_stride + hw64 * s_hw_stride, mask=mask, other=0.0).to(ACC)
            e = act_backward(u, dy, act_param, ACT)
        e = tl.where(mask, e, 0.0)
        tl.store(e_ptr + n64 * e_batch_stride + c64 * e_chan_stride + hw64 * e_hw_stride, e.to(e_ptr.dtype.element_ty), mask=mask)
        # the dz pass reads e back as stored: sum what it will see
        e1 = e.to(e_ptr.dtype.element_ty).to(ACC) * dn
        acc_s1 += e1
        acc_t += e1 * ((z - mu[:, None]) * rstd[:, None])
        if TIES:
            acc_ties += tl.where(mask & (z == ext[:, None]), 1.0, 0.0)
    s1 = tl.sum(acc_s1, axis=1)
    t = tl.sum(acc_t, axis=1)
    out = split.to(tl.int64) * split_stride + nc
    rows = tl.num_programs(1).to(tl.int64) * split_stride
    if HAS_GATE:
        # bn(z) = a z + b = (a / rstd) xhat + (a mu + b): the gate's sum from
        # the two BatchNorm sums, one accumulator fewer in the loop
        tl.store(part_ptr + out, (a / rstd) * t + (a * mu + b) * s1, mask=c_mask)
    tl.store(part_ptr + rows + out, s1, mask=c_mask)
    tl.store(part_ptr + 2 * rows + out, t, mask=c_mask)
    if TIES:
        tl.store(part_ptr + 3 * rows + out, tl.sum(acc_ties, axis=1), mask=c_mask)
