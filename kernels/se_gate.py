"""SE gate MLP on the pooled statistics, in one launch for any batch:
g[n] = gate(fc2(act(fc1(p[n])))), or g[n] = gate(fc1(p[n])) without fc2
(EffectiveSE). Touches no activation memory: it runs between the pooling pass
(pass 1, read x) and the scale pass (pass 2 read x, pass 3 write y), and
folds the pooling's split partials itself (no combine launch).

POOL 3 ("pair", CBAM's channel attention) runs the mean and the max rows
through fc1 and the activation separately and sums them before fc2:
z = fc2(act(fc1(mean))) + fc2(act(fc1(max))) = W2 (a_mean + a_max) + 2 b2.

Grid (cdiv(N, BLOCK_N), SLICES): a program owns BLOCK_N samples and one
slice of the output channels. With fc2 it computes all of fc1 for its
samples (so fc1's weights are read once per sample block and slice) and fc2
for its slice; without fc2 its slice of fc1. SLICES > 1 only at small batch,
to spread the weight reads over more SMs. The products are tl.dot tiles
(3xTF32 for fp32 accumulation: ~fp32 accuracy on tensor cores; IEEE for fp64).
"""
import triton
import triton.language as tl

from .gate_math import apply_act, apply_gate
from .pooled import fold_pooled, squeeze


@triton.jit
def se_gate_kernel(
    part_ptr,
    pooled_ptr,
    w1_ptr,
    b1_ptr,
    w2_ptr,
    b2_ptr,
    h_ptr,
    h_scratch_ptr,
    g_ptr,
    N,
    C,
    RD,
    SPLIT,
    c_per_slice,
    act_param,
    w1_out_stride,
    w1_in_stride,
    w2_out_stride,
    w2_in_stride,
    POOL: tl.constexpr,
    HAS_B1: tl.constexpr,
    HAS_FC2: tl.constexpr,
    HAS_B2: tl.constexpr,
    ACT: tl.constexpr,
    GATE: tl.constexpr,
    PREC: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    """Args:
        part_ptr: [P, SPLIT, N, C] pooling partials (see kernels/pooled.py).
        pooled_ptr: [P, N, C] out: the folded statistics (the backward's
            input), written by slice 0.
        w1_ptr: fc1 weight [RD, C] (any float dtype, any strides); b1_ptr [RD].
            Without fc2, RD == C.
        w2_ptr: fc2 weight [C, RD]; b2_ptr [C]. Unused pointers: any buffer.
        h_ptr: [ROWS, N, RD] out, fc1's output before the activation (the
            backward's input; ROWS = 2 in pair mode), written by slice 0; the
            other slices write theirs to h_scratch_ptr [SLICES - 1, ROWS, N,
            RD]. Without fc2: [N, C], the gate's input z, each slice its own
            channels.
        g_ptr: [N, C] out, the gate.
        All small buffers are contiguous, in the accumulation dtype.
        c_per_slice: output channels per slice (a multiple of BLOCK_C).
        PREC: tl.dot input precision ("tf32x3" for fp32, "ieee" for fp64).
    Grid: (cdiv(N, BLOCK_N), SLICES).
    """
    ACC = g_ptr.dtype.element_ty
    PAIR: tl.constexpr = POOL == 3
    ROWS: tl.constexpr = 2 if POOL == 3 else 1
    slice_id = tl.program_id(1)
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = n < N
    n64 = n.to(tl.int64)
    NC = tl.cast(N, tl.int64) * C
    c_start = slice_id * c_per_slice
    c_stop = tl.minimum(c_start + c_per_slice, C)
    if HAS_FC2:
        OUT = RD
        o_start = 0
        o_stop = RD
        if slice_id == 0:
            h_rows = h_ptr
        else:
            h_rows = h_scratch_ptr + (slice_id - 1) * ROWS * tl.cast(N, tl.int64) * RD
    else:
        OUT = C
        o_start = c_start
        o_stop = c_stop
        h_rows = h_ptr

    # Layer 1 over output chunks: acc[n, o] = sum_c q[n, c] * w1[o, c].
    for o0 in range(o_start, o_stop, BLOCK_R):
        o = o0 + tl.arange(0, BLOCK_R)
        o_mask = o < o_stop
        acc = tl.zeros([BLOCK_N, BLOCK_R], dtype=ACC)
        acc2 = tl.zeros([BLOCK_N, BLOCK_R], dtype=ACC)
        write_pooled = (slice_id == 0) & (o0 == o_start)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            c_mask = c < C
            mask = n_mask[:, None] & c_mask[None, :]
            offs = n64[:, None] * C + c[None, :]
            first, second = fold_pooled(part_ptr, offs, mask, SPLIT, NC, SPLIT * NC, POOL)
            tl.store(pooled_ptr + offs, first, mask=mask & write_pooled)
            if POOL >= 2:
                tl.store(pooled_ptr + NC + offs, second, mask=mask & write_pooled)
            w = tl.load(
                w1_ptr + o.to(tl.int64)[None, :] * w1_out_stride + c.to(tl.int64)[:, None] * w1_in_stride,
                mask=c_mask[:, None] & o_mask[None, :], other=0.0,
            ).to(ACC)
            if PAIR:
                acc += tl.dot(tl.where(mask, first, 0.0), w, input_precision=PREC)
                acc2 += tl.dot(tl.where(mask, second, 0.0), w, input_precision=PREC)
            else:
                acc += tl.dot(tl.where(mask, squeeze(first, second, POOL), 0.0), w, input_precision=PREC)
        if HAS_B1:
            b1 = tl.load(b1_ptr + o, mask=o_mask, other=0.0).to(ACC)[None, :]
            acc += b1
            acc2 += b1
        out_mask = n_mask[:, None] & o_mask[None, :]
        tl.store(h_rows + n64[:, None] * OUT + o[None, :], acc, mask=out_mask)
        if PAIR:
            tl.store(h_rows + tl.cast(N, tl.int64) * RD + n64[:, None] * OUT + o[None, :], acc2, mask=out_mask)
        if not HAS_FC2:
            tl.store(g_ptr + n64[:, None] * C + o[None, :], apply_gate(acc, GATE).to(ACC), mask=out_mask)

    if HAS_FC2:
        # h was stored in the layout of its producer; read it back in chunks
        # (any RD fits), which needs every thread's stores first.
        tl.debug_barrier()
        for c0 in range(c_start, c_stop, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            c_mask = c < c_stop
            z = tl.zeros([BLOCK_N, BLOCK_C], dtype=ACC)
            for r0 in range(0, RD, BLOCK_R):
                r = r0 + tl.arange(0, BLOCK_R)
                r_mask = r < RD
                hm = n_mask[:, None] & r_mask[None, :]
                h = tl.load(h_rows + n64[:, None] * RD + r[None, :], mask=hm, other=0.0)
                # Padded rows must contribute nothing: act(0) is 0.5 for the sigmoids.
                a = tl.where(hm, apply_act(h, act_param, ACT), 0.0)
                if PAIR:
                    h2 = tl.load(h_rows + tl.cast(N, tl.int64) * RD + n64[:, None] * RD + r[None, :], mask=hm, other=0.0)
                    a += tl.where(hm, apply_act(h2, act_param, ACT), 0.0)
                w = tl.load(
                    w2_ptr + c.to(tl.int64)[None, :] * w2_out_stride + r.to(tl.int64)[:, None] * w2_in_stride,
                    mask=r_mask[:, None] & c_mask[None, :], other=0.0,
                ).to(ACC)
                z += tl.dot(a, w, input_precision=PREC)
            if HAS_B2:
                z += ROWS * tl.load(b2_ptr + c, mask=c_mask, other=0.0).to(ACC)[None, :]
            tl.store(g_ptr + n64[:, None] * C + c[None, :], apply_gate(z, GATE).to(ACC), mask=n_mask[:, None] & c_mask[None, :])
