"""Global pooling over H*W, one pass over x: mean and/or amax per (n, c).

Pass accounting (SE/ECA forward): this kernel is pass 1 (reads x once).
"""
import triton
import triton.language as tl

from .reduce_utils import max_propagate_nan


@triton.jit
def channel_pool_kernel(
    x_ptr,
    mean_ptr,
    max_ptr,
    C,
    HW,
    hw_per_split,
    num_c_blocks,
    x_batch_stride,
    x_chan_stride,
    x_hw_stride,
    out_split_stride,
    COMPUTE_MEAN: tl.constexpr,
    COMPUTE_MAX: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    """Pools one BLOCK_C slab of channels of one sample over one H*W split.

    Args:
        x_ptr: input, logical shape [N, C, H*W] (H and W merged by the host),
            strides ``x_batch_stride``, ``x_chan_stride``, ``x_hw_stride``
            in elements: NCHW has hw stride 1, channels_last has chan stride 1.
        mean_ptr: fp32 (fp64 for fp64 x) [SPLIT, N, C]: partial means (split sum / H*W) of each split;
            the host sums the SPLIT rows in a fixed order (deterministic).
        max_ptr: same dtype as mean_ptr, [SPLIT, N, C]: partial amax of each split (NaN propagates).
        hw_per_split: H*W elements per split, a multiple of BLOCK_HW.
        out_split_stride: N * C, the distance between two split rows.
    Grid: (N * num_c_blocks, SPLIT).
    """
    # fp32 for fp32/fp16/bf16 inputs, fp64 for fp64 (gradcheck): the host
    # allocates the pooled buffers in the accumulation dtype.
    ACC = max_ptr.dtype.element_ty
    pid = tl.program_id(0)
    split = tl.program_id(1)
    n = pid // num_c_blocks
    cb = pid % num_c_blocks

    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    # int64 offsets: N*C*H*W can pass 2**31 elements on large batches.
    base = x_ptr + n.to(tl.int64) * x_batch_stride
    c_off = c.to(tl.int64)[:, None] * x_chan_stride

    hw_start = split * hw_per_split
    hw_stop = tl.minimum(hw_start + hw_per_split, HW)

    acc_sum = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
    acc_max = tl.full([BLOCK_C, BLOCK_HW], float("-inf"), dtype=ACC)
    for hw0 in range(hw_start, hw_stop, BLOCK_HW):
        hw = hw0 + tl.arange(0, BLOCK_HW)
        mask = c_mask[:, None] & (hw < hw_stop)[None, :]
        ptrs = base + c_off + hw.to(tl.int64)[None, :] * x_hw_stride
        v = tl.load(ptrs, mask=mask, other=0.0).to(ACC)
        if COMPUTE_MEAN:
            acc_sum += v
        if COMPUTE_MAX:
            acc_max = max_propagate_nan(acc_max, tl.where(mask, v, float("-inf")))

    out_off = split.to(tl.int64) * out_split_stride + n.to(tl.int64) * C + c
    if COMPUTE_MEAN:
        tl.store(mean_ptr + out_off, tl.sum(acc_sum, axis=1) / HW, mask=c_mask)
    if COMPUTE_MAX:
        tl.store(max_ptr + out_off, tl.reduce(acc_max, 1, max_propagate_nan), mask=c_mask)
