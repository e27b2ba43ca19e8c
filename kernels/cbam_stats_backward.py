"""CBAM backward pass 3 (reads x once): the channel gate's gradient through
the spatial statistics of x1 = x * ca,

    dca2[n, c] = sum_hw x * (dmean_px[n, hw] + (x * ca == smax[n, hw]) * dmax_px[n, hw])

where ``dmean_px`` is the gradient of the per-pixel channel mean already
divided by C and ``dmax_px`` that of the per-pixel channel amax already
divided by its tie count. x1 is recomputed in registers, rounded as in the
forward. The [N, C] sums are written per pixel strip, folded by the channel
gate's backward in a fixed order.

Program 0 also folds the spatial branch's weight-gradient partials (the
conv weight's, the BatchNorm weight's and bias's; [ROWS, FOLD_W]) into the
parameters' gradients, written in their own dtypes: the partials' last
consumer, so no launch of their own.
"""
import triton
import triton.language as tl

from .spatial_stats import channel_slab, pixel_strip


@triton.jit
def fold_weight_grads(wpart_ptr, dsw_ptr, dgamma_ptr, dbeta_ptr, ROWS, T,
                      HAS_GAMMA: tl.constexpr, HAS_BETA: tl.constexpr, FOLD_W: tl.constexpr):
    """Columns [0, T) of ``wpart_ptr`` [ROWS, FOLD_W] summed into dsw [T],
    column T into dgamma, T + 1 into dbeta, in a fixed order."""
    k = tl.arange(0, FOLD_W)
    acc = tl.load(wpart_ptr + k)
    for r in range(1, ROWS):
        acc += tl.load(wpart_ptr + r * FOLD_W + k)
    tl.store(dsw_ptr + k, acc.to(dsw_ptr.dtype.element_ty), mask=k < T)
    if HAS_GAMMA:
        tl.store(dgamma_ptr + (k - T), acc.to(dgamma_ptr.dtype.element_ty), mask=k == T)
    if HAS_BETA:
        tl.store(dbeta_ptr + (k - T - 1), acc.to(dbeta_ptr.dtype.element_ty), mask=k == T + 1)


@triton.jit
def cbam_stats_backward_kernel(
    x_ptr,
    ca_ptr,
    smax_ptr,
    dmean_ptr,
    dmax_ptr,
    dca_ptr,
    wpart_ptr,
    dsw_ptr,
    dgamma_ptr,
    dbeta_ptr,
    C,
    HW,
    c_per_split,
    num_hw_blocks,
    x_batch_stride,
    x_chan_stride,
    x_hw_stride,
    chan_block_stride,
    wpart_rows,
    T,
    HAS_GAMMA: tl.constexpr,
    HAS_BETA: tl.constexpr,
    FOLD_W: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    """Args:
        x_ptr: [N, C, H*W] with its strides.
        ca_ptr: [N, C] channel gate.
        smax_ptr, dmean_ptr, dmax_ptr: [N, H*W] per-pixel amax of x * ca and
            the two per-element gradient coefficients described above.
        dca_ptr: [num_hw_blocks, N, C] partial sums; ``chan_block_stride`` = N * C.
        wpart_ptr: [wpart_rows, FOLD_W] weight-gradient partials (FOLD_W > 0:
            folded by program 0 into dsw_ptr [T], dgamma_ptr, dbeta_ptr [1]).
        Small buffers: contiguous, accumulation dtype (fp32, fp64 for fp64 x).
    Grid: (N * num_hw_blocks, SPLIT); each split owns a range of channels.
    """
    ACC = ca_ptr.dtype.element_ty
    split = tl.program_id(1)
    if FOLD_W > 0:
        if (tl.program_id(0) == 0) & (split == 0):
            fold_weight_grads(wpart_ptr, dsw_ptr, dgamma_ptr, dbeta_ptr, wpart_rows, T, HAS_GAMMA, HAS_BETA, FOLD_W)
    n64, hwb, hw, hw_mask, c_start, c_stop = pixel_strip(tl.program_id(0), split, C, HW, c_per_split, num_hw_blocks, BLOCK_HW)
    x_base = x_ptr + n64 * x_batch_stride + hw.to(tl.int64)[None, :] * x_hw_stride
    sx = tl.load(smax_ptr + n64 * HW + hw, mask=hw_mask, other=0.0)
    dm = tl.load(dmean_ptr + n64 * HW + hw, mask=hw_mask, other=0.0)
    dx_max = tl.load(dmax_ptr + n64 * HW + hw, mask=hw_mask, other=0.0)
    chan_row = hwb.to(tl.int64) * chan_block_stride + n64 * C

    for c0 in range(c_start, c_stop, BLOCK_C):
        c, c_mask, mask = channel_slab(c0, c_stop, hw_mask, BLOCK_C)
        x = tl.load(x_base + c.to(tl.int64)[:, None] * x_chan_stride, mask=mask, other=0.0).to(ACC)
        g = tl.load(ca_ptr + n64 * C + c, mask=c_mask, other=0.0)
        # where, not multiply: 0 * inf would turn untouched elements into NaN.
        # A NaN max (sx != sx) reaches every element, as torch.amax's backward
        # does; the host passes a NaN coefficient for it.
        hit = (x * g[:, None] == sx[None, :]) | (sx != sx)[None, :]
        coef = dm[None, :] + tl.where(hit, dx_max[None, :], 0.0)
        tl.store(dca_ptr + chan_row + c, tl.sum(tl.where(mask, x * coef, 0.0), axis=1), mask=c_mask)
