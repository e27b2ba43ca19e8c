"""Backward pass 2 of a channel-attention block, everything that reaches x:

    dx = dy * g[n, c] + dmean[n, c] + (x == max[n, c]) * dmax[n, c]

``dmean`` is the pooled-mean gradient already divided by H*W, ``dmax`` the
pooled-max gradient already divided by the tie count, so the broadcast of the
pooling gradients costs no extra pass.

Pass accounting (SE/ECA backward): reads dy (pass 3), writes dx (pass 4);
reads x as well only when a max pooling is differentiated (pass 5).
"""
import triton
import triton.language as tl

from .tiles import elementwise_tile, tile_offsets


@triton.jit
def channel_scale_backward_kernel(
    dy_ptr,
    x_ptr,
    dx_ptr,
    g_ptr,
    dmean_ptr,
    dmax_ptr,
    max_ptr,
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
    HAS_DY: tl.constexpr,
    HAS_MEAN: tl.constexpr,
    HAS_MAX: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    """Args:
        dy_ptr, x_ptr, dx_ptr: [N, C, H*W], each with its own strides.
        g_ptr, dmean_ptr, dmax_ptr, max_ptr: [N, C], one dtype (fp32, fp64 for
            fp64 inputs); unused ones get any valid buffer of it.
        HAS_DY: add dy * g (off for a pooling-only backward).
    Grid: (N * num_c_blocks * num_hw_blocks,).
    """
    ACC = dmean_ptr.dtype.element_ty  # fp32, or fp64 for fp64 inputs
    n64, c, hw, c_mask, hw_mask = elementwise_tile(tl.program_id(0), C, HW, num_c_blocks, num_hw_blocks, BLOCK_C, BLOCK_HW)
    nc = n64 * C + c
    mask = c_mask[:, None] & hw_mask[None, :]

    dx = tl.zeros([BLOCK_C, BLOCK_HW], dtype=ACC)
    if HAS_DY:
        g = tl.load(g_ptr + nc, mask=c_mask, other=0.0)
        dy = tl.load(dy_ptr + tile_offsets(n64, c, hw, dy_batch_stride, dy_chan_stride, dy_hw_stride), mask=mask, other=0.0)
        dx += dy.to(ACC) * g[:, None]
    if HAS_MEAN:
        dmean = tl.load(dmean_ptr + nc, mask=c_mask, other=0.0)
        dx += dmean[:, None]
    if HAS_MAX:
        m = tl.load(max_ptr + nc, mask=c_mask, other=0.0)
        dmax = tl.load(dmax_ptr + nc, mask=c_mask, other=0.0)
        x = tl.load(x_ptr + tile_offsets(n64, c, hw, x_batch_stride, x_chan_stride, x_hw_stride), mask=mask, other=0.0)
        # where, not multiply: 0 * inf would turn untouched elements into NaN.
        # A NaN max (m != m) reaches every element, as torch.amax's backward
        # does; the host passes a NaN dmax for it.
        hit = (x.to(ACC) == m[:, None]) | (m != m)[:, None]
        dx += tl.where(hit, dmax[:, None], 0.0)
    tl.store(dx_ptr + tile_offsets(n64, c, hw, dx_batch_stride, dx_chan_stride, dx_hw_stride), dx.to(dx_ptr.dtype.element_ty), mask=mask)
