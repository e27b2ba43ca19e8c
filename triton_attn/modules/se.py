"""SE modules with timm's constructors and state_dict keys."""
from __future__ import annotations

from typing import Optional, Type, Union

import torch
from torch import nn

from ..ops import se as se_ops
from ..activations import create_act_layer, fused_act_spec
from ..runtime import exporting, fx_leaf, not_scriptable
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
        """``x * gate(fc2(act(bn(fc1(pool_hw(x))))))`` for x of shape [N, C, H, W].

        Where it runs: CUDA tensors run the fused Triton kernels (pool, gate MLP,
        scale; backward likewise); CPU tensors run the same kernels under Triton's
        interpreter when ``TRITON_INTERPRET=1`` was set before importing
        triton_attn, else a pure-PyTorch path with the same arithmetic (logged
        once on the ``triton_attn`` logger). An ``act_layer``/``gate_layer``/
        ``norm_layer`` without a fused form runs Triton pooling + your layers +
        Triton scale. ``torch.onnx.export`` and ``torch.jit.trace`` see plain
        PyTorch ops (mean, conv, act, gate, mul); ``torch.fx`` records the block
        as one ``call_module`` node; ``torch.compile``/``torch.export`` keep the
        ``triton_attn::`` ops.

        Dtypes fp32/fp16/bf16/fp64; pooling and gate math in fp32 (fp64 for
        fp64); y has x's shape, dtype and memory format (NCHW, channels_last or
        the dense layout of a strided view). Differentiable in x and every
        parameter. N = 0 or H*W = 0 gives an empty y, as PyTorch does
        (``add_maxpool`` over an empty H*W is a ValueError, as ``torch.amax``)."""
        if not isinstance(x, torch.Tensor):
            return fx_leaf(self, x)
        check_block_input(x, self.fc1.in_channels, self.fc1.weight)
        check_pool_nonempty(x, self._pool(), "add_maxpool pool")
        act = fused_act_spec(self.act)
        gate = fused_gate_name(self.gate)
        if act is not None and gate is not None and isinstance(self.bn, nn.Identity) and x.numel() > 0 and not exporting():
            return se_ops.se(
                x, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias, self._pool(), act[0], act[1], gate,
            )
        s = self.fc2(self.act(self.bn(self.fc1(pooled_squeeze(x, self._pool())))))
        return scale_by(x, self.gate(s))

    __prepare_scriptable__ = not_scriptable


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
        """``x * gate(fc(pool_hw(x)))`` for x of shape [N, C, H, W]; runs
        where ``SEModule.forward`` says (fused Triton SE op on CUDA, interpreter
        or pure PyTorch on CPU, standard ops while exporting, one fx node), with
        the same dtypes, layouts, autograd and empty-input behaviour."""
        if not isinstance(x, torch.Tensor):
            return fx_leaf(self, x)
        check_block_input(x, self.fc.in_channels, self.fc.weight)
        pool = "avgmax" if self.add_maxpool else "avg"
        check_pool_nonempty(x, pool, "add_maxpool pool")
        gate = fused_gate_name(self.gate)
        if gate is not None and x.numel() > 0 and not exporting():
            return se_ops.se(x, self.fc.weight, self.fc.bias, None, None, pool, "identity", 0.0, gate)
        return scale_by(x, self.gate(self.fc(pooled_squeeze(x, pool))))

    __prepare_scriptable__ = not_scriptable


EffectiveSqueezeExcite = EffectiveSEModule
