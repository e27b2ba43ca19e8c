"""Broadcast multiply y[n, c, hw] = x[n, c, hw] * g[n, c].

The gate is either given ([N, C], already through its non-linearity: SE's
gate kernel, or the unfused scale op) or, for ECA, computed here from the
pooling pass's partial means: a K-tap 1-D convolution across channels (zero
or circular padding) followed by the gate non-linearity. Doing the
convolution per tile costs K tiny cached loads and saves ECA a launch; the
program holding a channel's first element also stores its gate (the
backward's input).

Pass accounting (SE/ECA forward): reads x (pass 2) and writes y (pass 3).
"""
import triton
import triton.language as tl

from .gate_math import apply_gate
from .pooled import fold_split
from .tiles import elementwise_tile, flat_tile, program_index, tile_offsets


@triton.jit
def eca_gate(part_ptr, w_ptr, b_ptr, n64, c0, C, SPLIT, split_stride, BLOCK: tl.constexpr, WIN: tl.constexpr,
             CONV_K: tl.constexpr, CIRCULAR: tl.constexpr, HAS_BIAS: tl.constexpr, GATE: tl.constexpr):
    """(gate(sum_j w[j] * mean[n, c + j - pad] (+ b)), mean[n, c]) for the
    channels c0 .. c0 + BLOCK - 1 of one sample, the means folded from the
    pooling partials. The window c0 - pad .. c0 + BLOCK - 1 + pad is folded
    once and the taps gathered from it, so each mean is read SPLIT times per
    tile, not SPLIT * K times. WIN: a power of two >= BLOCK + K - 1."""
    ACC = part_ptr.dtype.element_ty
    PAD: tl.constexpr = (CONV_K - 1) // 2
    win = tl.arange(0, WIN)
    src = c0 - PAD + win
    if CIRCULAR:
        # double modulo: correct whether % truncates or floors.
        src_mask = win < BLOCK + 2 * PAD
        src = ((src % C) + C) % C
    else:
        src_mask = (win < BLOCK + 2 * PAD) & (src >= 0) & (src < C)
    window = tl.where(src_mask, fold_split(part_ptr, n64 * C + src, src_mask, SPLIT, split_stride, False), 0.0)
    i = tl.arange(0, BLOCK)
    z = tl.zeros([BLOCK], dtype=ACC)
    center = z
    for j in tl.static_range(CONV_K):
        s = tl.gather(window, i + j, 0)
        z += tl.load(w_ptr + j).to(ACC) * s
        if j == PAD:
            center = s
    if HAS_BIAS:
        z += tl.load(b_ptr).to(ACC)
    return apply_gate(z, GATE), center


@triton.jit
def channel_scale_kernel(
    x_ptr,
    y_ptr,
    g_ptr,
    part_ptr,
    mean_ptr,
    w_ptr,
    b_ptr,
    C,
    HW,
    SPLIT,
    split_stride,
    num_c_blocks,
    num_hw_blocks,
    x_batch_stride,
    x_chan_stride,
    x_hw_stride,
    y_batch_stride,
    y_chan_stride,
    y_hw_stride,
    CONV_K: tl.constexpr,
    ECA_WIN: tl.constexpr,
    CIRCULAR: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    GATE: tl.constexpr,
    FLAT_HW: tl.constexpr,
    REVERSE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    """Args:
        x_ptr, y_ptr: [N, C, H*W] with their own strides (y keeps x's layout).
        g_ptr: [N, C] gate, read when CONV_K == 0; with CONV_K > 0 the gate is
            computed and stored here (by the program holding hw = 0).
        part_ptr: [SPLIT, N, C] partial means of the pooling pass (CONV_K > 0);
            ``split_stride`` = N * C. mean_ptr: [N, C] out, the folded means
            (stored with the gate: the backward's input).
        w_ptr: [CONV_K] conv taps; b_ptr: [1] conv bias (when HAS_BIAS);
            ECA_WIN: next_pow2(BLOCK_C + CONV_K - 1), the conv's input window.
        GATE: 0 identity, 1 sigmoid, 2 hard_sigmoid, applied after the conv.
        g and the partials share the accumulation dtype (fp32, fp64 for fp64 x).
        FLAT_HW > 0: x and y are dense NCHW with H*W == FLAT_HW; each program
            takes BLOCK_HW consecutive elements of one sample (num_hw_blocks
            tiles per sample; BLOCK_C covers the channels such a tile spans).
        REVERSE: visit the tiles backwards (L2 reuse of the pooling pass).
    Grid: (N * num_c_blocks * num_hw_blocks,); flat: (N * num_hw_blocks,).
    """
    ACC = g_ptr.dtype.element_ty
    pid = program_index(REVERSE)
    if FLAT_HW > 0:
        numel = C * FLAT_HW
        n64, o, mask, c, first = flat_tile(pid, numel, num_hw_blocks, FLAT_HW, BLOCK_HW)
        # The gates of the channels this tile spans, then gathered per element.
        c_lo = first // FLAT_HW
        cg = c_lo + tl.arange(0, BLOCK_C)
        cg_mask = cg < C
        if CONV_K > 0:
            gv, mv = eca_gate(part_ptr, w_ptr, b_ptr, n64, c_lo, C, SPLIT, split_stride, BLOCK_C, ECA_WIN, CONV_K, CIRCULAR, HAS_BIAS, GATE)
            owner = cg_mask & (cg * FLAT_HW >= first) & (cg * FLAT_HW < first + BLOCK_HW)
            tl.store(g_ptr + n64 * C + cg, gv, mask=owner)
            tl.store(mean_ptr + n64 * C + cg, mv, mask=owner)
        else:
            gv = tl.load(g_ptr + n64 * C + cg, mask=cg_mask, other=0.0)
        g = tl.gather(gv, c - c_lo, 0)
        x = tl.load(x_ptr + n64 * x_batch_stride + o, mask=mask)
        y = x.to(ACC) * g
        tl.store(y_ptr + n64 * y_batch_stride + o, y.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        n64, c, hw, c_mask, hw_mask, hwb = elementwise_tile(pid, C, HW, num_c_blocks, num_hw_blocks, BLOCK_C, BLOCK_HW)
        if CONV_K > 0:
            c0 = (pid // num_hw_blocks) % num_c_blocks * BLOCK_C
            g, mv = eca_gate(part_ptr, w_ptr, b_ptr, n64, c0, C, SPLIT, split_stride, BLOCK_C, ECA_WIN, CONV_K, CIRCULAR, HAS_BIAS, GATE)
            tl.store(g_ptr + n64 * C + c, g, mask=c_mask & (hwb == 0))
            tl.store(mean_ptr + n64 * C + c, mv, mask=c_mask & (hwb == 0))
        else:
            g = tl.load(g_ptr + n64 * C + c, mask=c_mask, other=0.0)
        mask = c_mask[:, None] & hw_mask[None, :]
        x = tl.load(x_ptr + tile_offsets(n64, c, hw, x_batch_stride, x_chan_stride, x_hw_stride), mask=mask)
        y = x.to(ACC) * g[:, None]
        tl.store(y_ptr + tile_offsets(n64, c, hw, y_batch_stride, y_chan_stride, y_hw_stride), y.to(y_ptr.dtype.element_ty), mask=mask)
