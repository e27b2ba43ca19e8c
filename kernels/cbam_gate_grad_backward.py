"""CBAM backward passes 1-2 (read dy and x once): everything the gates'
gradients need from dy, computed per strip of pixels while looping over C:

    dsa[n, hw]     = sum_c dy * x * ca                  (spatial gate grad)
    cnt_sx[n, hw]  = #{c : x * ca == amax_c(x * ca)}    (spatial max ties)
    dca1[n, c]    += sum_hw dy * x * sa                 (channel gate grad, first part)
    cnt_max[n, c] += #{hw : x == amax_hw(x)}            (channel max ties)

torch.amax splits its gradient evenly between tied maxima, hence the counts.
The [N, H*W] sums are written per C split (folded by the spatial branch's
backward), the [N, C] sums per pixel strip (folded by the channel gate's
backward), each in a fixed order (deterministic, no atomics).
"""
import triton
import triton.language as tl

from .spatial_stats import channel_slab, pixel_strip


@triton.jit
def cbam_gate_grad_kernel(
    dy_ptr,
    x_ptr,
    ca_ptr,
    sa_ptr,
    smax_ptr,
    amax_ptr,
    dsa_ptr,
    cnt_sx_ptr,
    dca_ptr,
    cnt_max_ptr,
    C,
    HW,
    c_per_split,
    num_hw_blocks,
    x_batch_stride,
    x_chan_stride,
    x_hw_stride,
    dy_batch_stride,
    dy_chan_stride,
    dy_hw_stride,
    pix_split_stride,
    chan_block_stride,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    """Args:
        dy_ptr, x_ptr: [N, C, H*W], each with its own strides.
        ca_ptr, amax_ptr: [N, C] channel gate and pooled amax over H*W.
        sa_ptr, smax_ptr: [N, H*W] spatial gate and amax over C of x * ca.
        dsa_ptr, cnt_sx_ptr: [SPLIT, N, H*W] partials over one C split;
            ``pix_split_stride`` = N * H*W.
        dca_ptr, cnt_max_ptr: [num_hw_blocks, N, C] partials over one pixel
            strip; ``chan_block_stride`` = N * C.
        All small buffers are contiguous and share the accumulation dtype
        (fp32, fp64 for fp64 inputs).
    Grid: (N * num_hw_blocks, SPLIT).
    """
    ACC = ca_ptr.dtype.element_ty
    split = tl.program_id(1)
    n64, hwb, hw, hw_mask, c_start, c_stop = pixel_strip(tl.program_id(0), split, C, HW, c_per_split, num_hw_blocks, BLOCK_HW)
    hw64 = hw.to(tl.int64)[None, :]
    x_base = x_ptr + n64 * x_batch_stride + hw64 * x_hw_stride
    dy_base = dy_ptr + n64 * dy_batch_stride + hw64 * dy_hw_stride
    s = tl.load(sa_ptr + n64 * HW + hw, mask=hw_mask, other=0.0)
    sx = tl.load(smax_ptr + n64 * HW + hw, mask=hw_mask, other=0.0)
    chan_row = hwb.to(tl.int64) * chan_block_stride + n64 * C

    dsa = tl.zeros([BLOCK_HW], dtype=ACC)
    cnt_sx = tl.zeros([BLOCK_HW], dtype=ACC)
    for c0 in range(c_start, c_stop, BLOCK_C):
        c, c_mask, mask = channel_slab(c0, c_stop, hw_mask, BLOCK_C)
        c64 = c.to(tl.int64)[:, None]
        x = tl.load(x_base + c64 * x_chan_stride, mask=mask, other=0.0).to(ACC)
        dy = tl.load(dy_base + c64 * dy_chan_stride, mask=mask, other=0.0).to(ACC)
        g = tl.load(ca_ptr + n64 * C + c, mask=c_mask, other=0.0)
        m = tl.load(amax_ptr + n64 * C + c, mask=c_mask, other=0.0)
        x1 = x * g[:, None]
        dyx = dy * x
        dsa += tl.sum(dyx * g[:, None], axis=0)
        cnt_sx += tl.sum(tl.where(mask & (x1 == sx[None, :]), 1.0, 0.0), axis=0)
        tl.store(dca_ptr + chan_row + c, tl.sum(dyx * s[None, :], axis=1), mask=c_mask)
        tl.store(cnt_max_ptr + chan_row + c, tl.sum(tl.where(mask & (x == m[:, None]), 1.0, 0.0), axis=1), mask=c_mask)

    out_off = split.to(tl.int64) * pix_split_stride + n64 * HW + hw
    tl.store(dsa_ptr + out_off, dsa, mask=hw_mask)
    tl.store(cnt_sx_ptr + out_off, cnt_sx, mask=hw_mask)
