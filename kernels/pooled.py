"""Reading the pooling pass's partial results: the [P, SPLIT, N, C] buffer
that ``channel_pool_kernel`` writes (row 0 the mean partials, already
divided by H*W, row P-1 the max partials; P = 2 for "avgmax"), folded over
SPLIT by whichever kernel consumes them (no separate combine launch), in a
fixed order (deterministic)."""
import triton
import triton.language as tl

from .reduce_utils import max_propagate_nan


@triton.jit
def fold_split(part_ptr, offs, mask, SPLIT, split_stride, IS_MAX: tl.constexpr):
    """Sum (or NaN-propagating max) over the SPLIT partials at ``offs``."""
    acc = tl.load(part_ptr + offs, mask=mask, other=0.0)
    for s in range(1, SPLIT):
        v = tl.load(part_ptr + s * split_stride + offs, mask=mask, other=0.0)
        if IS_MAX:
            acc = max_propagate_nan(acc, v)
        else:
            acc += v
    return acc


@triton.jit
def fold_pooled(part_ptr, offs, mask, SPLIT, split_stride, row_stride, POOL: tl.constexpr):
    """(first row, second row) folded: POOL 0 avg -> (mean, mean), 1 max ->
    (max, max), 2 avgmax and 3 pair (CBAM) -> (mean, max)."""
    first = fold_split(part_ptr, offs, mask, SPLIT, split_stride, POOL == 1)
    if POOL >= 2:
        second = fold_split(part_ptr + row_stride, offs, mask, SPLIT, split_stride, True)
    else:
        second = first
    return first, second


@triton.jit
def squeeze(first, second, POOL: tl.constexpr):
    """The statistic the SE gate sees: mean, max, or timm's add_maxpool
    0.5 * mean + 0.5 * max (pair mode feeds both rows on their own)."""
    if POOL == 2:
        return 0.5 * first + 0.5 * second
    else:
        return first
