"""Shared module helpers: deciding between the fused and the unfused path,
and the unfused path's pooling and scale (Triton ops, or plain PyTorch
while exporting and for empty inputs)."""
from __future__ import annotations

import torch
from torch import nn

from ..ops import unfused
from ..activations import GATE_CODES, fused_act_spec
from ..runtime import exporting
from ..validation import check_pool_nonempty


def fused_gate_name(gate: nn.Module) -> str | None:
    spec = fused_act_spec(gate)
    if spec is None or spec[0] not in GATE_CODES:
        return None
    return spec[0]


def _plain(x: torch.Tensor) -> bool:
    """Standard ops instead of triton_attn's: while exporting (ONNX,
    torch.jit.trace) and for empty x (nothing to launch)."""
    return x.numel() == 0 or exporting()


def pooled_pair(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, amax) over H*W as [N, C, 1, 1] in x's dtype (as timm computes
    them), from one Triton pooling pass; ``x.mean``/``x.amax`` while exporting
    (ONNX ReduceMean/ReduceMax) or for an empty x. An empty H*W is a
    ValueError (the max over it)."""
    check_pool_nonempty(x, "max", "pool")  # a ValueError, not amax's IndexError
    if _plain(x):
        return x.mean((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    mean, amax = unfused.pool_hw(x, True, True)
    return mean.to(x.dtype)[:, :, None, None], amax.to(x.dtype)[:, :, None, None]


def pooled_squeeze(x: torch.Tensor, pool: str) -> torch.Tensor:
    """Unfused path: the pooled [N, C, 1, 1] in x's dtype (as timm computes
    it), from the Triton pooling op (plain PyTorch while exporting or for an
    empty x)."""
    check_pool_nonempty(x, pool)
    if _plain(x):
        if pool == "avg":
            return x.mean((2, 3), keepdim=True)
        if pool == "max":
            return x.amax((2, 3), keepdim=True)
        return 0.5 * x.mean((2, 3), keepdim=True) + 0.5 * x.amax((2, 3), keepdim=True)
    mean, amax = unfused.pool_hw(x, pool != "max", pool != "avg")
    if pool == "avg":
        s = mean
    elif pool == "max":
        s = amax
    else:
        s = 0.5 * mean + 0.5 * amax
    return s.to(x.dtype)[:, :, None, None]


def scale_by(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """x * g with g [N, C] or [N, C, 1, 1]: the Triton scale op, or ``x * g``
    while exporting (ONNX Mul) and for an empty x."""
    if _plain(x):
        return x * (g if g.dim() == 4 else g.reshape(x.shape[0], x.shape[1], 1, 1))
    return unfused.scale(x, g.reshape(x.shape[0], x.shape[1]))
