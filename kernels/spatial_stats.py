"""Spatial statistics of CBAM's channel-gated tensor, per pixel over C:

    mean_c(x * ca[n, c]) and amax_c(x * ca[n, c])

x1 = x * ca is formed in registers and never written: CBAM forward pass 2
(reads x once). The product is rounded to the accumulation dtype exactly as
the backward kernels recompute it, so their ``x1 == amax`` tie tests agree.
"""
import triton
import triton.language as tl


@triton.jit
def pixel_strip(pid, split, C, HW, c_per_split, num_hw_blocks, BLOCK_HW: tl.constexpr):
    """(n as int64, strip index, pixels, pixel mask, first channel, channel
    stop) of one program of CBAM's per-pixel reductions over C: grid
    (N * num_hw_blocks, SPLIT), each split owning ``c_per_split`` channels."""
    hwb = pid % num_hw_blocks
    hw = hwb * BLOCK_HW + tl.arange(0, BLOCK_HW)
    c_start = split * c_per_split
    return (pid // num_hw_blocks).to(tl.int64), hwb, hw, hw < HW, c_start, tl.minimum(c_start + c_per_split, C)


@triton.jit
def channel_slab(c0, c_stop, hw_mask, BLOCK_C: tl.constexpr):
    """(channels, channel mask, tile mask) of one step of the loop over C."""
    c = c0 + tl.arange(0, BLOCK_C)
    c_mask = c < c_stop
    return c, c_mask, c_mask[:, None] & hw_mask[None, :]


@triton.jit
def spatial_stats_kernel(
    x_ptr,
    ca_ptr,
    mean_ptr,
    max_ptr,
    C,
    HW,
    c_per_split,
    num_hw_blocks,
    x_batch_stride,
    x_chan_stride,
    x_hw_stride,
    out_split_stride,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    """Reduces one BLOCK_HW strip of pixels of one sample over one C split.

    Args:
        x_ptr: input [N, C, H*W], strides ``x_batch_stride``, ``x_chan_stride``,
            ``x_hw_stride`` in elements (NCHW or channels_last alike).
        ca_ptr: channel gate [N, C], contiguous, in the accumulation dtype
            (fp32, fp64 for fp64 x).
        mean_ptr: [SPLIT, N, H*W] partial means (split sum / C); the host sums
            the SPLIT rows in a fixed order (deterministic).
        max_ptr: [SPLIT, N, H*W] partial amax (NaN if any element is NaN, as torch.amax).
        c_per_split: channels per split, a multiple of BLOCK_C.
        out_split_stride: N * H*W.
    Grid: (N * num_hw_blocks, SPLIT).
    """
    ACC = mean_ptr.dtype.element_ty
    split = tl.program_id(1)
    n64, _, hw, hw_mask, c_start, c_stop = pixel_strip(tl.program_id(0), split, C, HW, c_per_split, num_hw_blocks, BLOCK_HW)
    base = x_ptr + n64 * x_batch_stride + hw.to(tl.int64)[None, :] * x_hw_stride
    acc_sum = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
    acc_max = tl.full([BLOCK_C, BLOCK_HW], float("-inf"), dtype=ACC)
    # NaNs are counted, not propagated through the max: tl.reduce with a
    # NaN-propagating combine function runs ~10x slower under the interpreter.
    acc_nan = tl.zeros([BLOCK_C, BLOCK_HW], dtype=tl.int32)
    for c0 in range(c_start, c_stop, BLOCK_C):
        c, c_mask, mask = channel_slab(c0, c_stop, hw_mask, BLOCK_C)
        x = tl.load(base + c.to(tl.int64)[:, None] * x_chan_stride, mask=mask, other=0.0).to(ACC)
        g = tl.load(ca_ptr + n64 * C + c, mask=c_mask, other=0.0)
        x1 = x * g[:, None]
        acc_sum += x1
        acc_max = tl.maximum(acc_max, tl.where(mask, x1, float("-inf")))
        acc_nan += (x1 != x1).to(tl.int32)

    out_off = split.to(tl.int64) * out_split_stride + n64 * HW + hw
    tl.store(mean_ptr + out_off, tl.sum(acc_sum, axis=0) / C, mask=hw_mask)
    amax = tl.where(tl.sum(acc_nan, axis=0) > 0, float("nan"), tl.max(acc_max, axis=0))
    tl.store(max_ptr + out_off, amax, mask=hw_mask)
