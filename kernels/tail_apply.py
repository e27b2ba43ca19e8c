"""Fused attention tail, last forward pass (reads z and the shortcut, writes y):

    y = act(d[n] * (a_c * g[n, c] * z + b_c * g[n, c]) + shortcut)

bn(z) = a z + b is never written, nor is the attention's output: the gate g
multiplies bn's affine, drop_path's per-sample factor d multiplies both.
The gate is given (the SE gate kernel's output), computed here (ECA's
channel convolution over the pooled means of bn(z), stored for the
backward), or absent (g = 1). Program 0 also counts the batch in BatchNorm's
num_batches_tracked (after the statistics kernel has read it).
"""
import triton
import triton.language as tl

from .channel_scale import eca_gate
from .gate_math import apply_act
from .reduce_utils import max_propagate_nan
from .tail_stats import min_propagate_nan
from .tiles import elementwise_tile, flat_tile, program_index, tile_offsets


@triton.jit
def tail_coefficients(chan_ptr, g_ptr, part_ptr, w_ptr, wb_ptr, d_ptr, n64, c0, C, SPLIT, split_stride,
                      BLOCK: tl.constexpr, WIN: tl.constexpr, GATE_SRC: tl.constexpr, CONV_K: tl.constexpr, CIRCULAR: tl.constexpr,
                      HAS_CONV_BIAS: tl.constexpr, GATE: tl.constexpr, HAS_DROP: tl.constexpr):
    """(A, B, g, the pooled mean of bn(z) (ECA), a) for the channels
    c0 .. c0 + BLOCK - 1 of one sample."""
    ACC = chan_ptr.dtype.element_ty
    c = c0 + tl.arange(0, BLOCK)
    c_mask = c < C
    a = tl.load(chan_ptr + c, mask=c_mask, other=0.0)
    b = tl.load(chan_ptr + C + c, mask=c_mask, other=0.0)
    mean = a
    if GATE_SRC == 0:
        g = tl.load(g_ptr + n64 * C + c, mask=c_mask, other=0.0)
    elif GATE_SRC == 1:
        g, mean = eca_gate(part_ptr, w_ptr, wb_ptr, n64, c0, C, SPLIT, split_stride, BLOCK, WIN, CONV_K, CIRCULAR,
                           HAS_CONV_BIAS, GATE)
    else:
        g = tl.full(c.shape, 1.0, ACC)
    if HAS_DROP:
        d = tl.load(d_ptr + n64).to(ACC)
        return d * a * g, d * b * g, g, mean, a
    return a * g, b * g, g, mean, a


@triton.jit
def store_channel_state(stats_ptr, zstat_ptr, g_ptr, mean_ptr, n64, c, owner, a, g, mean, C, HW, stats_split,
                        stats_hw_per_split, split_stride, GATE_SRC: tl.constexpr):
    """What the backward needs per (n, c), stored once by the program that
    owns the channel: m = mean_hw z and ext (max_hw z, or min where a < 0,
    the extreme that is bn(z)'s max) folded from pass 1's partials; ECA's
    gate and pooled mean of bn(z)."""
    ACC = zstat_ptr.dtype.element_ty
    nc = n64 * C + c
    rows = tl.cast(stats_split, tl.int64) * split_stride
    count = tl.cast(tl.minimum(stats_hw_per_split, HW), ACC)
    m = tl.load(stats_ptr + nc, mask=owner, other=0.0) * count
    zmax = tl.load(stats_ptr + 2 * rows + nc, mask=owner, other=0.0)
    zmin = tl.load(stats_ptr + 3 * rows + nc, mask=owner, other=0.0)
    for s in range(1, stats_split):
        k = (tl.minimum(stats_hw_per_split * (s + 1), HW) - stats_hw_per_split * s).to(ACC)
        o = s * split_stride + nc
        m += tl.load(stats_ptr + o, mask=owner, other=0.0) * k
        zmax = max_propagate_nan(zmax, tl.load(stats_ptr + 2 * rows + o, mask=owner, other=0.0))
        zmin = min_propagate_nan(zmin, tl.load(stats_ptr + 3 * rows + o, mask=owner, other=0.0))
    tl.store(zstat_ptr + nc, m / HW, mask=owner)
    tl.store(zstat_ptr + split_stride + nc, tl.where(a >= 0, zmax, zmin), mask=owner)
    if GATE_SRC == 1:
        tl.store(g_ptr + nc, g, mask=owner)
        tl.store(mean_ptr + nc, mean, mask=owner)


@triton.jit
def tail_apply_kernel(
    z_ptr,
    s_ptr,
    y_ptr,
    chan_ptr,
    g_ptr,
    part_ptr,
    mean_ptr,
    stats_ptr,
    zstat_ptr,
    w_ptr,
    wb_ptr,
    d_ptr,
    nbt_ptr,
    C,
    HW,
    SPLIT,
    split_stride,
    stats_split,
    stats_hw_per_split,
    num_c_blocks,
    num_hw_blocks,
    act_param,
    z_batch_stride,
    z_chan_stride,
    z_hw_stride,
    s_batch_stride,
    s_chan_stride,
    s_hw_stride,
    y_batch_stride,
    y_chan_stride,
    y_hw_stride,
    GATE_SRC: tl.constexpr,
    CONV_K: tl.constexpr,
    ECA_WIN: tl.constexpr,
    CIRCULAR: tl.constexpr,
    HAS_CONV_BIAS: tl.constexpr,
    GATE: tl.constexpr,
    HAS_SHORTCUT: tl.constexpr,
    HAS_DROP: tl.constexpr,
    ACT: tl.constexpr,
    INC_NBT: tl.constexpr,
    FLAT_HW: tl.constexpr,
    REVERSE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    """Args:
        z_ptr, s_ptr, y_ptr: [N, C, H*W], each with its own strides.
        chan_ptr: [4, C]: a, b (bn(z) = a z + b), mu, rstd.
        g_ptr: [N, C] the gate (GATE_SRC 0: read; 1: written, computed from
            part_ptr [SPLIT, N, C], the pooled means of bn(z), with ECA's taps
            w_ptr [CONV_K] and bias wb_ptr, the folded means written to
            mean_ptr [N, C]; 2: unused, g = 1).
        stats_ptr: [4, STATS_SPLIT, N, C] pass 1's partials, folded into
            zstat_ptr [2, N, C] (m and ext, see ``store_channel_state``).
        d_ptr: [N] drop_path's per-sample factor (HAS_DROP).
        nbt_ptr: num_batches_tracked, incremented by program 0 (INC_NBT).
        ACT: the block's activation (gate_math codes), act_param its slope.
        FLAT_HW > 0: dense NCHW z, s and y, flat tiles (see kernels/tiles.py).
    Grid: (N * num_c_blocks * num_hw_blocks,); flat: (N * num_hw_blocks,).
    """
    ACC = chan_ptr.dtype.element_ty
    if INC_NBT:
        if tl.program_id(0) == 0:
            tl.store(nbt_ptr, tl.load(nbt_ptr) + 1)
    pid = program_index(REVERSE)
    if FLAT_HW > 0:
        n64, o, mask, c, first = flat_tile(pid, C * FLAT_HW, num_hw_blocks, FLAT_HW, BLOCK_HW)
        c_lo = first // FLAT_HW
        cg = c_lo + tl.arange(0, BLOCK_C)
        cg_mask = cg < C
        A, B, g, mean, a = tail_coefficients(chan_ptr, g_ptr, part_ptr, w_ptr, wb_ptr, d_ptr, n64, c_lo, C, SPLIT,
                                             split_stride, BLOCK_C, ECA_WIN, GATE_SRC, CONV_K, CIRCULAR, HAS_CONV_BIAS,
                                             GATE, HAS_DROP)
        owner = cg_mask & (cg * FLAT_HW >= first) & (cg * FLAT_HW < first + BLOCK_HW)
        store_channel_state(stats_ptr, zstat_ptr, g_ptr, mean_ptr, n64, cg, owner, a, g, mean, C, FLAT_HW, stats_split,
                            stats_hw_per_split, split_stride, GATE_SRC)
        idx = c - c_lo
        z = tl.load(z_ptr + n64 * z_batch_stride + o, mask=mask, other=0.0).to(ACC)
        u = tl.gather(A, idx, 0) * z + tl.gather(B, idx, 0)
        if HAS_SHORTCUT:
            u += tl.load(s_ptr + n64 * s_batch_stride + o, mask=mask, other=0.0).to(ACC)
        tl.store(y_ptr + n64 * y_batch_stride + o, apply_act(u, act_param, ACT).to(y_ptr.dtype.element_ty), mask=mask)
    else:
        n64, c, hw, c_mask, hw_mask, hwb = elementwise_tile(pid, C, HW, num_c_blocks, num_hw_blocks, BLOCK_C, BLOCK_HW)
        c0 = (pid // num_hw_blocks) % num_c_blocks * BLOCK_C
        A, B, g, mean, a = tail_coefficients(chan_ptr, g_ptr, part_ptr, w_ptr, wb_ptr, d_ptr, n64, c0, C, SPLIT,
                                             split_stride, BLOCK_C, ECA_WIN, GATE_SRC, CONV_K, CIRCULAR, HAS_CONV_BIAS,
                                             GATE, HAS_DROP)
        store_channel_state(stats_ptr, zstat_ptr, g_ptr, mean_ptr, n64, c, c_mask & (hwb == 0), a, g, mean, C, HW,
                            stats_split, stats_hw_per_split, split_stride, GATE_SRC)
        mask = c_mask[:, None] & hw_mask[None, :]
        z = tl.load(z_ptr + tile_offsets(n64, c, hw, z_batch_stride, z_chan_stride, z_hw_stride), mask=mask, other=0.0).to(ACC)
        u = A[:, None] * z + B[:, None]
        if HAS_SHORTCUT:
            u += tl.load(s_ptr + tile_offsets(n64, c, hw, s_batch_stride, s_chan_stride, s_hw_stride), mask=mask, other=0.0).to(ACC)
        tl.store(y_ptr + tile_offsets(n64, c, hw, y_batch_stride, y_chan_stride, y_hw_stride),
                 apply_act(u, act_param, ACT).to(y_ptr.dtype.element_ty), mask=mask)
