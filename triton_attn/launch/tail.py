"""Host side of the fused attention tail's kernels (kernels/tail_*.py):
``y = act(drop_path(attn(bn(z))) + shortcut)`` in two passes over z forward
(statistics, apply) and two backward (gradient sums, dz), with the [N, C]
work in between (BatchNorm's statistics and backward, the attention's gate
and its backward: launch/se_gate.py, launch/eca_gate_backward.py,
kernels/channel_scale.py's in-kernel ECA conv).

These launchers run the kernels only; the tail's pure-PyTorch twin is the
reference composition itself (``triton_attn.reference.attention_tail_reference``),
which the op runs where Triton does not."""
from __future__ import annotations

import struct
from typing import NamedTuple

import torch

from ..activations import GATE_CODES, HIDDEN_ACT_CODES
from ..kernels.tail_apply import tail_apply_kernel
from ..kernels.tail_bn import tail_bn_kernel
from ..kernels.tail_bn_backward import tail_bn_backward_kernel
from ..kernels.tail_dz import tail_dz_kernel
from ..kernels.tail_grad import tail_grad_kernel
from ..kernels.tail_stats import tail_stats_kernel
from ..runtime import launch, sm_count_override
from .channel_pool import ReductionSpec, _reduction_spec
from .channel_scale import TileSpec, eca_window, elementwise_spec
from .config import cached_spec, cdiv, flat_ok, reduction_config
from .layout import chan_contiguous

#: Channels per program of the [N, C] kernels (BatchNorm's statistics and
#: backward): every sample of a channel in one program, a fixed order.
_BN_BLOCK_C = 32
_BN_BLOCK_N = 16

#: Gate sources of kernels/tail_apply.py.
GATE_GIVEN, GATE_ECA, GATE_NONE = 0, 1, 2


#: The gradient pass's tile: it holds five operands and three accumulators
#: per element, and at 8 elements per thread sm_90 code jumps from ~100 to
#: ~200 registers (4096 elements at 8 warps spill ~300 B), so 1024 elements
#: at 8 warps: 4 per thread, <= 106 registers (tests/test_hopper_compile.py).
_GRAD_TILE = dict(elems=1024, warps=8)


def _reduction(kernel: str, x: torch.Tensor, strides, variant: str, other_strides: tuple = (), tile: dict | None = None) -> ReductionSpec:
    N, C, H, W = x.shape
    HW = H * W
    key = (kernel, variant, N, C, HW, strides, other_strides, x.dtype, x.device, sm_count_override())
    return cached_spec(
        kernel, key, x.shape, strides, x.dtype, x.device, variant,
        lambda: reduction_config(C, HW, chan_contiguous(strides, C), N, x.device, **(tile or {})),
        lambda cfg: _reduction_spec(cfg, N, C, HW), None, other_strides=other_strides,
    )


def stats_spec(z: torch.Tensor, zs, eval_mode: bool) -> ReductionSpec:
    return _reduction("tail_stats", z, zs, "eval" if eval_mode else "train")


def stats(spec: ReductionSpec, z, zs, stats_buf, pool_buf, chan, bn, eval_mode: bool, pool_mean: bool, pool_max: bool) -> None:
    """Pass 1 (read z): per-(n, c) split partials of z's mean, M2 (training),
    max and min into ``stats_buf`` [4, SPLIT, N, C]; in eval also the pooled
    statistics of bn(z) into ``pool_buf`` [P, SPLIT, N, C] and a, b, mu,
    rstd into ``chan`` [4, C]. ``bn``: (gamma, beta, running_mean, running_var, eps)."""
    N, C, H, W = z.shape
    gamma, beta, rmean, rvar, eps = bn
    some = stats_buf
    launch(
        tail_stats_kernel, spec.grid,
        z, stats_buf, pool_buf if pool_buf is not None else some, chan,
        gamma if gamma is not None else some, beta if beta is not None else some,
        rmean if rmean is not None else some, rvar if rvar is not None else some,
        C, H * W, spec.hw_per_split, spec.num_c_blocks, *zs, N * C, float(eps),
        EVAL=eval_mode, HAS_GAMMA=gamma is not None, HAS_BETA=beta is not None,
        POOL_MEAN=pool_mean, POOL_MAX=pool_max, **spec.kwargs,
    )


def bn_stats(stats_buf, split: int, hw_per_split: int, mean_out, chan, pool_buf, bn, update: bool, momentum,
             nbt, N: int, C: int, HW: int, pool_mean: bool, pool_max: bool) -> None:
    """Training: BatchNorm's batch statistics from pass 1's partials into
    ``chan`` [4, C] (a, b, mu, rstd), m into ``mean_out`` [N, C], the running
    statistics updated in place (``update``; ``momentum`` None = cumulative,
    read from ``nbt``), the pooled statistics of bn(z) into ``pool_buf``
    [P, 1, N, C]."""
    gamma, beta, rmean, rvar, eps = bn
    some = chan
    launch(
        tail_bn_kernel, (cdiv(C, _BN_BLOCK_C),),
        stats_buf, mean_out, chan, pool_buf if pool_buf is not None else some,
        gamma if gamma is not None else some, beta if beta is not None else some,
        rmean if (update and rmean is not None) else some, rvar if (update and rvar is not None) else some,
        nbt if nbt is not None else some,
        N, C, HW, split, hw_per_split, *_fp32_pair(0.0 if momentum is None else float(momentum)), float(eps),
        HAS_GAMMA=gamma is not None, HAS_BETA=beta is not None, UPDATE=update, CUMULATIVE=update and momentum is None,
        POOL_MEAN=pool_mean, POOL_MAX=pool_max, BLOCK_N=_BN_BLOCK_N, BLOCK_C=_BN_BLOCK_C, num_warps=4,
    )


def _fp32_pair(v: float, _memo: dict = {}) -> tuple[float, float]:  # noqa: B006 - per-process memo
    """v as hi + lo, each exactly an fp32 (Triton passes floats as fp32)."""
    pair = _memo.get(v)
    if pair is None:
        hi = struct.unpack("f", struct.pack("f", v))[0]
        pair = _memo[v] = (hi, struct.unpack("f", struct.pack("f", v - hi))[0])
    return pair


def apply_spec(z, zs, s, ss, y, ys) -> TileSpec:
    N, C, H, W = z.shape
    flat = flat_ok(C, H * W, z, y, *(() if s is None else (s,)))
    others = tuple(t for t in (ss, ys) if t is not None and t != zs)
    return elementwise_spec("tail_apply", "apply", z, zs, others, flat, None)


def apply(spec: TileSpec, z, zs, s, ss, y, ys, chan, g, gate_src: int, part, split: int, conv_w, conv_b, circular: bool,
          gate: str, drop, nbt, inc_nbt: bool, act: str, act_param: float, stats_buf, stats_split: int,
          stats_hw_per_split: int, zstat, mean) -> None:
    """Pass 2 (read z and the shortcut, write y); also folds pass 1's
    partials into m and ext (``zstat`` [2, N, C]) and, for ECA, stores the
    gate into ``g`` and the pooled means of bn(z) into ``mean``."""
    N, C, H, W = z.shape
    some = chan
    launch(
        tail_apply_kernel, spec.grid,
        z, s if s is not None else z, y, chan, g if g is not None else some, part if part is not None else some,
        mean if mean is not None else some, stats_buf, zstat,
        conv_w if conv_w is not None else some, conv_b if conv_b is not None else some,
        drop if drop is not None else some, nbt if nbt is not None else some,
        C, H * W, split, N * C, stats_split, stats_hw_per_split, spec.num_c_blocks, spec.num_hw_blocks, float(act_param),
        *zs, *(ss if s is not None else zs), *ys,
        GATE_SRC=gate_src, CONV_K=conv_w.numel() if conv_w is not None else 0,
        ECA_WIN=eca_window(spec, conv_w.numel() if conv_w is not None else 0), CIRCULAR=circular,
        HAS_CONV_BIAS=conv_b is not None, GATE=GATE_CODES[gate], HAS_SHORTCUT=s is not None,
        HAS_DROP=drop is not None, ACT=HIDDEN_ACT_CODES[act], INC_NBT=inc_nbt, **spec.kwargs,
    )


def grad_spec(z, zs, dys, ys, ss, es) -> ReductionSpec:
    others = tuple(t for t in (dys, ys, ss, es) if t is not None and t != zs)
    return _reduction("tail_grad", z, zs, "grad", others, _GRAD_TILE)


def grad(spec: ReductionSpec, dy, dys, y, ys, z, zs, s, ss, e, es, chan, g, drop, part, zstat, act: str,
         act_param: float, ties: bool) -> None:
    """Backward pass 1: e = dy * act'(u) into ``e``, the partial sums dg,
    S1, T (and ties, against the forward's ext in ``zstat``) into ``part``
    [4, SPLIT, N, C]."""
    N, C, H, W = z.shape
    some = chan
    launch(
        tail_grad_kernel, spec.grid,
        dy, y if y is not None else dy, z, s if s is not None else z, e, chan, g if g is not None else some,
        drop if drop is not None else some, part, zstat,
        C, H * W, spec.hw_per_split, spec.num_c_blocks, float(act_param),
        *dys, *(ys if y is not None else dys), *zs, *(ss if s is not None else zs), *es, N * C,
        HAS_GATE=g is not None, HAS_SHORTCUT=s is not None, HAS_DROP=drop is not None, ACT=HIDDEN_ACT_CODES[act],
        TIES=ties, **spec.kwargs,
    )


def bn_backward(part, split: int, zstat, chan, g, dmean, dmax, drop, coef, kz, dgamma, dbeta, N: int, C: int, HW: int,
                training: bool) -> None:
    """BatchNorm's backward from pass 1's sums: dgamma/dbeta and the dz
    pass's coefficients ``coef`` [3, N, C], ``kz`` [C]."""
    some = chan
    launch(
        tail_bn_backward_kernel, (cdiv(C, _BN_BLOCK_C),),
        part, zstat, chan, g if g is not None else some, dmean if dmean is not None else some,
        dmax if dmax is not None else some, drop if drop is not None else some, coef, kz,
        dgamma if dgamma is not None else some, dbeta if dbeta is not None else some,
        N, C, HW, split,
        TRAINING=training, HAS_GATE=g is not None, HAS_MEAN=dmean is not None, HAS_MAX=dmax is not None,
        HAS_DROP=drop is not None, HAS_GAMMA=dgamma is not None, HAS_BETA=dbeta is not None,
        BLOCK_N=_BN_BLOCK_N, BLOCK_C=_BN_BLOCK_C, num_warps=4,
    )


def dz_spec(z, zs, e, es, dz, dzs) -> TileSpec:
    N, C, H, W = z.shape
    flat = flat_ok(C, H * W, z, e, dz)
    others = tuple(t for t in (es, dzs) if t != zs)
    return elementwise_spec("tail_dz", "dz", z, zs, others, flat, None)


def dz_pass(spec: TileSpec, e, es, z, zs, dz, dzs, coef, kz, ext, fold=None) -> None:
    """Backward pass 2 (read e and z, write dz); ``fold`` = (partials
    [R, FOLD_K], out [K], out2 [1] or None) folded by program 0."""
    N, C, H, W = z.shape
    fold_part, fold_out, fold_out2 = fold if fold is not None else (None, None, None)
    launch(
        tail_dz_kernel, spec.grid,
        e, z, dz, coef, kz, ext if ext is not None else kz,
        fold_part if fold_part is not None else kz, fold_out if fold_out is not None else kz,
        fold_out2 if fold_out2 is not None else kz, N, C, H * W, fold_part.shape[0] if fold_part is not None else 0, spec.num_c_blocks, spec.num_hw_blocks,
        *es, *zs, *dzs,
        HAS_MAX=ext is not None, FOLD_K=fold_part.shape[-1] if fold_part is not None else 0,
        FOLD_SPLIT=fold_out.numel() if fold_out is not None else 0, FOLD_OUT2=fold_out2 is not None, **spec.kwargs,
    )
