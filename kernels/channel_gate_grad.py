"""Backward pass 1 of the channel gate: dg[n, c] = sum_hw dy * x, and the
number of elements tied with the pooled max (torch.amax splits its gradient
evenly between tied maxima, so the dx pass needs that count).

Pass accounting (SE/ECA backward): reads dy and x once (2 passes).
"""
import triton
import triton.language as tl


@triton.jit
def channel_gate_grad_kernel(
    dy_ptr,
    x_ptr,
    max_ptr,
    dg_ptr,
    cnt_ptr,
    C,
    HW,
    hw_per_split,
    num_c_blocks,
    x_batch_stride,
    x_chan_stride,
    x_hw_stride,
    dy_batch_stride,
    dy_chan_stride,
    dy_hw_stride,
    out_split_stride,
    HAS_DY: tl.constexpr,
    COUNT_TIES: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    """Args:
        dy_ptr, x_ptr: [N, C, H*W] with their own strides (dy is often a
            fresh contiguous tensor while x is channels_last, or the reverse).
        max_ptr: fp32 [N, C] pooled amax, read only when COUNT_TIES.
        dg_ptr: fp32 [SPLIT, N, C] partial sums of dy * x (written when HAS_DY).
        cnt_ptr: [SPLIT, N, C] partial counts of x == max (when COUNT_TIES).
        All [N, C] buffers share one dtype: fp32, or fp64 for fp64 inputs.
        Unused pointers get a valid buffer of that dtype.
    Grid: (N * num_c_blocks, SPLIT).
    """
    ACC = dg_ptr.dtype.element_ty  # fp32, or fp64 for fp64 inputs
    pid = tl.program_id(0)
    split = tl.program_id(1)
    n = pid // num_c_blocks
    cb = pid % num_c_blocks

    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    n64 = n.to(tl.int64)
    c64 = c.to(tl.int64)[:, None]
    x_base = x_ptr + n64 * x_batch_stride + c64 * x_chan_stride
    dy_base = dy_ptr + n64 * dy_batch_stride + c64 * dy_chan_stride
    if COUNT_TIES:
        m = tl.load(max_ptr + n64 * C + c, mask=c_mask, other=0.0)

    hw_start = split * hw_per_split
    hw_stop = tl.minimum(hw_start + hw_per_split, HW)
    acc = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
    cnt = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
    for hw0 in range(hw_start, hw_stop, BLOCK_HW):
        hw = hw0 + tl.arange(0, BLOCK_HW)
        hw64 = hw.to(tl.int64)[None, :]
        mask = c_mask[:, None] & (hw < hw_stop)[None, :]
        x = tl.load(x_base + hw64 * x_hw_stride, mask=mask, other=0.0).to(ACC)
        if HAS_DY:
            dy = tl.load(dy_base + hw64 * dy_hw_stride, mask=mask, other=0.0).to(ACC)
            acc += dy * x
        if COUNT_TIES:
            cnt += tl.where(mask & (x == m[:, None]), 1.0, 0.0)

    out_off = split.to(tl.int64) * out_split_stride + n64 * C + c
    if HAS_DY:
        tl.store(dg_ptr + out_off, tl.sum(acc, axis=1), mask=c_mask)
    if COUNT_TIES:
        tl.store(cnt_ptr + out_off, tl.sum(cnt, axis=1), mask=c_mask)
