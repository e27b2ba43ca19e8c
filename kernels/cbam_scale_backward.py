"""CBAM backward passes 4-6 (read dy, read x, write dx), every path to x in
one kernel:

    dx = ca * (dy * sa + dmean_px + (x * ca == smax) * dmax_px)     via x1 = x * ca
       + dmean_ch + (x == amax) * dmax_ch                           via the channel pooling

``*_px`` are [N, H*W] per-pixel coefficients (the spatial statistics'
gradients divided by C and by the tie count), ``*_ch`` are [N, C] (the pooled
gradients divided by H*W and by the tie count).
"""
import triton
import triton.language as tl

from .tiles import elementwise_tile, tile_offsets


@triton.jit
def cbam_scale_backward_kernel(
    dy_ptr,
    x_ptr,
    dx_ptr,
    ca_ptr,
    amax_ptr,
    dmean_ch_ptr,
    dmax_ch_ptr,
    sa_ptr,
    smax_ptr,
    dmean_px_ptr,
    dmax_px_ptr,
    C,
    HW,
    num_c_blocks,
    num_hw_blocks,
    dy_batch_stride,
    dy_chan_stride,
    dy_hw_stride,
    x_batch_stride,
    x_chan_stride,
    x_hw_stride,
    dx_batch_stride,
    dx_chan_stride,
    dx_hw_stride,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    """Args:
        dy_ptr, x_ptr, dx_ptr: [N, C, H*W], each with its own strides.
        ca_ptr, amax_ptr, dmean_ch_ptr, dmax_ch_ptr: [N, C].
        sa_ptr, smax_ptr, dmean_px_ptr, dmax_px_ptr: [N, H*W].
        Small buffers: contiguous, accumulation dtype (fp32, fp64 for fp64 x).
    Grid: (N * num_c_blocks * num_hw_blocks,), hw blocks fastest.
    """
    ACC = ca_ptr.dtype.element_ty
    n64, c, hw, c_mask, hw_mask = elementwise_tile(tl.program_id(0), C, HW, num_c_blocks, num_hw_blocks, BLOCK_C, BLOCK_HW)
    mask = c_mask[:, None] & hw_mask[None, :]
    nc = n64 * C + c
    nhw = n64 * HW + hw

    g = tl.load(ca_ptr + nc, mask=c_mask, other=0.0)
    m = tl.load(amax_ptr + nc, mask=c_mask, other=0.0)
    dmean_ch = tl.load(dmean_ch_ptr + nc, mask=c_mask, other=0.0)
    dmax_ch = tl.load(dmax_ch_ptr + nc, mask=c_mask, other=0.0)
    s = tl.load(sa_ptr + nhw, mask=hw_mask, other=0.0)
    sx = tl.load(smax_ptr + nhw, mask=hw_mask, other=0.0)
    dmean_px = tl.load(dmean_px_ptr + nhw, mask=hw_mask, other=0.0)
    dmax_px = tl.load(dmax_px_ptr + nhw, mask=hw_mask, other=0.0)

    x = tl.load(x_ptr + tile_offsets(n64, c, hw, x_batch_stride, x_chan_stride, x_hw_stride), mask=mask, other=0.0).to(ACC)
    dy = tl.load(dy_ptr + tile_offsets(n64, c, hw, dy_batch_stride, dy_chan_stride, dy_hw_stride), mask=mask, other=0.0).to(ACC)
    # where, not multiply: 0 * inf would turn untouched elements into NaN. A
    # NaN max (m != m) reaches every element of its slice, as in torch.amax's
    # backward; the host passes a NaN coefficient for it.
    hit_px = (x * g[:, None] == sx[None, :]) | (sx != sx)[None, :]
    hit_ch = (x == m[:, None]) | (m != m)[:, None]
    dx1 = dy * s[None, :] + dmean_px[None, :] + tl.where(hit_px, dmax_px[None, :], 0.0)
    dx = g[:, None] * dx1 + dmean_ch[:, None] + tl.where(hit_ch, dmax_ch[:, None], 0.0)
    tl.store(dx_ptr + tile_offsets(n64, c, hw, dx_batch_stride, dx_chan_stride, dx_hw_stride), dx.to(dx_ptr.dtype.element_ty), mask=mask)
