"""Fused attention tail, training: BatchNorm's batch statistics and the
attention's pooled input, from pass 1's per-(n, c) partials. Touches no
activation memory.

Per channel c (all samples in one program, a fixed order):
    m[n, c], M2[n, c]  = Chan's combine of the H*W splits
    mu_c, var_c        = Chan's combine over n (each count H*W):
                         var = (sum_n M2 + HW * sum_n (m - mu)^2) / (N * HW)
    a = gamma * rstd, b = beta - a * mu     (bn(z) = a z + b)
    running_mean <- (1 - f) running_mean + f mu
    running_var  <- (1 - f) running_var + f var * NHW / (NHW - 1)
with f the momentum, or 1 / (num_batches_tracked + 1) for momentum None
(num_batches_tracked itself is incremented by the apply pass, after every
program here has read it). The pooled statistics of bn(z) are affine in z's:
    mean_hw bn(z) = a m + b,  max_hw bn(z) = a max(z) + b if a >= 0 else a min(z) + b
and are written in the gate's input format ([P, 1, N, C]).
"""
import triton
import triton.language as tl

from .reduce_utils import max_propagate_nan
from .tail_stats import min_propagate_nan


@triton.jit
def _split_stats(stats_ptr, offs, mask, SPLIT, split_stride, HW, hw_per_split):
    """(mean, M2, max, min) of one (n, c) over H*W, from the split partials."""
    ACC = stats_ptr.dtype.element_ty
    rows = SPLIT * split_stride
    count = tl.cast(tl.minimum(hw_per_split, HW), ACC)
    mean = tl.load(stats_ptr + offs, mask=mask, other=0.0)
    m2 = tl.load(stats_ptr + rows + offs, mask=mask, other=0.0)
    zmax = tl.load(stats_ptr + 2 * rows + offs, mask=mask, other=0.0)
    zmin = tl.load(stats_ptr + 3 * rows + offs, mask=mask, other=0.0)
    for s in range(1, SPLIT):
        k = (tl.minimum(hw_per_split * (s + 1), HW) - hw_per_split * s).to(ACC)
        o = s * split_stride + offs
        mean_s = tl.load(stats_ptr + o, mask=mask, other=0.0)
        m2_s = tl.load(stats_ptr + rows + o, mask=mask, other=0.0)
        total = count + k
        delta = mean_s - mean
        mean += delta * (k / total)
        m2 += m2_s + delta * delta * (count * k / total)
        count = total
        zmax = max_propagate_nan(zmax, tl.load(stats_ptr + 2 * rows + o, mask=mask, other=0.0))
        zmin = min_propagate_nan(zmin, tl.load(stats_ptr + 3 * rows + o, mask=mask, other=0.0))
    return mean, m2, zmax, zmin


@triton.jit
def tail_bn_kernel(
    stats_ptr,
    mean_ptr,
    chan_ptr,
    pool_ptr,
    gamma_ptr,
    beta_ptr,
    rmean_ptr,
    rvar_ptr,
    nbt_ptr,
    N,
    C,
    HW,
    SPLIT,
    hw_per_split,
    momentum_hi,
    momentum_lo,
    eps,
    HAS_GAMMA: tl.constexpr,
    HAS_BETA: tl.constexpr,
    UPDATE: tl.constexpr,
    CUMULATIVE: tl.constexpr,
    POOL_MEAN: tl.constexpr,
    POOL_MAX: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Args:
        stats_ptr: [4, SPLIT, N, C] pass 1's partials (mean, M2, max, min).
        mean_ptr: [N, C] out, m (the backward's input).
        chan_ptr: [4, C] out: a, b, mu, rstd.
        pool_ptr: [P, 1, N, C] out: mean (POOL_MEAN, row 0) and max (POOL_MAX,
            last row) of bn(z) over H*W, the gate's input.
        gamma/beta: [C] (HAS_GAMMA / HAS_BETA); rmean/rvar: [C] running
            statistics, updated in place in their dtype (UPDATE); nbt_ptr:
            num_batches_tracked (int64), read for CUMULATIVE (momentum None).
    Grid: (cdiv(C, BLOCK_C),).
    """
    ACC = chan_ptr.dtype.element_ty
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    NC = tl.cast(N, tl.int64) * C
    hwf = tl.cast(HW, ACC)
    # Chan's combine over samples, each of count H*W.
    count = tl.zeros([BLOCK_C], dtype=ACC)
    mu = tl.zeros([BLOCK_C], dtype=ACC)
    m2 = tl.zeros([BLOCK_C], dtype=ACC)
    for n0 in range(0, N, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        n_mask = n < N
        mask = n_mask[:, None] & c_mask[None, :]
        offs = n.to(tl.int64)[:, None] * C + c[None, :]
        m, m2_n, _, _ = _split_stats(stats_ptr, offs, mask, SPLIT, NC, HW, hw_per_split)
        tl.store(mean_ptr + offs, m, mask=mask)
        # combine this block of samples: first among themselves (equal counts), then into the total
        k = tl.sum(n_mask.to(ACC), axis=0) * hwf
        block_mean = tl.sum(tl.where(mask, m, 0.0), axis=0) / (k / hwf)
        d = tl.where(mask, m - block_mean[None, :], 0.0)
        block_m2 = tl.sum(tl.where(mask, m2_n, 0.0), axis=0) + hwf * tl.sum(d * d, axis=0)
        total = count + k
        delta = block_mean - mu
        mu += delta * (k / total)
        m2 += block_m2 + delta * delta * (count * k / total)
        count = total
    var = m2 / count
    rstd = 1.0 / tl.sqrt(var + eps)
    a = rstd
    if HAS_GAMMA:
        a = a * tl.load(gamma_ptr + c, mask=c_mask, other=1.0).to(ACC)
    b = -a * mu
    if HAS_BETA:
        b += tl.load(beta_ptr + c, mask=c_mask, other=0.0).to(ACC)
    tl.store(chan_ptr + c, a, mask=c_mask)
    tl.store(chan_ptr + C + c, b, mask=c_mask)
    tl.store(chan_ptr + 2 * C + c, mu, mask=c_mask)
    tl.store(chan_ptr + 3 * C + c, rstd, mask=c_mask)
    if UPDATE:
        if CUMULATIVE:
            f = 1.0 / (tl.load(nbt_ptr).to(ACC) + 1.0)
        else:
            # momentum as hi + lo fp32 halves: a float argument is fp32, and
            # 0.1 rounded to fp32 would be visible in fp64 statistics.
            f = tl.cast(momentum_hi, ACC) + tl.cast(momentum_lo, ACC)
        rm = tl.load(rmean_ptr + c, mask=c_mask, other=0.0)
        rv = tl.load(rvar_ptr + c, mask=c_mask, other=0.0)
        unbiased = var * (count / (count - 1.0))
        tl.store(rmean_ptr + c, ((1.0 - f) * rm.to(ACC) + f * mu).to(rm.dtype), mask=c_mask)
        tl.store(rvar_ptr + c, ((1.0 - f) * rv.to(ACC) + f * unbiased).to(rv.dtype), mask=c_mask)
    if POOL_MEAN or POOL_MAX:
        for n0 in range(0, N, BLOCK_N):
            n = n0 + tl.arange(0, BLOCK_N)
            mask = (n < N)[:, None] & c_mask[None, :]
            offs = n.to(tl.int64)[:, None] * C + c[None, :]
            m, _, zmax, zmin = _split_stats(stats_ptr, offs, mask, SPLIT, NC, HW, hw_per_split)
            row = 0
            if POOL_MEAN:
                tl.store(pool_ptr + offs, a[None, :] * m + b[None, :], mask=mask)
                row = 1
            if POOL_MAX:
                ext = tl.where(a[None, :] >= 0, a[None, :] * zmax, a[None, :] * zmin)
                tl.store(pool_ptr + row * NC + offs, ext + b[None, :], mask=mask)
