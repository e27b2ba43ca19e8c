"""Host side of the H*W reductions: the pooled mean/amax of x (forward pass
1) and sum(dy * x) with the amax tie count (backward passes 1-2), each
written as [rows, SPLIT, N, C] partials that the consuming kernel folds.

``*_spec`` resolves the launch (tuned config or heuristic, memoised per
shape); ``pool`` / ``gate_grad`` launch it into caller-allocated partials,
or run the pure-PyTorch twin (SPLIT = 1) where Triton does not run."""
from __future__ import annotations

from typing import NamedTuple

import torch

from ..kernels.channel_gate_grad import channel_gate_grad_kernel
from ..kernels.channel_pool import channel_pool_kernel
from ..runtime import launch, sm_count_override, use_triton
from .config import cached_spec, cdiv, reduction_config
from .layout import chan_contiguous


class ReductionSpec(NamedTuple):
    grid: tuple
    split: int
    hw_per_split: int
    num_c_blocks: int
    kwargs: dict


def _reduction_spec(cfg, N: int, C: int, HW: int) -> ReductionSpec:
    # H*W per split is whole blocks, so a split tuned on another H*W of the
    # same bucket still fits.
    num_c_blocks = cdiv(C, cfg.block_c)
    hw_per_split = cdiv(cdiv(HW, cfg.split), cfg.block_hw) * cfg.block_hw
    split = cdiv(HW, hw_per_split) if HW > 0 else 1
    kwargs = dict(BLOCK_C=cfg.block_c, BLOCK_HW=cfg.block_hw, **cfg.launch_kwargs())
    return ReductionSpec((N * num_c_blocks, split), split, hw_per_split, num_c_blocks, kwargs)


_NO_SPLIT = ReductionSpec((), 1, 0, 0, {})


def pool_spec(x: torch.Tensor, strides, want_mean: bool, want_max: bool) -> ReductionSpec:
    if not use_triton(x) or x.numel() == 0:
        return _NO_SPLIT
    N, C, H, W = x.shape
    HW = H * W
    key = ("channel_pool", N, C, HW, strides, x.dtype, x.device, want_mean, want_max, sm_count_override())

    def build(cfg):
        return _reduction_spec(cfg, N, C, HW)

    def trial(spec):
        part = torch.empty((2, spec.split, N, C), device=x.device, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
        _pool_launch(spec, x, strides, part, want_mean, want_max)

    variant = lambda: "+".join(name for name, on in (("mean", want_mean), ("max", want_max)) if on)  # noqa: E731
    return cached_spec(
        "channel_pool", key, x.shape, strides, x.dtype, x.device, variant,
        lambda: reduction_config(C, HW, chan_contiguous(strides, C), N, x.device), build, trial,
    )


def _pool_launch(spec, x, strides, part, want_mean, want_max):
    N, C, H, W = x.shape
    # mean partials at the start of ``part``, max partials in its last row
    # (the kernel indexes rows itself: no views on the launch path)
    max_rows = part if not (want_mean and want_max) else part.view(-1)[spec.split * N * C:]
    launch(
        channel_pool_kernel, spec.grid,
        x, part, max_rows,
        C, H * W, spec.hw_per_split, spec.num_c_blocks,
        *strides, N * C,
        COMPUTE_MEAN=want_mean, COMPUTE_MAX=want_max, **spec.kwargs,
    )


def pool(spec: ReductionSpec, x: torch.Tensor, strides, part: torch.Tensor, want_mean: bool, want_max: bool) -> None:
    """Pass 1 (read x): partial means (already / H*W) into row 0 of
    ``part`` [rows, SPLIT, N, C] and partial maxima into its last row."""
    if spec.grid:
        _pool_launch(spec, x, strides, part, want_mean, want_max)
        return
    xf = x.to(part.dtype)
    if want_mean:
        part[0, 0] = xf.mean((2, 3))
    if want_max:
        part[-1, 0] = xf.amax((2, 3)) if x.shape[2] * x.shape[3] > 0 else float("nan")


def gate_grad_spec(x: torch.Tensor, x_strides, dy_strides, has_dy: bool, ties: bool) -> ReductionSpec:
    if not use_triton(x) or x.numel() == 0:
        return _NO_SPLIT
    N, C, H, W = x.shape
    HW = H * W
    key = ("channel_gate_grad", N, C, HW, x_strides, dy_strides, x.dtype, x.device, has_dy, ties, sm_count_override())

    def build(cfg):
        return _reduction_spec(cfg, N, C, HW)

    def trial(spec):
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        out = torch.empty((2, spec.split, N, C), device=x.device, dtype=acc)
        amax = torch.zeros((N, C), device=x.device, dtype=acc)
        _gate_grad_launch(spec, x if has_dy else None, x, x_strides, x_strides, amax if ties else None, out, has_dy, ties)

    variant = lambda: "+".join(name for name, on in (("dy", has_dy), ("ties", ties)) if on)  # noqa: E731
    return cached_spec(
        "channel_gate_grad", key, x.shape, x_strides, x.dtype, x.device, variant,
        lambda: reduction_config(C, HW, chan_contiguous(x_strides, C), N, x.device), build, trial,
        other_strides=(dy_strides,),
    )


def _gate_grad_launch(spec, dy, x, x_strides, dy_strides, amax, out, has_dy, ties):
    N, C, H, W = x.shape
    cnt_rows = out if not (has_dy and ties) else out.view(-1)[spec.split * N * C:]
    launch(
        channel_gate_grad_kernel, spec.grid,
        dy if has_dy else x, x, amax if ties else out, out, cnt_rows,
        C, H * W, spec.hw_per_split, spec.num_c_blocks,
        *x_strides, *(dy_strides if has_dy else x_strides), N * C,
        HAS_DY=has_dy, COUNT_TIES=ties, **spec.kwargs,
    )


def gate_grad(spec: ReductionSpec, dy, x, x_strides, dy_strides, amax, out: torch.Tensor) -> None:
    """Backward passes 1-2 (read dy and x): partial sums of dy * x into row 0
    of ``out`` [rows, SPLIT, N, C] and, with ``amax``, partial counts of
    x == amax into its last row."""
    has_dy, ties = dy is not None, amax is not None
    if spec.grid:
        _gate_grad_launch(spec, dy, x, x_strides, dy_strides, amax, out, has_dy, ties)
        return
    xf = x.to(out.dtype)
    if has_dy:
        out[0, 0] = (dy.to(out.dtype) * xf).sum((2, 3))
    if ties:
        out[-1, 0] = (xf == amax[:, :, None, None]).sum((2, 3)).to(out.dtype)


def _acc(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def channel_pool(x: torch.Tensor, want_mean: bool, want_max: bool):
    """[N, C, H, W] -> (mean [N, C] or None, amax [N, C] or None) in the
    accumulation dtype, from one read of x, folded here (for the callers
    that want the statistics themselves: the unfused pooling op, CBAM)."""
    from .layout import nc_hw

    x, strides = nc_hw(x)
    N, C = x.shape[:2]
    spec = pool_spec(x, strides, want_mean, want_max)
    part = torch.empty((2 if (want_mean and want_max) else 1, spec.split, N, C), device=x.device, dtype=_acc(x))
    pool(spec, x, strides, part, want_mean, want_max)
    mean = (part[0, 0] if spec.split == 1 else part[0].sum(0)) if want_mean else None
    amax = (part[-1, 0] if spec.split == 1 else part[-1].amax(0)) if want_max else None
    return mean, amax


def channel_gate_grad(dy, x: torch.Tensor, amax):
    """(sum_hw dy * x [N, C] or None, count of x == amax [N, C] or None),
    folded here (the unfused ops' callers)."""
    from .layout import nc_hw

    x, x_strides = nc_hw(x)
    dy_strides = x_strides
    if dy is not None:
        dy, dy_strides = nc_hw(dy)
    N, C = x.shape[:2]
    spec = gate_grad_spec(x, x_strides, dy_strides, dy is not None, amax is not None)
    out = torch.empty((2 if (dy is not None and amax is not None) else 1, spec.split, N, C), device=x.device, dtype=_acc(x))
    gate_grad(spec, dy, x, x_strides, dy_strides, amax.contiguous() if amax is not None else None, out)
    dg = (out[0, 0] if spec.split == 1 else out[0].sum(0)) if dy is not None else None
    cnt = (out[-1, 0] if spec.split == 1 else out[-1].sum(0)) if amax is not None else None
    return dg, cnt


def max_grad_per_element(dmax: torch.Tensor, cnt: torch.Tensor) -> torch.Tensor:
    """torch.amax's gradient for each maximum: dmax split evenly between the
    ``cnt`` tied maxima. A NaN max has no ties (NaN != NaN): torch then gives
    the whole slice NaN (grad / 0 * mask), and so does the dx pass, which
    sends this NaN to every element of a slice whose max is NaN."""
    return torch.where(cnt > 0, dmax / cnt.clamp_min(1), torch.full_like(dmax, float("nan")))
