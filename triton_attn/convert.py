"""``convert(model)``: swap every attention block triton_attn knows for its
fused equivalent, keeping the very same parameter and buffer objects (so
state_dict keys, device, dtype, train/eval state and any optimizer built on
the parameters all carry over), and report what was swapped and what was left.

Blocks are recognised by defining module and class name, never by
``isinstance``: timm and torchvision are not imported by this file, and the
seed article's classes (which live in users' own files) are matched by name
plus structure. A swap is kept only when the new block's state_dict holds
exactly the old block's tensors, key for key."""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from .activations import GATE_CODES, fused_act_spec
from . import seed_compat
from .seed_compat import SEED_SPATIAL_KERNELS, is_seed_conv1d, is_seed_spatial_conv


@dataclass
class Swapped:
    name: str
    old: str
    new: str
    path: str  # "fused" or "unfused: <why>"


@dataclass
class Left:
    name: str
    cls: str
    reason: str


@dataclass
class ConversionReport:
    swapped: list[Swapped] = field(default_factory=list)
    left: list[Left] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"swapped {len(self.swapped)} module(s), left {len(self.left)}"]
        lines += [f"  swapped {s.name or '(root)'}: {s.old} -> {s.new} [{s.path}]" for s in self.swapped]
        lines += [f"  left    {m.name or '(root)'}: {m.cls} ({m.reason})" for m in self.left]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Rule:
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


def _qualname(t: type) -> str:
    return f"{t.__module__}.{t.__name__}"


def _target(name: str):
    """The fused class called ``name``, or None where this version lacks it
    (looked up at call time: CBAM modules may come and go with versions)."""
    import triton_attn

    return getattr(triton_attn, name, None) or getattr(seed_compat, name, None)


# --- builders: the fused block's configuration read off the old block ------

def _timm_se(m):
    return _target("SEModule")(
        m.fc1.in_channels, rd_channels=m.fc1.out_channels, add_maxpool=m.add_maxpool,
        bias=m.fc1.bias is not None, act_layer=m.act, gate_layer=m.gate,
    )


def _timm_ese(m):
    return _target("EffectiveSEModule")(m.fc.in_channels, add_maxpool=m.add_maxpool, gate_layer=m.gate)


def _timm_eca(m):
    # use_mlp's conv2 (and act) fill EcaModule's empty slots when adopted.
    k = (m.conv2 if getattr(m, "conv2", None) is not None else m.conv).kernel_size[0]
    return _target("EcaModule")(channels=None, kernel_size=k, gate_layer=m.gate)


def _timm_ceca(m):
    has_bias = m.conv.bias is not None
    return _target("CecaModule")(channels=None, kernel_size=m.conv.kernel_size[0], act_layer=nn.ReLU if has_bias else None, gate_layer=m.gate)


def _timm_effnet_se(m):
    return _target("EfficientNetSqueezeExcite")(m.conv_reduce.in_channels, rd_channels=m.conv_reduce.out_channels, act_layer=m.act1, gate_layer=m.gate)


def _torchvision_se(m):
    return _target("SqueezeExcitation")(
        m.fc1.in_channels, m.fc1.out_channels, activation=lambda: m.activation, scale_activation=lambda: m.scale_activation,
    )


def _timm_cbam_kwargs(m):
    ch, conv = m.channel, m.spatial.conv
    return dict(
        rd_channels=ch.fc1.out_channels, spatial_kernel_size=conv.conv.kernel_size[0], act_layer=ch.act,
        gate_layer=ch.gate, mlp_bias=ch.fc1.bias is not None, spatial_bn=not isinstance(getattr(conv, "bn", None), nn.Identity),
    )


def _timm_cbam(m):
    return _target("CbamModule")(m.channel.fc1.in_channels, **_timm_cbam_kwargs(m))


def _timm_lcbam(m):
    return _target("LightCbamModule")(m.channel.fc1.in_channels, **_timm_cbam_kwargs(m))


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
    return _target("SEBlock")(_seed_pooling_mode(m), m.fc_layers[0].in_features, _seed_ratio(m.fc_layers))


def _seed_eca(m):
    # The seed's k comes from channels, which an ECABlock does not keep: build
    # any block and adopt the old conv, which has the right k.
    return _target("ECABlock")(1)


def _seed_channel_fc(m):
    return _target("Channel_Attention_Module_FC")(m.fc_layers[0].in_features, _seed_ratio(m.fc_layers))


def _seed_channel_conv(m):
    return _target("Channel_Attention_Module_Conv")(1)


def _seed_spatial(m):
    return _target("Spatial_Attention_Module")(m.conv.kernel_size[0])


def _seed_cbam(m):
    ca, k = m.channel_attention_block, m.spatial_attention_block.conv.kernel_size[0]
    if type(ca).__name__ == _SEED_CHANNEL_PARTS[0]:
        return _target("CBAMBlock")("FC", k, channels=ca.fc_layers[0].in_features, ratio=_seed_ratio(ca.fc_layers))
    return _target("CBAMBlock")("Conv", k, channels=1, gamma=2, b=1)


_PART_ALONE = "a CBAM part alone (fused only inside CBAMBlock)"

_TIMM_SE = ("timm.layers.squeeze_excite", "timm.models.layers.squeeze_excite")
_TIMM_ECA = ("timm.layers.eca", "timm.models.layers.eca")
_TIMM_CBAM = ("timm.layers.cbam", "timm.models.layers.cbam")
_TIMM_EFFNET = ("timm.models._efficientnet_blocks", "timm.models.efficientnet_blocks")

_RULES = (
    _Rule("timm SEModule", _TIMM_SE, "SEModule", "SEModule", _timm_se, ("act",), ("gate",), ("bn",)),
    _Rule("timm EffectiveSEModule", _TIMM_SE, "EffectiveSEModule", "EffectiveSEModule", _timm_ese, gate_slots=("gate",)),
    _Rule("timm EcaModule", _TIMM_ECA, "EcaModule", "EcaModule", _timm_eca, gate_slots=("gate",), identity_slots=("conv2",)),
    _Rule("timm CecaModule", _TIMM_ECA, "CecaModule", "CecaModule", _timm_ceca, gate_slots=("gate",), structure=_ceca_structure),
    _Rule(
        "timm CbamModule", _TIMM_CBAM, "CbamModule", "CbamModule", _timm_cbam, ("channel.act",), ("channel.gate", "spatial.gate"),
        norm_slots=("spatial.conv.bn",), structure=_timm_cbam_structure,
    ),
    _Rule(
        "timm LightCbamModule", _TIMM_CBAM, "LightCbamModule", "LightCbamModule", _timm_lcbam, ("channel.act",), ("spatial.gate",),
        norm_slots=("spatial.conv.bn",), structure=_timm_cbam_structure,
    ),
    _Rule(
        "timm EfficientNet SqueezeExcite", _TIMM_EFFNET, "SqueezeExcite", "EfficientNetSqueezeExcite", _timm_effnet_se,
        ("act1",), ("gate",),
    ),
    _Rule(
        "torchvision SqueezeExcitation", ("torchvision.ops.misc",), "SqueezeExcitation", "SqueezeExcitation", _torchvision_se,
        ("activation",), ("scale_activation",),
    ),
    _Rule("seed SEBlock", (), "SEBlock", "SEBlock", _seed_se, ("fc_layers.1",), ("sigmoid",), structure=_seed_se_structure),
    _Rule("seed ECABlock", (), "ECABlock", "ECABlock", _seed_eca, gate_slots=("sigmoid",), structure=_seed_conv1d_structure),
    _Rule(
        "seed CBAMBlock", (), "CBAMBlock", "CBAMBlock", _seed_cbam, ("channel_attention_block.fc_layers.1",),
        ("channel_attention_block.sigmoid", "spatial_attention_block.sigmoid"), structure=_seed_cbam_structure,
    ),
    _Rule(
        "seed Channel_Attention_Module_FC", (), "Channel_Attention_Module_FC", "Channel_Attention_Module_FC", _seed_channel_fc,
        structure=_seed_mlp_structure, always_unfused=_PART_ALONE,
    ),
    _Rule(
        "seed Channel_Attention_Module_Conv", (), "Channel_Attention_Module_Conv", "Channel_Attention_Module_Conv",
        _seed_channel_conv, structure=_seed_conv1d_structure, always_unfused=_PART_ALONE,
    ),
    _Rule(
        "seed Spatial_Attention_Module", (), "Spatial_Attention_Module", "Spatial_Attention_Module", _seed_spatial,
        structure=_seed_spatial_structure, always_unfused=_PART_ALONE,
    ),
)

# Class names worth a "left" line when not swapped: attention-like blocks a
# reader would expect convert to consider.
_ATTENTION_LIKE = re.compile(r"(?i:attn|attention|excit|squeeze|eca|cbam|globalcontext|selectivekernel)|^SE[A-Z_]|^SE$|SE(Block|Module|Layer)$")


def _rule_for(t: type) -> Optional[_Rule]:
    for rule in _RULES:
        if t.__name__ == rule.cls_name and (not rule.modules or t.__module__ in rule.modules):
            return rule
    return None


def _get_path(m: nn.Module, dotted: str):
    for part in dotted.split("."):
        m = getattr(m, part, None) if not part.isdigit() else (m[int(part)] if isinstance(m, nn.Sequential) and int(part) < len(m) else None)
        if m is None:
            return None
    return m


def _path_note(new: nn.Module, rule: _Rule) -> str:
    """Why the swapped block will take the unfused path, if it will."""
    why = [rule.always_unfused] if rule.always_unfused else []
    for slot in rule.act_slots:
        act = _get_path(new, slot)
        if act is not None and fused_act_spec(act) is None:
            why.append(f"{slot} is {type(act).__name__}")
    for slot in rule.gate_slots:
        gate = _get_path(new, slot)
        spec = fused_act_spec(gate) if gate is not None else None
        if gate is not None and (spec is None or spec[0] not in GATE_CODES):
            why.append(f"{slot} is {type(gate).__name__}")
    for slot in rule.identity_slots + rule.norm_slots:
        m = _get_path(new, slot)
        ok = (nn.Identity,) if slot in rule.identity_slots else (nn.Identity, nn.BatchNorm2d)
        if m is not None and type(m) not in ok:
            why.append(f"{slot} is {type(m).__name__}")
    return "fused" if not why else "unfused: " + ", ".join(why)


def _plain_norm_act(m) -> bool:
    """timm's BatchNormAct2d with identity drop and act computes exactly
    nn.BatchNorm2d, which the fused CBAM path understands."""
    t = type(m)
    return (
        t.__name__ == "BatchNormAct2d" and t.__module__.startswith("timm.") and isinstance(m, nn.BatchNorm2d)
        and all(isinstance(c, nn.Identity) for c in m.children())
    )


def _adopt(new: nn.Module, old: nn.Module) -> None:
    """Give ``new`` the old block's own parameters, buffers and leaf modules
    (activations included), recursing where both sides have their own classes."""
    for store in ("_parameters", "_buffers"):
        new_store, old_store = getattr(new, store), getattr(old, store)
        for name in list(new_store):
            if name in old_store:
                new_store[name] = old_store[name]
    for name, old_child in old._modules.items():
        if name in new._modules:
            new_child = new._modules[name]
            if (
                new_child is not None and old_child is not None and type(new_child) is not type(old_child)
                and new_child._modules and old_child._modules
            ):
                _adopt(new_child, old_child)
            elif type(new_child) is nn.BatchNorm2d and _plain_norm_act(old_child):
                _adopt(new_child, old_child)
                for attr in ("num_features", "eps", "momentum", "affine", "track_running_stats"):
                    setattr(new_child, attr, getattr(old_child, attr))
            else:
                new._modules[name] = old_child
        elif name in new.__dict__ and new.__dict__[name] is None:  # an empty slot, e.g. EcaModule.conv2
            del new.__dict__[name]
            new._modules[name] = old_child
    new.training = old.training
    for attr, hooks in vars(old).items():
        # forward/backward/state-dict hooks a user registered on the old block
        if "hooks" in attr and isinstance(hooks, dict) and hooks and isinstance(getattr(new, attr, None), dict):
            getattr(new, attr).update(hooks)


def _mismatch(new: nn.Module, old: nn.Module) -> Optional[str]:
    ns, olds = new.state_dict(keep_vars=True), old.state_dict(keep_vars=True)
    if set(ns) != set(olds):
        return f"state_dict keys differ: missing {sorted(set(olds) - set(ns))}, extra {sorted(set(ns) - set(olds))}"
    for k, v in ns.items():
        if v is not olds[k]:
            return f"{k} was not carried over"
    if any(t.is_meta for t in list(new.parameters()) + list(new.buffers())):
        return "a parameter or buffer was not carried over"
    return None


def _swap(m: nn.Module, name: str, report: ConversionReport) -> Optional[nn.Module]:
    t = type(m)
    rule = _rule_for(t)
    if rule is None:
        parents = [_qualname(b) for b in t.__mro__[1:] if _rule_for(b) is not None]
        if parents:
            report.left.append(Left(name, _qualname(t), f"subclass of {parents[0]}; its forward may differ"))
        elif _ATTENTION_LIKE.search(t.__name__):
            report.left.append(Left(name, _qualname(t), "no fused equivalent in triton_attn"))
        return None
    if _target(rule.target) is None:
        report.left.append(Left(name, _qualname(t), f"triton_attn.{rule.target} is not available in this version"))
        return None
    reason = rule.structure(m) if rule.structure is not None else None
    if reason is not None:
        report.left.append(Left(name, _qualname(t), f"not the {rule.label}'s structure: {reason}"))
        return None
    try:
        with torch.device("meta"):  # nothing is allocated: every tensor is adopted from m
            new = rule.build(m)
    except (ValueError, TypeError, AttributeError, StopIteration) as e:
        report.left.append(Left(name, _qualname(t), f"could not rebuild it: {e}"))
        return None
    _adopt(new, m)
    reason = _mismatch(new, m)
    if reason is not None:
        report.left.append(Left(name, _qualname(t), reason))
        return None
    report.swapped.append(Swapped(name, _qualname(t), _qualname(type(new)), _path_note(new, rule)))
    return new


def _walk(module: nn.Module, prefix: str, report: ConversionReport, memo: dict) -> None:
    for child_name, child in list(module._modules.items()):
        if child is None:
            continue
        name = f"{prefix}.{child_name}" if prefix else child_name
        if id(child) in memo:  # a block shared between parents stays shared
            module._modules[child_name] = memo[id(child)]
            continue
        new = None if type(child).__module__.startswith("triton_attn") else _swap(child, name, report)
        memo[id(child)] = new if new is not None else child
        if new is not None:
            module._modules[child_name] = new
        else:
            _walk(child, name, report, memo)


def convert(model: nn.Module, inplace: bool = False) -> tuple[nn.Module, ConversionReport]:
    """Swap every recognised attention block of ``model`` for triton_attn's
    fused equivalent; returns ``(model, report)``.

    Recognised: timm ``SEModule``, ``EffectiveSEModule``, ``EcaModule`` (incl.
    ``use_mlp``), ``CecaModule``, ``CbamModule``, ``LightCbamModule``, timm's
    EfficientNet/MobileNetV3 ``SqueezeExcite``, torchvision
    ``SqueezeExcitation``, and the seed article's ``SEBlock``, ``ECABlock``,
    ``CBAMBlock`` and CBAM parts (by class name and structure). The new block
    holds the old block's parameter, buffer and activation objects, so keys,
    device, dtype and train/eval state are unchanged. A block whose activation
    or gate has no fused form is still swapped and runs the unfused path (the
    report says so); subclasses and unknown attention classes are left.

    ``inplace=False`` converts a deep copy; ``inplace=True`` edits ``model``
    (then an optimizer built on its parameters stays valid). Convert before
    wrapping in DDP or ``torch.compile``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    report = ConversionReport()
    if not type(model).__module__.startswith("triton_attn"):
        new = _swap(model, "", report)
        if new is not None:
            return new, report
    _walk(model, "", report, {id(model): model})
    return model, report
