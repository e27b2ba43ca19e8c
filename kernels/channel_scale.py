"""Broadcast multiply y[n, c, hw] = x[n, c, hw] * g[n, c].

The gate is either given (fp32 [N, C], already through its non-linearity) or,
for ECA, computed here from the pooled means: a K-tap 1-D convolution across
channels (zero or circular padding) followed by the gate non-linearity. Doing
the convolution per tile costs K tiny cached loads and saves ECA a launch.

Pass accounting (SE/ECA forward): reads x (pass 2) and writes y (pass 3).
"""
import triton
import triton.language as tl

from .gate_math import apply_gate
from .tiles import elementwise_tile, tile_offsets


@triton.jit
def channel_scale_kernel(
    x_ptr,
    y_ptr,
    g_ptr,
    s_ptr,
    w_ptr,
    b_ptr,
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
    CONV_K: tl.constexpr,
    CIRCULAR: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    GATE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    """Args:
        x_ptr, y_ptr: [N, C, H*W] with their own strides (y keeps x's layout).
        g_ptr: fp32 [N, C] gate, read when CONV_K == 0.
        s_ptr: fp32 [N, C] pooled means, read when CONV_K > 0. g and s share
            one dtype (fp64 for fp64 inputs); the unused one is any valid buffer.
        w_ptr: [CONV_K] conv taps; b_ptr: [1] conv bias (when HAS_BIAS).
        GATE: 0 identity, 1 sigmoid, 2 hard_sigmoid, applied after the conv.
    Grid: (N * num_c_blocks * num_hw_blocks,), hw blocks fastest so that the
    programs of one sample run together.
    """
    ACC = s_ptr.dtype.element_ty  # fp32, or fp64 for fp64 inputs
    n64, c, hw, c_mask, hw_mask = elementwise_tile(tl.program_id(0), C, HW, num_c_blocks, num_hw_blocks, BLOCK_C, BLOCK_HW)
    row = n64 * C
    if CONV_K > 0:
        PAD: tl.constexpr = (CONV_K - 1) // 2
        z = tl.zeros([BLOCK_C], dtype=ACC)
        for j in tl.static_range(CONV_K):
            src = c + (j - PAD)
            if CIRCULAR:
                # double modulo: correct whether % truncates or floors.
                src = ((src % C) + C) % C
                src_mask = c_mask
            else:
                src_mask = c_mask & (src >= 0) & (src < C)
            s = tl.load(s_ptr + row + src, mask=src_mask, other=0.0)
            z += tl.load(w_ptr + j).to(ACC) * s
        if HAS_BIAS:
            z += tl.load(b_ptr).to(ACC)
        g = apply_gate(z, GATE)
    else:
        g = tl.load(g_ptr + row + c, mask=c_mask, other=0.0)

    mask = c_mask[:, None] & hw_mask[None, :]
    x = tl.load(x_ptr + tile_offsets(n64, c, hw, x_batch_stride, x_chan_stride, x_hw_stride), mask=mask)
    y = x.to(ACC) * g[:, None]
    tl.store(y_ptr + tile_offsets(n64, c, hw, y_batch_stride, y_chan_stride, y_hw_stride), y.to(y_ptr.dtype.element_ty), mask=mask)
