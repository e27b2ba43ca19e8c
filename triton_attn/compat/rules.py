"""What ``convert`` recognises and how it rebuilds it: one ``Rule`` per
attention class (defining module, class name, the fused class to build, how to
read its configuration off the old block, which slots must hold known layers
for the fused path), plus the structure checks that identify the seed
article's classes, which live in users' own files.

Recognition is by defining module and class name, never ``isinstance``: timm
and torchvision are not imported."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional

from torch import nn

from . import seed as seed_compat
from .seed import SEED_SPATIAL_KERNELS, is_seed_conv1d, is_seed_spatial_conv


@dataclass(frozen=True)
class Rule:
    label: str
    modules: tuple[str, ...]  # defining modules accepted; () = any (seed classes, checked by structure)
    cls_name: str
    target: str  # attribute of triton_attn
    build: Callable[[nn.Module], nn.Module]
    # Dotted paths the fused path needs to be: a known activation, a known
    # gate, nn.Identity (SE's bn, ECA's conv2), nn.Identity or nn.BatchNorm2d.
    act_slots: tuple[str, ...] = ()
    gate_slots: tuple[str, ...] = ()
    identity_slots: tuple[str, ...] = ()
    norm_slots: tuple[str, ...] = ()
    structure: Optional[Callable[[nn.Module], Optional[str]]] = None  # reason it does not match, or None
    always_unfused: str = ""  # why this block never runs one fused op


def qualname(t: type) -> str:
    return f"{t.__module__}.{t.__name__}"


def fused_class(name: str):
    """The fused class called ``name``, or None where this version lacks it
    (looked up at call time: CBAM modules may come and go with versions)."""
    import triton_attn

    return getattr(triton_attn, name, None) or getattr(seed_compat, name, None)


# --- builders: the fused block's configuration read off the old block ------

def _timm_se(m):
    return fused_class("SEModule")(
        m.fc1.in_channels, rd_channels=m.fc1.out_channels, add_maxpool=m.add_maxpool,
        bias=m.fc1.bias is not None, act_layer=m.act, gate_layer=m.gate,
    )


def _timm_ese(m):
    return fused_class("EffectiveSEModule")(m.fc.in_channels, add_maxpool=m.add_maxpool, gate_layer=m.gate)


def _timm_eca(m):
    # use_mlp's conv2 (and act) fill EcaModule's empty slots when adopted.
    k = (m.conv2 if getattr(m, "conv2", None) is not None else m.conv).kernel_size[0]
    return fused_class("EcaModule")(channels=None, kernel_size=k, gate_layer=m.gate)


def _timm_ceca(m):
    has_bias = m.conv.bias is not None
    return fused_class("CecaModule")(channels=None, kernel_size=m.conv.kernel_size[0], act_layer=nn.ReLU if has_bias else None, gate_layer=m.gate)


def _timm_effnet_se(m):
    return fused_class("EfficientNetSqueezeExcite")(m.conv_reduce.in_channels, rd_channels=m.conv_reduce.out_channels, act_layer=m.act1, gate_layer=m.gate)


def _torchvision_se(m):
    return fused_class("SqueezeExcitation")(
        m.fc1.in_channels, m.fc1.out_channels, activation=lambda: m.activation, scale_activation=lambda: m.scale_activation,
    )


def _timm_cbam_kwargs(m):
    ch, conv = m.channel, m.spatial.conv
    return dict(
        rd_channels=ch.fc1.out_channels, spatial_kernel_size=conv.conv.kernel_size[0], act_layer=ch.act,
        gate_layer=ch.gate, mlp_bias=ch.fc1.bias is not None, spatial_bn=not isinstance(getattr(conv, "bn", None), nn.Identity),
    )


def _timm_cbam(m):
    return fused_class("CbamModule")(m.channel.fc1.in_channels, **_timm_cbam_kwargs(m))


def _timm_lcbam(m):
    return fused_class("LightCbamModule")(m.channel.fc1.in_channels, **_timm_cbam_kwargs(m))


def _timm_cbam_structure(m):
    conv = getattr(getattr(m, "spatial", None), "conv", None)
    if not isinstance(getattr(conv, "conv", None), nn.Conv2d) or getattr(conv, "bn", None) is None:
        return "spatial.conv is not a conv + norm pair"
    extra = [n for n, c in conv.named_children() if n not in ("conv", "bn") and not isinstance(c, nn.Identity)]
    return f"spatial.conv has extra layers {extra}" if extra else None


def _ceca_structure(m):
    k = m.conv.kernel_size[0]
    return None if m.padding == (k - 1) // 2 else f"padding {m.padding} does not match kernel size {k}"


# --- the seed article's classes: name plus structure -----------------------

def _seed_ratio(fc_layers) -> int:
    C, rd = fc_layers[0].in_features, fc_layers[0].out_features
    return next(r for r in range(1, C + 1) if C // r == rd)


def _seed_mlp_structure(m) -> Optional[str]:
    fc = getattr(m, "fc_layers", None)
    if not isinstance(fc, nn.Sequential) or len(fc) != 3:
        return "fc_layers is not a 3-layer nn.Sequential"
    fc1, _, fc2 = fc
    if not (isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear)) or fc1.bias is not None or fc2.bias is not None:
        return "fc_layers are not two bias-free nn.Linear layers"
    C, rd = fc1.in_features, fc1.out_features
    if (fc2.in_features, fc2.out_features) != (rd, C) or not any(C // r == rd for r in range(1, C + 1)):
        return f"fc_layers shapes {C}->{rd}->{fc2.out_features} are not channels -> channels // ratio -> channels"
    return None


def _seed_conv1d_structure(m) -> Optional[str]:
    conv = getattr(m, "conv", None)
    if not isinstance(conv, nn.Conv1d) or (conv.in_channels, conv.out_channels) != (1, 1) or not is_seed_conv1d(conv):
        return "conv is not a bias-free, odd, same-padded Conv1d(1, 1, k)"
    return None


def _seed_pooling_mode(m) -> Optional[str]:
    p = getattr(m, "global_pooling", None)
    if isinstance(p, nn.AdaptiveMaxPool2d) and p.output_size in (1, (1, 1)):
        return "max"
    if isinstance(p, nn.AdaptiveAvgPool2d) and p.output_size in (1, (1, 1)):
        return "avg"
    return None


def _seed_se_structure(m):
    if _seed_pooling_mode(m) is None:
        return "global_pooling is not an adaptive avg/max pool to 1x1"
    return _seed_mlp_structure(m)


def _seed_spatial_structure(m):
    conv = getattr(m, "conv", None)
    if not isinstance(conv, nn.Conv2d) or (conv.in_channels, conv.out_channels) != (2, 1) or not is_seed_spatial_conv(conv):
        return "conv is not a bias-free, same-padded Conv2d(2, 1, k)"
    if conv.kernel_size[0] not in SEED_SPATIAL_KERNELS:
        return f"kernel size {conv.kernel_size[0]} is not one of the seed's {SEED_SPATIAL_KERNELS}"
    return None


_SEED_CHANNEL_PARTS = ("Channel_Attention_Module_FC", "Channel_Attention_Module_Conv")


def _seed_cbam_structure(m):
    ca, sa = getattr(m, "channel_attention_block", None), getattr(m, "spatial_attention_block", None)
    if type(ca).__name__ not in _SEED_CHANNEL_PARTS or type(sa).__name__ != "Spatial_Attention_Module":
        return "its parts are not the seed's channel and spatial attention modules"
    check = _seed_mlp_structure if type(ca).__name__ == _SEED_CHANNEL_PARTS[0] else _seed_conv1d_structure
    return check(ca) or _seed_spatial_structure(sa)


def _seed_se(m):
    return fused_class("SEBlock")(_seed_pooling_mode(m), m.fc_layers[0].in_features, _seed_ratio(m.fc_layers))


def _seed_eca(m):
    # The seed's k comes from channels, which an ECABlock does not keep: build
    # any block and adopt the old conv, which has the right k.
    return fused_class("ECABlock")(1)


def _seed_channel_fc(m):
    return fused_class("Channel_Attention_Module_FC")(m.fc_layers[0].in_features, _seed_ratio(m.fc_layers))


def _seed_channel_conv(m):
    return fused_class("Channel_Attention_Module_Conv")(1)


def _seed_spatial(m):
    return fused_class("Spatial_Attention_Module")(m.conv.kernel_size[0])


def _seed_cbam(m):
    ca, k = m.channel_attention_block, m.spatial_attention_block.conv.kernel_size[0]
    if type(ca).__name__ == _SEED_CHANNEL_PARTS[0]:
        return fused_class("CBAMBlock")("FC", k, channels=ca.fc_layers[0].in_features, ratio=_seed_ratio(ca.fc_layers))
    return fused_class("CBAMBlock")("Conv", k, channels=1, gamma=2, b=1)


_PART_ALONE = "a CBAM part alone (fused only inside CBAMBlock)"

_TIMM_SE = ("timm.layers.squeeze_excite", "timm.models.layers.squeeze_excite")
_TIMM_ECA = ("timm.layers.eca", "timm.models.layers.eca")
_TIMM_CBAM = ("timm.layers.cbam", "timm.models.layers.cbam")
_TIMM_EFFNET = ("timm.models._efficientnet_blocks", "timm.models.efficientnet_blocks")

_RULES = (
    Rule("timm SEModule", _TIMM_SE, "SEModule", "SEModule", _timm_se, ("act",), ("gate",), ("bn",)),
    Rule("timm EffectiveSEModule", _TIMM_SE, "EffectiveSEModule", "EffectiveSEModule", _timm_ese, gate_slots=("gate",)),
    Rule("timm EcaModule", _TIMM_ECA, "EcaModule", "EcaModule", _timm_eca, gate_slots=("gate",), identity_slots=("conv2",)),
    Rule("timm CecaModule", _TIMM_ECA, "CecaModule", "CecaModule", _timm_ceca, gate_slots=("gate",), structure=_ceca_structure),
    Rule(
        "timm CbamModule", _TIMM_CBAM, "CbamModule", "CbamModule", _timm_cbam, ("channel.act",), ("channel.gate", "spatial.gate"),
        norm_slots=("spatial.conv.bn",), structure=_timm_cbam_structure,
    ),
    Rule(
        "timm LightCbamModule", _TIMM_CBAM, "LightCbamModule", "LightCbamModule", _timm_lcbam, ("channel.act",), ("spatial.gate",),
        norm_slots=("spatial.conv.bn",), structure=_timm_cbam_structure,
    ),
    Rule(
        "timm EfficientNet SqueezeExcite", _TIMM_EFFNET, "SqueezeExcite", "EfficientNetSqueezeExcite", _timm_effnet_se,
        ("act1",), ("gate",),
    ),
    Rule(
        "torchvision SqueezeExcitation", ("torchvision.ops.misc",), "SqueezeExcitation", "SqueezeExcitation", _torchvision_se,
        ("activation",), ("scale_activation",),
    ),
    Rule("seed SEBlock", (), "SEBlock", "SEBlock", _seed_se, ("fc_layers.1",), ("sigmoid",), structure=_seed_se_structure),
    Rule("seed ECABlock", (), "ECABlock", "ECABlock", _seed_eca, gate_slots=("sigmoid",), structure=_seed_conv1d_structure),
    Rule(
        "seed CBAMBlock", (), "CBAMBlock", "CBAMBlock", _seed_cbam, ("channel_attention_block.fc_layers.1",),
        ("channel_attention_block.sigmoid", "spatial_attention_block.sigmoid"), structure=_seed_cbam_structure,
    ),
    Rule(
        "seed Channel_Attention_Module_FC", (), "Channel_Attention_Module_FC", "Channel_Attention_Module_FC", _seed_channel_fc,
        structure=_seed_mlp_structure, always_unfused=_PART_ALONE,
    ),
    Rule(
        "seed Channel_Attention_Module_Conv", (), "Channel_Attention_Module_Conv", "Channel_Attention_Module_Conv",
        _seed_channel_conv, structure=_seed_conv1d_structure, always_unfused=_PART_ALONE,
    ),
    Rule(
        "seed Spatial_Attention_Module", (), "Spatial_Attention_Module", "Spatial_Attention_Module", _seed_spatial,
        structure=_seed_spatial_structure, always_unfused=_PART_ALONE,
    ),
)

# Class names worth a "left" line when not swapped: attention-like blocks a
# reader would expect convert to consider.
ATTENTION_LIKE = re.compile(r"(?i:attn|attention|excit|squeeze|eca|cbam|globalcontext|selectivekernel)|^SE[A-Z_]|^SE$|SE(Block|Module|Layer)$")


def rule_for(t: type) -> Optional[Rule]:
    for rule in _RULES:
        if t.__name__ == rule.cls_name and (not rule.modules or t.__module__ in rule.modules):
            return rule
    return None
