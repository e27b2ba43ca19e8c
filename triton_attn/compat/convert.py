"""``convert(model)``: swap every attention block triton_attn knows for its
fused equivalent, keeping the very same parameter and buffer objects (so
state_dict keys, device, dtype, train/eval state and any optimizer built on
the parameters all carry over), and report what was swapped and what was left.

Blocks are recognised by defining module and class name, never by
``isinstance``: timm and torchvision are not imported by this file, and the
seed article's classes (which live in users' own files) are matched by name
plus structure. A swap is kept only when the new block's state_dict holds
exactly the old block's tensors, key for key. The recognition rules live in
``rules.py``."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from ..activations import GATE_CODES, fused_act_spec
from . import resnet as _resnet
from .revert import record as record_original
from .rules import ATTENTION_LIKE, Rule, fused_class, qualname, rule_for


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
    #: residual blocks whose tail ``fuse_tail=True`` would fuse (counted when it is False)
    tails_available: int = 0

    def __str__(self) -> str:
        hint = ([f"  ({self.tails_available} residual block tail(s) could be fused too: convert(model, fuse_tail=True))"]
                if self.tails_available else [])
        if not self.swapped and not self.left:
            return "\n".join(["swapped 0 module(s): no attention block (SE, ECA, CBAM, ...) was found in this model"] + hint)
        lines = [f"swapped {len(self.swapped)} module(s), left {len(self.left)}"]
        lines += [f"  swapped {s.name or '(root)'}: {s.old} -> {s.new} [{s.path}]" for s in self.swapped]
        lines += [f"  left    {m.name or '(root)'}: {m.cls} ({m.reason})" for m in self.left]
        return "\n".join(lines + hint)


def _get_path(m: nn.Module, dotted: str):
    for part in dotted.split("."):
        m = getattr(m, part, None) if not part.isdigit() else (m[int(part)] if isinstance(m, nn.Sequential) and int(part) < len(m) else None)
        if m is None:
            return None
    return m


def _path_note(new: nn.Module, rule: Rule) -> str:
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
    rule = rule_for(t)
    if rule is None:
        parents = [qualname(b) for b in t.__mro__[1:] if rule_for(b) is not None]
        if parents:
            report.left.append(Left(name, qualname(t), f"subclass of {parents[0]}; its forward may differ"))
        elif ATTENTION_LIKE.search(t.__name__):
            report.left.append(Left(name, qualname(t), "no fused equivalent in triton_attn"))
        return None
    if fused_class(rule.target) is None:
        report.left.append(Left(name, qualname(t), f"triton_attn.{rule.target} is not available in this version"))
        return None
    reason = rule.structure(m) if rule.structure is not None else None
    if reason is not None:
        report.left.append(Left(name, qualname(t), f"not the {rule.label}'s structure: {reason}"))
        return None
    try:
        with torch.device("meta"):  # nothing is allocated: every tensor is adopted from m
            new = rule.build(m)
    except (ValueError, TypeError, AttributeError, StopIteration) as e:
        report.left.append(Left(name, qualname(t), f"could not rebuild it: {e}"))
        return None
    _adopt(new, m)
    reason = _mismatch(new, m)
    if reason is not None:
        report.left.append(Left(name, qualname(t), reason))
        return None
    report.swapped.append(Swapped(name, qualname(t), qualname(type(new)), _path_note(new, rule)))
    record_original(new, m)  # for triton_attn.revert
    return new


# --- fused tails (fuse_tail=True): timm ResNet blocks, see compat/resnet.py ---

def _fuse_tail(block: nn.Module, name: str, report: ConversionReport, memo: dict, fuse_tail: bool) -> Optional[nn.Module]:
    """The tail-fused block for a timm ResNet block (its attention converted
    as usual, reported on its own line), or None: not such a block, or left
    (with ``fuse_tail``, the reason is reported; the walk then converts its
    attention alone)."""
    cls = _resnet.tail_block(block)
    if cls is None:
        return None
    reason = _resnet.left_reason(block, cls)
    if not fuse_tail:
        report.tails_available += reason is None
        return None
    if reason is not None:
        report.left.append(Left(name, qualname(type(block)), f"tail not fused: {reason}"))
        return None
    slot = cls._tail_names[1]
    attn = getattr(block, slot)
    new_attn = attn
    if attn is not None and not type(attn).__module__.startswith("triton_attn"):
        new_attn = memo[id(attn)] if id(attn) in memo else _swap(attn, f"{name}.{slot}" if name else slot, report)
        memo[id(attn)] = new_attn if new_attn is not None else attn
        if new_attn is None:
            report.left.append(Left(name, qualname(type(block)), f"tail not fused: its {slot} was left"))
            return None
    new = cls(block)
    if slot in new._modules:
        new._modules[slot] = new_attn
    record_original(new, block)  # for triton_attn.revert (the attention's own class included)
    report.swapped.append(Swapped(name, qualname(type(block)), qualname(cls), _resnet.describe(new)))
    return new


def _walk(module: nn.Module, prefix: str, report: ConversionReport, memo: dict, fuse_tail: bool = False) -> None:
    for child_name, child in list(module._modules.items()):
        if child is None:
            continue
        name = f"{prefix}.{child_name}" if prefix else child_name
        if id(child) in memo:  # a block shared between parents stays shared
            module._modules[child_name] = memo[id(child)]
            continue
        new = (None if type(child).__module__.startswith("triton_attn")
               else _fuse_tail(child, name, report, memo, fuse_tail) or _swap(child, name, report))
        memo[id(child)] = new if new is not None else child
        if new is not None:
            module._modules[child_name] = new
        else:
            _walk(child, name, report, memo, fuse_tail)


def convert(model: nn.Module, inplace: bool = False, fuse_tail: bool = False) -> tuple[nn.Module, ConversionReport]:
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
    wrapping in DDP or ``torch.compile``.

    ``fuse_tail=True`` also swaps timm's ResNet ``BasicBlock``/``Bottleneck``
    for a block that runs the convolutions as timm does and then
    ``act(drop_path(se(bn(z))) + shortcut)`` as one fused op (its attention
    converted as above; same children, tensors and keys). The report lists
    each such block with "tail fused" and each block left with its reason
    (a norm other than nn.BatchNorm2d, hooks on the tail's modules, an
    activation without a fused form, CBAM for now...); hooks registered
    later, or a SyncBatchNorm swapped in, make the block run timm's own
    sequence at that call. Off by default: the block classes themselves
    change (code matching timm's classes or patching their forward sees
    another class), while the default swaps only the attention modules; the
    report then counts the tails that could be fused."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    report = ConversionReport()
    memo = {id(model): model}
    if not type(model).__module__.startswith("triton_attn"):
        new = _fuse_tail(model, "", report, memo, fuse_tail) or _swap(model, "", report)
        if new is not None:
            return new, report
    _walk(model, "", report, memo, fuse_tail)
    return model, report
