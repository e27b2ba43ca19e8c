"""Host side of the broadcast multiply y = x * g[n, c] (forward, optionally
with ECA's channel convolution + gate computed in the kernel from the pooling
partials) and of the fused backward dx = dy * g + pooled-gradient broadcast.

Dense NCHW operands take flat tiles (vector loads at any H*W, 7x7
included); other layouts take 2-D tiles along their contiguous axis. Each
launcher has a pure-PyTorch twin with the same arithmetic."""
from __future__ import annotations

import dataclasses

from typing import NamedTuple

import torch

from ..activations import GATE_CODES, gate_forward
from ..kernels.channel_scale import channel_scale_kernel
from ..kernels.channel_scale_backward import channel_scale_backward_kernel
from ..runtime import launch, use_triton
from .config import cached_spec, cdiv, flat_block, flat_ok, next_pow2, second_pass_reversed, tile_config
from .layout import chan_contiguous


def conv_across_channels(s: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, circular: bool) -> torch.Tensor:
    """z[n, c] = sum_j w[j] * s[n, c + j - pad] (+ b), zero or circular padding.

    Written as K shifted adds rather than F.conv1d so that the circular case
    needs no F.pad (which refuses pad > C) and CUDA picks no nondeterministic
    cuDNN algorithm; K is small and s is [N, C]."""
    K = w.numel()
    pad = (K - 1) // 2
    w = w.reshape(-1).to(s.dtype)
    z = torch.zeros_like(s)
    for j in range(K):
        z = z + w[j] * shift_channels(s, pad - j, circular)
    if b is not None:
        z = z + b.reshape(()).to(s.dtype)
    return z


def shift_channels(t: torch.Tensor, shift: int, circular: bool) -> torch.Tensor:
    """u[:, c] = t[:, c - shift], wrapping or zero-filling."""
    C = t.shape[1]
    if shift == 0:
        return t
    if circular:
        idx = (torch.arange(C, device=t.device) - shift) % C
        return t.index_select(1, idx)
    if abs(shift) >= C:
        return torch.zeros_like(t)
    if shift > 0:
        return torch.cat([t.new_zeros(t.shape[0], shift), t[:, : C - shift]], 1)
    return torch.cat([t[:, -shift:], t.new_zeros(t.shape[0], -shift)], 1)


def eca_window(spec, conv_k: int) -> int:
    """The in-kernel ECA conv's input window: BLOCK_C + K - 1 channels,
    rounded up to a power of two (1 without a conv)."""
    return next_pow2(spec.kwargs["BLOCK_C"] + conv_k - 1) if conv_k else 1


class TileSpec(NamedTuple):
    grid: tuple
    num_c_blocks: int
    num_hw_blocks: int
    kwargs: dict


_TORCH = TileSpec((), 0, 0, {})


def _tile_spec(cfg, N: int, C: int, HW: int, flat: bool, reverse: bool, max_tile: int | None = None) -> TileSpec:
    if max_tile is not None and cfg.block_c * cfg.block_hw > max_tile:
        cfg = dataclasses.replace(cfg, block_c=max(1, max_tile // cfg.block_hw), block_hw=min(cfg.block_hw, max_tile))
    if flat:
        block, block_cg = flat_block(cfg, C, HW)
        tiles = cdiv(C * HW, block)
        kwargs = dict(FLAT_HW=HW, REVERSE=reverse, BLOCK_C=block_cg, BLOCK_HW=block, **cfg.launch_kwargs())
        return TileSpec((N * tiles,), 1, tiles, kwargs)
    num_c_blocks, num_hw_blocks = cdiv(C, cfg.block_c), cdiv(HW, cfg.block_hw)
    kwargs = dict(FLAT_HW=0, REVERSE=reverse, BLOCK_C=cfg.block_c, BLOCK_HW=cfg.block_hw, **cfg.launch_kwargs())
    return TileSpec((N * num_c_blocks * num_hw_blocks,), num_c_blocks, num_hw_blocks, kwargs)


def elementwise_spec(kernel: str, variant: str, x: torch.Tensor, strides, other_strides: tuple, flat: bool, trial,
                     heuristic=None, max_tile: int | None = None) -> TileSpec:
    """The launch spec of a one-tile-per-program kernel over x (flat tiles
    when ``flat``), tuned or heuristic, memoised per shape and tile order.
    ``heuristic``: the untuned config (default ``tile_config``); ``max_tile``:
    larger configs (tuned or overridden) run as tiles of that many elements."""
    N, C, H, W = x.shape
    HW = H * W
    reverse = second_pass_reversed(x.numel() * x.element_size())
    key = (kernel, variant, N, C, HW, strides, other_strides, x.dtype, x.device, flat, reverse)
    return cached_spec(
        kernel, key, x.shape, strides, x.dtype, x.device, variant,
        heuristic or (lambda: tile_config(C, HW, chan_contiguous(strides, C))),
        lambda cfg: _tile_spec(cfg, N, C, HW, flat, reverse, max_tile), trial, other_strides=other_strides,
    )


def scale_spec(x: torch.Tensor, x_strides, y: torch.Tensor, y_strides, conv_k: int) -> TileSpec:
    if not use_triton(x) or x.numel() == 0:
        return _TORCH
    N, C, H, W = x.shape
    flat = flat_ok(C, H * W, x, y)

    def trial(spec):  # writes a scratch y only: nothing accumulates
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        small = torch.zeros((N, C), device=x.device, dtype=acc)
        w = torch.zeros(max(conv_k, 1), device=x.device, dtype=acc)
        _scale_launch(spec, x, x_strides, torch.empty_like(y), y_strides, small, small, small.clone(), 1, w, None, False, "sigmoid", conv_k)

    return elementwise_spec("channel_scale", "conv" if conv_k else "gate", x, x_strides, (y_strides,) if y_strides != x_strides else (), flat, trial)


def _scale_launch(spec, x, x_strides, y, y_strides, g, part, mean, split, conv_w, conv_b, circular, gate, conv_k):
    N, C, H, W = x.shape
    launch(
        channel_scale_kernel, spec.grid,
        x, y, g, part, mean, conv_w if conv_w is not None else g, conv_b if conv_b is not None else g,
        C, H * W, split, N * C, spec.num_c_blocks, spec.num_hw_blocks,
        *x_strides, *y_strides,
        CONV_K=conv_k, ECA_WIN=eca_window(spec, conv_k), CIRCULAR=circular, HAS_BIAS=conv_b is not None,
        GATE=GATE_CODES[gate] if conv_k else 0, **spec.kwargs,
    )


def scale(spec: TileSpec, x, x_strides, y, y_strides, g, *, part=None, mean=None, split: int = 1, conv_w=None,
          conv_b=None, circular: bool = False, gate: str = "identity") -> None:
    """y = x * g[n, c] into ``y`` (x's layout). With ``conv_w`` the gate is
    gate(conv_across_channels(mean)) from the pooling partials ``part``
    [SPLIT, N, C], and is also stored into ``g`` [N, C], the folded means
    into ``mean`` [N, C]."""
    conv_k = conv_w.numel() if conv_w is not None else 0
    if spec.grid:
        _scale_launch(spec, x, x_strides, y, y_strides, g, part if part is not None else g, mean if mean is not None else g,
                      split, conv_w, conv_b, circular, gate, conv_k)
        return
    if conv_k:
        mean.copy_(part.sum(0))
        g.copy_(gate_forward(conv_across_channels(mean, conv_w, conv_b, circular), gate))
    y.copy_(x.to(g.dtype) * g[:, :, None, None])


def scale_backward_spec(x: torch.Tensor, x_strides, dy, dy_strides, dx, dx_strides) -> TileSpec:
    if not use_triton(x) or x.numel() == 0:
        return _TORCH
    N, C, H, W = x.shape
    flat = flat_ok(C, H * W, x, dx, *(() if dy is None else (dy,)))
    others = tuple(s for s in (dy_strides,) if s is not None and s != x_strides)

    def trial(spec):
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        small = torch.zeros((N, C), device=x.device, dtype=acc)
        _scale_backward_launch(spec, x if dy is not None else None, x, x_strides, x_strides, torch.empty_like(dx), dx_strides,
                               small, small, None, None, None)

    return elementwise_spec("channel_scale_backward", "dx", x, x_strides, others, flat, trial)


def _scale_backward_launch(spec, dy, x, x_strides, dy_strides, dx, dx_strides, g, dmean, dmax, amax, fold):
    N, C, H, W = x.shape
    some = next(t for t in (dmean, g, dmax) if t is not None)
    fold_part, fold_out, fold_out2 = fold if fold is not None else (None, None, None)
    fold_k = fold_part.shape[-1] if fold_part is not None else 0
    launch(
        channel_scale_backward_kernel, spec.grid,
        dy if dy is not None else x, x, dx, g if g is not None else some, some,
        dmax if dmax is not None else some, amax if amax is not None else some,
        fold_part if fold_part is not None else some, fold_out if fold_out is not None else some,
        fold_out2 if fold_out2 is not None else some,
        C, H * W, fold_part.shape[0] if fold_part is not None else 0, spec.num_c_blocks, spec.num_hw_blocks,
        *(dy_strides if dy is not None else x_strides), *x_strides, *dx_strides,
        HAS_DY=dy is not None and g is not None, HAS_MEAN=dmean is not None, HAS_MAX=dmax is not None,
        FOLD_K=fold_k, FOLD_SPLIT=fold_out.numel() if fold_out is not None else 0, FOLD_OUT2=fold_out2 is not None, **spec.kwargs,
    )


def scale_backward(spec: TileSpec, dy, x, x_strides, dy_strides, dx, dx_strides, g, dmean, dmax, amax,
                   fold: tuple | None = None) -> None:
    """dx = dy * g + dmean + (x == amax) * dmax into ``dx`` (all [N, C]
    terms broadcast over H*W; dmean already / H*W, dmax already / ties).
    ``fold`` = (partials [ROWS, FOLD_K], out [K], out2 [1] or None): also
    out = partials.sum(0)[:K] and out2 = its column K (see ``fold_sums``)."""
    if spec.grid:
        _scale_backward_launch(spec, dy, x, x_strides, dy_strides, dx, dx_strides, g, dmean, dmax, amax, fold)
        return
    acc = next(t for t in (dmean, g, dmax) if t is not None).dtype
    out = torch.zeros(x.shape, device=x.device, dtype=acc)
    if dy is not None and g is not None:
        out = out + dy.to(acc) * g[:, :, None, None]
    if dmean is not None:
        out = out + dmean[:, :, None, None]
    if dmax is not None:
        hit = (x.to(acc) == amax[:, :, None, None]) | amax.isnan()[:, :, None, None]
        out = out + torch.where(hit, dmax[:, :, None, None], torch.zeros((), dtype=acc, device=x.device))
    dx.copy_(out)
    if fold is not None:
        fold_sums(*fold)


def fold_sums(partials, out, out2=None) -> None:
    """The pure-PyTorch fold of small partial sums (kernels'
    ``fold_rows_into``): columns < K into ``out`` [K], column K into ``out2``."""
    total = partials.sum(0)
    K = out.numel()
    out.copy_(total[:K])
    if out2 is not None:
        out2.copy_(total[K:K + 1])



def channel_scale(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """y = x * g[n, c], allocated here (the unfused scale op). g: [N, C] in
    the accumulation dtype, contiguous."""
    from ..runtime import NO_CONTEXT, no_autocast
    from .layout import empty_like_4d, nc_hw

    x, xs = nc_hw(x)
    y = empty_like_4d(x)
    _, ys = nc_hw(y)
    spec = scale_spec(x, xs, y, ys, 0)
    with NO_CONTEXT if spec.grid else no_autocast():
        scale(spec, x, xs, y, ys, g)
    return y


def channel_scale_backward(dy, x, g, dmean, dmax, amax) -> torch.Tensor:
    """dx = dy * g + dmean + (x == amax) * dmax, allocated here (the unfused
    ops); any of dy/g, dmean, dmax may be None."""
    from ..runtime import NO_CONTEXT, no_autocast
    from .layout import empty_like_4d, nc_hw

    x, xs = nc_hw(x)
    dys = None
    if dy is not None:
        dy, dys = nc_hw(dy)
    dx = empty_like_4d(x)
    _, dxs = nc_hw(dx)
    spec = scale_backward_spec(x, xs, dy, dys, dx, dxs)
    with NO_CONTEXT if spec.grid else no_autocast():
        scale_backward(spec, dy, x, xs, dys, dx, dxs, g, dmean, dmax, amax)
    return dx
