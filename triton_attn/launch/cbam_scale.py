"""Host side of CBAM's elementwise passes: y = x * ca[n, c] * sa[n, hw]
(forward passes 3-4; with training BatchNorm also the batch statistics and
the running-statistics update) and the single dx kernel of the backward
(passes 4-6). Dense NCHW operands take flat tiles (vector loads at 7x7 and
14x14), other layouts 2-D tiles along their contiguous axis. Each launcher
has a pure-PyTorch twin with the same arithmetic."""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch

from ..activations import GATE_CODES, gate_forward
from ..kernels.cbam_scale import cbam_scale_kernel
from ..kernels.cbam_scale_backward import cbam_scale_backward_kernel
from ..runtime import launch, use_triton
from . import config as launch_config
from .channel_scale import TileSpec, elementwise_spec
from .config import flat_ok, next_pow2, tile_config
from .layout import chan_contiguous

TORCH = TileSpec((), 0, 0, {})


#: Largest tile of these kernels: each element carries ~8 small-buffer
#: gathers besides x (and dy), so the autotune spaces' 8K tiles (32 elements
#: a thread at 8 warps) would spill; such configs run as 4K tiles.
_MAX_TILE = 4096


def _spec(kernel, variant, x, strides, other_strides: tuple, flat: bool, trial) -> TileSpec:
    N, C, H, W = x.shape
    HW = H * W

    def heuristic():
        cfg = tile_config(C, HW, chan_contiguous(strides, C))
        if not flat and cfg.block_c * cfg.block_hw >= 2048 and "num_warps" not in launch_config._overrides:
            # A 2-D tile carries a 64-bit address tile per operand: 8 warps
            # keep that under ~80 registers a thread (over 25% occupancy).
            cfg = dataclasses.replace(cfg, num_warps=8)
        return cfg

    return elementwise_spec(kernel, variant, x, strides, other_strides, flat, trial, heuristic, _MAX_TILE)


def _acc(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class BatchNormArgs(NamedTuple):
    """The spatial BatchNorm as the scale pass sees it in training: weight,
    bias, running mean/var and num_batches_tracked (read), where their
    updates go (``*_out``; the buffers themselves in eager calls), the
    momentum (None: the cumulative average) and eps."""
    gamma: torch.Tensor | None
    beta: torch.Tensor | None
    rm: torch.Tensor | None
    rv: torch.Tensor | None
    nbt: torch.Tensor | None
    rm_out: torch.Tensor | None
    rv_out: torch.Tensor | None
    nbt_out: torch.Tensor | None
    momentum: float | None
    eps: float


# --- forward: y = x * ca * sa -------------------------------------------------

def scale_spec(x: torch.Tensor, x_strides, y: torch.Tensor, y_strides, train_bn: bool) -> TileSpec:
    if not use_triton(x) or x.numel() == 0:
        return TORCH
    N, C, H, W = x.shape
    flat = flat_ok(C, H * W, x, y)

    def trial(spec):  # writes a scratch y only: nothing accumulates
        acc = _acc(x)
        ca = torch.zeros((N, C), device=x.device, dtype=acc)
        sa = torch.zeros((N, H * W), device=x.device, dtype=acc)
        _scale_launch(spec, x, x_strides, torch.empty_like(y), y_strides, ca, sa, sa.clone(), None, 0, None, None, "sigmoid")

    other = (y_strides,) if y_strides != x_strides else ()
    return _spec("cbam_scale", "bn" if train_bn else "fwd", x, x_strides, other, flat, trial)


def _scale_launch(spec, x, x_strides, y, y_strides, ca, z, sa, bnp, P, bnstat, bn: BatchNormArgs | None, gate):
    N, C, H, W = x.shape
    train = bn is not None
    some = ca
    update = train and bn.rm is not None
    has_nbt = train and bn.nbt is not None
    cumulative = train and bn.momentum is None and has_nbt
    momentum = 0.0 if not train or bn.momentum is None else float(bn.momentum)

    def t(v):
        return v if v is not None else some

    launch(
        cbam_scale_kernel, spec.grid,
        x, y, ca, z, sa, t(bnp), t(bnstat),
        t(bn.gamma if train else None), t(bn.beta if train else None),
        t(bn.rm if update else None), t(bn.rv if update else None), t(bn.nbt if has_nbt else None),
        t(bn.rm_out if update else None), t(bn.rv_out if update else None), t(bn.nbt_out if has_nbt else None),
        C, H * W, spec.num_c_blocks, spec.num_hw_blocks, P, momentum, float(bn.eps) if train else 0.0,
        *x_strides, *y_strides,
        TRAIN_BN=train, UPDATE_RUNNING=update, HAS_NBT=has_nbt, CUMULATIVE=cumulative,
        HAS_GAMMA=train and bn.gamma is not None, HAS_BETA=train and bn.beta is not None,
        GATE=GATE_CODES[gate], BLOCK_P=max(16, min(next_pow2(P), 1024)), **spec.kwargs,
    )


def scale(spec: TileSpec, x, x_strides, y, y_strides, ca, z, sa, *, bnp=None, bnstat=None, bn: BatchNormArgs | None = None,
          gate: str = "sigmoid") -> None:
    """y = (x * ca[n, c]) * sa[n, hw] into ``y`` (x's layout), rounded once.
    With ``bn`` (training BatchNorm) sa is first computed as gate(bn(z)) from
    the spatial branch's (count, mean, M2) partials ``bnp`` [P, 3] and
    stored; ``bnstat`` [2] gets the batch mean and invstd, and the running
    statistics their update."""
    P = bnp.shape[0] if bnp is not None else 0
    if spec.grid:
        _scale_launch(spec, x, x_strides, y, y_strides, ca, z, sa, bnp, P, bnstat, bn, gate)
        return
    N, C, H, W = x.shape
    acc = ca.dtype
    if bn is not None:
        n_i, m_i, m2_i = bnp[:, 0], bnp[:, 1], bnp[:, 2]
        cnt = n_i.sum()
        mean = (n_i * m_i).sum() / cnt
        var = (m2_i + n_i * (m_i - mean) ** 2).sum() / cnt
        invstd = 1.0 / torch.sqrt(var + bn.eps)
        a = invstd if bn.gamma is None else bn.gamma.to(acc) * invstd
        b = -mean * a if bn.beta is None else bn.beta.to(acc) - mean * a
        sa.copy_(gate_forward(z * a + b, gate))
        bnstat[0] = mean
        bnstat[1] = invstd
        nbt = None
        if bn.nbt is not None:
            nbt = bn.nbt + 1
            bn.nbt_out.copy_(nbt)
        if bn.rm is not None:
            if bn.momentum is None:
                f = 1.0 / nbt.to(acc) if nbt is not None else 0.0
            else:
                f = bn.momentum
            unbiased = var * (cnt / (cnt - 1))
            bn.rm_out.copy_((1 - f) * bn.rm.to(acc) + f * mean)
            bn.rv_out.copy_((1 - f) * bn.rv.to(acc) + f * unbiased)
    y.copy_(x.to(acc) * ca[:, :, None, None] * sa.reshape(N, 1, H, W))


# --- backward: dx ---------------------------------------------------------------

def dx_spec(x: torch.Tensor, x_strides, dy, dy_strides, dx, dx_strides) -> TileSpec:
    if not use_triton(x) or x.numel() == 0:
        return TORCH
    N, C, H, W = x.shape
    flat = flat_ok(C, H * W, x, dx, dy)
    others = tuple(s for s in (dy_strides,) if s != x_strides)

    def trial(spec):
        acc = _acc(x)
        sc = torch.zeros((N, C), device=x.device, dtype=acc)
        sp = torch.zeros((N, H * W), device=x.device, dtype=acc)
        _dx_launch(spec, x, x, x_strides, x_strides, torch.empty_like(dx), dx_strides, sc, sc, sc, sc, sp, sp, sp, sp, None)

    return _spec("cbam_scale_backward", "all", x, x_strides, others, flat, trial)


def _dx_launch(spec, dy, x, x_strides, dy_strides, dx, dx_strides, ca, amax, dmean_ch, dmax_ch, sa, smax, dmean_px,
               dmax_px, fold):
    N, C, H, W = x.shape
    fold_part, fold_out = fold if fold is not None else (ca, ca)
    launch(
        cbam_scale_backward_kernel, spec.grid,
        dy, x, dx, ca, amax, dmean_ch, dmax_ch, sa, smax, dmean_px, dmax_px, fold_part, fold_out,
        C, H * W, spec.num_c_blocks, spec.num_hw_blocks,
        fold_part.shape[0] if fold is not None else 0, fold_out.numel() if fold is not None else 0,
        *dy_strides, *x_strides, *dx_strides,
        FOLD_K=fold_part.shape[-1] if fold is not None else 0, **spec.kwargs,
    )


def dx(spec: TileSpec, dy, x, x_strides, dy_strides, out, out_strides, ca, amax, dmean_ch, dmax_ch, sa, smax,
       dmean_px, dmax_px, fold: tuple | None = None) -> None:
    """dx = ca * (dy * sa + dmean_px + (x * ca == smax) * dmax_px)
          + dmean_ch + (x == amax) * dmax_ch into ``out`` (``*_ch`` [N, C],
    ``*_px`` [N, H*W], contiguous, accumulation dtype). ``fold`` =
    (partials [ROWS, FOLD_K], out [n]): also out = partials.sum(0)[:n] in
    out's dtype."""
    if spec.grid:
        _dx_launch(spec, dy, x, x_strides, dy_strides, out, out_strides, ca, amax, dmean_ch, dmax_ch, sa, smax,
                   dmean_px, dmax_px, fold)
        return
    N, C, H, W = x.shape
    acc = ca.dtype
    zero = torch.zeros((), dtype=acc, device=x.device)
    xf = x.to(acc)
    g, m = ca[:, :, None, None], amax[:, :, None, None]
    s, sx, dm_px, dx_px = (t.reshape(N, 1, H, W) for t in (sa, smax, dmean_px, dmax_px))
    hit_px = (xf * g == sx) | sx.isnan()
    hit_ch = (xf == m) | m.isnan()
    dx1 = dy.to(acc) * s + dm_px + torch.where(hit_px, dx_px, zero)
    out.copy_(g * dx1 + dmean_ch[:, :, None, None] + torch.where(hit_ch, dmax_ch[:, :, None, None], zero))
    if fold is not None:
        part, target = fold
        target.copy_(part.sum(0)[: target.numel()].reshape(target.shape))
