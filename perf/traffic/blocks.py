"""The modules each provider runs, from one set of weights: ``eager`` is
timm's own module (``timm.layers``; the arithmetic of
``triton_attn.reference``'s eager modules when timm is missing), ``triton_attn``
ours with the eager module's ``state_dict``. Default constructors on both
sides: timm's hidden widths (SE C/16 to 8, CBAM C/16), ECA's adaptive k, CBAM's
7×7 spatial conv with BatchNorm. The fused tails (``se_tail``, ``eca_tail``:
``relu(attn(bn(z)) + shortcut)``) are ``perf.providers``' tail modules with a
shortcut tensor of their own (see ``WithShortcut``)."""
from __future__ import annotations

import torch
from torch import nn

import triton_attn

PROVIDERS = ("eager", "triton_attn")
TAIL_BLOCKS = ("se_tail", "eca_tail")


class WithShortcut(nn.Module):
    """A tail measured on one input z: ``tail(z, shortcut)`` with a shortcut
    drawn once per input shape, as a residual block's other branch. It is a
    leaf that takes its own gradient (a tail's backward writes d_shortcut),
    and neither a parameter nor a buffer, so its bytes count as x-sized, not
    as weights. (The timing harness passes z itself as the shortcut; here
    that would add autograd's accumulation of dz and d_shortcut, an extra
    x-sized pass in both providers that no real block has.)"""

    def __init__(self, tail: nn.Module):
        super().__init__()
        self.tail = tail
        self._shortcut: torch.Tensor | None = None

    def _shortcut_for(self, z: torch.Tensor) -> torch.Tensor:
        s = self._shortcut
        if s is None or s.shape != z.shape or s.dtype != z.dtype or s.device != z.device or s.stride() != z.stride():
            gen = torch.Generator().manual_seed(1)
            fmt = torch.channels_last if (z.dim() == 4 and not z.is_contiguous()
                                          and z.is_contiguous(memory_format=torch.channels_last)) else torch.contiguous_format
            s = torch.empty_like(z) if z.device.type == "meta" else \
                torch.randn(z.shape, generator=gen).to(z.dtype).contiguous(memory_format=fmt)
            self._shortcut = s
        s.grad = None  # as zero_grad(set_to_none=True): no accumulation op in the measured step
        return s.requires_grad_(torch.is_grad_enabled())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.tail(z, self._shortcut_for(z))


def _tail(block: str, channels: int, ours: bool) -> nn.Module:
    from ..providers import EagerTail, _OursTail

    if ours:
        attn = triton_attn.SEModule(channels) if block == "se_tail" else triton_attn.EcaModule(channels=channels)
        return WithShortcut(_OursTail(channels, attn))
    attn = eager_module(block.removesuffix("_tail"), channels)
    return WithShortcut(EagerTail(channels, attn))


def eager_module(block: str, channels: int) -> nn.Module:
    """timm's module of a block, with weights drawn from a fixed seed."""
    if block in TAIL_BLOCKS:
        return _tail(block, channels, ours=False)
    torch.manual_seed(0)
    try:
        from timm.layers import EcaModule, SEModule
        from timm.layers.cbam import CbamModule
    except ImportError:  # the same arithmetic and keys, without timm
        from triton_attn.reference import EagerCbamModule, EagerEcaModule, EagerSEModule

        rd = triton_attn.make_divisible(channels / 16, 8 if block == "se" else 1, round_limit=0.0)
        factories = {"se": lambda: EagerSEModule(channels, rd), "eca": lambda: EagerEcaModule(channels),
                     "cbam": lambda: EagerCbamModule(channels, rd)}
    else:
        factories = {"se": lambda: SEModule(channels), "eca": lambda: EcaModule(channels=channels),
                     "cbam": lambda: CbamModule(channels)}
    if block not in factories:
        raise ValueError(f"unknown block {block!r}")
    return factories[block]()


def our_module(block: str, channels: int) -> nn.Module:
    if block in TAIL_BLOCKS:
        return _tail(block, channels, ours=True)
    factories = {"se": lambda: triton_attn.SEModule(channels), "eca": lambda: triton_attn.EcaModule(channels=channels),
                 "cbam": lambda: triton_attn.CbamModule(channels)}
    return factories[block]()


def build(provider: str, block: str, channels: int, dtype: torch.dtype) -> nn.Module:
    """A provider's module on CPU in ``dtype``; both providers hold the same weights."""
    reference = eager_module(block, channels)
    if provider == "eager":
        return reference.to(dtype=dtype)
    if provider == "triton_attn":
        ours = our_module(block, channels)
        ours.load_state_dict(reference.state_dict(), strict=True)
        return ours.to(dtype=dtype)
    raise ValueError(f"unknown provider {provider!r}; choose from {', '.join(PROVIDERS)}")
