"""Spatial statistics of CBAM's channel-gated tensor, per pixel over C:

    mean_c(x * ca[n, c]) and amax_c(x * ca[n, c])

x1 = x * ca is formed in registers and never written: CBAM forward pass 2
(reads x once). The product is rounded to the accumulation dtype exactly as
the backward kernels recompute it, so their ``x1 == amax`` tie tests agree.

With the seed's "Conv" channel attention (CONV_K > 0) the channel gate is
computed here, per channel chunk, from the pooling partials (the K-tap conv
of kernels/cbam_channel_conv.py): no gate launch; the programs of the first
pixel strip store it (and the folded pooled statistics) for the later passes.
"""
import triton
import triton.language as tl

from .cbam_channel_conv import conv_channel_gate


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
    part_ptr,
    pool_part_ptr,
    pooled_ptr,
    w_ptr,
    C,
    HW,
    c_per_split,
    num_hw_blocks,
    x_batch_stride,
    x_chan_stride,
    x_hw_stride,
    out_split_stride,
    POOL_SPLIT,
    pool_split_stride,
    conv_scale,
    CONV_K: tl.constexpr,
    GATE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    """Reduces one BLOCK_HW strip of pixels of one sample over one C split.

    Args:
        x_ptr: input [N, C, H*W], strides ``x_batch_stride``, ``x_chan_stride``,
            ``x_hw_stride`` in elements (NCHW or channels_last alike).
        ca_ptr: channel gate [N, C], contiguous, in the accumulation dtype
            (fp32, fp64 for fp64 x); read, or with CONV_K > 0 computed here
            and stored by the programs of strip 0.
        part_ptr: [2, SPLIT, N, H*W] out: row 0 the partial means (split sum
            / C), row 1 the partial amax (NaN if any element is NaN, as
            torch.amax); folded in a fixed order by the spatial-branch kernel.
        pool_part_ptr: [2, POOL_SPLIT, N, C] the pooling partials (mean, max),
            read with CONV_K > 0; pooled_ptr: [2, N, C] out, their fold.
        w_ptr: [CONV_K] the channel conv's taps; conv_scale: 1, or 0.5 (light).
        c_per_split: channels per split, a multiple of BLOCK_C.
        out_split_stride: N * H*W; pool_split_stride: N * C.
    Grid: (N * num_hw_blocks, SPLIT).
    """
    ACC = part_ptr.dtype.element_ty
    split = tl.program_id(1)
    n64, hwb, hw, hw_mask, c_start, c_stop = pixel_strip(tl.program_id(0), split, C, HW, c_per_split, num_hw_blocks, BLOCK_HW)
    base = x_ptr + n64 * x_batch_stride + hw.to(tl.int64)[None, :] * x_hw_stride
    # Per-pixel accumulators, reduced over each slab's channels as it comes
    # (tile-sized ones would triple the registers).
    acc_sum = tl.zeros([BLOCK_HW], dtype=ACC)
    acc_max = tl.full([BLOCK_HW], float("-inf"), dtype=ACC)
    # NaNs are counted, not propagated through the max: tl.reduce with a
    # NaN-propagating combine function runs ~10x slower under the interpreter.
    acc_nan = tl.zeros([BLOCK_HW], dtype=tl.int32)
    for c0 in range(c_start, c_stop, BLOCK_C):
        c, c_mask, mask = channel_slab(c0, c_stop, hw_mask, BLOCK_C)
        x = tl.load(base + c.to(tl.int64)[:, None] * x_chan_stride, mask=mask, other=0.0).to(ACC)
        if CONV_K > 0:
            NC = tl.zeros([], dtype=tl.int64) + pool_split_stride  # (an int 1 arrives as a constant)
            g, mean, mx = conv_channel_gate(pool_part_ptr, w_ptr, n64, c, c_mask, C, POOL_SPLIT, NC, POOL_SPLIT * NC,
                                            conv_scale, CONV_K, GATE)
            first = c_mask & (hwb == 0)
            tl.store(ca_ptr + n64 * C + c, g, mask=first)
            tl.store(pooled_ptr + n64 * C + c, mean, mask=first)
            tl.store(pooled_ptr + NC + n64 * C + c, mx, mask=first)
        else:
            g = tl.load(ca_ptr + n64 * C + c, mask=c_mask, other=0.0)
        x1 = x * g[:, None]
        acc_sum += tl.sum(x1, axis=0)
        acc_max = tl.maximum(acc_max, tl.max(tl.where(mask, x1, float("-inf")), axis=0))
        acc_nan += tl.sum((x1 != x1).to(tl.int32), axis=0)

    out_off = split.to(tl.int64) * out_split_stride + n64 * HW + hw
    row_stride = tl.num_programs(1).to(tl.int64) * out_split_stride
    tl.store(part_ptr + out_off, acc_sum / C, mask=hw_mask)
    amax = tl.where(acc_nan > 0, float("nan"), acc_max)
    tl.store(part_ptr + row_stride + out_off, amax, mask=hw_mask)
