"""CBAM output in one pass: y[n, c, hw] = (x * ca[n, c]) * sa[n, hw].

Both gates are applied in the accumulation dtype and y is rounded once (timm
rounds x1 = x * ca to the input dtype first). CBAM forward passes 3 (read x)
and 4 (write y).
"""
import triton
import triton.language as tl

from .tiles import elementwise_tile, tile_offsets


@triton.jit
def cbam_scale_kernel(
    x_ptr,
    y_ptr,
    ca_ptr,
    sa_ptr,
    C,
    HW,
    num_c_blocks,
    num_hw_blocks,
    x_batch_stride,
    x_chan_stride,
    x_hw_stride,
    y_batch_stride,
    y_chan_stride,
    y_hw_stride,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    """Args:
        x_ptr, y_ptr: [N, C, H*W] with their own strides (y keeps x's layout).
        ca_ptr: channel gate [N, C]; sa_ptr: spatial gate [N, H*W]; both
            contiguous, in the accumulation dtype (fp32, fp64 for fp64 x).
    Grid: (N * num_c_blocks * num_hw_blocks,), hw blocks fastest.
    """
    ACC = ca_ptr.dtype.element_ty
    n64, c, hw, c_mask, hw_mask = elementwise_tile(tl.program_id(0), C, HW, num_c_blocks, num_hw_blocks, BLOCK_C, BLOCK_HW)
    mask = c_mask[:, None] & hw_mask[None, :]
    g = tl.load(ca_ptr + n64 * C + c, mask=c_mask, other=0.0)
    s = tl.load(sa_ptr + n64 * HW + hw, mask=hw_mask, other=0.0)
    x = tl.load(x_ptr + tile_offsets(n64, c, hw, x_batch_stride, x_chan_stride, x_hw_stride), mask=mask, other=0.0)
    y = (x.to(ACC) * g[:, None]) * s[None, :]
    tl.store(y_ptr + tile_offsets(n64, c, hw, y_batch_stride, y_chan_stride, y_hw_stride), y.to(y_ptr.dtype.element_ty), mask=mask)
