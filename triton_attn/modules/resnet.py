"""timm's ResNet blocks (``timm.models.resnet.BasicBlock`` / ``Bottleneck``)
with their tail fused: the convolutions run as timm runs them, then
``act(drop_path(se(bn(z))) + shortcut)`` is one op (``modules/tail.py``).

A fused block is built from a timm block and holds the very same child
modules under the same names (so every parameter and buffer object and every
state_dict key is unchanged), its plain attributes (``stride``,
``dilation``...) and its hooks. ``triton_attn.convert(model, fuse_tail=True)``
builds them and records the original class for ``triton_attn.revert``.
timm is not imported here."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..runtime import fx_leaf, not_scriptable
from .tail import run_tail, tail_path


class _FusedTailBlock(nn.Module):
    #: names of the tail's modules in the block: norm, attention, drop_path, act
    _tail_names: tuple = ()
    expansion = 1

    def __init__(self, block: nn.Module):
        """Take over ``block``'s state: the same children, parameters,
        buffers and attributes (objects, not copies), its hooks (fresh dicts
        holding the same hooks) and its training flag."""
        super().__init__()
        mine = self.__dict__
        for key, value in block.__dict__.items():
            if isinstance(value, dict) and isinstance(mine.get(key), dict):
                mine[key].update(value)
            elif isinstance(value, set) and isinstance(mine.get(key), set):
                mine[key].update(value)
            else:
                mine[key] = value

    def _tail_modules(self) -> tuple:
        bn, attn, act = self._tail_names
        return getattr(self, bn), getattr(self, attn), self.drop_path, getattr(self, act)

    def tail_path(self) -> str:
        """``"fused"`` or ``"unfused: <why>"``: what the tail runs as now
        (an empty batch, export or a training batch with one value per
        channel still take the modules themselves)."""
        bn, attn, act = self._tail_names
        return tail_path(*self._tail_modules(), names=(bn, attn, "drop_path", act))

    def _tail(self, z: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        bn, attn, act = self._tail_names
        downsample = self.downsample
        return run_tail(
            self, z, (lambda: downsample(shortcut)) if downsample is not None else (lambda: shortcut),
            *self._tail_modules(), names=(bn, attn, "drop_path", act),
        )

    def zero_init_last(self) -> None:
        """Initialize the last batch norm layer weights to zero (timm's)."""
        bn = getattr(self, self._tail_names[0])
        if getattr(bn, "weight", None) is not None:
            nn.init.zeros_(bn.weight)

    __prepare_scriptable__ = not_scriptable


class FusedTailBasicBlock(_FusedTailBlock):
    """timm's ``BasicBlock`` (ResNet-18/34 and their SE/ECA variants), tail
    fused: ``act2(drop_path(se(bn2(conv2(...)))) + downsample(x))``."""

    _tail_names = ("bn2", "se", "act2")
    expansion = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """timm's ``BasicBlock.forward``: conv1, bn1, drop_block, act1, aa,
        conv2 as timm runs them, then the tail
        ``act2(drop_path(se(bn2(z))) + shortcut)`` as one fused op (two passes
        over z forward, two backward: ``triton_attn/ops/tail.py``), where
        shortcut is ``downsample(x)`` (or x). Whatever the op does not cover
        (a norm other than nn.BatchNorm2d, e.g. SyncBatchNorm; CBAM; an act
        without a fused form; hooks on bn2/se/drop_path/act2; an empty batch;
        a training batch with one value per channel; exporting) runs timm's
        own sequence with the same modules: ``tail_path()`` says which. The
        same dtypes, layouts and devices as timm's block; BatchNorm's running
        statistics and drop_path's mask exactly as timm's."""
        if not isinstance(x, torch.Tensor):
            return fx_leaf(self, x)
        shortcut = x
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.drop_block(x)
        x = self.act1(x)
        x = self.aa(x)
        x = self.conv2(x)
        return self._tail(x, shortcut)


class FusedTailBottleneck(_FusedTailBlock):
    """timm's ``Bottleneck`` (ResNet-50+, SE-ResNeXt, ECA-ResNet...), tail
    fused: ``act3(drop_path(se(bn3(conv3(...)))) + downsample(x))``."""

    _tail_names = ("bn3", "se", "act3")
    expansion = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """timm's ``Bottleneck.forward``: conv1, bn1, act1, conv2, bn2,
        drop_block, act2, aa, conv3 as timm runs them, then the tail
        ``act3(drop_path(se(bn3(z))) + shortcut)`` as one fused op (two passes
        over z forward, two backward: ``triton_attn/ops/tail.py``), where
        shortcut is ``downsample(x)`` (or x). Whatever the op does not cover
        (a norm other than nn.BatchNorm2d, e.g. SyncBatchNorm; CBAM; an act
        without a fused form; hooks on bn3/se/drop_path/act3; an empty batch;
        a training batch with one value per channel; exporting) runs timm's
        own sequence with the same modules: ``tail_path()`` says which. The
        same dtypes, layouts and devices as timm's block; BatchNorm's running
        statistics and drop_path's mask exactly as timm's."""
        if not isinstance(x, torch.Tensor):
            return fx_leaf(self, x)
        shortcut = x
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.act1(x)
        x = self.conv2(x)
        x = self.bn2(x)
        x = self.drop_block(x)
        x = self.act2(x)
        x = self.aa(x)
        x = self.conv3(x)
        return self._tail(x, shortcut)


#: timm block class name -> its fused class (``compat/resnet.py`` matches the
#: defining module too).
FUSED_BLOCKS: dict[str, type] = {"BasicBlock": FusedTailBasicBlock, "Bottleneck": FusedTailBottleneck}


def fused_block_for(block: nn.Module) -> Optional[type]:
    t = type(block)
    return FUSED_BLOCKS.get(t.__name__) if t.__module__ in ("timm.models.resnet",) else None
