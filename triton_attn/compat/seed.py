"""The seed article's blocks (``SEBlock``, ``ECABlock``, ``CBAMBlock`` and the
CBAM parts) with its constructor signatures, attribute names and state_dict
keys, on the fused ops: a checkpoint saved from the article's code loads
strictly and gives the same outputs and gradients.

Where the seed differs from timm, the seed wins here: ``nn.Linear`` layers
without bias (keys ``fc_layers.0.weight``, ``fc_layers.2.weight``), the ECA
kernel size rule without timm's minimum of 3, and a CBAM spatial branch that
concatenates ``[max, mean]`` with no BatchNorm. Bad arguments raise
ValueError where the seed used ``assert``. Max pooling differs from the seed
only at exact ties, where the gradient is split between the tied maxima
(``torch.amax``) rather than sent to one of them."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..ops import cbam as cbam_ops
from ..ops import eca as eca_ops
from ..ops import se as se_ops
from ..activations import fused_act_spec
from ..modules.gating import fused_gate_name, pooled_pair, pooled_squeeze, scale_by
from ..runtime import exporting, fx_leaf, not_scriptable
from ..validation import check_block_input, check_cbam_input, check_choice, check_input

SEED_SPATIAL_KERNELS = (3, 5, 7)


def seed_eca_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    """The seed's adaptive k: odd, and 1 for fewer than 8 channels (timm's
    rule, ``reference.eca_kernel_size``, takes at least 3)."""
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    k = int(abs((math.log(channels, 2) + b) / gamma))
    return k if k % 2 else k + 1


def _seed_mlp(channels: int, ratio: int) -> nn.Sequential:
    if channels < 1 or ratio < 1 or channels // ratio < 1:
        raise ValueError(f"need channels >= ratio >= 1 (hidden width channels // ratio), got channels={channels}, ratio={ratio}")
    return nn.Sequential(
        nn.Linear(in_features=channels, out_features=channels // ratio, bias=False),
        nn.ReLU(),
        nn.Linear(in_features=channels // ratio, out_features=channels, bias=False),
    )


def _fused_mlp(fc_layers: nn.Sequential):
    """(fc1, (act, param), fc2) when ``fc_layers`` is still the seed's
    Linear -> known activation -> Linear, else None (the unfused path)."""
    if len(fc_layers) != 3:
        return None
    fc1, act, fc2 = fc_layers
    spec = fused_act_spec(act)
    if spec is None or not isinstance(fc1, nn.Linear) or not isinstance(fc2, nn.Linear):
        return None
    return fc1, spec, fc2


def _seed_eca_conv(channels: int, gamma: float, b: float) -> nn.Conv1d:
    k = seed_eca_kernel_size(channels, gamma, b)
    return nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)


def _conv_over_channels(conv: nn.Conv1d, s: torch.Tensor) -> torch.Tensor:
    """The seed's conv of a pooled [N, C] vector along the channel axis."""
    N, C = s.shape
    return conv(s.reshape(N, 1, C)).reshape(N, C)


class SEBlock(nn.Module):
    """Seed ``SEBlock(mode, channels, ratio)``: ``mode`` "avg" or "max"."""

    def __init__(self, mode, channels, ratio):
        super().__init__()
        check_choice(mode, "mode", ("avg", "max"))
        self.mode = mode
        self.avg_pooling = nn.AdaptiveAvgPool2d(1)
        self.max_pooling = nn.AdaptiveMaxPool2d(1)
        self.global_pooling = self.max_pooling if mode == "max" else self.avg_pooling
        self.fc_layers = _seed_mlp(channels, ratio)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        """``x * sigmoid(fc_layers(pool_hw(x)))``, x [N, C, H, W]: the fused
        Triton SE op on CUDA (interpreter or pure PyTorch on CPU), standard ops
        (ReduceMean/ReduceMax, MatMul, Relu, Sigmoid, Mul) under
        ``torch.onnx.export``/``torch.jit.trace``, one node under ``torch.fx``.
        y has x's dtype and memory format; N = 0 gives an empty y."""
        if not isinstance(x, torch.Tensor):
            return fx_leaf(self, x)
        check_block_input(x, self.fc_layers[0].in_features, self.fc_layers[0].weight)
        fused = _fused_mlp(self.fc_layers)
        gate = fused_gate_name(self.sigmoid)
        if fused is not None and gate is not None and x.numel() > 0 and not exporting():
            fc1, (act, act_param), fc2 = fused
            return se_ops.se(x, fc1.weight, fc1.bias, fc2.weight, fc2.bias, self.mode, act, act_param, gate)
        N, C = x.shape[:2]
        return scale_by(x, self.sigmoid(self.fc_layers(pooled_squeeze(x, self.mode).view(N, C))))

    __prepare_scriptable__ = not_scriptable


class ECABlock(nn.Module):
    """Seed ``ECABlock(channels, gamma=2, b=1)``; key ``conv.weight [1, 1, k]``."""

    def __init__(self, channels, gamma=2, b=1):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = _seed_eca_conv(channels, gamma, b)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        """``x * sigmoid(conv1d_k(mean_hw(x)))``, x [N, C, H, W]: the fused
        Triton ECA op on CUDA (interpreter or pure PyTorch on CPU), standard
        ops (ReduceMean, Conv, Sigmoid, Mul) under ``torch.onnx.export``/
        ``torch.jit.trace``, one node under ``torch.fx``. y has x's dtype and
        memory format; N = 0 gives an empty y."""
        if not isinstance(x, torch.Tensor):
            return fx_leaf(self, x)
        check_block_input(x, None, self.conv.weight)
        gate = fused_gate_name(self.sigmoid)
        if gate is not None and x.numel() > 0 and is_seed_conv1d(self.conv) and not exporting():
            return eca_ops.eca(x, self.conv.weight, None, False, gate)
        N, C = x.shape[:2]
        return scale_by(x, self.sigmoid(_conv_over_channels(self.conv, pooled_squeeze(x, "avg").view(N, C))))

    __prepare_scriptable__ = not_scriptable


class Channel_Attention_Module_FC(nn.Module):  # noqa: N801 - the seed's name
    """Seed CBAM channel attention, shared-MLP form:
    ``x * sigmoid(mlp(mean_hw(x)) + mlp(amax_hw(x)))``."""

    def __init__(self, channels, ratio):
        super().__init__()
        self.avg_pooling = nn.AdaptiveAvgPool2d(1)
        self.max_pooling = nn.AdaptiveMaxPool2d(1)
        self.fc_layers = _seed_mlp(channels, ratio)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        """Triton pooling (both statistics from one pass) and scale around the
        layers; standard ops while exporting or for an empty x."""
        if not isinstance(x, torch.Tensor):
            return fx_leaf(self, x)
        check_input(x, self.fc_layers[0].in_features)
        return _channel_attention(x, self.fc_layers, self.sigmoid)

    __prepare_scriptable__ = not_scriptable


class Channel_Attention_Module_Conv(nn.Module):  # noqa: N801 - the seed's name
    """Seed CBAM channel attention, ECA form:
    ``x * sigmoid(conv1d_k(mean_hw(x)) + conv1d_k(amax_hw(x)))``."""

    def __init__(self, channels, gamma=2, b=1):
        super().__init__()
        self.avg_pooling = nn.AdaptiveAvgPool2d(1)
        self.max_pooling = nn.AdaptiveMaxPool2d(1)
        self.conv = _seed_eca_conv(channels, gamma, b)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        """Triton pooling (both statistics from one pass) and scale around the
        conv; standard ops while exporting or for an empty x."""
        if not isinstance(x, torch.Tensor):
            return fx_leaf(self, x)
        check_input(x)
        return _channel_attention(x, lambda s: _conv_over_channels(self.conv, s), self.sigmoid)

    __prepare_scriptable__ = not_scriptable


def _channel_attention(x: torch.Tensor, f, gate: nn.Module) -> torch.Tensor:
    """x * gate(f(mean) + f(amax)) with one Triton pass for both statistics
    (``x.mean``/``x.amax`` while exporting or for an empty x)."""
    mean, amax = pooled_pair(x)
    return scale_by(x, gate(f(mean.flatten(1)) + f(amax.flatten(1))))


class Spatial_Attention_Module(nn.Module):  # noqa: N801 - the seed's name
    """Seed CBAM spatial attention: ``x * sigmoid(conv_kxk(cat[amax_c, mean_c]))``,
    no BatchNorm; key ``conv.weight [1, 2, k, k]``.

    Alone it runs in PyTorch: the fused spatial branch exists only inside the
    CBAM op (``CBAMBlock`` uses it), whose backward needs the channel branch."""

    def __init__(self, k: int):
        super().__init__()
        if k not in SEED_SPATIAL_KERNELS:
            raise ValueError(f"k must be one of {SEED_SPATIAL_KERNELS} (k = 1 + 2 * padding), got {k}")
        self.avg_pooling = torch.mean
        self.max_pooling = torch.max
        self.conv = nn.Conv2d(2, 1, kernel_size=(k, k), stride=(1, 1), padding=((k - 1) // 2, (k - 1) // 2), bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        """``x * sigmoid(conv(cat[amax_c, mean_c]))`` in PyTorch."""
        if not isinstance(x, torch.Tensor):
            return fx_leaf(self, x)
        check_input(x)
        s = torch.cat((x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)), dim=1)
        return x * self.sigmoid(self.conv(s))

    __prepare_scriptable__ = not_scriptable


class CBAMBlock(nn.Module):
    """Seed ``CBAMBlock(channel_attention_mode, spatial_attention_kernel_size,
    channels=None, ratio=None, gamma=None, b=None)``, mode "FC" (needs
    channels, ratio) or "Conv" (needs channels, gamma, b). Keys
    ``channel_attention_block.*`` and ``spatial_attention_block.conv.weight``."""

    def __init__(self, channel_attention_mode: str, spatial_attention_kernel_size: int, channels: int = None,
                 ratio: int = None, gamma: int = None, b: int = None):
        super().__init__()
        check_choice(channel_attention_mode, "channel_attention_mode", ("FC", "Conv"))
        if channel_attention_mode == "FC":
            if channels is None or ratio is None:
                raise ValueError("FC channel attention block needs channels and ratio")
            self.channel_attention_block = Channel_Attention_Module_FC(channels=channels, ratio=ratio)
        else:
            if channels is None or gamma is None or b is None:
                raise ValueError("Conv channel attention block needs channels, gamma and b")
            self.channel_attention_block = Channel_Attention_Module_Conv(channels=channels, gamma=gamma, b=b)
        self.spatial_attention_block = Spatial_Attention_Module(k=spatial_attention_kernel_size)

    def _fused_args(self):
        """TF.cbam's keyword arguments when both parts are still the seed's
        layers with known functions, else None (the parts run one by one)."""
        ca, sa = self.channel_attention_block, self.spatial_attention_block
        if not isinstance(ca, (Channel_Attention_Module_FC, Channel_Attention_Module_Conv)) or not isinstance(sa, Spatial_Attention_Module):
            return None
        gate = fused_gate_name(ca.sigmoid)
        if gate is None or gate != fused_gate_name(sa.sigmoid) or not is_seed_spatial_conv(sa.conv):
            return None
        args = dict(spatial_weight=sa.conv.weight, spatial_concat="max_mean", gate=gate)
        if isinstance(ca, Channel_Attention_Module_FC):
            fused = _fused_mlp(ca.fc_layers)
            if fused is None:
                return None
            fc1, (act, act_param), fc2 = fused
            return dict(args, fc1_weight=fc1.weight, fc1_bias=fc1.bias, fc2_weight=fc2.weight, fc2_bias=fc2.bias, act=act, act_param=act_param)
        if isinstance(ca, Channel_Attention_Module_Conv) and is_seed_conv1d(ca.conv):
            return dict(args, channel_conv=ca.conv.weight)
        return None

    def forward(self, x):
        """Channel then spatial attention, x [N, C, H, W]: the fused Triton
        CBAM op on CUDA (interpreter or pure PyTorch on CPU; 4 passes over x
        forward, 6 backward), the parts one by one in standard ops (ReduceMean/
        ReduceMax, MatMul or Conv, Sigmoid, Concat, Conv, Mul) under
        ``torch.onnx.export``/``torch.jit.trace`` and for an empty x, one node
        under ``torch.fx``. y has x's dtype and memory format."""
        if not isinstance(x, torch.Tensor):
            return fx_leaf(self, x)
        check_input(x)
        args = self._fused_args() if x.numel() > 0 and not exporting() else None
        if args is not None:
            check_cbam_input(x, False, False)
            return cbam_ops.cbam(x, args.pop("fc1_weight", None), args.pop("fc1_bias", None), args.pop("fc2_weight", None),
                                 args.pop("fc2_bias", None), args.pop("channel_conv", None), args.pop("spatial_weight"), **args)
        return self.spatial_attention_block(self.channel_attention_block(x))

    __prepare_scriptable__ = not_scriptable


def is_seed_conv1d(conv: nn.Conv1d) -> bool:
    """Bias-free, odd, zero same-padding: the seed's channel filter, which is
    what the fused ops compute."""
    k = conv.kernel_size[0]
    return conv.bias is None and k % 2 == 1 and conv.padding == ((k - 1) // 2,) and conv.padding_mode == "zeros" and conv.stride == (1,) and conv.dilation == (1,)


def is_seed_spatial_conv(conv: nn.Conv2d) -> bool:
    """Bias-free, odd k x k, same-padded Conv2d: what TF.cbam's spatial conv computes."""
    k = conv.kernel_size[0]
    return (
        conv.bias is None and conv.kernel_size == (k, k) and k % 2 == 1 and conv.padding == (k // 2, k // 2)
        and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
    )
