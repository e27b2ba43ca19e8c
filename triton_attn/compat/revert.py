"""``revert(model)``: undo ``convert``. Every block convert swapped goes back
to the class it came from (timm, torchvision, the seed article's classes in
users' own files, any future block convert learns), holding the very same
parameter, buffer and child-module objects the converted block holds now,
with its training flag and hooks.

Nothing here is a table of classes: when convert swaps a block it records on
the new block what it replaced (``record``): the original class, its plain
attributes and, per child slot, whether the fused block adopted that child
(take the current one back), rebuilt it with its own class (recurse: timm's
``ChannelAttn``, a ``BatchNormAct2d`` that became an ``nn.BatchNorm2d``) or
has no slot for it (keep it). The record holds no tensors, so nothing stale
survives ``.to()``/``.half()`` and ``state_dict`` is unchanged; revert
rebuilds the original from the record and the converted block's current
tensors, so loading a checkpoint or moving the model after convert carries
over."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Optional, Union

from torch import nn

#: attribute of a converted block holding its ``Original``
ORIGINAL_ATTR = "_triton_attn_original"

_MODULE_INTERNALS = {"_parameters", "_buffers", "_modules", "_non_persistent_buffers_set", "training"}
_SIMPLE = (bool, int, float, str, tuple, type(None))


class _Adopted:
    """Child slot marker: the converted block holds this child itself. One
    instance, kept one through copies and pickles."""

    def __repr__(self) -> str:
        return "ADOPTED"

    def __reduce__(self):
        return "ADOPTED"

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


ADOPTED = _Adopted()


def _hook_attr(name: str) -> bool:
    return "hooks" in name or name == "_is_full_backward_hook"


@dataclass
class Original:
    """What ``convert`` replaced, enough to rebuild it around the converted
    block's current tensors."""

    cls: type
    attrs: dict  # plain attributes (nn.Module internals and hook dicts excluded)
    hooks: dict  # the original's own hook dicts, refreshed on revert
    parameters: tuple[str, ...]
    buffers: tuple[str, ...]
    non_persistent: frozenset
    children: dict[str, Union["Original", _Adopted, nn.Module, None]] = field(default_factory=dict)


def _original(old: nn.Module, new: Optional[nn.Module]) -> Original:
    d = old.__dict__
    children: dict = {}
    new_children = new._modules if new is not None else {}
    for name, child in old._modules.items():
        cur = new_children.get(name)
        if child is not None and cur is child:
            children[name] = ADOPTED
        elif child is not None and cur is not None and type(cur) is not type(child):
            children[name] = _original(child, cur)  # rebuilt by convert with its own class
        else:
            children[name] = child  # no counterpart: kept as it was
    return Original(
        cls=type(old),
        attrs={k: v for k, v in d.items() if k not in _MODULE_INTERNALS and not _hook_attr(k) and k != ORIGINAL_ATTR},
        hooks={k: v for k, v in d.items() if _hook_attr(k)},
        parameters=tuple(old._parameters),
        buffers=tuple(old._buffers),
        non_persistent=frozenset(old._non_persistent_buffers_set),
        children=children,
    )


def record(new: nn.Module, old: nn.Module) -> None:
    """Called by ``convert`` once ``new`` has adopted ``old``'s tensors."""
    setattr(new, ORIGINAL_ATTR, _original(old, new))


def original_of(module: nn.Module) -> Optional[Original]:
    return module.__dict__.get(ORIGINAL_ATTR)


def _rebuild(orig: Original, current: Optional[nn.Module]) -> nn.Module:
    obj = orig.cls.__new__(orig.cls)
    d = obj.__dict__
    cur = current.__dict__ if current is not None else {}
    d.update(orig.attrs)
    # Same-named plain settings follow the converted block (BatchNorm's
    # momentum set after convert, CECA's padding after loading another k).
    for k, v in orig.attrs.items():
        if k in cur and isinstance(cur[k], _SIMPLE) and isinstance(v, _SIMPLE):
            d[k] = cur[k]
    cur_params = current._parameters if current is not None else {}
    cur_buffers = current._buffers if current is not None else {}
    d["_parameters"] = {k: cur_params.get(k) for k in orig.parameters}
    d["_buffers"] = {k: cur_buffers.get(k) for k in orig.buffers}
    d["_non_persistent_buffers_set"] = set(orig.non_persistent)
    modules = {}
    cur_children = current._modules if current is not None else {}
    for name, entry in orig.children.items():
        if entry is ADOPTED:
            modules[name] = cur_children.get(name)
        elif isinstance(entry, Original):
            modules[name] = _rebuild(entry, cur_children.get(name))
        else:
            modules[name] = entry
    d["_modules"] = modules
    d["training"] = current.training if current is not None else True
    # Hooks: the original's own dicts (handles taken before convert work
    # again), holding what the converted block has now.
    for k, v in orig.hooks.items():
        now = cur.get(k, v)
        if isinstance(v, dict) and isinstance(now, dict):
            if now is not v:
                v.clear()
                v.update(now)
            d[k] = v
        else:
            d[k] = now
    return obj


@dataclass
class Reverted:
    name: str
    fused: str
    original: str


@dataclass
class RevertLeft:
    name: str
    cls: str
    reason: str


@dataclass
class RevertReport:
    reverted: list[Reverted] = field(default_factory=list)
    left: list[RevertLeft] = field(default_factory=list)

    def __str__(self) -> str:
        if not self.reverted and not self.left:
            return "reverted 0 module(s): no block converted by triton_attn.convert was found"
        lines = [f"reverted {len(self.reverted)} module(s), left {len(self.left)}"]
        lines += [f"  reverted {r.name or '(root)'}: {r.fused} -> {r.original}" for r in self.reverted]
        lines += [f"  left     {m.name or '(root)'}: {m.cls} ({m.reason})" for m in self.left]
        return "\n".join(lines)


def _qualname(t: type) -> str:
    return f"{t.__module__}.{t.__name__}"


_OURS = ("triton_attn.modules.", "triton_attn.compat.")


def _ours(m: nn.Module) -> bool:
    return type(m).__module__.startswith(_OURS)


def _revert_one(m: nn.Module, name: str, report: RevertReport) -> Optional[nn.Module]:
    orig = original_of(m)
    if orig is None:
        report.left.append(RevertLeft(name, _qualname(type(m)), "built by triton_attn, not by convert: no original class recorded"))
        return None
    report.reverted.append(Reverted(name, _qualname(type(m)), _qualname(orig.cls)))
    return _rebuild(orig, m)


def _walk(module: nn.Module, prefix: str, report: RevertReport, memo: dict) -> None:
    for child_name, child in list(module._modules.items()):
        if child is None:
            continue
        name = f"{prefix}.{child_name}" if prefix else child_name
        if id(child) in memo:  # a block shared between parents stays shared
            module._modules[child_name] = memo[id(child)]
            continue
        if _ours(child):  # a triton_attn block: reverted whole, or left whole
            new = _revert_one(child, name, report)
            memo[id(child)] = new if new is not None else child
            if new is not None:
                module._modules[child_name] = new
        else:
            memo[id(child)] = child
            _walk(child, name, report, memo)


def revert(model: nn.Module, inplace: bool = False) -> tuple[nn.Module, RevertReport]:
    """Turn every block ``triton_attn.convert`` swapped back into the class it
    came from; returns ``(model, report)``.

    The original block holds the converted block's current parameter, buffer
    and child-module objects (the same objects: an optimizer built on them
    stays valid with ``inplace=True``), its training flag and its hooks, and
    its own plain attributes from convert time (same-named settings changed
    since, such as a BatchNorm's momentum, follow the converted block).
    Blocks triton_attn built directly (``triton_attn.SEModule(...)``,
    ``create_attn``) have no original and are left, with a line in the
    report. ``inplace=False`` reverts a deep copy."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    report = RevertReport()
    if _ours(model):
        new = _revert_one(model, "", report)
        return (new if new is not None else model), report
    _walk(model, "", report, {id(model): model})
    return model, report
