"""``convert(model, fuse_tail=True)``'s ResNet part: which timm blocks can
have their tail (``bn -> se -> drop_path -> + shortcut -> act``) fused, why
the others are left, and the fused block (``modules/resnet.py``) built around
the block's own modules.

Recognised by defining module and class name (timm is not imported):
``timm.models.resnet.BasicBlock`` and ``Bottleneck``, whatever their
attention (``seresnet*``, ``seresnext*``, ``ecaresnet*``, ``resnet*`` with
``attn_layer`` in se, ese, eca, ceca; cbam/lcbam tails are left for now:
their CBAM module is still converted on its own). timm applies
``drop_block`` after bn1 (BasicBlock) or bn2 (Bottleneck), before the last
conv, so it runs unchanged and never stops a tail from fusing."""
from __future__ import annotations

from typing import Optional

from torch import nn

from ..modules.resnet import fused_block_for
from ..modules.tail import tail_args

#: the children a timm ResNet block has (timm 0.9 - 1.0)
_CHILDREN = {
    "BasicBlock": ("conv1", "bn1", "drop_block", "act1", "aa", "conv2", "bn2", "se", "act2", "downsample", "drop_path"),
    "Bottleneck": ("conv1", "bn1", "act1", "conv2", "bn2", "drop_block", "act2", "aa", "conv3", "bn3", "se", "act3",
                   "downsample", "drop_path"),
}


def tail_block(m: nn.Module) -> Optional[type]:
    """The fused class for a timm ResNet block, else None."""
    return fused_block_for(m)


def left_reason(m: nn.Module, fused_cls: type) -> Optional[str]:
    """Why ``m``'s tail cannot be fused (None: it can)."""
    missing = [c for c in _CHILDREN[type(m).__name__] if not hasattr(m, c)]
    if missing:
        return f"not timm's block structure (no {', '.join(missing)})"
    bn, attn, act = fused_cls._tail_names
    args = tail_args(getattr(m, bn), getattr(m, attn), m.drop_path, getattr(m, act), (bn, attn, "drop_path", act))
    return args if isinstance(args, str) else None


def describe(new: nn.Module) -> str:
    """The report's path for a tail-fused block, with the word "tail"."""
    bn, attn, act = new._tail_names
    parts = [bn]
    se = getattr(new, attn)
    if se is not None and type(se) is not nn.Identity:
        parts.append(f"{attn} ({type(se).__name__})")
    dp = new.drop_path
    if dp is not None and type(dp) is not nn.Identity:
        parts.append("drop_path")
    parts.append("+ shortcut")
    parts.append(f"{act} ({type(getattr(new, act)).__name__})")
    return "tail fused: " + " -> ".join(parts)
