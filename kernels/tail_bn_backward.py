"""Fused attention tail, backward: BatchNorm's backward composed from N x C
sums, one launch between the attention's gate backward and the dz pass.
Touches no activation memory.

w = bn(z) = a z + b gets the gradient d_w = e' g + dmean + [z == ext] dmax
(e' = d[n] dy act'(u); dmean, dmax the pooling's gradient per element, from
the gate backward), whose sums over H*W follow from pass 1's S1, T, ties:
    sum_hw d_w      = g S1 + dmean HW + dmax ties
    sum_hw d_w xhat = g T + (dmean HW (m - mu) + dmax ties (ext - mu)) rstd
Per channel (all samples in one program): dbeta = sum_n sum_hw d_w, dgamma =
sum_n sum_hw d_w xhat, and the dz pass's coefficients
    dz = Ke[n, c] e + Kz[c] z + K0[n, c] + Kt[n, c] [z == ext]
with, in training (batch statistics; mean_dw = dbeta / NHW, mean_dwx =
dgamma / NHW): Ke = a g d, Kz = -a rstd mean_dwx,
K0 = a (dmean - mean_dw + rstd mean_dwx mu), Kt = a dmax; in eval (running
statistics, no batch terms): Ke = a g d, Kz = 0, K0 = a dmean, Kt = a dmax.
"""
import triton
import triton.language as tl

from .pooled import fold_split


@triton.jit
def tail_bn_backward_kernel(
    part_ptr,
    zstat_ptr,
    chan_ptr,
    g_ptr,
    dmean_ptr,
    dmax_ptr,
    d_ptr,
    coef_ptr,
    kz_ptr,
    dgamma_ptr,
    dbeta_ptr,
    N,
    C,
    HW,
    SPLIT,
    TRAINING: tl.constexpr,
    HAS_GATE: tl.constexpr,
    HAS_MEAN: tl.constexpr,
    HAS_MAX: tl.constexpr,
    HAS_DROP: tl.constexpr,
    HAS_GAMMA: tl.constexpr,
    HAS_BETA: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Args:
        part_ptr: [4, SPLIT, N, C] pass 1's partials (dg, S1, T, ties).
        zstat_ptr: [2, N, C] m and ext of z. chan_ptr: [4, C] a, b, mu, rstd.
        g_ptr: [N, C] gate (HAS_GATE); dmean_ptr, dmax_ptr: [N, C] the
            pooling's per-element gradients (HAS_MEAN / HAS_MAX); d_ptr: [N].
        coef_ptr: [3, N, C] out: Ke, K0, Kt. kz_ptr: [C] out.
        dgamma_ptr, dbeta_ptr: [C] out, in the parameters' dtypes.
    Grid: (cdiv(C, BLOCK_C),).
    """
    ACC = chan_ptr.dtype.element_ty
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    NC = tl.cast(N, tl.int64) * C
    rows = SPLIT * NC
    a = tl.load(chan_ptr + c, mask=c_mask, other=0.0)
    mu = tl.load(chan_ptr + 2 * C + c, mask=c_mask, other=0.0)
    rstd = tl.load(chan_ptr + 3 * C + c, mask=c_mask, other=0.0)
    hwf = tl.cast(HW, ACC)
    tot1 = tl.zeros([BLOCK_C], dtype=ACC)
    tot2 = tl.zeros([BLOCK_C], dtype=ACC)
    for n0 in range(0, N, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        mask = (n < N)[:, None] & c_mask[None, :]
        offs = n.to(tl.int64)[:, None] * C + c[None, :]
        s1 = fold_split(part_ptr + rows, offs, mask, SPLIT, NC, False)
        t = fold_split(part_ptr + 2 * rows, offs, mask, SPLIT, NC, False)
        if HAS_GATE:
            g = tl.load(g_ptr + offs, mask=mask, other=0.0)
            sum_dw = g * s1
            sum_dwx = g * t
        else:
            sum_dw = s1
            sum_dwx = t
        if HAS_MEAN:
            m = tl.load(zstat_ptr + offs, mask=mask, other=0.0)
            dm = tl.load(dmean_ptr + offs, mask=mask, other=0.0) * hwf
            sum_dw += dm
            sum_dwx += dm * (m - mu[None, :]) * rstd[None, :]
        if HAS_MAX:
            ext = tl.load(zstat_ptr + NC + offs, mask=mask, other=0.0)
            ties = fold_split(part_ptr + 3 * rows, offs, mask, SPLIT, NC, False)
            # A NaN max has no ties and a NaN dmax: NaN x 0 reaches the sums,
            # as torch.amax's backward sends NaN to the whole slice.
            dx = tl.load(dmax_ptr + offs, mask=mask, other=0.0) * ties
            sum_dw += dx
            sum_dwx += dx * (ext - mu[None, :]) * rstd[None, :]
        tot1 += tl.sum(tl.where(mask, sum_dw, 0.0), axis=0)
        tot2 += tl.sum(tl.where(mask, sum_dwx, 0.0), axis=0)
    if HAS_BETA:
        tl.store(dbeta_ptr + c, tot1.to(dbeta_ptr.dtype.element_ty), mask=c_mask)
    if HAS_GAMMA:
        tl.store(dgamma_ptr + c, tot2.to(dgamma_ptr.dtype.element_ty), mask=c_mask)
    if TRAINING:
        count = tl.cast(N, ACC) * hwf
        mean_dw = tot1 / count
        mean_dwx = tot2 / count
        kz = -a * rstd * mean_dwx
        k0_c = a * (rstd * mean_dwx * mu - mean_dw)
    else:
        kz = tl.zeros([BLOCK_C], dtype=ACC)
        k0_c = tl.zeros([BLOCK_C], dtype=ACC)
    tl.store(kz_ptr + c, kz, mask=c_mask)
    for n0 in range(0, N, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        n64 = n.to(tl.int64)
        mask = (n < N)[:, None] & c_mask[None, :]
        offs = n64[:, None] * C + c[None, :]
        ke = tl.zeros([BLOCK_N, BLOCK_C], dtype=ACC) + a[None, :]
        if HAS_GATE:
            ke = ke * tl.load(g_ptr + offs, mask=mask, other=0.0)
        if HAS_DROP:
            ke = ke * tl.load(d_ptr + n64, mask=n < N, other=0.0).to(ACC)[:, None]
        k0 = tl.zeros([BLOCK_N, BLOCK_C], dtype=ACC) + k0_c[None, :]
        if HAS_MEAN:
            k0 += a[None, :] * tl.load(dmean_ptr + offs, mask=mask, other=0.0)
        tl.store(coef_ptr + offs, ke, mask=mask)
        tl.store(coef_ptr + NC + offs, k0, mask=mask)
        if HAS_MAX:
            tl.store(coef_ptr + 2 * NC + offs, a[None, :] * tl.load(dmax_ptr + offs, mask=mask, other=0.0), mask=mask)
