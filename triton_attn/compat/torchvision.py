"""torchvision's ``SqueezeExcitation`` (MobileNetV3, EfficientNet, RegNet in
torchvision) with its constructor and state_dict keys, on the fused SE op.

Also holds ``conv_se_forward``, the forward shared by every SE variant whose
two 1x1 convs and activations are merely named differently (torchvision's
``fc1``/``activation``/``fc2``/``scale_activation``, timm EfficientNet's
``conv_reduce``/``act1``/``conv_expand``/``gate``)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..ops import se as se_ops
from ..activations import fused_act_spec
from ..modules.gating import fused_gate_name, pooled_squeeze, scale_by
from ..runtime import exporting, fx_leaf, not_scriptable
from ..validation import check_block_input


def conv_se_forward(x: torch.Tensor, reduce: nn.Conv2d, act: nn.Module, expand: nn.Conv2d, gate: nn.Module) -> torch.Tensor:
    """``x * gate(expand(act(reduce(mean_hw(x)))))``: the fused op when ``act``
    and ``gate`` are known functions, else Triton pooling + the layers
    themselves + Triton scale (same numbers, more passes)."""
    check_block_input(x, reduce.in_channels, reduce.weight)
    act_spec = fused_act_spec(act)
    gate_name = fused_gate_name(gate)
    if act_spec is not None and gate_name is not None and x.numel() > 0 and not exporting():
        return se_ops.se(x, reduce.weight, reduce.bias, expand.weight, expand.bias, "avg", act_spec[0], act_spec[1], gate_name)
    # Unfused, standard ops while exporting or for an empty x (gating.py).
    return scale_by(x, gate(expand(act(reduce(pooled_squeeze(x, "avg"))))))


class SqueezeExcitation(nn.Module):
    """Drop-in for ``torchvision.ops.SqueezeExcitation``: same signature
    (``activation``/``scale_activation`` are called with no argument, as
    torchvision does), same keys ``fc1.weight``, ``fc1.bias``, ``fc2.weight``,
    ``fc2.bias``. torchvision computes ``scale * input``; the product is the
    same."""

    def __init__(
        self,
        input_channels: int,
        squeeze_channels: int,
        activation: Callable[..., nn.Module] = nn.ReLU,
        scale_activation: Callable[..., nn.Module] = nn.Sigmoid,
    ) -> None:
        super().__init__()
        # Parameter-free; kept so code that reaches into torchvision's
        # attributes (``se.avgpool``) keeps working.
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def _scale(self, input: torch.Tensor) -> torch.Tensor:
        """torchvision's gate as a [N, C, 1, 1] tensor (its quantized
        subclasses override this; the fused forward does not call it)."""
        s = self.fc2(self.activation(self.fc1(self.avgpool(input))))
        return self.scale_activation(s)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """``input * scale_activation(fc2(activation(fc1(mean_hw(input)))))``,
        input [N, C, H, W]; runs where ``triton_attn.SEModule.forward`` says
        (fused Triton SE op on CUDA, interpreter or pure PyTorch on CPU,
        standard ops under ``torch.onnx.export``/``torch.jit.trace``, one node
        under ``torch.fx``), same dtypes, layouts, autograd; N = 0 gives an
        empty output."""
        if not isinstance(input, torch.Tensor):
            return fx_leaf(self, input)
        return conv_se_forward(input, self.fc1, self.activation, self.fc2, self.scale_activation)

    __prepare_scriptable__ = not_scriptable
