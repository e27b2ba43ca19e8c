"""The modules each provider runs, from one set of weights: ``eager`` is
timm's own module (``timm.layers``; the arithmetic of
``triton_attn.reference``'s eager modules when timm is missing), ``triton_attn``
ours with the eager module's ``state_dict``. Default constructors on both
sides: timm's hidden widths (SE C/16 to 8, CBAM C/16), ECA's adaptive k, CBAM's
7×7 spatial conv with BatchNorm."""
from __future__ import annotations

import torch
from torch import nn

import triton_attn

PROVIDERS = ("eager", "triton_attn")


def eager_module(block: str, channels: int) -> nn.Module:
    """timm's module of a block, with weights drawn from a fixed seed."""
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
