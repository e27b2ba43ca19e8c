"""Shared module helpers: deciding between the fused and the unfused path."""
from __future__ import annotations

import torch
from torch import nn

from ..ops import unfused
from ..activations import GATE_CODES, fused_act_spec


def fused_gate_name(gate: nn.Module) -> str | None:
    spec = fused_act_spec(gate)
    if spec is None or spec[0] not in GATE_CODES:
        return None
    return spec[0]


def pooled_squeeze(x: torch.Tensor, pool: str) -> torch.Tensor:
    """Unfused path: the pooled [N, C, 1, 1] in x's dtype (as timm computes
    it), from the Triton pooling op."""
    mean, amax = unfused.pool_hw(x, pool != "max", pool != "avg")
    if pool == "avg":
        s = mean
    elif pool == "max":
        s = amax
    else:
        s = 0.5 * mean + 0.5 * amax
    return s.to(x.dtype)[:, :, None, None]


def scale_by(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return unfused.scale(x, g.reshape(x.shape[0], x.shape[1]))
