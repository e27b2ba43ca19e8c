"""CBAM output in one pass: y[n, c, hw] = (x * ca[n, c]) * sa[n, hw].

Both gates are applied in the accumulation dtype and y is rounded once (timm
rounds x1 = x * ca to the input dtype first). CBAM forward passes 3 (read x)
and 4 (write y).

With training BatchNorm (TRAIN_BN) the spatial gate is finished here: every
program folds the spatial branch's per-program (count, mean, M2) of the conv
output (a few hundred floats at most) into the batch statistics and applies
sa = gate(bn(z)) per pixel; the programs holding channel 0 store sa (the
backward's input). Program 0 stores the batch mean and invstd and updates the
running statistics exactly as ``nn.BatchNorm2d``: momentum (or, with
CUMULATIVE, the cumulative average 1 / num_batches_tracked), the unbiased
variance, ``num_batches_tracked += 1``, each read and written in its own dtype.
"""
import triton
import triton.language as tl

from .cbam_spatial import bn_batch_stats, inv_sqrt
from .gate_math import apply_gate
from .tiles import elementwise_tile, flat_tile, program_index, tile_offsets


@triton.jit
def _update_running(bnp_ptr, P, bnstat_ptr, rm_ptr, rv_ptr, nbt_ptr, rm_out_ptr, rv_out_ptr, nbt_out_ptr, momentum,
                    mean, var, cnt, invstd, UPDATE_RUNNING: tl.constexpr, HAS_NBT: tl.constexpr, CUMULATIVE: tl.constexpr):
    ACC = bnp_ptr.dtype.element_ty
    tl.store(bnstat_ptr, mean)
    tl.store(bnstat_ptr + 1, invstd)
    if HAS_NBT:
        nbt = tl.load(nbt_ptr) + 1
        tl.debug_barrier()
        tl.store(nbt_out_ptr, nbt)
    if UPDATE_RUNNING:
        if CUMULATIVE:
            f = 1.0 / nbt.to(ACC)
        else:
            f = momentum
        rm = tl.load(rm_ptr).to(ACC)
        rv = tl.load(rv_ptr).to(ACC)
        unbiased = var * (cnt / (cnt - 1.0))
        # Every thread has read the old values before any writes (the
        # outputs are the inputs themselves in eager calls).
        tl.debug_barrier()
        tl.store(rm_out_ptr, ((1.0 - f) * rm + f * mean).to(rm_out_ptr.dtype.element_ty))
        tl.store(rv_out_ptr, ((1.0 - f) * rv + f * unbiased).to(rv_out_ptr.dtype.element_ty))


@triton.jit
def cbam_scale_kernel(
    x_ptr,
    y_ptr,
    ca_ptr,
    z_ptr,
    sa_ptr,
    bnp_ptr,
    bnstat_ptr,
    gamma_ptr,
    beta_ptr,
    rm_ptr,
    rv_ptr,
    nbt_ptr,
    rm_out_ptr,
    rv_out_ptr,
    nbt_out_ptr,
    C,
    HW,
    num_c_blocks,
    num_hw_blocks,
    P,
    momentum,
    eps,
    x_batch_stride,
    x_chan_stride,
    x_hw_stride,
    y_batch_stride,
    y_chan_stride,
    y_hw_stride,
    TRAIN_BN: tl.constexpr,
    UPDATE_RUNNING: tl.constexpr,
    HAS_NBT: tl.constexpr,
    CUMULATIVE: tl.constexpr,
    HAS_GAMMA: tl.constexpr,
    HAS_BETA: tl.constexpr,
    GATE: tl.constexpr,
    FLAT_HW: tl.constexpr,
    REVERSE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    """Args:
        x_ptr, y_ptr: [N, C, H*W] with their own strides (y keeps x's layout).
        ca_ptr: channel gate [N, C]; sa_ptr: spatial gate [N, H*W] (read, or
            with TRAIN_BN written); z_ptr: [N, H*W] the spatial conv output
            (TRAIN_BN). Small buffers: contiguous, accumulation dtype.
        bnp_ptr: [P, 3] the spatial branch's (count, mean, M2) partials;
            bnstat_ptr: [2] out, (batch mean, invstd) (TRAIN_BN).
        gamma_ptr, beta_ptr: BN weight and bias (HAS_GAMMA / HAS_BETA).
        rm_ptr, rv_ptr, nbt_ptr: running mean, variance, num_batches_tracked,
            read; rm_out_ptr, rv_out_ptr, nbt_out_ptr: where their updates go
            (the same buffers in eager calls). momentum: used unless CUMULATIVE.
        FLAT_HW > 0: x and y are dense NCHW with H*W == FLAT_HW; flat tiles of
            BLOCK_HW elements, num_hw_blocks per sample.
        REVERSE: visit the tiles backwards (L2 reuse of the statistics pass).
    Grid: (N * num_c_blocks * num_hw_blocks,); flat: (N * num_hw_blocks,).
    """
    ACC = ca_ptr.dtype.element_ty
    pid = program_index(REVERSE)
    if TRAIN_BN:
        cnt, mean, var = bn_batch_stats(bnp_ptr, P, BLOCK_P)
        invstd = inv_sqrt(var + eps)
        a = invstd
        if HAS_GAMMA:
            a = tl.load(gamma_ptr).to(ACC) * invstd
        b = -mean * a
        if HAS_BETA:
            b = tl.load(beta_ptr).to(ACC) + b
        if tl.program_id(0) == 0:
            _update_running(bnp_ptr, P, bnstat_ptr, rm_ptr, rv_ptr, nbt_ptr, rm_out_ptr, rv_out_ptr, nbt_out_ptr, momentum,
                            mean, var, cnt, invstd, UPDATE_RUNNING, HAS_NBT, CUMULATIVE)
    if FLAT_HW > 0:
        n64, o, mask, c, _ = flat_tile(pid, C * FLAT_HW, num_hw_blocks, FLAT_HW, BLOCK_HW)
        px = n64 * FLAT_HW + (o - c * FLAT_HW)
        g = tl.load(ca_ptr + n64 * C + c, mask=mask, other=0.0)
        if TRAIN_BN:
            s = apply_gate(tl.load(z_ptr + px, mask=mask, other=0.0) * a + b, GATE)
            tl.store(sa_ptr + px, s, mask=mask & (c == 0))
        else:
            s = tl.load(sa_ptr + px, mask=mask, other=0.0)
        x = tl.load(x_ptr + n64 * x_batch_stride + o, mask=mask)
        y = (x.to(ACC) * g) * s
        tl.store(y_ptr + n64 * y_batch_stride + o, y.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        n64, c, hw, c_mask, hw_mask, _ = elementwise_tile(pid, C, HW, num_c_blocks, num_hw_blocks, BLOCK_C, BLOCK_HW)
        mask = c_mask[:, None] & hw_mask[None, :]
        g = tl.load(ca_ptr + n64 * C + c, mask=c_mask, other=0.0)
        if TRAIN_BN:
            s = apply_gate(tl.load(z_ptr + n64 * HW + hw, mask=hw_mask, other=0.0) * a + b, GATE)
            first_c = (pid // num_hw_blocks) % num_c_blocks == 0
            tl.store(sa_ptr + n64 * HW + hw, s, mask=hw_mask & first_c)
        else:
            s = tl.load(sa_ptr + n64 * HW + hw, mask=hw_mask, other=0.0)
        x = tl.load(x_ptr + tile_offsets(n64, c, hw, x_batch_stride, x_chan_stride, x_hw_stride), mask=mask, other=0.0)
        y = (x.to(ACC) * g[:, None]) * s[None, :]
        tl.store(y_ptr + tile_offsets(n64, c, hw, y_batch_stride, y_chan_stride, y_hw_stride), y.to(y_ptr.dtype.element_ty), mask=mask)
