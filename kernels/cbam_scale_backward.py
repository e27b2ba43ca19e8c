"""CBAM backward passes 4-6 (read dy, read x, write dx), every path to x in
one kernel:

    dx = ca * (dy * sa + dmean_px + (x * ca == smax) * dmax_px)     via x1 = x * ca
       + dmean_ch + (x == amax) * dmax_ch                           via the channel pooling

``*_px`` are [N, H*W] per-pixel coefficients (the spatial statistics'
gradients divided by C and by the tie count), ``*_ch`` are [N, C] (the pooled
gradients divided by H*W and by the tie count).

Program 0 also folds a small [FOLD_ROWS, FOLD_K] buffer of partial sums into
its first ``fold_n`` columns (the "Conv" channel attention's weight
gradient), written in the output's dtype.
"""
import triton
import triton.language as tl

from .tiles import elementwise_tile, flat_tile, program_index, tile_offsets


@triton.jit
def fold_rows_masked(part_ptr, out_ptr, ROWS, n_out, FOLD_K: tl.constexpr):
    """out[k] = sum_r part[r, k] for k < n_out, in a fixed order, cast to out's dtype."""
    k = tl.arange(0, FOLD_K)
    acc = tl.load(part_ptr + k)
    for r in range(1, ROWS):
        acc += tl.load(part_ptr + r * FOLD_K + k)
    tl.store(out_ptr + k, acc.to(out_ptr.dtype.element_ty), mask=k < n_out)


@triton.jit
def _dx(dy, x, g, m, dmean_ch, dmax_ch, s, sx, dmean_px, dmax_px):
    # where, not multiply: 0 * inf would turn untouched elements into NaN. A
    # NaN max (m != m) reaches every element of its slice, as in torch.amax's
    # backward; the host passes a NaN coefficient for it.
    hit_px = (x * g == sx) | (sx != sx)
    hit_ch = (x == m) | (m != m)
    dx1 = dy * s + dmean_px + tl.where(hit_px, dmax_px, 0.0)
    return g * dx1 + dmean_ch + tl.where(hit_ch, dmax_ch, 0.0)


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
    fold_ptr,
    fold_out_ptr,
    C,
    HW,
    num_c_blocks,
    num_hw_blocks,
    fold_rows,
    fold_n,
    dy_batch_stride,
    dy_chan_stride,
    dy_hw_stride,
    x_batch_stride,
    x_chan_stride,
    x_hw_stride,
    dx_batch_stride,
    dx_chan_stride,
    dx_hw_stride,
    FOLD_K: tl.constexpr,
    FLAT_HW: tl.constexpr,
    REVERSE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    """Args:
        dy_ptr, x_ptr, dx_ptr: [N, C, H*W], each with its own strides.
        ca_ptr, amax_ptr, dmean_ch_ptr, dmax_ch_ptr: [N, C].
        sa_ptr, smax_ptr, dmean_px_ptr, dmax_px_ptr: [N, H*W].
        Small buffers: contiguous, accumulation dtype (fp32, fp64 for fp64 x).
        fold_ptr: [fold_rows, FOLD_K] partials, folded by program 0 into
            fold_out_ptr [fold_n] when FOLD_K > 0.
        FLAT_HW > 0: dy, x and dx are dense NCHW with H*W == FLAT_HW; flat
            tiles of BLOCK_HW elements, num_hw_blocks per sample.
        REVERSE: visit the tiles backwards (L2 reuse of the gradient pass).
    Grid: (N * num_c_blocks * num_hw_blocks,); flat: (N * num_hw_blocks,).
    """
    ACC = ca_ptr.dtype.element_ty
    pid = program_index(REVERSE)
    if FLAT_HW > 0:
        n64, o, mask, c, _ = flat_tile(pid, C * FLAT_HW, num_hw_blocks, FLAT_HW, BLOCK_HW)
        nc = n64 * C + c
        px = n64 * FLAT_HW + (o - c * FLAT_HW)
        x = tl.load(x_ptr + n64 * x_batch_stride + o, mask=mask, other=0.0).to(ACC)
        dy = tl.load(dy_ptr + n64 * dy_batch_stride + o, mask=mask, other=0.0).to(ACC)
        dx = _dx(dy, x,
                 tl.load(ca_ptr + nc, mask=mask, other=0.0), tl.load(amax_ptr + nc, mask=mask, other=0.0),
                 tl.load(dmean_ch_ptr + nc, mask=mask, other=0.0), tl.load(dmax_ch_ptr + nc, mask=mask, other=0.0),
                 tl.load(sa_ptr + px, mask=mask, other=0.0), tl.load(smax_ptr + px, mask=mask, other=0.0),
                 tl.load(dmean_px_ptr + px, mask=mask, other=0.0), tl.load(dmax_px_ptr + px, mask=mask, other=0.0))
        tl.store(dx_ptr + n64 * dx_batch_stride + o, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    else:
        n64, c, hw, c_mask, hw_mask, _ = elementwise_tile(pid, C, HW, num_c_blocks, num_hw_blocks, BLOCK_C, BLOCK_HW)
        mask = c_mask[:, None] & hw_mask[None, :]
        nc = n64 * C + c
        nhw = n64 * HW + hw
        x = tl.load(x_ptr + tile_offsets(n64, c, hw, x_batch_stride, x_chan_stride, x_hw_stride), mask=mask, other=0.0).to(ACC)
        dy = tl.load(dy_ptr + tile_offsets(n64, c, hw, dy_batch_stride, dy_chan_stride, dy_hw_stride), mask=mask, other=0.0).to(ACC)
        dx = _dx(dy, x,
                 tl.load(ca_ptr + nc, mask=c_mask, other=0.0)[:, None], tl.load(amax_ptr + nc, mask=c_mask, other=0.0)[:, None],
                 tl.load(dmean_ch_ptr + nc, mask=c_mask, other=0.0)[:, None], tl.load(dmax_ch_ptr + nc, mask=c_mask, other=0.0)[:, None],
                 tl.load(sa_ptr + nhw, mask=hw_mask, other=0.0)[None, :], tl.load(smax_ptr + nhw, mask=hw_mask, other=0.0)[None, :],
                 tl.load(dmean_px_ptr + nhw, mask=hw_mask, other=0.0)[None, :], tl.load(dmax_px_ptr + nhw, mask=hw_mask, other=0.0)[None, :])
        tl.store(dx_ptr + tile_offsets(n64, c, hw, dx_batch_stride, dx_chan_stride, dx_hw_stride), dx.to(dx_ptr.dtype.element_ty), mask=mask)
    # Last, so that nothing of the tile's work stays live across the fold.
    if FOLD_K > 0:
        if tl.program_id(0) == 0:
            fold_rows_masked(fold_ptr, fold_out_ptr, fold_rows, fold_n, FOLD_K)
