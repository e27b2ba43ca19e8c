"""CBAM's spatial branch on the small [N, M, H, W] map (M = 2 maps: the mean
and the amax over C of x1 = x * ca, or M = 1 for the light block: their
average), forward and backward. Touches no activation memory: it runs
between the per-pixel statistics pass and the scale pass (forward), and
between the gradient pass and the channel-gradient pass (backward).

Grid (N * PB,): a program owns ``rows`` consecutive rows of one sample
(PB = 1: the whole sample). The k x k convolution needs each pixel's
neighbours, so a program first folds the per-split partials of its rows and
of ``PAD`` rows either side (the halo) into a private scratch window, then
(after a barrier) reads the window back shifted. The convolution is one
[T_PAD, BLOCK_P] tile per block of pixels, T = M * k * k taps on the first
axis: the forward is a weighted sum over the taps, the weight gradient a sum
over the pixels, the transpose a sum over the taps of the shifted gradient.

BatchNorm: eval folds into an affine map of the conv output; training needs
the batch statistics of the conv output z, which no program sees whole:
each program stores (count, mean, M2) of its own pixels, combined by the
consumers with Chan's formula (never E[z^2] - E[z]^2). Its backward needs two
global sums (sum du and sum du * zhat), hence two launches (PHASE 1, 2).
"""
import triton
import triton.language as tl

from .gate_math import apply_gate, gate_backward_from_output
from .pooled import fold_split


@triton.jit
def program_rows(pid, H, W, rows, num_pb, PAD: tl.constexpr):
    """(n as int64, own first pixel, own stop, window first pixel, window
    stop) of one program; pixels are flat indices h * W + w of one sample."""
    n64 = (pid // num_pb).to(tl.int64)
    r0 = (pid % num_pb) * rows
    r1 = tl.minimum(r0 + rows, H)
    return n64, r0 * W, r1 * W, tl.maximum(r0 - PAD, 0) * W, tl.minimum(r1 + PAD, H) * W


@triton.jit
def taps(T, K: tl.constexpr, T_PAD: tl.constexpr):
    """(tap index, mask, input map of the tap, row shift, column shift)."""
    PAD: tl.constexpr = (K - 1) // 2
    t = tl.arange(0, T_PAD)
    r = t % (K * K)
    return t, t < T, t // (K * K), r // K - PAD, r % K - PAD


@triton.jit
def shifted(base_ptr, tap_off, origin, h, w, p_mask, di, dj, t_mask, H, W):
    """[T_PAD, BLOCK_P] tile: element (t, p) is the map value at pixel
    (h[p] + di[t], w[p] + dj[t]) (0 outside the map), read at
    ``base_ptr + tap_off[t] + pixel - origin``."""
    hh = h[None, :] + di[:, None]
    ww = w[None, :] + dj[:, None]
    ok = t_mask[:, None] & p_mask[None, :] & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
    return tl.load(base_ptr + tap_off[:, None] + (hh * W + ww - origin), mask=ok, other=0.0)


@triton.jit
def conv_input(base_ptr, map_stride, origin, h, w, p_mask, m, di, dj, t_mask, H, W,
               M: tl.constexpr, MAX_FIRST: tl.constexpr):
    """The conv's input at the taps' positions, from a (mean, max) pair of
    maps ``map_stride`` apart: channel m is the mean or the max (in the
    concat order), or for M = 1 their average 0.5 * mean + 0.5 * max."""
    if M == 1:
        mean = shifted(base_ptr, m * 0, origin, h, w, p_mask, di, dj, t_mask, H, W)
        mx = shifted(base_ptr + map_stride, m * 0, origin, h, w, p_mask, di, dj, t_mask, H, W)
        return 0.5 * mean + 0.5 * mx
    else:
        if MAX_FIRST:
            sel = 1 - m
        else:
            sel = m
        return shifted(base_ptr, sel.to(tl.int64) * map_stride, origin, h, w, p_mask, di, dj, t_mask, H, W)


@triton.jit
def inv_sqrt(v):
    """1 / sqrt(v) with an IEEE square root (fp32: sqrt_rn; fp64's is exact)."""
    if v.dtype == tl.float64:
        return 1.0 / tl.sqrt(v)
    else:
        return 1.0 / tl.sqrt_rn(v)


@triton.jit
def bn_eval_affine(gamma_ptr, beta_ptr, rm_ptr, rv_ptr, eps, ACC: tl.constexpr,
                   HAS_GAMMA: tl.constexpr, HAS_BETA: tl.constexpr):
    """(scale, running mean, beta, running invstd) of an eval BatchNorm:
    bn(z) = (z - rm) * scale + beta, scale = gamma * invstd."""
    rm = tl.load(rm_ptr).to(ACC)
    invstd = inv_sqrt(tl.load(rv_ptr).to(ACC) + eps)
    scale = invstd
    if HAS_GAMMA:
        scale = tl.load(gamma_ptr).to(ACC) * invstd
    beta = tl.zeros_like(rm)
    if HAS_BETA:
        beta = tl.load(beta_ptr).to(ACC)
    return scale, rm, beta, invstd


@triton.jit
def bn_batch_stats(bnp_ptr, P, BLOCK: tl.constexpr):
    """(count, mean, biased variance) of the batch from the per-program
    (count, mean, M2) triples ``bnp_ptr`` [P, 3]: mean = sum n_i m_i / n,
    M2 = sum M2_i + sum n_i (m_i - mean)^2 (Chan et al.), in a fixed order."""
    ACC = bnp_ptr.dtype.element_ty
    cnt = tl.zeros([BLOCK], dtype=ACC)
    s = tl.zeros([BLOCK], dtype=ACC)
    for p0 in range(0, P, BLOCK):
        p = p0 + tl.arange(0, BLOCK)
        pm = p < P
        n_i = tl.load(bnp_ptr + p * 3, mask=pm, other=0.0)
        cnt += n_i
        s += n_i * tl.load(bnp_ptr + p * 3 + 1, mask=pm, other=0.0)
    n = tl.sum(cnt, axis=0)
    mean = tl.sum(s, axis=0) / n
    m2 = tl.zeros([BLOCK], dtype=ACC)
    for p0 in range(0, P, BLOCK):
        p = p0 + tl.arange(0, BLOCK)
        pm = p < P
        n_i = tl.load(bnp_ptr + p * 3, mask=pm, other=0.0)
        d = tl.load(bnp_ptr + p * 3 + 1, mask=pm, other=0.0) - mean
        m2 += tl.load(bnp_ptr + p * 3 + 2, mask=pm, other=0.0) + tl.where(pm, n_i * d * d, 0.0)
    return n, mean, tl.sum(m2, axis=0) / n


@triton.jit
def cbam_spatial_kernel(
    part_ptr,
    maps_ptr,
    work_ptr,
    w_ptr,
    z_ptr,
    sa_ptr,
    bnp_ptr,
    gamma_ptr,
    beta_ptr,
    rm_ptr,
    rv_ptr,
    N,
    H,
    W,
    SPLIT,
    rows,
    num_pb,
    win_size,
    eps,
    M: tl.constexpr,
    K: tl.constexpr,
    T_PAD: tl.constexpr,
    MAX_FIRST: tl.constexpr,
    BN: tl.constexpr,
    HAS_GAMMA: tl.constexpr,
    HAS_BETA: tl.constexpr,
    GATE: tl.constexpr,
    BLOCK_F: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    """Forward of the spatial branch (CBAM forward, between passes 2 and 3).

    Args:
        part_ptr: [2, SPLIT, N, H*W] partials of the per-pixel statistics
            pass: row 0 the mean over a C split (already / C), row 1 its max.
        maps_ptr: [2, N, H*W] out: the folded (mean, max) maps (the
            backward's input), each program its own rows.
        work_ptr: [N * PB, 2, win_size] scratch: the program's window.
        w_ptr: spatial conv weight [1, M, K, K] (any float dtype, dense).
        z_ptr: [N, H*W] out: the conv output.
        sa_ptr: [N, H*W] out: the spatial gate, gate(bn(z)) (BN 0, 1).
        bnp_ptr: [N * PB, 3] out (BN 2): (count, mean, M2) of z over the
            program's own pixels.
        gamma_ptr, beta_ptr, rm_ptr, rv_ptr: BatchNorm weight, bias and
            running statistics ([1] each, their own dtypes; BN 1 reads all).
        BN: 0 none, 1 eval (running statistics), 2 training (batch statistics,
            applied by the scale pass).
        MAX_FIRST: the conv's channel 0 is the max map (official CBAM, seed).
        Small buffers: contiguous, accumulation dtype (fp32, fp64 for fp64 x).
    Grid: (N * PB,).
    """
    ACC = z_ptr.dtype.element_ty
    PAD: tl.constexpr = (K - 1) // 2
    T = M * K * K
    HW = H * W
    NHW = (tl.zeros([], dtype=tl.int64) + N) * HW  # (an int argument equal to 1 arrives as a constant)
    pid = tl.program_id(0)
    n64, own_lo, own_hi, win_lo, win_hi = program_rows(pid, H, W, rows, num_pb, PAD)
    work = work_ptr + pid.to(tl.int64) * 2 * win_size
    row = n64 * HW
    # Fold the statistics of the window (own rows and the halo).
    for q0 in range(win_lo, win_hi, BLOCK_F):
        q = q0 + tl.arange(0, BLOCK_F)
        qm = q < win_hi
        mean = fold_split(part_ptr, row + q, qm, SPLIT, NHW, False)
        mx = fold_split(part_ptr + SPLIT * NHW, row + q, qm, SPLIT, NHW, True)
        tl.store(work + q - win_lo, mean, mask=qm)
        tl.store(work + win_size + q - win_lo, mx, mask=qm)
        own = qm & (q >= own_lo) & (q < own_hi)
        tl.store(maps_ptr + row + q, mean, mask=own)
        tl.store(maps_ptr + NHW + row + q, mx, mask=own)
    tl.debug_barrier()

    t, t_mask, m, di, dj = taps(T, K, T_PAD)
    wv = tl.load(w_ptr + t, mask=t_mask, other=0.0).to(ACC)
    if BN == 1:
        scale, rm, beta, _ = bn_eval_affine(gamma_ptr, beta_ptr, rm_ptr, rv_ptr, eps, ACC, HAS_GAMMA, HAS_BETA)
    cnt = tl.zeros([BLOCK_P], dtype=ACC).sum(axis=0)
    mean_z = cnt
    m2_z = cnt
    for p0 in range(own_lo, own_hi, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pm = p < own_hi
        h = p // W
        w = p - h * W
        s = conv_input(work, win_size, win_lo, h, w, pm, m, di, dj, t_mask, H, W, M, MAX_FIRST)
        z = tl.sum(wv[:, None] * s, axis=0)
        tl.store(z_ptr + row + p, z, mask=pm)
        if BN == 2:
            # Chan's combine of this block's (count, mean, M2) into the program's.
            nb = tl.sum(pm.to(ACC), axis=0)
            mb = tl.sum(tl.where(pm, z, 0.0), axis=0) / nb
            db = tl.where(pm, z - mb, 0.0)
            m2b = tl.sum(db * db, axis=0)
            tot = cnt + nb
            delta = mb - mean_z
            mean_z = mean_z + delta * (nb / tot)
            m2_z = m2_z + m2b + delta * delta * (cnt * nb / tot)
            cnt = tot
        else:
            u = z
            if BN == 1:
                u = (z - rm) * scale + beta
            tl.store(sa_ptr + row + p, apply_gate(u, GATE), mask=pm)
    if BN == 2:
        tl.store(bnp_ptr + pid * 3, cnt)
        tl.store(bnp_ptr + pid * 3 + 1, mean_z)
        tl.store(bnp_ptr + pid * 3 + 2, m2_z)


@triton.jit
def cbam_spatial_backward_kernel(
    part_ptr,
    sa_ptr,
    z_ptr,
    maps_ptr,
    bnstat_ptr,
    du_ptr,
    work_ptr,
    w_ptr,
    coef_ptr,
    wpart_ptr,
    gamma_ptr,
    rm_ptr,
    rv_ptr,
    N,
    C,
    H,
    W,
    SPLIT,
    rows,
    num_pb,
    win_size,
    eps,
    M: tl.constexpr,
    K: tl.constexpr,
    T_PAD: tl.constexpr,
    FOLD_W: tl.constexpr,
    MAX_FIRST: tl.constexpr,
    BN: tl.constexpr,
    PHASE: tl.constexpr,
    HAS_GAMMA: tl.constexpr,
    GATE: tl.constexpr,
    BLOCK_F: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    """Backward of the spatial branch (CBAM backward, between passes 2 and 3):
    from the gradient pass's partials to the per-pixel coefficients of the
    dx pass and the weight-gradient partials.

    PHASE 0 (BN 0 or 1): everything in one launch. With training BatchNorm
    (BN 2): PHASE 1 stores du = d sa * gate' and the partial sums of du and
    du * zhat; PHASE 2 folds those sums and does the rest.

    Args:
        part_ptr: [2, SPLIT, N, H*W] partials of the gradient pass: row 0
            sum_c dy * x * ca, row 1 the tie counts of the max over C.
        sa_ptr, z_ptr: [N, H*W] the forward's gate and conv output.
        maps_ptr: [2, N, H*W] the forward's (mean, max) maps.
        bnstat_ptr: [2] the batch mean and invstd (BN 2).
        du_ptr: [N, H*W] scratch (BN 2: PHASE 1 writes, PHASE 2 reads).
        work_ptr: [N * PB, win_size] scratch: dz over the program's window.
        w_ptr: spatial conv weight [1, M, K, K] (any float dtype, dense).
        coef_ptr: [2, N, H*W] out: d mean_c / C and d amax_c / ties per pixel
            (NaN where the max is NaN: no ties).
        wpart_ptr: [N * PB, FOLD_W] out: columns [0, T) the conv weight's
            gradient partials, T the BN weight's, T + 1 the BN bias's.
        gamma_ptr, rm_ptr, rv_ptr: BN weight and running statistics (their dtypes).
    Grid: (N * PB,).
    """
    ACC = z_ptr.dtype.element_ty
    PAD: tl.constexpr = (K - 1) // 2
    T = M * K * K
    HW = H * W
    NHW = (tl.zeros([], dtype=tl.int64) + N) * HW
    pid = tl.program_id(0)
    n64, own_lo, own_hi, win_lo, win_hi = program_rows(pid, H, W, rows, num_pb, PAD)
    work = work_ptr + pid.to(tl.int64) * win_size
    row = n64 * HW
    wrow = wpart_ptr + pid * FOLD_W
    zero = tl.zeros([BLOCK_F], dtype=ACC).sum(axis=0)
    if BN == 2:
        mu = tl.load(bnstat_ptr)
        invstd = tl.load(bnstat_ptr + 1)

    if PHASE == 1:
        dbeta = zero
        dgamma = zero
        for q0 in range(own_lo, own_hi, BLOCK_F):
            q = q0 + tl.arange(0, BLOCK_F)
            qm = q < own_hi
            dsa = fold_split(part_ptr, row + q, qm, SPLIT, NHW, False)
            du = tl.where(qm, gate_backward_from_output(tl.load(sa_ptr + row + q, mask=qm, other=0.0), dsa, GATE), 0.0)
            tl.store(du_ptr + row + q, du, mask=qm)
            zhat = (tl.load(z_ptr + row + q, mask=qm, other=0.0) - mu) * invstd
            dbeta += tl.sum(du, axis=0)
            dgamma += tl.sum(du * zhat, axis=0)
        tl.store(wrow + T, dgamma)
        tl.store(wrow + T + 1, dbeta)
    else:
        if BN == 1:
            scale, rm, _, inv_r = bn_eval_affine(gamma_ptr, gamma_ptr, rm_ptr, rv_ptr, eps, ACC, HAS_GAMMA, False)
        if BN == 2:
            # The batch sums of du and du * zhat, folded from PHASE 1's partials.
            sum_du = tl.zeros([BLOCK_F], dtype=ACC)
            sum_duz = tl.zeros([BLOCK_F], dtype=ACC)
            for r0 in range(0, N * num_pb, BLOCK_F):
                r = r0 + tl.arange(0, BLOCK_F)
                rmask = r < N * num_pb
                sum_duz += tl.load(wpart_ptr + r * FOLD_W + T, mask=rmask, other=0.0)
                sum_du += tl.load(wpart_ptr + r * FOLD_W + T + 1, mask=rmask, other=0.0)
            inv_n = 1.0 / NHW.to(ACC)
            mean_du = tl.sum(sum_du, axis=0) * inv_n
            mean_duz = tl.sum(sum_duz, axis=0) * inv_n
            scale = invstd
            if HAS_GAMMA:
                scale = tl.load(gamma_ptr).to(ACC) * invstd
        dbeta = zero
        dgamma = zero
        # dz over the window: the halo's too, for the transpose.
        for q0 in range(win_lo, win_hi, BLOCK_F):
            q = q0 + tl.arange(0, BLOCK_F)
            qm = q < win_hi
            if BN == 2:
                du = tl.load(du_ptr + row + q, mask=qm, other=0.0)
                zhat = (tl.load(z_ptr + row + q, mask=qm, other=0.0) - mu) * invstd
                dz = scale * (du - mean_du - zhat * mean_duz)
            else:
                dsa = fold_split(part_ptr, row + q, qm, SPLIT, NHW, False)
                du = tl.where(qm, gate_backward_from_output(tl.load(sa_ptr + row + q, mask=qm, other=0.0), dsa, GATE), 0.0)
                if BN == 1:
                    own = qm & (q >= own_lo) & (q < own_hi)
                    dz = du * scale
                    zhat = (tl.load(z_ptr + row + q, mask=qm, other=0.0) - rm) * inv_r
                    dbeta += tl.sum(tl.where(own, du, 0.0), axis=0)
                    dgamma += tl.sum(tl.where(own, du * zhat, 0.0), axis=0)
                else:
                    dz = du
            tl.store(work + q - win_lo, dz, mask=qm)
        tl.debug_barrier()

        t, t_mask, m, di, dj = taps(T, K, T_PAD)
        wv = tl.load(w_ptr + t, mask=t_mask, other=0.0).to(ACC)
        if M == 1:
            w_first = wv
            w_second = wv
        else:
            w_first = tl.where(m == 0, wv, 0.0)
            w_second = tl.where(m == 1, wv, 0.0)
        dw = tl.zeros([T_PAD], dtype=ACC)
        for p0 in range(own_lo, own_hi, BLOCK_P):
            p = p0 + tl.arange(0, BLOCK_P)
            pm = p < own_hi
            h = p // W
            w = p - h * W
            dz = tl.load(work + p - win_lo, mask=pm, other=0.0)
            s = conv_input(maps_ptr + row, NHW, 0, h, w, pm, m, di, dj, t_mask, H, W, M, MAX_FIRST)
            dw += tl.sum(s * dz[None, :], axis=1)
            # transpose: ds[m, p] = sum_t w[t] * dz[p - shift(t)]
            dzs = shifted(work, t * 0, win_lo, h, w, pm, -di, -dj, t_mask, H, W)
            ds0 = tl.sum(w_first[:, None] * dzs, axis=0)
            ds1 = tl.sum(w_second[:, None] * dzs, axis=0)
            if M == 1:
                dmean = 0.5 * ds0
                dmax = 0.5 * ds0
            elif MAX_FIRST:
                dmean = ds1
                dmax = ds0
            else:
                dmean = ds0
                dmax = ds1
            cnt = fold_split(part_ptr + SPLIT * NHW, row + p, pm, SPLIT, NHW, False)
            tl.store(coef_ptr + row + p, dmean / C, mask=pm)
            # torch.amax splits its gradient evenly between tied maxima; a NaN
            # max has no ties (NaN != NaN) and gets a NaN gradient.
            tl.store(coef_ptr + NHW + row + p, tl.where(cnt > 0, dmax / tl.maximum(cnt, 1.0), float("nan")), mask=pm)
        tl.store(wrow + t, dw, mask=t_mask)
        if BN == 1:
            tl.store(wrow + T, dgamma)
            tl.store(wrow + T + 1, dbeta)
