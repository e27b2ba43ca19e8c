"""Fused attention tail, last backward pass (reads e and z, writes dz):

    dz = Ke[n, c] * e + Kz[c] * z + K0[n, c] + Kt[n, c] * [z == ext[n, c]]

BatchNorm's, the attention's and the pooling's gradients in one
per-(n, c) affine map of (e, z) (coefficients from
kernels/tail_bn_backward.py). A NaN ext (a NaN max) reaches every element
of its slice, as torch.amax's backward does. Program 0 also folds a small
buffer of partial sums (ECA's conv-weight gradient).
"""
import triton
import triton.language as tl

from .channel_scale_backward import fold_rows_into
from .tiles import elementwise_tile, flat_tile, program_index, tile_offsets


@triton.jit
def tail_dz_kernel(
    e_ptr,
    z_ptr,
    dz_ptr,
    coef_ptr,
    kz_ptr,
    ext_ptr,
    fold_ptr,
    fold_out_ptr,
    fold_out2_ptr,
    N,
    C,
    HW,
    fold_rows,
    num_c_blocks,
    num_hw_blocks,
    e_batch_stride,
    e_chan_stride,
    e_hw_stride,
    z_batch_stride,
    z_chan_stride,
    z_hw_stride,
    dz_batch_stride,
    dz_chan_stride,
    dz_hw_stride,
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
        e_ptr, z_ptr, dz_ptr: [N, C, H*W], each with its own strides.
        coef_ptr: [3, N, C] Ke, K0, Kt; kz_ptr: [C]; ext_ptr: [N, C] (HAS_MAX).
        fold_ptr: [fold_rows, FOLD_K] -> fold_out_ptr / fold_out2_ptr (FOLD_K > 0;
            see kernels/channel_scale_backward.py ``fold_rows_into``).
        FLAT_HW > 0: dense NCHW e, z and dz, flat tiles.
    Grid: (N * num_c_blocks * num_hw_blocks,); flat: (N * num_hw_blocks,).
    """
    ACC = coef_ptr.dtype.element_ty
    if FOLD_K > 0:
        if tl.program_id(0) == 0:
            fold_rows_into(fold_ptr, fold_out_ptr, fold_out2_ptr, fold_rows, FOLD_K, FOLD_SPLIT, FOLD_OUT2)
    pid = program_index(REVERSE)
    NC = tl.cast(N, tl.int64) * C
    if FLAT_HW > 0:
        n64, o, mask, c, first = flat_tile(pid, C * FLAT_HW, num_hw_blocks, FLAT_HW, BLOCK_HW)
        c_lo = first // FLAT_HW
        cg = c_lo + tl.arange(0, BLOCK_C)
        cg_mask = cg < C
        nc = n64 * C + cg
        idx = c - c_lo
        e = tl.load(e_ptr + n64 * e_batch_stride + o, mask=mask, other=0.0).to(ACC)
        z = tl.load(z_ptr + n64 * z_batch_stride + o, mask=mask, other=0.0).to(ACC)
        dz = tl.gather(tl.load(coef_ptr + nc, mask=cg_mask, other=0.0), idx, 0) * e
        dz += tl.gather(tl.load(kz_ptr + cg, mask=cg_mask, other=0.0), idx, 0) * z
        dz += tl.gather(tl.load(coef_ptr + NC + nc, mask=cg_mask, other=0.0), idx, 0)
        if HAS_MAX:
            ext = tl.gather(tl.load(ext_ptr + nc, mask=cg_mask, other=0.0), idx, 0)
            kt = tl.gather(tl.load(coef_ptr + 2 * NC + nc, mask=cg_mask, other=0.0), idx, 0)
            dz += tl.where((z == ext) | (ext != ext), kt, 0.0)
        tl.store(dz_ptr + n64 * dz_batch_stride + o, dz.to(dz_ptr.dtype.element_ty), mask=mask)
    else:
        n64, c, hw, c_mask, hw_mask, _ = elementwise_tile(pid, C, HW, num_c_blocks, num_hw_blocks, BLOCK_C, BLOCK_HW)
        nc = n64 * C + c
        mask = c_mask[:, None] & hw_mask[None, :]
        e = tl.load(e_ptr + tile_offsets(n64, c, hw, e_batch_stride, e_chan_stride, e_hw_stride), mask=mask, other=0.0).to(ACC)
        z = tl.load(z_ptr + tile_offsets(n64, c, hw, z_batch_stride, z_chan_stride, z_hw_stride), mask=mask, other=0.0).to(ACC)
        ke = tl.load(coef_ptr + nc, mask=c_mask, other=0.0)
        kz = tl.load(kz_ptr + c, mask=c_mask, other=0.0)
        k0 = tl.load(coef_ptr + NC + nc, mask=c_mask, other=0.0)
        dz = ke[:, None] * e + kz[:, None] * z + k0[:, None]
        if HAS_MAX:
            ext = tl.load(ext_ptr + nc, mask=c_mask, other=0.0)
            kt = tl.load(coef_ptr + 2 * NC + nc, mask=c_mask, other=0.0)
            dz += tl.where((z == ext[:, None]) | (ext != ext)[:, None], kt[:, None], 0.0)
        tl.store(dz_ptr + tile_offsets(n64, c, hw, dz_batch_stride, dz_chan_stride, dz_hw_stride), dz.to(dz_ptr.dtype.element_ty), mask=mask)
