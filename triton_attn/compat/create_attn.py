"""``create_attn`` / ``get_attn`` with timm's names and behaviour
(``timm.layers.create_attn``), returning triton_attn's fused blocks.

Names triton_attn has no fused block for (``'gc'``, ``'coord'``, ``'sk'``...)
come from timm when it is installed, so a model config that names them keeps
building; only then is timm imported."""
from __future__ import annotations

from functools import partial

from torch import nn

#: timm name -> (triton_attn class name, fixed keyword arguments)
FUSED_ATTN = {
    "se": ("SEModule", {}),
    "ese": ("EffectiveSEModule", {}),
    "eca": ("EcaModule", {}),
    "ecam": ("EcaModule", {"use_mlp": True}),
    "ceca": ("CecaModule", {}),
    "cbam": ("CbamModule", {}),
    "lcbam": ("LightCbamModule", {}),
}

#: timm names with no fused equivalent here (timm.layers.get_attn has them).
TIMM_ONLY_ATTN = (
    "ge", "gc", "gca", "coord", "scoord", "ela", "strip", "sk", "splat", "lambda", "bottleneck", "halo", "nl", "bat",
)


def _fused_class(name: str):
    import triton_attn

    cls_name, fixed = FUSED_ATTN[name]
    cls = getattr(triton_attn, cls_name, None)
    if cls is None:
        raise ValueError(f"attention {name!r} needs triton_attn.{cls_name}, which this version does not have")
    return partial(cls, **fixed) if fixed else cls


def _timm_class(name: str):
    try:
        from timm.layers import get_attn as timm_get_attn
    except ImportError:
        raise ValueError(
            f"attention {name!r} has no fused block in triton_attn; it comes from timm, which is not installed"
        ) from None
    return timm_get_attn(name)


def get_attn(attn_type):
    """The block class (or partial) for ``attn_type``, as timm's ``get_attn``:
    a name (case-insensitive), ``True`` (SE), a falsy value (None), a class or
    callable (returned as is) or a module instance (returned as is)."""
    if isinstance(attn_type, nn.Module):
        return attn_type
    if not attn_type:
        return None
    if isinstance(attn_type, bool):
        return _fused_class("se")
    if isinstance(attn_type, str):
        name = attn_type.lower()
        if name in FUSED_ATTN:
            return _fused_class(name)
        if name in TIMM_ONLY_ATTN:
            return _timm_class(name)
        raise ValueError(f"invalid attention type {attn_type!r}; fused: {sorted(FUSED_ATTN)}, from timm: {list(TIMM_ONLY_ATTN)}")
    if callable(attn_type):
        return attn_type
    raise TypeError(f"attn_type must be a name, bool, class or module, got {type(attn_type).__name__}")


def create_attn(attn_type, channels: int, **kwargs):
    """``get_attn(attn_type)(channels, **kwargs)``, or None when ``attn_type``
    is falsy. A module instance is returned unchanged (timm would call it)."""
    module_cls = get_attn(attn_type)
    if module_cls is None:
        return None
    if isinstance(module_cls, nn.Module):
        return module_cls
    return module_cls(channels, **kwargs)
