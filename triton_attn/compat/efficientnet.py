"""timm's EfficientNet / MobileNetV3 ``SqueezeExcite``
(``timm.models._efficientnet_blocks``) with its constructor and state_dict
keys, on the fused SE op. Not timm's ``layers.SqueezeExcite``, which is an
alias of ``SEModule`` (``triton_attn.SqueezeExcite``)."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from ..activations import create_act_layer
from ..runtime import fx_leaf, not_scriptable
from .torchvision import conv_se_forward


class EfficientNetSqueezeExcite(nn.Module):
    """Keys ``conv_reduce.weight [rd, C, 1, 1]``, ``conv_reduce.bias``,
    ``conv_expand.weight``, ``conv_expand.bias``; ``rd = round(C * rd_ratio)``
    unless ``rd_channels`` (or ``rd_round_fn``) says otherwise, as in timm."""

    def __init__(
        self,
        in_chs: int,
        rd_ratio: float = 0.25,
        rd_channels: Optional[int] = None,
        act_layer=nn.ReLU,
        gate_layer=nn.Sigmoid,
        force_act_layer=None,
        rd_round_fn: Optional[Callable] = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if rd_channels is None:
            rd_channels = (rd_round_fn or round)(in_chs * rd_ratio)
        act_layer = force_act_layer or act_layer
        self.conv_reduce = nn.Conv2d(in_chs, rd_channels, 1, bias=True, **dd)
        self.act1 = create_act_layer(act_layer, inplace=True)
        self.conv_expand = nn.Conv2d(rd_channels, in_chs, 1, bias=True, **dd)
        self.gate = create_act_layer(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x * gate(conv_expand(act1(conv_reduce(mean_hw(x)))))``, x [N, C, H, W];
        runs where ``triton_attn.SEModule.forward`` says (fused Triton SE op on
        CUDA, interpreter or pure PyTorch on CPU, standard ops under
        ``torch.onnx.export``/``torch.jit.trace``, one node under ``torch.fx``),
        same dtypes, layouts, autograd; N = 0 gives an empty output."""
        if not isinstance(x, torch.Tensor):
            return fx_leaf(self, x)
        return conv_se_forward(x, self.conv_reduce, self.act1, self.conv_expand, self.gate)

    __prepare_scriptable__ = not_scriptable
