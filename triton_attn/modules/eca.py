"""ECA modules with timm's constructors and state_dict keys."""
from __future__ import annotations

from typing import Optional, Type, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import eca as eca_ops
from ..activations import create_act_layer
from ..reference import eca_kernel_size
from ..runtime import exporting, fx_leaf, not_scriptable
from ..validation import check_block_input
from .gating import fused_gate_name, pooled_squeeze, scale_by
from .se import make_divisible


class _EcaBase(nn.Module):
    circular = False

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # Checkpoints trained with another k (or another channels -> k rule)
        # carry their own filter: take k from the weight's shape, as the
        # SPEC asks, instead of failing on a shape mismatch.
        w = state_dict.get(prefix + "conv.weight")
        conv = self.conv
        if (
            isinstance(w, torch.Tensor) and w.dim() == 3 and conv.in_channels == 1 and conv.out_channels == 1
            and tuple(w.shape[:2]) == (1, 1) and w.shape[-1] != conv.kernel_size[0] and w.shape[-1] % 2 == 1
        ):
            k = w.shape[-1]
            self.kernel_size = k
            pad = (k - 1) // 2
            self.padding = pad
            self.conv = nn.Conv1d(
                1, 1, k, padding=0 if self.circular else pad, bias=conv.bias is not None,
                device=conv.weight.device, dtype=conv.weight.dtype,
            )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)


class EcaModule(_EcaBase):
    """Efficient channel attention, drop-in for ``timm.layers.EcaModule``.
    Key: ``conv.weight [1, 1, k]`` (``use_mlp``: timm's ``conv``/``conv2``)."""

    def __init__(
        self,
        channels: Optional[int] = None,
        kernel_size: int = 3,
        gamma: float = 2,
        beta: float = 1,
        act_layer: Optional[Type[nn.Module]] = None,
        gate_layer: Union[str, Type[nn.Module]] = "sigmoid",
        rd_ratio: float = 1 / 8,
        rd_channels: Optional[int] = None,
        rd_divisor: int = 8,
        use_mlp: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.channels = channels
        if channels is not None:
            kernel_size = eca_kernel_size(channels, gamma, beta)
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.kernel_size = kernel_size
        padding = (kernel_size - 1) // 2
        if use_mlp:
            if channels is None:
                raise ValueError("use_mlp=True needs channels")
            if rd_channels is None:
                rd_channels = make_divisible(channels * rd_ratio, divisor=rd_divisor)
            self.conv = nn.Conv1d(1, rd_channels, kernel_size=1, padding=0, bias=True, **dd)
            self.act = create_act_layer(act_layer or nn.ReLU)
            self.conv2 = nn.Conv1d(rd_channels, 1, kernel_size=kernel_size, padding=padding, bias=True, **dd)
        else:
            self.conv = nn.Conv1d(1, 1, kernel_size=kernel_size, padding=padding, bias=False, **dd)
            self.act = None
            self.conv2 = None
        self.gate = create_act_layer(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x * gate(conv1d_k(mean_hw(x)))`` across channels, x of shape [N, C, H, W].

        Where it runs: CUDA tensors run the fused Triton kernels (pool, then one
        scale kernel that computes the k-tap conv and the gate; backward
        likewise); CPU tensors run them under Triton's interpreter when
        ``TRITON_INTERPRET=1`` was set before importing triton_attn, else a
        pure-PyTorch path with the same arithmetic (logged once on the
        ``triton_attn`` logger). ``use_mlp`` or a gate without a fused form runs
        Triton pooling + your layers + Triton scale. ``torch.onnx.export`` and
        ``torch.jit.trace`` see plain PyTorch ops (ReduceMean, Conv, Sigmoid,
        Mul); ``torch.fx`` records the block as one ``call_module`` node;
        ``torch.compile``/``torch.export`` keep the ``triton_attn::`` ops.

        Dtypes fp32/fp16/bf16/fp64, pooling and gate math in fp32 (fp64 for
        fp64); y has x's shape, dtype and memory format. Differentiable in x
        and the conv weight. N = 0 or H*W = 0 gives an empty y."""
        if not isinstance(x, torch.Tensor):
            return fx_leaf(self, x)
        check_block_input(x, self.channels, self.conv.weight)
        gate = fused_gate_name(self.gate)
        if self.conv2 is None and gate is not None and x.numel() > 0 and not exporting():
            return eca_ops.eca(x, self.conv.weight, self.conv.bias, False, gate)
        N, C = x.shape[:2]
        y = self.conv(pooled_squeeze(x, "avg").view(N, 1, C))
        if self.conv2 is not None:
            y = self.conv2(self.act(y))
        return scale_by(x, self.gate(y).view(N, C, 1, 1))

    __prepare_scriptable__ = not_scriptable


class CecaModule(_EcaBase):
    """ECA with circular padding across channels, drop-in for
    ``timm.layers.CecaModule``. Key: ``conv.weight [1, 1, k]`` (+ ``conv.bias``
    when built with an ``act_layer``, as timm does)."""

    circular = True

    def __init__(
        self,
        channels: Optional[int] = None,
        kernel_size: int = 3,
        gamma: float = 2,
        beta: float = 1,
        act_layer: Optional[nn.Module] = None,
        gate_layer: Union[str, Type[nn.Module]] = "sigmoid",
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.channels = channels
        if channels is not None:
            kernel_size = eca_kernel_size(channels, gamma, beta)
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.kernel_size = kernel_size
        self.padding = (kernel_size - 1) // 2
        self.conv = nn.Conv1d(1, 1, kernel_size=kernel_size, padding=0, bias=act_layer is not None, device=device, dtype=dtype)
        self.gate = create_act_layer(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x * gate(conv1d_k(mean_hw(x)))`` with circular padding across
        channels, x of shape [N, C, H, W]; runs where ``EcaModule.forward``
        says, with the same dtypes, layouts, autograd and empty-input
        behaviour."""
        if not isinstance(x, torch.Tensor):
            return fx_leaf(self, x)
        check_block_input(x, self.channels, self.conv.weight)
        gate = fused_gate_name(self.gate)
        if gate is not None and x.numel() > 0 and not exporting():
            return eca_ops.eca(x, self.conv.weight, self.conv.bias, True, gate)
        N, C = x.shape[:2]
        y = F.pad(pooled_squeeze(x, "avg").view(N, 1, C), (self.padding, self.padding), mode="circular")
        return scale_by(x, self.gate(self.conv(y)).view(N, C, 1, 1))

    __prepare_scriptable__ = not_scriptable
