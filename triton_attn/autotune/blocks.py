"""The blocks the CLI can tune: each runs one forward and backward of the
real module, so exactly the kernels (and kernel variants) that block
launches get tuned, through the same launchers as in training."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def _se(C: int) -> nn.Module:
    from ..modules import SEModule

    return SEModule(C)


def _eca(C: int) -> nn.Module:
    from ..modules import EcaModule

    return EcaModule(channels=C)


def _cbam(C: int) -> nn.Module | None:
    from .. import modules

    cls = getattr(modules, "CbamModule", None)
    return cls(C) if cls is not None else None


#: name -> factory(C) of the module, or None when this build lacks it.
BLOCKS: dict[str, Callable[[int], nn.Module | None]] = {"se": _se, "eca": _eca, "cbam": _cbam}


def available(name: str) -> bool:
    return BLOCKS[name](8) is not None


def exercise(name: str, shape, dtype: torch.dtype, channels_last: bool, device: str) -> None:
    """One forward + backward of block ``name`` on a random input; the
    incoming gradient keeps y's layout, as it does after a conv."""
    N, C, H, W = shape
    module = BLOCKS[name](C).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(shape, device=device, dtype=dtype).to(memory_format=fmt).requires_grad_()
    y = module(x)
    y.backward(torch.randn_like(y))
