"""Backward of the SE gate MLP on [N, C], in two launches between the
gradient pass (sum_hw dy * x) and the dx pass. Touches no activation memory.

Phase A (``se_gate_backward_a_kernel``), grid (PROGRAMS_A,), each program a
range of fc2's output channels, all samples:
    dz[n, c]   = dg[n, c] * gate'(g[n, c])          dg folded from the split partials
    dw2[c, r]  = sum_n dz[n, c] * act(h[n, r])       complete: every n is here
    db2[c]     = sum_n dz[n, c]
    dhp[p, n, r] = sum_{c in range p} dz[n, c] * w2[c, r]   (split over c: PROGRAMS_A partials)
Without fc2 (EffectiveSE) dz is already fc1's output gradient: it is stored
as dhp[0] and db1 = sum_n dz.

Phase B (``se_gate_backward_b_kernel``), grid (PROGRAMS_B,), each program a
range of fc1's input channels, all samples:
    dh[n, r]   = act'(h[n, r]) * sum_p dhp[p, n, r]
    dw1[r, c]  = sum_n dh[n, r] * q[n, c]            q the squeezed pooled statistic
    db1[r]     = sum_n dh[n, r]                      (program 0)
    dq[n, c]   = sum_r dh[n, r] * w1[r, c]
    dmean[n, c] = dq * share / HW,  dmax[n, c] = dq * share / ties   (the dx pass's coefficients)
Pair mode (POOL 3, CBAM's channel attention: z = W2 (act(h_mean) +
act(h_max)) + 2 b2) shares dz and dh's partials between the two rows, and
gives each row its own dh and dq: dmean from the mean row, dmax from the max.

dg is the fold of one partial row (DG_MODE 0), the sum of two (1: CBAM's two
gradient passes), or coef0[c] * row0 + coef1[c] * row1 (2: the fused tail,
where dg = gamma * sum(e * xhat) + beta * sum(e)).

Weight gradients are written in the weights' own dtype; every sum runs in a
fixed order (deterministic, no atomics).
"""
import triton
import triton.language as tl

from .gate_math import act_backward, apply_act, gate_backward_from_output
from .pooled import fold_split, squeeze


@triton.jit
def se_gate_backward_a_kernel(
    dg_part_ptr,
    coef_ptr,
    g_ptr,
    h_ptr,
    w2_ptr,
    dz_ptr,
    dw2_ptr,
    db2_ptr,
    dhp_ptr,
    N,
    C,
    RD,
    SPLIT,
    c_per_program,
    act_param,
    w2_out_stride,
    w2_in_stride,
    HAS_FC2: tl.constexpr,
    HAS_B2: tl.constexpr,
    PAIR: tl.constexpr,
    DG_MODE: tl.constexpr,
    ACT: tl.constexpr,
    GATE: tl.constexpr,
    PREC: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    """Args:
        dg_part_ptr: [DG_ROWS, SPLIT, N, C] partial sums of the gate's
            gradient (dy * x); see DG_MODE. coef_ptr: [2, C] (DG_MODE 2).
        g_ptr: [N, C] the forward's gate; h_ptr: [ROWS, N, RD] fc1's output
            before the activation (ROWS 2 in pair mode; unused without fc2).
        w2_ptr: fc2 weight [C, RD] (any strides, any float dtype).
        dz_ptr: [N, C] scratch (dz), read back by this program.
        dw2_ptr [C, RD] (contiguous, w2's dtype), db2_ptr [C] (b2's dtype):
            outputs with fc2. Without fc2, db2_ptr receives fc1's bias
            gradient [C]. HAS_B2: that bias exists.
        dhp_ptr: [PROGRAMS_A, N, RD] partials of dh (without fc2: [1, N, C],
            dz itself).
    Grid: (PROGRAMS_A,), program p owns channels [p * c_per_program, ...).
    """
    ACC = g_ptr.dtype.element_ty
    pid = tl.program_id(0)
    c_start = pid * c_per_program
    c_stop = tl.minimum(c_start + c_per_program, C)
    NC = tl.cast(N, tl.int64) * C
    NR = tl.cast(N, tl.int64) * RD
    # dz for every sample of this channel range.
    for c0 in range(c_start, c_stop, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        c_mask = c < c_stop
        db = tl.zeros([BLOCK_C], dtype=ACC)
        for n0 in range(0, N, BLOCK_N):
            n = n0 + tl.arange(0, BLOCK_N)
            mask = (n < N)[:, None] & c_mask[None, :]
            offs = n.to(tl.int64)[:, None] * C + c[None, :]
            dg = fold_split(dg_part_ptr, offs, mask, SPLIT, NC, False)
            if DG_MODE == 1:
                dg += fold_split(dg_part_ptr + SPLIT * NC, offs, mask, SPLIT, NC, False)
            elif DG_MODE == 2:
                dg1 = fold_split(dg_part_ptr + SPLIT * NC, offs, mask, SPLIT, NC, False)
                k0 = tl.load(coef_ptr + c, mask=c_mask, other=0.0)
                k1 = tl.load(coef_ptr + C + c, mask=c_mask, other=0.0)
                dg = k0[None, :] * dg + k1[None, :] * dg1
            g = tl.load(g_ptr + offs, mask=mask, other=0.0)
            dz = tl.where(mask, gate_backward_from_output(g, dg, GATE), 0.0)
            if HAS_FC2:
                tl.store(dz_ptr + offs, dz, mask=mask)
            else:
                tl.store(dhp_ptr + offs, dz, mask=mask)
            db += tl.sum(dz, axis=0)
        if HAS_B2:
            # b2 enters z once per row (twice in pair mode); without fc2 this
            # is fc1's bias, z itself.
            tl.store(db2_ptr + c, (db * (2.0 if PAIR else 1.0)).to(db2_ptr.dtype.element_ty), mask=c_mask)
    if HAS_FC2:
        tl.debug_barrier()
        # dw2[c, r] = sum_n dz[n, c] * a[n, r], complete per channel chunk.
        for c0 in range(c_start, c_stop, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            c_mask = c < c_stop
            for r0 in range(0, RD, BLOCK_R):
                r = r0 + tl.arange(0, BLOCK_R)
                r_mask = r < RD
                acc = tl.zeros([BLOCK_C, BLOCK_R], dtype=ACC)
                for n0 in range(0, N, BLOCK_N):
                    n = n0 + tl.arange(0, BLOCK_N)
                    n_mask = n < N
                    n64 = n.to(tl.int64)
                    dzt = tl.load(dz_ptr + n64[None, :] * C + c[:, None], mask=c_mask[:, None] & n_mask[None, :], other=0.0)
                    hm = n_mask[:, None] & r_mask[None, :]
                    h = tl.load(h_ptr + n64[:, None] * RD + r[None, :], mask=hm, other=0.0)
                    a = tl.where(hm, apply_act(h, act_param, ACT), 0.0)
                    if PAIR:
                        h2 = tl.load(h_ptr + NR + n64[:, None] * RD + r[None, :], mask=hm, other=0.0)
                        a += tl.where(hm, apply_act(h2, act_param, ACT), 0.0)
                    acc += tl.dot(dzt, a, input_precision=PREC)
                tl.store(dw2_ptr + c.to(tl.int64)[:, None] * RD + r[None, :], acc.to(dw2_ptr.dtype.element_ty),
                         mask=c_mask[:, None] & r_mask[None, :])
        # dhp[p, n, r] = sum_{c in this range} dz[n, c] * w2[c, r].
        dhp_rows = dhp_ptr + pid.to(tl.int64) * N * RD
        for n0 in range(0, N, BLOCK_N):
            n = n0 + tl.arange(0, BLOCK_N)
            n_mask = n < N
            n64 = n.to(tl.int64)
            for r0 in range(0, RD, BLOCK_R):
                r = r0 + tl.arange(0, BLOCK_R)
                r_mask = r < RD
                acc = tl.zeros([BLOCK_N, BLOCK_R], dtype=ACC)
                for c0 in range(c_start, c_stop, BLOCK_C):
                    c = c0 + tl.arange(0, BLOCK_C)
                    c_mask = c < c_stop
                    dz = tl.load(dz_ptr + n64[:, None] * C + c[None, :], mask=n_mask[:, None] & c_mask[None, :], other=0.0)
                    w = tl.load(
                        w2_ptr + c.to(tl.int64)[:, None] * w2_out_stride + r.to(tl.int64)[None, :] * w2_in_stride,
                        mask=c_mask[:, None] & r_mask[None, :], other=0.0,
                    ).to(ACC)
                    acc += tl.dot(dz, w, input_precision=PREC)
                tl.store(dhp_rows + n64[:, None] * RD + r[None, :], acc, mask=n_mask[:, None] & r_mask[None, :])


@triton.jit
def se_gate_backward_b_kernel(
    dhp_ptr,
    h_ptr,
    pooled_ptr,
    cnt_part_ptr,
    w1_ptr,
    dh_ptr,
    dw1_ptr,
    db1_ptr,
    dmean_ptr,
    dmax_ptr,
    N,
    C,
    RD,
    HW,
    PARTS,
    SPLIT,
    c_per_program,
    act_param,
    w1_out_stride,
    w1_in_stride,
    POOL: tl.constexpr,
    HAS_FC2: tl.constexpr,
    HAS_B1: tl.constexpr,
    NEED_DX: tl.constexpr,
    ACT: tl.constexpr,
    PREC: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    """Args:
        dhp_ptr: [PARTS, N, RD] phase A's partials (without fc2: [1, N, C]).
        h_ptr: [N, RD] fc1's output before the activation (with fc2).
        pooled_ptr: [P, N, C] the forward's folded pooled statistics.
        cnt_part_ptr: [SPLIT, N, C] partial tie counts of the max (POOL 1, 2).
        w1_ptr: fc1 weight [RD, C] (any strides, any float dtype).
        dh_ptr: [PROGRAMS_B, ROWS, N, RD] scratch, one region per program
            (ROWS 2 in pair mode: the mean row's and the max row's dh).
        dw1_ptr [RD, C] (contiguous, w1's dtype), db1_ptr [RD] (b1's dtype).
        dmean_ptr, dmax_ptr: [N, C] out, the dx pass's coefficients (NEED_DX).
        Without fc2, RD == C.
    Grid: (PROGRAMS_B,), program p owns fc1 input channels [p * c_per_program, ...).
    """
    ACC = h_ptr.dtype.element_ty
    PAIR: tl.constexpr = POOL == 3
    ROWS: tl.constexpr = 2 if POOL == 3 else 1
    pid = tl.program_id(0)
    c_start = pid * c_per_program
    c_stop = tl.minimum(c_start + c_per_program, C)
    NC = tl.cast(N, tl.int64) * C
    NR = tl.cast(N, tl.int64) * RD
    dh_rows = dh_ptr + pid.to(tl.int64) * ROWS * NR
    # dh for every sample: fold phase A's partials, through act'.
    for n0 in range(0, N, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        n_mask = n < N
        for r0 in range(0, RD, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            mask = n_mask[:, None] & (r < RD)[None, :]
            offs = n.to(tl.int64)[:, None] * RD + r[None, :]
            da = fold_split(dhp_ptr, offs, mask, PARTS, NR, False)
            if HAS_FC2:
                dh = act_backward(tl.load(h_ptr + offs, mask=mask, other=0.0), da, act_param, ACT)
            else:
                dh = da
            tl.store(dh_rows + offs, tl.where(mask, dh, 0.0), mask=mask)
            if PAIR:
                dh2 = act_backward(tl.load(h_ptr + NR + offs, mask=mask, other=0.0), da, act_param, ACT)
                tl.store(dh_rows + NR + offs, tl.where(mask, dh2, 0.0), mask=mask)
    tl.debug_barrier()
    if HAS_B1:
        if pid == 0:
            for r0 in range(0, RD, BLOCK_R):
                r = r0 + tl.arange(0, BLOCK_R)
                r_mask = r < RD
                db = tl.zeros([BLOCK_R], dtype=ACC)
                for n0 in range(0, N, BLOCK_N):
                    n = n0 + tl.arange(0, BLOCK_N)
                    mask = (n < N)[:, None] & r_mask[None, :]
                    db += tl.sum(tl.load(dh_rows + n.to(tl.int64)[:, None] * RD + r[None, :], mask=mask, other=0.0), axis=0)
                    if PAIR:
                        db += tl.sum(tl.load(dh_rows + NR + n.to(tl.int64)[:, None] * RD + r[None, :], mask=mask, other=0.0), axis=0)
                tl.store(db1_ptr + r, db.to(db1_ptr.dtype.element_ty), mask=r_mask)
    for c0 in range(c_start, c_stop, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        c_mask = c < c_stop
        # dw1[r, c] = sum_n dh[n, r] * q[n, c]
        for r0 in range(0, RD, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            r_mask = r < RD
            acc = tl.zeros([BLOCK_R, BLOCK_C], dtype=ACC)
            for n0 in range(0, N, BLOCK_N):
                n = n0 + tl.arange(0, BLOCK_N)
                n_mask = n < N
                n64 = n.to(tl.int64)
                dht = tl.load(dh_rows + n64[None, :] * RD + r[:, None], mask=r_mask[:, None] & n_mask[None, :], other=0.0)
                qm = n_mask[:, None] & c_mask[None, :]
                offs = n64[:, None] * C + c[None, :]
                first = tl.load(pooled_ptr + offs, mask=qm, other=0.0)
                if POOL >= 2:
                    second = tl.load(pooled_ptr + NC + offs, mask=qm, other=0.0)
                else:
                    second = first
                if PAIR:
                    acc += tl.dot(dht, tl.where(qm, first, 0.0), input_precision=PREC)
                    dht2 = tl.load(dh_rows + NR + n64[None, :] * RD + r[:, None], mask=r_mask[:, None] & n_mask[None, :], other=0.0)
                    acc += tl.dot(dht2, tl.where(qm, second, 0.0), input_precision=PREC)
                else:
                    acc += tl.dot(dht, tl.where(qm, squeeze(first, second, POOL), 0.0), input_precision=PREC)
            tl.store(dw1_ptr + r.to(tl.int64)[:, None] * C + c[None, :], acc.to(dw1_ptr.dtype.element_ty),
                     mask=r_mask[:, None] & c_mask[None, :])
        if NEED_DX:
            # dq[n, c] = sum_r dh[n, r] * w1[r, c] -> the dx pass's coefficients.
            for n0 in range(0, N, BLOCK_N):
                n = n0 + tl.arange(0, BLOCK_N)
                n_mask = n < N
                n64 = n.to(tl.int64)
                dq = tl.zeros([BLOCK_N, BLOCK_C], dtype=ACC)
                dq2 = tl.zeros([BLOCK_N, BLOCK_C], dtype=ACC)
                for r0 in range(0, RD, BLOCK_R):
                    r = r0 + tl.arange(0, BLOCK_R)
                    r_mask = r < RD
                    hm = n_mask[:, None] & r_mask[None, :]
                    dh = tl.load(dh_rows + n64[:, None] * RD + r[None, :], mask=hm, other=0.0)
                    w = tl.load(
                        w1_ptr + r.to(tl.int64)[:, None] * w1_out_stride + c.to(tl.int64)[None, :] * w1_in_stride,
                        mask=r_mask[:, None] & c_mask[None, :], other=0.0,
                    ).to(ACC)
                    dq += tl.dot(dh, w, input_precision=PREC)
                    if PAIR:
                        dq2 += tl.dot(tl.load(dh_rows + NR + n64[:, None] * RD + r[None, :], mask=hm, other=0.0), w, input_precision=PREC)
                mask = n_mask[:, None] & c_mask[None, :]
                offs = n64[:, None] * C + c[None, :]
                share = 0.5 if POOL == 2 else 1.0
                if POOL != 1:
                    tl.store(dmean_ptr + offs, dq * share / HW, mask=mask)
                if PAIR:
                    dq = dq2  # the max row's gradient
                if POOL != 0:
                    cnt = fold_split(cnt_part_ptr, offs, mask, SPLIT, NC, False)
                    # torch.amax splits the gradient evenly between tied maxima;
                    # a NaN max has no ties (NaN != NaN) and gets a NaN gradient.
                    tl.store(dmax_ptr + offs, tl.where(cnt > 0, dq * share / tl.maximum(cnt, 1.0), float("nan")), mask=mask)
