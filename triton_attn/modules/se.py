"""SE modules with timm's constructors and state_dict keys."""
from __future__ import annotations

from typing import Optional, Type, Union

import torch
from torch import nn

from ..ops import se as se_ops
from ..activations import create_act_layer, fused_act_spec
from ..validation import check_block_input, check_pool_nonempty
from .gating import fused_gate_name, pooled_squeeze, scale_by


def make_divisible(v, divisor=8, min_value=None, round_limit=0.9):
    """timm's channel rounding (``timm.layers.make_divisible``)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


class SEModule(nn.Module):
    """Squeeze-and-excitation, drop-in for ``timm.layers.SEModule``.

    Keys: ``fc1.weight [rd, C, 1, 1]``, ``fc1.bias``, ``fc2.weight``, ``fc2.bias``
    (plus ``bn.*`` with a ``norm_layer``). Known activations and gates run the
    fused ops; any other ``act_layer``/``gate_layer``/``norm_layer`` runs the
    unfused path (Triton pooling and scale around the layers themselves)."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1.0 / 16,
        rd_channels: Optional[int] = None,
        rd_divisor: int = 8,
        add_maxpool: bool = False,
        bias: bool = True,
        act_layer: Type[nn.Module] = nn.ReLU,
        norm_layer: Optional[Type[nn.Module]] = None,
        gate_layer: Union[str, Type[nn.Module]] = "sigmoid",
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.channels = channels
        self.add_maxpool = add_maxpool
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=bias, **dd)
        self.bn = norm_layer(rd_channels, **dd) if norm_layer else nn.Identity()
        self.act = create_act_layer(act_layer, inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=bias, **dd)
        self.gate = create_act_layer(gate_layer)

    def _pool(self) -> str:
        return "avgmax" if self.add_maxpool else "avg"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_block_input(x, self.fc1.in_channels, self.fc1.weight)
        check_pool_nonempty(x, self._pool(), "add_maxpool pool")
        act = fused_act_spec(self.act)
        gate = fused_gate_name(self.gate)
        if act is not None and gate is not None and isinstance(self.bn, nn.Identity):
            return se_ops.se(
                x, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias, self._pool(), act[0], act[1], gate,
            )
        s = pooled_squeeze(x, self._pool()) if x.numel() > 0 else x.mean((2, 3), keepdim=True)
        s = self.fc2(self.act(self.bn(self.fc1(s))))
        g = self.gate(s)
        return scale_by(x, g) if x.numel() > 0 else x * g


SqueezeExcite = SEModule


class EffectiveSEModule(nn.Module):
    """'Effective' SE (one C -> C fc, hard_sigmoid gate), drop-in for timm's.
    Keys: ``fc.weight [C, C, 1, 1]``, ``fc.bias``."""

    def __init__(self, channels: int, add_maxpool: bool = False, gate_layer="hard_sigmoid", device=None, dtype=None, **_):
        super().__init__()
        self.channels = channels
        self.add_maxpool = add_maxpool
        self.fc = nn.Conv2d(channels, channels, kernel_size=1, padding=0, device=device, dtype=dtype)
        self.gate = create_act_layer(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_block_input(x, self.fc.in_channels, self.fc.weight)
        pool = "avgmax" if self.add_maxpool else "avg"
        check_pool_nonempty(x, pool, "add_maxpool pool")
        gate = fused_gate_name(self.gate)
        if gate is not None:
            return se_ops.se(x, self.fc.weight, self.fc.bias, None, None, pool, "identity", 0.0, gate)
        s = pooled_squeeze(x, pool) if x.numel() > 0 else x.mean((2, 3), keepdim=True)
        g = self.gate(self.fc(s))
        return scale_by(x, g) if x.numel() > 0 else x * g


EffectiveSqueezeExcite = EffectiveSEModule
