"""Functional forms of the fused blocks. Each validates its inputs (once:
the modules validate themselves and call the ops directly) and runs the
block's op from ``triton_attn.ops``, so it works under autograd and
torch.compile. While exporting (``torch.onnx.export``, ``torch.jit.trace``:
``runtime.exporting()``) they compute with standard PyTorch ops instead
(``triton_attn.reference``'s arithmetic, in x's dtype), so the exported graph
needs no triton_attn."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .ops import cbam as _cbam
from .ops import eca as _eca
from .ops import se as _se
from .ops import tail as _tail
from .ops import unfused as _unfused
from .activations import GATE_CODES, HIDDEN_ACTS
from . import reference as _reference
from .runtime import acc_dtype, exporting
from .validation import (
    check_cbam_input, check_choice, check_input, check_name, check_param, check_pool_nonempty, check_real,
)


def _flat_rows(w: torch.Tensor, name: str) -> tuple[int, int]:
    if w.dim() not in (2, 4) or (w.dim() == 4 and tuple(w.shape[2:]) != (1, 1)):
        raise ValueError(f"{name} must be [out, in] or [out, in, 1, 1], got shape {tuple(w.shape)}")
    return w.shape[0], w.shape[1]


def _check_fc(x, weight, bias, name: str, c_in: int, c_out: int | None) -> int:
    """A 1x1 conv / linear layer of the gate MLP: device, dtype, shape, bias.
    Returns its output width."""
    check_param(weight, x, f"{name}_weight")
    out, got_in = _flat_rows(weight, f"{name}_weight")
    if got_in != c_in:
        raise ValueError(f"{name}_weight expects {got_in} input channels but {c_in} come in")
    if c_out is not None and out != c_out:
        raise ValueError(f"{name}_weight has shape {tuple(weight.shape)}, expected [{c_out}, {c_in}(, 1, 1)]")
    check_param(bias, x, f"{name}_bias", shape=(out,))
    return out


def se(
    x: torch.Tensor,
    fc1_weight: torch.Tensor,
    fc1_bias: torch.Tensor | None = None,
    fc2_weight: torch.Tensor | None = None,
    fc2_bias: torch.Tensor | None = None,
    *,
    pool: str = "avg",
    act: str = "relu",
    act_param: float = 0.0,
    gate: str = "sigmoid",
) -> torch.Tensor:
    """Squeeze-and-excitation: ``x * gate(fc2(act(fc1(pool(x)))))``.

    ``pool``: ``"avg"``, ``"max"`` or ``"avgmax"`` (0.5 * mean + 0.5 * amax,
    timm's ``add_maxpool``). Weights as ``[out, in]`` or ``[out, in, 1, 1]``.
    Without ``fc2_weight`` the gate is ``gate(fc1(pool(x)))`` (EffectiveSE).
    ``act_param`` is LeakyReLU's slope. Pooling and gate math run in fp32."""
    check_input(x)
    C = x.shape[1]
    check_choice(pool, "pool", _se.POOL_MODES)
    act = check_name(act, "act", HIDDEN_ACTS)
    gate = check_name(gate, "gate", GATE_CODES)
    act_param = check_real(act_param, "act_param")
    rd = _check_fc(x, fc1_weight, fc1_bias, "fc1", C, None)
    if fc2_weight is None:
        if rd != C:
            raise ValueError(f"without fc2, fc1 must map C -> C, got {rd} outputs for C={C}")
        if fc2_bias is not None:
            raise ValueError("fc2_bias given without fc2_weight")
    else:
        _check_fc(x, fc2_weight, fc2_bias, "fc2", rd, C)
    check_pool_nonempty(x, pool)
    if exporting():
        return _reference.se_reference(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, pool=pool, act=act, act_param=act_param, gate=gate)
    # Empty x runs the same op: the launchers skip empty grids and keep
    # PyTorch's semantics (the mean over an empty H*W is NaN).
    return _se.se(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, pool, act, act_param, gate)


def eca(
    x: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor | None = None,
    *,
    circular: bool = False,
    gate: str = "sigmoid",
) -> torch.Tensor:
    """Efficient channel attention: ``x * gate(conv1d_k(mean_hw(x)))`` with one
    odd-sized filter across channels, zero padding (or circular: CECA)."""
    check_input(x)
    check_param(conv_weight, x, "conv_weight")
    if conv_weight.dim() == 0 or conv_weight.numel() != conv_weight.shape[-1]:
        raise ValueError(f"conv_weight must be [k] or [1, 1, k] (one filter), got {tuple(conv_weight.shape)}")
    K = conv_weight.numel()
    if K % 2 != 1:
        raise ValueError(f"conv_weight must have an odd number of taps, got {K} (shape {tuple(conv_weight.shape)})")
    check_param(conv_bias, x, "conv_bias", numel=1)
    gate = check_name(gate, "gate", GATE_CODES)
    if exporting():
        return _reference.eca_reference(x, conv_weight, conv_bias, circular=bool(circular), gate=gate)
    return _eca.eca(x, conv_weight, conv_bias, bool(circular), gate)


def channel_pool(x: torch.Tensor, mode: str = "avg") -> torch.Tensor:
    """Pooled statistics over H*W in fp32: ``"avg"``/``"max"`` -> [N, C];
    ``"avgmax"`` -> ([N, C] mean, [N, C] amax) from one pass. Differentiable."""
    check_input(x)
    check_choice(mode, "mode", _se.POOL_MODES)
    check_pool_nonempty(x, mode, "mode")
    if exporting():
        xf = x.to(acc_dtype(x.dtype))
        mean, amax = xf.mean((2, 3)), xf.amax((2, 3)) if mode != "avg" else None
    else:
        mean, amax = _unfused.pool_hw(x, mode != "max", mode != "avg")
    if mode == "avg":
        return mean
    if mode == "max":
        return amax
    return mean, amax


def channel_scale(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``x * g[:, :, None, None]`` with g of shape [N, C] (or [N, C, 1, 1])."""
    check_input(x)
    check_param(g, x, "g")
    N, C = x.shape[:2]
    if g.numel() != N * C or g.shape[:2] != x.shape[:2]:
        raise ValueError(f"g must be [N, C] = [{N}, {C}] (or [N, C, 1, 1]), got {tuple(g.shape)}")
    if exporting():
        acc = acc_dtype(x.dtype)
        return (x.to(acc) * g.reshape(N, C, 1, 1).to(acc)).to(x.dtype)
    return _unfused.scale(x, g.reshape(N, C))


def cbam(
    x: torch.Tensor,
    fc1_weight: torch.Tensor | None = None,
    fc1_bias: torch.Tensor | None = None,
    fc2_weight: torch.Tensor | None = None,
    fc2_bias: torch.Tensor | None = None,
    *,
    channel_conv: torch.Tensor | None = None,
    spatial_weight: torch.Tensor,
    spatial_concat: str = "mean_max",
    light: bool = False,
    spatial_bn: bool = False,
    bn_weight: torch.Tensor | None = None,
    bn_bias: torch.Tensor | None = None,
    bn_running_mean: torch.Tensor | None = None,
    bn_running_var: torch.Tensor | None = None,
    bn_training: bool = False,
    bn_momentum: float = 0.1,
    bn_eps: float = 1e-5,
    act: str = "relu",
    act_param: float = 0.0,
    gate: str = "sigmoid",
) -> torch.Tensor:
    """CBAM: channel attention, then spatial attention, fused (4 passes over x
    forward, 6 backward; see ``triton_attn/ops/cbam.py``).

    Channel attention ``ca = gate(f(mean_hw(x)) + f(amax_hw(x)))``, f either
    the shared MLP ``fc2(act(fc1(.)))`` (timm, seed "FC": ``fc1_weight
    [rd, C(, 1, 1)]``, ``fc2_weight [C, rd(, 1, 1)]``, biases optional), or
    ``channel_conv``: one odd 1-D filter across channels, zero padding, no bias
    (seed "Conv", ECA's conv: ``[k]`` or ``[1, 1, k]``).
    Spatial attention ``sa = gate(bn(conv2d(maps, spatial_weight, padding=k//2)))``
    over ``maps`` = mean and amax over C of ``x * ca``, stacked as
    ``spatial_concat``: ``"mean_max"`` (timm) or ``"max_mean"`` (official
    CBAM, seed). ``spatial_weight``: ``[1, 2, k, k]``, k odd (3, 5, 7).
    Output ``x * ca * sa``.

    ``light=True``: timm's LightCbamModule, ``ca = sigmoid(f(0.5*mean + 0.5*amax))``
    and one map ``0.5*mean_c + 0.5*amax_c`` (``spatial_weight [1, 1, k, k]``).

    ``spatial_bn``: BatchNorm on the conv output, with ``F.batch_norm``'s
    arguments (``bn_weight``, ``bn_bias``, ``bn_running_mean``, ``bn_running_var``,
    ``bn_training``, ``bn_momentum``, ``bn_eps``): in training it normalises
    with batch statistics and updates the running ones in place (as
    ``F.batch_norm`` does, momentum already resolved by the caller); in eval it
    uses the running ones. Without ``spatial_bn`` (seed), no norm.
    ``act``/``act_param``: the MLP's hidden activation (LeakyReLU slope);
    ``gate``: both gates' non-linearity. Gate math runs in fp32."""
    check_input(x)
    N, C, H, W = x.shape
    if (fc1_weight is None) == (channel_conv is None):
        raise ValueError("cbam needs exactly one channel function: fc1_weight/fc2_weight (MLP) or channel_conv")
    if channel_conv is not None:
        check_param(channel_conv, x, "channel_conv")
        if channel_conv.dim() not in (1, 3) or channel_conv.numel() != channel_conv.shape[-1] or channel_conv.numel() % 2 != 1:
            raise ValueError(f"channel_conv must be [k] or [1, 1, k] with k odd, got {tuple(channel_conv.shape)}")
        if any(t is not None for t in (fc1_bias, fc2_weight, fc2_bias)):
            raise ValueError("channel_conv replaces the MLP: fc1_bias/fc2_weight/fc2_bias must be None")
    else:
        if fc2_weight is None:
            raise ValueError("the CBAM MLP needs fc2_weight")
        rd = _check_fc(x, fc1_weight, fc1_bias, "fc1", C, None)
        _check_fc(x, fc2_weight, fc2_bias, "fc2", rd, C)
    check_cbam_input(x, bool(spatial_bn), bool(bn_training))
    check_param(spatial_weight, x, "spatial_weight")
    maps = 1 if light else 2
    sw = tuple(spatial_weight.shape)
    if len(sw) != 4 or sw[:2] != (1, maps) or sw[2] != sw[3] or sw[2] % 2 != 1:
        raise ValueError(f"spatial_weight must be [1, {maps}, k, k] with k odd, got {sw}")
    check_choice(spatial_concat, "spatial_concat", _cbam.SPATIAL_CONCATS)
    act = check_name(act, "act", HIDDEN_ACTS)
    gate = check_name(gate, "gate", GATE_CODES)
    act_param = check_real(act_param, "act_param")
    bn_eps = check_real(bn_eps, "bn_eps")
    spatial_bn, bn_training, light = bool(spatial_bn), bool(bn_training), bool(light)
    if spatial_bn:
        for t, name in ((bn_weight, "bn_weight"), (bn_bias, "bn_bias"), (bn_running_mean, "bn_running_mean"), (bn_running_var, "bn_running_var")):
            check_param(t, x, name, numel=1)
        if (bn_running_mean is None) != (bn_running_var is None):
            raise ValueError("give both bn_running_mean and bn_running_var, or neither")
        if not bn_training and bn_running_mean is None:
            raise ValueError("spatial BatchNorm in eval mode (bn_training=False) needs bn_running_mean and bn_running_var")
        bn_momentum = check_real(bn_momentum, "bn_momentum")
    if exporting() or x.numel() == 0:
        # Standard ops (an empty x: nothing to launch, and F.batch_norm gives
        # PyTorch's empty-batch behaviour).
        bn = None
        if spatial_bn:
            def bn(z):
                return F.batch_norm(z, bn_running_mean, bn_running_var, bn_weight, bn_bias, bn_training, bn_momentum, bn_eps)
        return _reference.cbam_reference(
            x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, channel_conv=channel_conv, spatial_weight=spatial_weight, bn=bn,
            spatial_concat=spatial_concat, act=act, act_param=act_param, gate=gate, light=light,
        )
    return _cbam.cbam(
        x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, channel_conv, spatial_weight,
        spatial_concat=spatial_concat, light=light, spatial_bn=spatial_bn, bn_weight=bn_weight, bn_bias=bn_bias,
        bn_running_mean=bn_running_mean, bn_running_var=bn_running_var, bn_training=bn_training,
        bn_momentum=bn_momentum, bn_eps=bn_eps, act=act, act_param=act_param, gate=gate,
    )


# --- the attention tail of a ResNet block (issue 14) ------------------------

def _tail_se_weights(z, w):
    """SE / EffectiveSE: fc1 [rd, C(,1,1)] (+bias), fc2 [C, rd(,1,1)] (+bias)
    or None (EffectiveSE: fc1 maps C -> C)."""
    C = z.shape[1]
    rd = _check_fc(z, w["fc1_weight"], w["fc1_bias"], "fc1", C, None)
    if w["fc2_weight"] is None:
        if rd != C:
            raise ValueError(f"without fc2 (EffectiveSE), fc1 must map C -> C, got {rd} outputs for C={C}")
        if w["fc2_bias"] is not None:
            raise ValueError("fc2_bias given without fc2_weight")
    else:
        _check_fc(z, w["fc2_weight"], w["fc2_bias"], "fc2", rd, C)
    return w["fc1_weight"], w["fc1_bias"], w["fc2_weight"], w["fc2_bias"]


def _tail_eca_weights(z, w):
    """ECA / CECA: one odd filter [k] or [1, 1, k], an optional 1-element bias."""
    cw = w["conv_weight"]
    if cw is None:
        raise ValueError("attn='eca' needs conv_weight")
    check_param(cw, z, "conv_weight")
    if cw.dim() == 0 or cw.numel() != cw.shape[-1] or cw.numel() % 2 != 1:
        raise ValueError(f"conv_weight must be [k] or [1, 1, k] with k odd, got {tuple(cw.shape)}")
    check_param(w["conv_bias"], z, "conv_bias", numel=1)
    return cw, w["conv_bias"], None, None


#: attn name -> (the weight arguments it takes, their check returning the op's
#: w1, b1, w2, b2). A new attention type of the tail op is one entry here.
_TAIL_ATTNS = {
    "none": ((), lambda z, w: (None, None, None, None)),
    "se": (("fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias"), _tail_se_weights),
    "eca": (("conv_weight", "conv_bias"), _tail_eca_weights),
}


def attention_tail(
    z: torch.Tensor,
    shortcut: torch.Tensor | None = None,
    *,
    bn_weight: torch.Tensor | None,
    bn_bias: torch.Tensor | None,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    num_batches_tracked: torch.Tensor | None = None,
    bn_training: bool,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    attn: str = "none",
    fc1_weight: torch.Tensor | None = None,
    fc1_bias: torch.Tensor | None = None,
    fc2_weight: torch.Tensor | None = None,
    fc2_bias: torch.Tensor | None = None,
    conv_weight: torch.Tensor | None = None,
    conv_bias: torch.Tensor | None = None,
    pool: str = "avg",
    attn_act: str = "relu",
    attn_act_param: float = 0.0,
    gate: str = "sigmoid",
    circular: bool = False,
    drop: torch.Tensor | None = None,
    act: str = "relu",
    act_param: float = 0.0,
) -> torch.Tensor:
    """The tail of a ResNet block, ``act(drop * attn(batch_norm(z)) + shortcut)``,
    fused: two passes over z forward, two backward (``triton_attn/ops/tail.py``).

    ``z``: the last conv's output [N, C, H, W]; ``shortcut``: a tensor of z's
    shape (any float dtype: it is added in fp32) or None.
    BatchNorm takes ``F.batch_norm``'s arguments, except the count:
    ``bn_training`` uses batch statistics (in training, or in eval without
    running statistics), and then updates ``running_mean``/``running_var``
    in place when given (unbiased variance, as ``nn.BatchNorm2d``), with
    ``momentum``, or with the cumulative average ``1 / num_batches_tracked``
    when ``momentum`` is None. ``num_batches_tracked``, when given, is
    incremented here (once per training call that updates the statistics):
    do not increment it yourself, as ``nn.BatchNorm2d.forward`` does before
    calling ``F.batch_norm``. ``bn_weight``/``bn_bias`` None: ``affine=False``.

    ``attn``: ``"se"`` (``fc1_weight [rd, C(, 1, 1)]``, ``fc2_weight [C, rd(, 1, 1)]``,
    biases optional; no ``fc2_weight``: EffectiveSE, fc1 C -> C), ``pool``
    ``"avg"``/``"max"``/``"avgmax"``, hidden ``attn_act`` (``attn_act_param``:
    LeakyReLU's slope); ``"eca"`` (``conv_weight [k]`` or ``[1, 1, k]``, k odd,
    optional 1-element ``conv_bias`` (CECA with an act), ``circular``: CECA);
    ``"none"``. ``gate``: sigmoid, hard_sigmoid or identity. ``drop``: timm's
    drop_path factor per sample [N] (0 or 1/keep_prob), or None. ``act``: the
    block's final activation (relu, silu, identity, or any of
    ``triton_attn.activations.HIDDEN_ACTS``).

    Statistics and gate math accumulate in fp32 (fp64 for fp64 z); y has
    z's shape, dtype and memory format. Differentiable in z, the shortcut,
    the BatchNorm affine parameters and the attention's weights. Errors as
    PyTorch's: training with one value per channel (N*H*W == 1) is
    ``ValueError: Expected more than 1 value per channel when training``
    (raised before anything is counted); an empty batch gives an empty y
    (the batch still counts in ``num_batches_tracked``)."""
    check_input(z, name="z")
    N, C, H, W = z.shape
    if shortcut is not None:
        check_param(shortcut, z, "shortcut")
        if shortcut.shape != z.shape:
            raise ValueError(f"shortcut has shape {tuple(shortcut.shape)}, expected z's {tuple(z.shape)}")
    for t, name in ((bn_weight, "bn_weight"), (bn_bias, "bn_bias"), (running_mean, "running_mean"), (running_var, "running_var")):
        check_param(t, z, name, shape=(C,))
    if (running_mean is None) != (running_var is None):
        raise ValueError("give both running_mean and running_var, or neither")
    if not isinstance(bn_training, bool):
        raise TypeError(f"bn_training must be a bool, got {type(bn_training).__name__}")
    if not bn_training and running_mean is None:
        raise ValueError("bn_training=False (eval) normalises with running_mean and running_var: give them")
    if num_batches_tracked is not None:
        if not isinstance(num_batches_tracked, torch.Tensor) or num_batches_tracked.numel() != 1:
            raise TypeError("num_batches_tracked must be a one-element tensor (nn.BatchNorm2d's buffer) or None")
        if num_batches_tracked.device != z.device:
            raise ValueError(f"num_batches_tracked is on {num_batches_tracked.device} but z is on {z.device}")
    if momentum is not None:
        momentum = check_real(momentum, "momentum")
    elif bn_training and running_mean is not None and num_batches_tracked is None:
        raise ValueError("momentum=None (cumulative average) needs num_batches_tracked to count the batches")
    eps = check_real(eps, "eps")
    if not isinstance(attn, str) or attn not in _TAIL_ATTNS:
        check_choice(attn, "attn", list(_TAIL_ATTNS))
    names, check_weights = _TAIL_ATTNS[attn]
    given = dict(fc1_weight=fc1_weight, fc1_bias=fc1_bias, fc2_weight=fc2_weight, fc2_bias=fc2_bias,
                 conv_weight=conv_weight, conv_bias=conv_bias)
    stray = [k for k, v in given.items() if v is not None and k not in names]
    if stray:
        raise ValueError(f"attn={attn!r} takes {list(names) or 'no weights'}, got {stray}")
    w1, b1, w2, b2 = check_weights(z, given)
    check_choice(pool, "pool", _se.POOL_MODES)
    if attn != "se" and pool != "avg":
        raise ValueError(f"pool={pool!r} applies to attn='se' only (ECA pools the mean)")
    attn_act = check_name(attn_act, "attn_act", HIDDEN_ACTS)
    attn_act_param = check_real(attn_act_param, "attn_act_param")
    gate = check_name(gate, "gate", GATE_CODES)
    act = check_name(act, "act", HIDDEN_ACTS)
    act_param = check_real(act_param, "act_param")
    if drop is not None:
        check_param(drop, z, "drop")
        if drop.numel() != N or drop.shape[0] != N:
            raise ValueError(f"drop must hold one factor per sample, [N] = [{N}] (or [N, 1, 1, 1]), got {tuple(drop.shape)}")
        drop = drop.reshape(N)
    if attn == "se":
        check_pool_nonempty(z, pool)
    if bn_training and N * H * W == 1:
        # F.batch_norm's own message (nn.BatchNorm2d raises it too).
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {z.size()}")
    circular = bool(circular)
    if exporting():
        # Standard ops only (ONNX, torch.jit.trace): the reference composition.
        if bn_training and running_mean is not None and num_batches_tracked is not None:
            num_batches_tracked.add_(1)
            if momentum is None:
                momentum = 1.0 / float(num_batches_tracked)
        return _reference.attention_tail_reference(
            z, shortcut, bn_weight, bn_bias, running_mean, running_var, bn_training,
            0.0 if momentum is None else momentum, eps, attn, w1, b1, w2, b2, pool=pool, attn_act=attn_act,
            attn_act_param=attn_act_param, gate=gate, circular=circular, drop=drop, act=act, act_param=act_param,
        )
    return _tail.attention_tail(
        z, shortcut, bn_weight, bn_bias, running_mean, running_var, num_batches_tracked, bn_training, momentum, eps,
        attn, w1, b1, w2, b2, pool=pool, attn_act=attn_act, attn_act_param=attn_act_param, gate=gate,
        circular=circular, drop=drop, act=act, act_param=act_param,
    )


# torch.fx: a call of a functional form from traced code becomes one
# call_function node (the GraphModule then calls it, fused op included)
# instead of failing on the Proxy in the input checks.
for _name in ("se", "eca", "cbam", "channel_pool", "channel_scale", "attention_tail"):
    torch.fx.wrap(_name)
del _name
