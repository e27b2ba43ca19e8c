"""CBAM modules with timm's constructors and state_dict keys
(``timm.layers.CbamModule`` / ``LightCbamModule``)."""
from __future__ import annotations

from typing import Optional, Type, Union

import torch
from torch import nn

from ..activations import create_act_layer, fused_act_spec
from ..ops import cbam as cbam_ops
from ..ops.cbam import SPATIAL_CONCATS
from ..runtime import exporting, fx_leaf, not_scriptable
from ..validation import check_block_input, check_cbam_input, check_choice, check_input
from .gating import fused_gate_name, pooled_pair, pooled_squeeze, scale_by
from .se import make_divisible


class ChannelAttn(nn.Module):
    """CBAM channel attention, ``x * gate(mlp(mean_hw) + mlp(amax_hw))``, as
    timm's ``ChannelAttn`` (keys ``fc1.weight``, ``fc2.weight``, biases with
    ``mlp_bias``). Used alone it runs unfused (Triton pooling and scale around
    the layers); inside ``CbamModule`` the whole block is fused."""

    light = False

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1.0 / 16,
        rd_channels: Optional[int] = None,
        rd_divisor: int = 1,
        act_layer: Type[nn.Module] = nn.ReLU,
        gate_layer: Union[str, Type[nn.Module]] = "sigmoid",
        mlp_bias: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=mlp_bias, **dd)
        self.act = create_act_layer(act_layer, inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=mlp_bias, **dd)
        self.gate = create_act_layer(gate_layer)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """ca [N, C, 1, 1] in x's dtype, from one Triton pooling pass."""
        mean, amax = pooled_pair(x)
        return self.gate(self.fc2(self.act(self.fc1(mean))) + self.fc2(self.act(self.fc1(amax))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x * ca`` (x: [N, C, H, W]): Triton pooling and scale around the
        layers (standard ops while exporting or for an empty x)."""
        if not isinstance(x, torch.Tensor):
            return fx_leaf(self, x)
        check_input(x)
        return scale_by(x, self.attention(x))

    __prepare_scriptable__ = not_scriptable


class LightChannelAttn(ChannelAttn):
    """timm's ``LightChannelAttn``: ``x * sigmoid(mlp(0.5*mean + 0.5*amax))``
    (the gate is always a sigmoid, as in timm)."""

    light = True

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(self.act(self.fc1(pooled_squeeze(x, "avgmax")))))


class ConvNorm(nn.Module):
    """timm's ``ConvNormAct(in, 1, k, apply_act=False)``: keys ``conv.weight``
    and ``bn.*`` (no ``bn`` keys when built without BatchNorm)."""

    def __init__(self, in_channels: int, kernel_size: int, bn: bool = True, device=None, dtype=None):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"spatial kernel_size must be odd, got {kernel_size}")
        dd = {"device": device, "dtype": dtype}
        self.conv = nn.Conv2d(in_channels, 1, kernel_size, padding=kernel_size // 2, bias=False, **dd)
        self.bn = nn.BatchNorm2d(1, **dd) if bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class SpatialAttn(nn.Module):
    """CBAM spatial attention, ``x * gate(bn(conv(maps)))`` over the mean and
    amax across channels, as timm's ``SpatialAttn`` (keys ``conv.conv.weight
    [1, 2, k, k]``, ``conv.bn.*``). ``concat``: ``"mean_max"`` (timm) or
    ``"max_mean"`` (official CBAM); ``bn=False``: no BatchNorm (seed)."""

    light = False

    def __init__(self, kernel_size: int = 7, gate_layer="sigmoid", concat: str = "mean_max", bn: bool = True, device=None, dtype=None):
        super().__init__()
        check_choice(concat, "spatial_concat", SPATIAL_CONCATS)
        self.concat = concat
        self.conv = ConvNorm(1 if self.light else 2, kernel_size, bn, device=device, dtype=dtype)
        self.gate = create_act_layer(gate_layer)

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        mean, amax = x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)
        return torch.cat([mean, amax] if self.concat == "mean_max" else [amax, mean], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x * gate(conv(maps(x)))`` in PyTorch (alone, the spatial branch
        is not fused: the CBAM op fuses it with the channel branch)."""
        return x * self.gate(self.conv(self.maps(x)))


class LightSpatialAttn(SpatialAttn):
    """timm's ``LightSpatialAttn``: one map ``0.5*mean_c + 0.5*amax_c``, conv
    ``[1, 1, k, k]``, sigmoid gate (timm passes no gate_layer here)."""

    light = True

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x.mean(dim=1, keepdim=True) + 0.5 * x.amax(dim=1, keepdim=True)


def _batch_norm_args(bn: nn.BatchNorm2d) -> dict:
    """The op's BatchNorm arguments as ``nn.BatchNorm2d.forward`` derives
    them. The batch is counted in ``num_batches_tracked`` by the op itself
    (in-kernel on the fused path), and momentum=None means the cumulative
    average 1 / num_batches_tracked, resolved there after the count."""
    counting = bn.training and bn.track_running_stats and bn.num_batches_tracked is not None
    track = not bn.training or bn.track_running_stats
    return dict(
        spatial_bn=True, bn_weight=bn.weight, bn_bias=bn.bias,
        bn_running_mean=bn.running_mean if track else None, bn_running_var=bn.running_var if track else None,
        bn_training=bn.training or (bn.running_mean is None and bn.running_var is None),
        bn_momentum=bn.momentum if counting or bn.momentum is not None else 0.0,
        bn_num_batches_tracked=bn.num_batches_tracked if counting else None, bn_eps=bn.eps,
    )


class CbamModule(nn.Module):
    """CBAM, drop-in for ``timm.layers.CbamModule``: fused Triton forward
    (4 passes over x) and backward (6 passes).

    Keys as timm: ``channel.fc1.weight``, ``channel.fc2.weight`` (+ biases with
    ``mlp_bias``), ``spatial.conv.conv.weight [1, 2, k, k]``, ``spatial.conv.bn.*``.
    Options beyond timm: ``spatial_concat="max_mean"`` stacks [amax, mean]
    like the official CBAM and the seed article (timm: ``"mean_max"``);
    ``spatial_bn=False`` drops the BatchNorm after the spatial conv (seed).
    In training the BatchNorm uses batch statistics and updates its running
    statistics exactly as ``nn.BatchNorm2d`` does. An ``act_layer`` or
    ``gate_layer`` without a fused form, or a replaced norm layer (e.g.
    SyncBatchNorm), runs an unfused but equivalent path."""

    _channel_cls = ChannelAttn
    _spatial_cls = SpatialAttn

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1.0 / 16,
        rd_channels: Optional[int] = None,
        rd_divisor: int = 1,
        spatial_kernel_size: int = 7,
        act_layer: Type[nn.Module] = nn.ReLU,
        gate_layer: Union[str, Type[nn.Module]] = "sigmoid",
        mlp_bias: bool = False,
        spatial_concat: str = "mean_max",
        spatial_bn: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.channels = channels
        self.channel = self._channel_cls(
            channels, rd_ratio=rd_ratio, rd_channels=rd_channels, rd_divisor=rd_divisor,
            act_layer=act_layer, gate_layer=gate_layer, mlp_bias=mlp_bias, **dd,
        )
        spatial_gate = "sigmoid" if self._spatial_cls.light else gate_layer
        self.spatial = self._spatial_cls(spatial_kernel_size, spatial_gate, spatial_concat, spatial_bn, **dd)

    def _fused_args(self) -> dict | None:
        act = fused_act_spec(self.channel.act)
        gate = fused_gate_name(self.spatial.gate)
        channel_gate = "sigmoid" if self.channel.light else fused_gate_name(self.channel.gate)
        bn = self.spatial.conv.bn
        if act is None or gate is None or channel_gate != gate or not isinstance(self.spatial.conv.conv, nn.Conv2d):
            return None
        if isinstance(bn, nn.Identity):
            norm = {}
        elif type(bn) is nn.BatchNorm2d:
            norm = _batch_norm_args(bn)
        else:
            return None
        return dict(act=act[0], act_param=act[1], gate=gate, **norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``y = x1 * sa(x1)``, ``x1 = x * ca(x)``, for x of shape [N, C, H, W].

        Where it runs: CUDA tensors run the fused Triton kernels (4 passes over
        x in 5 launches forward, 6 passes in 6-7 launches backward; the spatial
        conv, BatchNorm and gate on the small N x 2 x H x W map run in a kernel
        of their own, no torch op); CPU tensors run them under Triton's
        interpreter when ``TRITON_INTERPRET=1`` was set before importing
        triton_attn, else a pure-PyTorch path with the same arithmetic (logged
        once on the ``triton_attn`` logger). An activation or gate without a
        fused form, or a norm other than ``nn.BatchNorm2d``, runs the parts one
        by one. ``torch.onnx.export`` and ``torch.jit.trace`` see plain PyTorch
        ops (ReduceMean/ReduceMax over H, W and over C, Conv, Relu, Sigmoid,
        BatchNormalization, Mul, Concat); ``torch.fx`` records one
        ``call_module`` node; ``torch.compile``/``torch.export`` keep the
        ``triton_attn::`` ops.

        Dtypes fp32/fp16/bf16/fp64, pooling and gate math in fp32 (fp64 for
        fp64); y has x's shape, dtype and memory format. Differentiable in x
        and every parameter. In training the spatial BatchNorm normalises with
        batch statistics and updates its running statistics and
        ``num_batches_tracked`` as ``nn.BatchNorm2d`` does. N = 0 gives an empty
        y in both modes (the batch still counts in ``num_batches_tracked``, the
        running statistics are left alone, as in PyTorch); a training batch
        with a single spatial value (N * H * W = 1) is a ValueError, as in
        PyTorch; an empty H*W is a ValueError (the max over it)."""
        if not isinstance(x, torch.Tensor):
            return fx_leaf(self, x)
        ch, bn = self.channel, self.spatial.conv.bn
        check_block_input(x, self.channels, ch.fc1.weight)
        check_cbam_input(x, not isinstance(bn, nn.Identity), bn.training)
        # An empty x has nothing to launch: the layers themselves give
        # PyTorch's empty-batch behaviour (BatchNorm counts the batch).
        args = self._fused_args() if x.numel() > 0 and not exporting() else None
        if args is None:
            return self.spatial(self.channel(x))
        return cbam_ops.cbam(
            x, ch.fc1.weight, ch.fc1.bias, ch.fc2.weight, ch.fc2.bias, None, self.spatial.conv.conv.weight,
            spatial_concat=self.spatial.concat, light=self.channel.light, **args,
        )

    __prepare_scriptable__ = not_scriptable


class LightCbamModule(CbamModule):
    """timm's ``LightCbamModule``: pooled ``0.5*mean + 0.5*amax`` both ways,
    one-map spatial conv (``spatial.conv.conv.weight [1, 1, k, k]``), sigmoid
    gates (timm ignores ``gate_layer`` here too). ``spatial_bn=False`` drops
    the BatchNorm; ``spatial_concat`` does not apply."""

    _channel_cls = LightChannelAttn
    _spatial_cls = LightSpatialAttn
