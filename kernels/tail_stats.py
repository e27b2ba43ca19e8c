"""Fused attention tail, forward pass 1 (reads z once): per (n, c) and split
of H*W, what BatchNorm and the attention's pooling both need.

Training (EVAL = False): the split's mean and M2 = sum (z - mean)^2, combined
chunk by chunk with Chan's parallel formula (never E[z^2] - E[z]^2, which
cancels catastrophically in fp32 for z = 1000 + noise), and its max and min
(the max of bn(z) is a*max(z) + b or a*min(z) + b by the sign of a).

Eval (EVAL = True): bn(z) = a*z + b with a, b from the running statistics,
computed here per channel; the pass pools bn(z) directly into the gate's
input format ([P, SPLIT, N, C]: partial means already / H*W, maxima), keeps
the max and min of z for the backward's tie test, and the programs of
sample 0, split 0 store a, b and the running mean / rstd for the later
kernels.
"""
import triton
import triton.language as tl

from .reduce_utils import max_propagate_nan


@triton.jit
def min_propagate_nan(a, b):
    return tl.minimum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def tail_stats_kernel(
    z_ptr,
    stats_ptr,
    pool_ptr,
    chan_ptr,
    gamma_ptr,
    beta_ptr,
    rmean_ptr,
    rvar_ptr,
    C,
    HW,
    hw_per_split,
    num_c_blocks,
    z_batch_stride,
    z_chan_stride,
    z_hw_stride,
    split_stride,
    eps,
    EVAL: tl.constexpr,
    HAS_GAMMA: tl.constexpr,
    HAS_BETA: tl.constexpr,
    POOL_MEAN: tl.constexpr,
    POOL_MAX: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    """Args:
        z_ptr: [N, C, H*W], any strides.
        stats_ptr: [4, SPLIT, N, C] out: each split's mean, M2 (training
            only), max and min of z; ``split_stride`` = N * C.
        pool_ptr: [P, SPLIT, N, C] out (eval): partial means of bn(z)
            (POOL_MEAN, row 0) and maxima (POOL_MAX, last row).
        chan_ptr: [4, C] out (eval): a, b, running mean, rstd.
        gamma/beta/rmean/rvar: [C] BatchNorm's weight, bias, running stats
            (read in their own dtype; eval only, gamma/beta when present).
    Grid: (N * num_c_blocks, SPLIT).
    """
    ACC = stats_ptr.dtype.element_ty
    pid = tl.program_id(0)
    split = tl.program_id(1)
    n = pid // num_c_blocks
    c = (pid % num_c_blocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    n64 = n.to(tl.int64)
    base = z_ptr + n64 * z_batch_stride + c.to(tl.int64)[:, None] * z_chan_stride
    hw_start = split * hw_per_split
    hw_stop = tl.minimum(hw_start + hw_per_split, HW)

    count = tl.zeros([BLOCK_C], dtype=ACC)
    mean = tl.zeros([BLOCK_C], dtype=ACC)
    m2 = tl.zeros([BLOCK_C], dtype=ACC)
    zsum = tl.zeros([BLOCK_C], dtype=ACC)
    zmax = tl.full([BLOCK_C], float("-inf"), dtype=ACC)
    zmin = tl.full([BLOCK_C], float("inf"), dtype=ACC)
    for hw0 in range(hw_start, hw_stop, BLOCK_HW):
        hw = hw0 + tl.arange(0, BLOCK_HW)
        hw_mask = hw < hw_stop
        mask = c_mask[:, None] & hw_mask[None, :]
        z = tl.load(base + hw.to(tl.int64)[None, :] * z_hw_stride, mask=mask, other=0.0).to(ACC)
        zmax = max_propagate_nan(zmax, tl.max(tl.where(mask, z, float("-inf")), axis=1))
        zmin = min_propagate_nan(zmin, tl.min(tl.where(mask, z, float("inf")), axis=1))
        if EVAL:
            zsum += tl.sum(z, axis=1)
        else:
            k = tl.sum(hw_mask.to(ACC), axis=0)
            chunk_mean = tl.sum(z, axis=1) / k
            d = tl.where(mask, z - chunk_mean[:, None], 0.0)
            chunk_m2 = tl.sum(d * d, axis=1)
            total = count + k
            delta = chunk_mean - mean
            mean += delta * (k / total)
            m2 += chunk_m2 + delta * delta * (count * k / total)
            count = total

    nc = split.to(tl.int64) * split_stride + n64 * C + c
    tl.store(stats_ptr + 2 * (split_stride * tl.num_programs(1)) + nc, zmax, mask=c_mask)
    tl.store(stats_ptr + 3 * (split_stride * tl.num_programs(1)) + nc, zmin, mask=c_mask)
    if EVAL:
        # the split's mean of z (the backward's m), as in training
        tl.store(stats_ptr + nc, zsum / (hw_stop - hw_start).to(ACC), mask=c_mask)
        rm = tl.load(rmean_ptr + c, mask=c_mask, other=0.0).to(ACC)
        rv = tl.load(rvar_ptr + c, mask=c_mask, other=1.0).to(ACC)
        rstd = 1.0 / tl.sqrt(rv + eps)
        a = rstd
        if HAS_GAMMA:
            a = a * tl.load(gamma_ptr + c, mask=c_mask, other=1.0).to(ACC)
        b = -a * rm
        if HAS_BETA:
            b += tl.load(beta_ptr + c, mask=c_mask, other=0.0).to(ACC)
        cnt = (hw_stop - hw_start).to(ACC)
        row = 0
        if POOL_MEAN:
            tl.store(pool_ptr + nc, (a * zsum + b * cnt) / HW, mask=c_mask)
            row = 1
        if POOL_MAX:
            tl.store(pool_ptr + row * (split_stride * tl.num_programs(1)) + nc,
                     tl.where(a >= 0, a * zmax + b, a * zmin + b), mask=c_mask)
        first = (n == 0) & (split == 0)
        tl.store(chan_ptr + c, a, mask=c_mask & first)
        tl.store(chan_ptr + C + c, b, mask=c_mask & first)
        tl.store(chan_ptr + 2 * C + c, rm, mask=c_mask & first)
        tl.store(chan_ptr + 3 * C + c, rstd, mask=c_mask & first)
    else:
        tl.store(stats_ptr + nc, mean, mask=c_mask)
        tl.store(stats_ptr + split_stride * tl.num_programs(1) + nc, m2, mask=c_mask)
