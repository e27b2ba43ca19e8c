"""Which tensor a byte belongs to: ``x`` (x-sized: x, y, dy, dx and any
intermediate with as many elements), ``weight`` (the module's parameters and
buffers, and tensors computed from them alone: a dtype cast, a transpose) or
``other`` (pooled [N, C] statistics, split partials, CBAM's N×2×H×W maps).

x-sized traffic divided by the bytes of x is the README's pass count; weight
traffic is what the issue's "weights cost less than one pass" budget bounds."""
from __future__ import annotations

import math

import torch

CLASSES = ("x", "weight", "other")


def distinct_elements(t: torch.Tensor) -> int:
    """Elements a tensor addresses, counting a stride-0 (expanded) dim once:
    ``g.expand_as(x)`` is N×C elements, not N×C×H×W."""
    if t.numel() == 0:
        return 0
    return math.prod(size for size, stride in zip(t.shape, t.stride()) if stride != 0)


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a kernel reading or writing all of ``t`` once moves."""
    return distinct_elements(t) * t.element_size()


def storage_key(t: torch.Tensor) -> int:
    """Identity of a tensor's storage (the StorageImpl, not its data pointer:
    every meta tensor's data pointer is 0)."""
    return t.untyped_storage()._cdata


class TensorClasses:
    """Classifies tensors for one measured step of a block on an input of
    ``x_numel`` elements. Derived weights are held (strongly) until the
    classifier goes away, so the allocator cannot hand their memory to an
    activation that would then be taken for a weight."""

    def __init__(self, x_numel: int, weights=(), x_lead: tuple[int, int] | None = None):
        self.x_numel = int(x_numel)
        # (N, C) of x: an x-sized tensor also leads with them. Without it a
        # scratch buffer that happens to hold N*C*H*W elements -- the tail's
        # [4, SPLIT, N, C] partials at 1x256x14x14 with SPLIT = 49 -- counts as x.
        self.x_lead = tuple(x_lead) if x_lead is not None else None
        self._weights: dict[int, torch.Tensor] = {}
        for w in weights:
            self.add_weight(w)

    def add_weight(self, t: torch.Tensor) -> None:
        if t.numel() > 0:
            self._weights.setdefault(storage_key(t), t)

    def is_weight(self, t: torch.Tensor) -> bool:
        return t.numel() > 0 and storage_key(t) in self._weights

    def classify(self, t: torch.Tensor) -> str:
        if self.is_weight(t):
            return "weight"
        if self.x_numel > 0 and distinct_elements(t) == self.x_numel and (
                self.x_lead is None or tuple(t.shape[:2]) == self.x_lead):
            return "x"
        return "other"
