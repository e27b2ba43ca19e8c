"""Functional forms of the fused blocks. Each validates its inputs and calls
the torch.library ops, so it works under autograd and torch.compile."""
from __future__ import annotations

import torch

from . import eca as _eca
from . import se as _se
from . import unfused as _unfused
from .activations import GATE_CODES, HIDDEN_ACTS, canonical_name
from .validation import check_choice, check_input, check_param


def _flat_rows(w: torch.Tensor, name: str) -> tuple[int, int]:
    if w.dim() not in (2, 4) or (w.dim() == 4 and tuple(w.shape[2:]) != (1, 1)):
        raise ValueError(f"{name} must be [out, in] or [out, in, 1, 1], got shape {tuple(w.shape)}")
    return w.shape[0], w.shape[1]


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
    act = canonical_name(act)
    check_choice(act, "act", HIDDEN_ACTS)
    check_choice(canonical_name(gate), "gate", GATE_CODES)
    gate = canonical_name(gate)
    check_param(fc1_weight, x, "fc1_weight")
    rd, c_in = _flat_rows(fc1_weight, "fc1_weight")
    if c_in != C:
        raise ValueError(f"fc1_weight expects {c_in} input channels but x has {C}")
    check_param(fc1_bias, x, "fc1_bias", numel=rd)
    if fc2_weight is None:
        if rd != C:
            raise ValueError(f"without fc2, fc1 must map C -> C, got {rd} outputs for C={C}")
        if fc2_bias is not None:
            raise ValueError("fc2_bias given without fc2_weight")
    else:
        check_param(fc2_weight, x, "fc2_weight")
        out, r_in = _flat_rows(fc2_weight, "fc2_weight")
        if (out, r_in) != (C, rd):
            raise ValueError(f"fc2_weight has shape {tuple(fc2_weight.shape)}, expected [{C}, {rd}(, 1, 1)]")
        check_param(fc2_bias, x, "fc2_bias", numel=C)
    if x.shape[0] == 0 or x.numel() == 0:
        return _se_reference_path(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, pool, act, act_param, gate)
    y, _ = _se.se_fwd(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, pool, act, float(act_param), gate)
    return y


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
    K = conv_weight.numel()
    if K % 2 != 1:
        raise ValueError(f"conv_weight must have an odd number of taps, got {K} (shape {tuple(conv_weight.shape)})")
    if conv_weight.dim() == 3 and tuple(conv_weight.shape[:2]) != (1, 1):
        raise ValueError(f"conv_weight must be [1, 1, k] (one filter), got {tuple(conv_weight.shape)}")
    check_param(conv_bias, x, "conv_bias", numel=1)
    gate = canonical_name(gate)
    check_choice(gate, "gate", GATE_CODES)
    if x.numel() == 0:
        return _eca_reference_path(x, conv_weight, conv_bias, circular, gate)
    y, _ = _eca.eca_fwd(x, conv_weight, conv_bias, bool(circular), gate)
    return y


def channel_pool(x: torch.Tensor, mode: str = "avg") -> torch.Tensor:
    """Pooled statistics over H*W in fp32: ``"avg"``/``"max"`` -> [N, C];
    ``"avgmax"`` -> ([N, C] mean, [N, C] amax) from one pass. Differentiable."""
    check_input(x)
    check_choice(mode, "mode", _se.POOL_MODES)
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
    return _unfused.scale(x, g.reshape(N, C))


def _se_reference_path(x, w1, b1, w2, b2, pool, act, act_param, gate):
    """Empty inputs: PyTorch semantics (mean of nothing is NaN) without a launch."""
    from .reference import se_reference

    return se_reference(x, w1, b1, w2, b2, pool=pool, act=act, act_param=act_param, gate=gate)


def _eca_reference_path(x, w, b, circular, gate):
    from .reference import eca_reference

    return eca_reference(x, w, b, circular=circular, gate=gate)
