"""Backward pass 2 of a channel-attention block, everything that reaches x:

    dx = dy * g[n, c] + dmean[n, c] + (x == max[n, c]) * dmax[n, c]

``dmean`` is the pooled-mean gradient already divided by H*W, ``dmax`` the
pooled-max gradient already divided by the tie count, so the broadcast of the
pooling gradients costs no extra pass.

Program 0 also folds a small [FOLD_ROWS, FOLD_K] buffer of partial sums into
FOLD_K values (ECA's conv-weight gradient, written per channel block by the
gate backward): the partials' last consumer, so no launch of their own.

Pass accounting (SE/ECA backward): reads dy (pass 3), writes dx (pass 4);
reads x as well only when a max pooling is differentiated (pass 5).
"""
import triton
import triton.language as tl

from .tiles import elementwise_tile, flat_tile, program_index, tile_offsets


@triton.jit
def fold_rows_into(part_ptr, out_ptr, out2_ptr, ROWS, FOLD_K: tl.constexpr, FOLD_SPLIT: tl.constexpr,
                   OUT2: tl.constexpr):
    """sum_r part[r, k] in a fixed order: columns k < FOLD_SPLIT into
    out[k], column FOLD_SPLIT (if any) into out2[0], each cast to its
    buffer's dtype (ECA's taps and bias: the weights' own dtypes, no cast
    launch afterwards). OUT2: column FOLD_SPLIT has a destination."""
    k = tl.arange(0, FOLD_K)
    acc = tl.load(part_ptr + k)
    for r in range(1, ROWS):
        acc += tl.load(part_ptr + r * FOLD_K + k)
    tl.store(out_ptr + k, acc.to(out_ptr.dtype.element_ty), mask=k < FOLD_SPLIT)
    if OUT2:
        tl.store(out2_ptr + (k - FOLD_SPLIT), acc.to(out2_ptr.dtype.element_ty), mask=k == FOLD_SPLIT)


@triton.jit
def channel_scale_backward_kernel(
    dy_ptr,
    x_ptr,
    dx_ptr,
    g_ptr,
    dmean_ptr,
    dmax_ptr,
    max_ptr,
    fold_ptr,
    fold_out_ptr,
    fold_out2_ptr,
    C,
    HW,
    fold_rows,
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
    FOLD_K: tl.constexpr,
    FOLD_SPLIT: tl.constexpr,
    FOLD_OUT2: tl.constexpr,
    FLAT_HW: tl.constexpr,
    REVERSE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    """Args:
        dy_ptr, x_ptr, dx_ptr: [N, C, H*W], each with its own strides.
        g_ptr, dmean_ptr, dmax_ptr, max_ptr: [N, C], one dtype (fp32, fp64 for
            fp64 inputs); unused ones get any valid buffer of it.
        HAS_DY: add dy * g (off for a pooling-only backward).
        fold_ptr: [fold_rows, FOLD_K] partials, folded by program 0 when
            FOLD_K > 0: columns < FOLD_SPLIT into fold_out_ptr, column
            FOLD_SPLIT into fold_out2_ptr (see ``fold_rows_into``).
        FLAT_HW > 0: dy, x and dx are dense NCHW with H*W == FLAT_HW; flat
            tiles of BLOCK_HW elements, num_hw_blocks per sample.
        REVERSE: visit the tiles backwards (L2 reuse of the gradient pass).
    Grid: (N * num_c_blocks * num_hw_blocks,); flat: (N * num_hw_blocks,).
    """
    ACC = dmean_ptr.dtype.element_ty  # fp32, or fp64 for fp64 inputs
    pid = program_index(REVERSE)
    if FOLD_K > 0:
        if tl.program_id(0) == 0:
            fold_rows_into(fold_ptr, fold_out_ptr, fold_out2_ptr, fold_rows, FOLD_K, FOLD_SPLIT, FOLD_OUT2)
    if FLAT_HW > 0:
        n64, o, mask, c, first = flat_tile(pid, C * FLAT_HW, num_hw_blocks, FLAT_HW, BLOCK_HW)
        # [N, C] terms of the channels this tile spans, gathered per element.
        c_lo = first // FLAT_HW
        cg = c_lo + tl.arange(0, BLOCK_C)
        cg_mask = cg < C
        ncg = n64 * C + cg
        idx = c - c_lo
        dx = tl.zeros([BLOCK_HW], dtype=ACC)
        if HAS_DY:
            g = tl.gather(tl.load(g_ptr + ncg, mask=cg_mask, other=0.0), idx, 0)
            dy = tl.load(dy_ptr + n64 * dy_batch_stride + o, mask=mask, other=0.0)
            dx += dy.to(ACC) * g
        if HAS_MEAN:
            dx += tl.gather(tl.load(dmean_ptr + ncg, mask=cg_mask, other=0.0), idx, 0)
        if HAS_MAX:
            m = tl.gather(tl.load(max_ptr + ncg, mask=cg_mask, other=0.0), idx, 0)
            dmax = tl.gather(tl.load(dmax_ptr + ncg, mask=cg_mask, other=0.0), idx, 0)
            x = tl.load(x_ptr + n64 * x_batch_stride + o, mask=mask, other=0.0)
            # where, not multiply: 0 * inf would turn untouched elements into NaN.
            # A NaN max (m != m) reaches every element, as in torch.amax's
            # backward; the host passes a NaN dmax for it.
            dx += tl.where((x.to(ACC) == m) | (m != m), dmax, 0.0)
        tl.store(dx_ptr + n64 * dx_batch_stride + o, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    else:
        n64, c, hw, c_mask, hw_mask, _ = elementwise_tile(pid, C, HW, num_c_blocks, num_hw_blocks, BLOCK_C, BLOCK_HW)
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
            hit = (x.to(ACC) == m[:, None]) | (m != m)[:, None]
            dx += tl.where(hit, dmax[:, None], 0.0)
        tl.store(dx_ptr + tile_offsets(n64, c, hw, dx_batch_stride, dx_chan_stride, dx_hw_stride), dx.to(dx_ptr.dtype.element_ty), mask=mask)
