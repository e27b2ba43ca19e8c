"""The fused attention tail of a residual block,
``y = act(drop_path(attn(bn(z))) + shortcut)``, as a module (``AttentionTail``)
and as the shared logic of the tail-fused ResNet blocks (``modules/resnet.py``).

The configuration is read off the block's own modules at every call (so a
module replaced or a hook registered after ``convert`` is seen): BatchNorm's
arguments exactly as ``nn.BatchNorm2d.forward`` derives them, the attention's
weights and fused act/gate from ``TAIL_ATTENTIONS`` (one entry per attention
class: adding an attention type is one entry), drop_path's per-sample factor
drawn exactly as timm's ``drop_path`` draws it. Anything the fused op does not
cover runs the plain sequence of the modules themselves (bn -> attn ->
drop_path -> + shortcut -> act), and the ``triton_attn`` logger says why,
once per reason."""
from __future__ import annotations

import logging
from typing import Callable, Optional, Union

import torch
from torch import nn

from ..activations import HIDDEN_ACTS, create_act_layer, fused_act_spec
from ..ops import tail as tail_ops
from ..runtime import exporting, fx_leaf, not_scriptable
from ..validation import check_input
from .gating import fused_gate_name

logger = logging.getLogger("triton_attn")

_module_hooks = torch.nn.modules.module


# --- what each attention class contributes to the op -------------------------

def _name(m) -> str:
    return type(m).__name__


# The extractors run at every call: they read the modules' own dicts
# (``_modules``, ``_parameters``) rather than going through
# ``nn.Module.__getattr__``, which costs a few microseconds per tail.

def _se(m, slot: str) -> Union[dict, str]:
    mods = m._modules
    act = fused_act_spec(mods["act"])
    if act is None or act[0] not in HIDDEN_ACTS:
        return f"{slot}.act is {_name(mods['act'])} (no fused form)"
    gate = fused_gate_name(mods["gate"])
    if gate is None:
        return f"{slot}.gate is {_name(mods['gate'])} (no fused form)"
    if type(mods.get("bn")) is not nn.Identity:
        return f"{slot}.bn is {_name(mods.get('bn'))} (the fused SE has no norm)"
    p1, p2 = mods["fc1"]._parameters, mods["fc2"]._parameters
    return dict(attn="se", w1=p1["weight"], b1=p1.get("bias"), w2=p2["weight"], b2=p2.get("bias"),
                pool="avgmax" if m.add_maxpool else "avg", attn_act=act[0], attn_act_param=act[1], gate=gate)


def _ese(m, slot: str) -> Union[dict, str]:
    mods = m._modules
    gate = fused_gate_name(mods["gate"])
    if gate is None:
        return f"{slot}.gate is {_name(mods['gate'])} (no fused form)"
    p = mods["fc"]._parameters
    return dict(attn="se", w1=p["weight"], b1=p.get("bias"), pool="avgmax" if m.add_maxpool else "avg",
                attn_act="identity", gate=gate)


def _eca(circular: bool):
    def args(m, slot: str) -> Union[dict, str]:
        mods = m._modules
        if mods.get("conv2") is not None:
            return f"{slot} is an EcaModule with use_mlp (no fused form)"
        gate = fused_gate_name(mods["gate"])
        if gate is None:
            return f"{slot}.gate is {_name(mods['gate'])} (no fused form)"
        conv = mods["conv"]
        p = conv._parameters
        k = conv.kernel_size[0] if type(conv) is nn.Conv1d else 0
        if k % 2 != 1 or p["weight"].shape[:2] != (1, 1):
            return f"{slot}.conv is not one odd Conv1d(1, 1, k) filter"
        if circular and getattr(m, "padding", (k - 1) // 2) != (k - 1) // 2:
            return f"{slot}.padding {m.padding} does not match its kernel size {k}"
        return dict(attn="eca", w1=p["weight"], b1=p.get("bias"), circular=circular, gate=gate)

    return args


def _not_yet(what: str):
    def args(m, slot: str) -> str:
        return (f"the tail op does not cover {what} yet (the {_name(m)} is still converted and fused on its own; "
                "the norm, the add and the act run unfused)")

    return args


#: attention class name -> its contribution to ``ops.tail.attention_tail``
#: (the op's keyword arguments) or the reason it has none. Classes are
#: recognised by name where they are defined by triton_attn or timm (never by
#: isinstance: a subclass may compute something else). CBAM lands here as
#: one entry once the op takes ``attn="cbam"``.
TAIL_ATTENTIONS: dict[str, Callable[[nn.Module, str], Union[dict, str]]] = {
    "SEModule": _se,
    "EffectiveSEModule": _ese,
    "EcaModule": _eca(False),
    "CecaModule": _eca(True),
    "CbamModule": _not_yet("CBAM"),
    "LightCbamModule": _not_yet("LightCBAM"),
}

_ATTN_HOMES = (
    "triton_attn.modules.", "timm.layers.squeeze_excite", "timm.layers.eca", "timm.layers.cbam",
    "timm.models.layers.squeeze_excite", "timm.models.layers.eca", "timm.models.layers.cbam",
)
_NO_ATTN: dict = dict(attn="none")


def attention_args(attn: Optional[nn.Module], slot: str = "attn") -> Union[dict, str]:
    """The op's attention arguments for ``attn`` (None or nn.Identity: no
    attention), or why it has no fused tail (``slot``: its name in the block)."""
    if attn is None or type(attn) is nn.Identity:
        return _NO_ATTN
    t = type(attn)
    entry = TAIL_ATTENTIONS.get(t.__name__)
    if entry is None or not t.__module__.startswith(_ATTN_HOMES):
        return f"the attention {t.__module__}.{t.__name__} has no fused tail"
    return entry(attn, slot)


def _plain_batch_norm(bn) -> bool:
    """Exactly ``nn.BatchNorm2d``, or timm's BatchNormAct2d with identity
    drop and act (which computes exactly that)."""
    t = type(bn)
    if t is nn.BatchNorm2d:
        return True
    return (t.__name__ == "BatchNormAct2d" and t.__module__.startswith("timm.") and isinstance(bn, nn.BatchNorm2d)
            and type(getattr(bn, "act", None)) is nn.Identity and type(getattr(bn, "drop", None)) is nn.Identity)


def _is_drop_path(m) -> bool:
    t = type(m)
    return t.__name__ == "DropPath" and t.__module__ in ("timm.layers.drop", "timm.models.layers.drop")


def _hooked(m) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)


def _global_hooks() -> bool:
    g = _module_hooks
    return bool(g._global_forward_hooks or g._global_forward_pre_hooks or g._global_backward_hooks
                or g._global_backward_pre_hooks)


def tail_args(bn, attn, drop_path, act, names=("bn", "attn", "drop_path", "act")) -> Union[tuple, str]:
    """What the fused op needs from the modules, ``(attention kwargs, act,
    act_param)``, or why they cannot run as one op: a norm that is not
    exactly BatchNorm2d, an attention or activation without a fused form, a
    drop_path that is not timm's, hooks the fused forward would skip.
    ``names``: how the reasons call the four modules (a block's ``bn3``...)."""
    if type(bn) is not nn.BatchNorm2d and not _plain_batch_norm(bn):
        return f"{names[0]} is {_name(bn)} (only nn.BatchNorm2d is fused)"
    spec = fused_act_spec(act) if act is not None else ("identity", 0.0)
    if spec is None or spec[0] not in HIDDEN_ACTS:
        return f"{names[3]} is {_name(act)} (no fused form)"
    if drop_path is not None and type(drop_path) is not nn.Identity and not _is_drop_path(drop_path):
        return f"{names[2]} is {_name(drop_path)} (only timm's DropPath is fused)"
    if (_hooked(bn) or (attn is not None and _hooked(attn)) or (drop_path is not None and _hooked(drop_path))
            or (act is not None and _hooked(act))):
        name = next(n for m, n in zip((bn, attn, drop_path, act), names) if m is not None and _hooked(m))
        return f"hooks are registered on {name} (the fused forward would skip them)"
    if _global_hooks():
        return "global module hooks are registered (the fused forward would skip them on these modules)"
    args = attention_args(attn, names[1])
    if isinstance(args, str):
        return args
    return args, spec[0], spec[1]


def batch_norm_call(bn, z: torch.Tensor) -> Union[tuple, str]:
    """The op's BatchNorm arguments for this call, ``(weight, bias,
    running_mean, running_var, num_batches_tracked, bn_training, momentum,
    eps)``, exactly as ``nn.BatchNorm2d.forward`` decides them (batch
    statistics in training, and in eval without buffers; the buffers updated
    only in training with ``track_running_stats``; momentum None = cumulative
    average; the op counts the batch itself), or why this call takes the
    modules themselves (their own behaviour and PyTorch's errors: an empty z,
    training with one value per channel, export, mismatched channels or
    devices)."""
    if exporting():
        return "exporting (standard ops)"
    N, C, H, W = z.shape
    if N * C * H * W == 0:
        return "an empty z (nothing to launch)"
    params, buffers = bn._parameters, bn._buffers
    weight, bias = params.get("weight"), params.get("bias")
    rm, rv, nbt = buffers.get("running_mean"), buffers.get("running_var"), buffers.get("num_batches_tracked")
    if C != bn.num_features:
        return "z's channels differ from the norm's"
    dev = z.device
    if (weight is not None and weight.device != dev) or (rm is not None and rm.device != dev):
        return "the norm's tensors are on another device"
    if (rm is None) != (rv is None):
        return "only one of running_mean / running_var"
    training = bn.training
    bn_training = training or rm is None
    if bn_training and N * H * W == 1:
        return "training with one value per channel"
    if training and bn.track_running_stats:
        if nbt is not None and rm is None:
            return "num_batches_tracked without running statistics"
    else:
        nbt = None
        if training:  # track_running_stats=False: the buffers are neither used nor updated
            rm = rv = None
    momentum = bn.momentum
    if momentum is None and nbt is None:
        momentum = 0.0  # nn.BatchNorm2d's exponential_average_factor without a count
    return weight, bias, rm, rv, nbt, bn_training, momentum, bn.eps


def drop_factor(drop_path, z: torch.Tensor) -> Optional[torch.Tensor]:
    """timm's drop_path mask as the op's per-sample factor [N], drawn exactly
    as ``timm.layers.drop.drop_path`` draws it (same RNG calls, same dtype,
    so a fixed seed gives the same mask); None when it is the identity."""
    if drop_path is None or type(drop_path) is nn.Identity:
        return None
    p = drop_path.drop_prob
    if p == 0.0 or not drop_path.training:
        return None
    keep = 1 - p
    r = z.new_empty((z.shape[0],) + (1,) * (z.dim() - 1)).bernoulli_(keep)
    if keep > 0.0 and drop_path.scale_by_keep:
        r.div_(keep)
    return r.view(z.shape[0])


_told: set = set()


def _tell_unfused(owner: nn.Module, reason: str) -> None:
    if reason in _told or torch.compiler.is_compiling():
        return
    _told.add(reason)
    logger.info("triton_attn: a %s tail runs unfused (bn -> attention -> drop_path -> + shortcut -> act as separate "
                "modules): %s. Said once per reason.", type(owner).__name__, reason)


def unfused_tail(bn, attn, drop_path, act, z, shortcut_fn: Callable[[], Optional[torch.Tensor]], drop=None):
    """The plain sequence, as timm's blocks run it (the shortcut, e.g. the
    block's downsample, computed after drop_path as timm does; ``drop``: a
    mask already drawn instead of calling drop_path)."""
    x = bn(z)
    if attn is not None:
        x = attn(x)
    if drop is not None:
        x = x * drop.view(-1, 1, 1, 1)
    elif drop_path is not None:
        x = drop_path(x)
    shortcut = shortcut_fn()
    if shortcut is not None:
        x += shortcut
    return act(x) if act is not None else x


def run_tail(owner: nn.Module, z: torch.Tensor, shortcut_fn: Callable[[], Optional[torch.Tensor]], bn, attn,
             drop_path, act, names=("bn", "attn", "drop_path", "act")) -> torch.Tensor:
    """``act(drop_path(attn(bn(z))) + shortcut_fn())``: the fused op when the
    modules and this call allow it, else the modules themselves."""
    args = tail_args(bn, attn, drop_path, act, names)
    norm = batch_norm_call(bn, z) if type(args) is tuple else args
    if type(norm) is str:
        _tell_unfused(owner, norm)
        return unfused_tail(bn, attn, drop_path, act, z, shortcut_fn)
    drop = drop_factor(drop_path, z) if drop_path is not None else None  # drawn before the shortcut, as in timm
    shortcut = shortcut_fn()
    if shortcut is not None and (shortcut.shape != z.shape or shortcut.device != z.device
                                 or not shortcut.is_floating_point()):
        _tell_unfused(owner, "the shortcut is not a float tensor of z's shape and device")
        return unfused_tail(bn, attn, None, act, z, lambda: shortcut, drop)
    attn_kw, act_name, act_param = args
    return tail_ops.attention_tail(z, shortcut, *norm, drop=drop, act=act_name, act_param=act_param, **attn_kw)


def tail_path(bn, attn, drop_path, act, names=("bn", "attn", "drop_path", "act")) -> str:
    """``"fused"`` or ``"unfused: <why>"`` for these modules (independent of
    the input; an empty batch, export or a batch of one in training still
    take the modules themselves)."""
    args = tail_args(bn, attn, drop_path, act, names)
    return "fused" if type(args) is tuple else "unfused: " + args


class AttentionTail(nn.Module):
    """``y = act(drop_path(attn(bn(z))) + shortcut)`` fused, around the
    modules you give it (the very objects: no new parameters; keys
    ``bn.*``, ``attn.*``).

    ``bn``: an ``nn.BatchNorm2d`` (or an int: a new one with that many
    channels); ``attn``: triton_attn's or timm's ``SEModule``,
    ``EffectiveSEModule``, ``EcaModule``, ``CecaModule`` or None; ``act``: a
    module, a name or None (identity), ReLU by default; ``drop_path``: timm's
    ``DropPath`` or None."""

    def __init__(self, bn: Union[nn.Module, int], attn: Optional[nn.Module] = None,
                 act: Union[nn.Module, str, None] = "relu", drop_path: Optional[nn.Module] = None):
        super().__init__()
        self.bn = nn.BatchNorm2d(bn) if isinstance(bn, int) else bn
        self.attn = attn
        self.drop_path = drop_path
        self.act = create_act_layer(act, inplace=True) if act is not None else nn.Identity()

    def tail_path(self) -> str:
        """``"fused"`` or ``"unfused: <why>"``."""
        return tail_path(self.bn, self.attn, self.drop_path, self.act)

    def forward(self, z: torch.Tensor, shortcut: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``act(drop_path(attn(bn(z))) + shortcut)`` for z [N, C, H, W] (the
        conv's output) and a shortcut of z's shape (or None: no add).

        Where it runs: the fused op ``triton_attn::tail_fwd``/``tail_bwd``
        (``triton_attn/ops/tail.py``): on CUDA tensors its Triton kernels read z
        twice forward (BatchNorm's statistics and the attention's pooling in
        one pass; then y = act(a*g*z + b*g + shortcut) in one), twice backward;
        on CPU the same kernels under Triton's interpreter when
        ``TRITON_INTERPRET=1`` was set before importing triton_attn, else the
        reference composition in PyTorch. BatchNorm runs exactly as
        ``nn.BatchNorm2d``: batch statistics in training (running statistics,
        ``num_batches_tracked`` and momentum None updated as PyTorch does),
        running statistics in eval; drop_path's mask is drawn as timm draws it.

        The modules themselves run instead (``bn``, ``attn``, ``drop_path``,
        ``+``, ``act``, so hooks fire and PyTorch's own errors are raised) for
        a norm that is not exactly ``nn.BatchNorm2d`` (SyncBatchNorm,
        GroupNorm...), an attention or act without a fused form (CBAM for
        now), hooks on these modules, an empty z, a training batch with one
        value per channel (PyTorch's ValueError), and while exporting (ONNX,
        ``torch.jit.trace``); ``tail_path()`` says which, and the
        ``triton_attn`` logger says why once. ``torch.fx`` records one
        ``call_module`` node; ``torch.compile`` keeps the ``triton_attn::`` ops.

        Dtypes fp32/fp16/bf16/fp64 (statistics and gates in fp32, fp64 for
        fp64); y has z's shape, dtype and memory format."""
        if not isinstance(z, torch.Tensor):
            return fx_leaf(self, z, shortcut)
        check_input(z, self.bn.num_features, "z")
        return run_tail(self, z, lambda: shortcut, self.bn, self.attn, self.drop_path, self.act)

    __prepare_scriptable__ = not_scriptable
