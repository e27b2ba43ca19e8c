"""How a 4-D tensor is seen by the kernels: [N, C, H*W] with three strides."""
from __future__ import annotations

import torch

from ..runtime import new_like_4d


def hw_mergeable(t: torch.Tensor) -> bool:
    """True when H and W can be walked as one axis with a single stride: NCHW,
    channels_last, channel slices and W-strided views all qualify."""
    _, _, H, W = t.shape
    return H == 1 or W == 1 or t.stride(2) == W * t.stride(3)


def as_hw_mergeable(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself, or (when H and W cannot be merged: a spatial crop, an
    H/W transpose) a copy in the dense format nearest to it; both NCHW and
    channels_last merge H and W."""
    if hw_mergeable(t):
        return t
    return t.contiguous(memory_format=torch.channels_last if t.stride(1) == 1 else torch.contiguous_format)


def nc_hw(t: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Returns ``t`` (copied only when H and W cannot be merged) and its
    (batch, channel, hw) strides in elements."""
    _, _, H, W = t.shape
    s_n, s_c, s_h, s_w = t.stride()
    if not (H == 1 or W == 1 or s_h == W * s_w):
        t = as_hw_mergeable(t)
        s_n, s_c, s_h, s_w = t.stride()
    hw_stride = 1 if H * W == 1 else (s_w if W > 1 else s_h)
    return t, (s_n, s_c, hw_stride)


def chan_contiguous(strides: tuple[int, int, int], C: int) -> bool:
    """channels_last-like: the channel axis is the fast one."""
    return C > 1 and strides[1] == 1


def empty_like_4d(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Same shape and memory format as ``x``: channels_last stays channels_last,
    and a non-dense view gets the dense layout it resembles."""
    # preserve_format keeps a dense permutation with H and W apart
    # (x.transpose(2, 3)); the kernels write H*W as one axis. Rare, so a copy
    # of the fresh buffer (poison included) is cheap enough.
    return as_hw_mergeable(new_like_4d(x, dtype))
