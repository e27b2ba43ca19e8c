"""SE gate MLP on the pooled statistics: g[n] = gate(fc2(act(fc1(p[n])))),
or g[n] = gate(fc1(p[n])) without fc2 (EffectiveSE), one program per sample.

Touches no activation memory: it runs between the pooling pass (pass 1, read
x) and the scale pass (pass 2, read x; pass 3, write y), replacing the 4-5
small torch launches of the [N, C] MLP with one, which is what bounds SE at
batch 1.
"""
import triton
import triton.language as tl

from .gate_math import apply_gate


@triton.jit
def apply_hidden_act(h, act_param, ACT: tl.constexpr):
    # ACT codes: triton_attn/activations.py HIDDEN_ACT_CODES. Only functions
    # that need no libdevice (the CPU interpreter has none); exponentials via
    # exp2 as in gate_math. NaN stays NaN everywhere, as in PyTorch.
    if ACT == 1:  # relu
        return tl.maximum(h, 0.0, propagate_nan=tl.PropagateNan.ALL)
    elif ACT == 2:  # relu6
        return tl.minimum(tl.maximum(h, 0.0, propagate_nan=tl.PropagateNan.ALL), 6.0, propagate_nan=tl.PropagateNan.ALL)
    elif ACT == 3:  # leaky_relu: F.leaky_relu keeps h where h > 0 (NaN * slope = NaN)
        return tl.where(h > 0.0, h, h * act_param)
    elif ACT == 4:  # silu, as x / (1 + exp(-x)) like PyTorch
        return h / (1.0 + tl.exp2(-h * 1.4426950408889634))
    elif ACT == 5:  # hard_swish: x * relu6(x + 3) / 6
        return h * tl.minimum(tl.maximum(h + 3.0, 0.0, propagate_nan=tl.PropagateNan.ALL), 6.0, propagate_nan=tl.PropagateNan.ALL) / 6.0
    elif ACT == 6:
        return apply_gate(h, 2)
    elif ACT == 7:
        return apply_gate(h, 1)
    else:
        return h


@triton.jit
def se_gate_kernel(
    pooled_ptr,
    w1_ptr,
    b1_ptr,
    w2_ptr,
    b2_ptr,
    g_ptr,
    C,
    RD,
    act_param,
    pooled_row_stride,
    pooled_batch_stride,
    w1_out_stride,
    w1_in_stride,
    w2_out_stride,
    w2_in_stride,
    POOL_ROWS: tl.constexpr,
    HAS_B1: tl.constexpr,
    HAS_FC2: tl.constexpr,
    HAS_B2: tl.constexpr,
    ACT: tl.constexpr,
    GATE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_RD: tl.constexpr,
):
    """Args:
        pooled_ptr: [POOL_ROWS, N, C] pooled statistics in the accumulation
            dtype (fp32, fp64 for fp64 inputs), channel stride 1. POOL_ROWS 2
            is avgmax: p = 0.5 * mean + 0.5 * amax (timm add_maxpool).
        w1_ptr: fc1 weight [RD, C] (fp32/fp16/bf16/fp64, any strides);
            b1_ptr: [RD] (read when HAS_B1). Without fc2, RD == C.
        w2_ptr: fc2 weight [C, RD]; b2_ptr: [C] (read when HAS_FC2 / HAS_B2).
            Unused pointers are any valid buffer.
        g_ptr: [N, C] output gate, contiguous, in the accumulation dtype.
        act_param: LeakyReLU slope (ACT == 3).
        ACT: hidden activation code, applied between fc1 and fc2 only.
        GATE: 0 identity, 1 sigmoid, 2 hard_sigmoid.
        BLOCK_RD: next power of two >= RD; BLOCK_C: channel chunk.
    Grid: (N,).
    """
    ACC = g_ptr.dtype.element_ty
    n = tl.program_id(0).to(tl.int64)
    r = tl.arange(0, BLOCK_RD)
    r_mask = r < RD
    r64 = r.to(tl.int64)
    p_row = pooled_ptr + n * pooled_batch_stride

    # fc1: h[r] = sum_c w1[r, c] * p[c], one [BLOCK_RD, BLOCK_C] tile at a time.
    h = tl.zeros([BLOCK_RD], dtype=ACC)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        c_mask = c < C
        p = tl.load(p_row + c, mask=c_mask, other=0.0)
        if POOL_ROWS == 2:
            p = 0.5 * p + 0.5 * tl.load(p_row + pooled_row_stride + c, mask=c_mask, other=0.0)
        w = tl.load(
            w1_ptr + r64[:, None] * w1_out_stride + c.to(tl.int64)[None, :] * w1_in_stride,
            mask=r_mask[:, None] & c_mask[None, :], other=0.0,
        ).to(ACC)
        h += tl.sum(w * p[None, :], axis=1)
    if HAS_B1:
        h += tl.load(b1_ptr + r, mask=r_mask, other=0.0).to(ACC)

    g_row = g_ptr + n * C
    if HAS_FC2:
        # Padded rows must contribute nothing: act(0) is 0.5 for the sigmoids.
        a = tl.where(r_mask, apply_hidden_act(h, act_param, ACT), 0.0)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            c_mask = c < C
            w = tl.load(
                w2_ptr + c.to(tl.int64)[:, None] * w2_out_stride + r64[None, :] * w2_in_stride,
                mask=c_mask[:, None] & r_mask[None, :], other=0.0,
            ).to(ACC)
            z = tl.sum(w * a[None, :], axis=1)
            if HAS_B2:
                z += tl.load(b2_ptr + c, mask=c_mask, other=0.0).to(ACC)
            tl.store(g_row + c, apply_gate(z, GATE).to(ACC), mask=c_mask)
    else:
        # EffectiveSE: fc1 maps C -> C, so h already is z over all channels.
        tl.store(g_row + r, apply_gate(h, GATE).to(ACC), mask=r_mask)
