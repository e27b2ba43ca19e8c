"""Activations the fused paths understand, by name, with closed-form
derivatives so the fused backward needs no autograd graph.

A module, class or name that is not listed here still works: the modules then
take the unfused path (Triton pooling + the layer itself + Triton scale)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Gate codes understood by kernels/gate_math.py ``apply_gate``.
GATE_CODES = {"identity": 0, "sigmoid": 1, "hard_sigmoid": 2}

#: Hidden activations of the SE MLP handled by the fused path.
HIDDEN_ACTS = ("identity", "relu", "relu6", "leaky_relu", "silu", "gelu", "gelu_tanh", "hard_swish", "sigmoid", "tanh", "hard_sigmoid")

_ALIASES = {
    "swish": "silu", "hardswish": "hard_swish", "hardsigmoid": "hard_sigmoid",
    "none": "identity", "linear": "identity",
}

# Module classes whose forward is exactly the named function. Matched by
# defining module and class name so timm is recognised without importing it.
_KNOWN_CLASSES = {
    ("torch.nn.modules.activation", "ReLU"): "relu",
    ("torch.nn.modules.activation", "ReLU6"): "relu6",
    ("torch.nn.modules.activation", "LeakyReLU"): "leaky_relu",
    ("torch.nn.modules.activation", "SiLU"): "silu",
    ("torch.nn.modules.activation", "GELU"): "gelu",
    ("torch.nn.modules.activation", "Hardswish"): "hard_swish",
    ("torch.nn.modules.activation", "Hardsigmoid"): "hard_sigmoid",
    ("torch.nn.modules.activation", "Sigmoid"): "sigmoid",
    ("torch.nn.modules.activation", "Tanh"): "tanh",
    ("torch.nn.modules.linear", "Identity"): "identity",
    ("timm.layers.activations", "Swish"): "silu",
    ("timm.layers.activations", "Sigmoid"): "sigmoid",
    ("timm.layers.activations", "Tanh"): "tanh",
    ("timm.layers.activations", "HardSwish"): "hard_swish",
    ("timm.layers.activations", "HardSigmoid"): "hard_sigmoid",
    ("timm.layers.activations", "GELU"): "gelu",
    ("timm.layers.activations", "GELUTanh"): "gelu_tanh",
    ("timm.layers.activations_me", "SwishMe"): "silu",
    ("timm.layers.activations_me", "HardSwishMe"): "hard_swish",
    ("timm.layers.activations_me", "HardSigmoidMe"): "hard_sigmoid",
}

_NAME_TO_MODULE = {
    "identity": nn.Identity, "relu": nn.ReLU, "relu6": nn.ReLU6, "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU, "gelu": nn.GELU, "hard_swish": nn.Hardswish, "hard_sigmoid": nn.Hardsigmoid,
    "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "mish": nn.Mish, "elu": nn.ELU,
}


def canonical_name(name: str) -> str:
    name = name.lower()
    return _ALIASES.get(name, name)


def create_act_layer(layer, inplace: bool = False) -> nn.Module:
    """timm-style: a name, a class, a module instance or None (identity)."""
    if layer is None:
        return nn.Identity()
    if isinstance(layer, nn.Module):
        return layer
    if isinstance(layer, str):
        name = canonical_name(layer)
        if name == "gelu_tanh":
            return nn.GELU(approximate="tanh")
        if name not in _NAME_TO_MODULE:
            raise ValueError(f"unknown activation name {layer!r}; known: {sorted(_NAME_TO_MODULE)}")
        cls = _NAME_TO_MODULE[name]
    elif isinstance(layer, type) and issubclass(layer, nn.Module):
        cls = layer
    elif callable(layer):
        return layer()
    else:
        raise TypeError(f"activation must be a name, an nn.Module class or instance, got {type(layer).__name__}")
    try:
        return cls(inplace=inplace)
    except TypeError:
        return cls()


def fused_act_spec(module: nn.Module) -> tuple[str, float] | None:
    """(name, parameter) when ``module`` computes a known function exactly,
    else None. The parameter is LeakyReLU's slope (0 otherwise)."""
    key = (type(module).__module__, type(module).__name__)
    name = _KNOWN_CLASSES.get(key)
    if name is None:
        return None
    if name == "leaky_relu":
        return name, float(module.negative_slope)
    if name == "gelu" and getattr(module, "approximate", "none") == "tanh":
        return "gelu_tanh", 0.0
    return name, 0.0


def act_forward(h: torch.Tensor, name: str, param: float = 0.0) -> torch.Tensor:
    if name == "identity":
        return h
    if name == "relu":
        return F.relu(h)
    if name == "relu6":
        return F.relu6(h)
    if name == "leaky_relu":
        return F.leaky_relu(h, param)
    if name == "silu":
        return F.silu(h)
    if name == "gelu":
        return F.gelu(h)
    if name == "gelu_tanh":
        return F.gelu(h, approximate="tanh")
    if name == "hard_swish":
        return F.hardswish(h)
    if name == "hard_sigmoid":
        return F.hardsigmoid(h)
    if name == "sigmoid":
        return torch.sigmoid(h)
    if name == "tanh":
        return torch.tanh(h)
    raise ValueError(f"activation {name!r} has no fused form; known: {HIDDEN_ACTS}")


def act_backward(h: torch.Tensor, grad: torch.Tensor, name: str, param: float = 0.0) -> torch.Tensor:
    """grad * act'(h), with PyTorch's own conventions at the kinks."""
    zero = torch.zeros((), dtype=h.dtype, device=h.device)
    if name == "identity":
        return grad
    if name == "relu":  # torch: threshold_backward(grad, result, 0), which passes a NaN h's gradient
        return torch.where(h <= 0, zero, grad)
    if name == "relu6":  # torch: hardtanh_backward, open interval (NaN h -> 0)
        return torch.where((h > 0) & (h < 6), grad, zero)
    if name == "leaky_relu":
        return torch.where(h > 0, grad, grad * param)
    if name == "silu":
        s = torch.sigmoid(h)
        return grad * s * (1 + h * (1 - s))
    if name == "gelu":
        cdf = 0.5 * (1 + torch.erf(h * (1 / math.sqrt(2))))
        pdf = torch.exp(-0.5 * h * h) * (1 / math.sqrt(2 * math.pi))
        return grad * (cdf + h * pdf)
    if name == "gelu_tanh":
        k = math.sqrt(2 / math.pi)
        inner = k * (h + 0.044715 * h**3)
        t = torch.tanh(inner)
        return grad * (0.5 * (1 + t) + 0.5 * h * (1 - t * t) * k * (1 + 3 * 0.044715 * h * h))
    if name == "hard_swish":  # matches torch.nn.functional.hardswish at the kinks
        return torch.where(h <= -3, zero, torch.where(h < 3, grad * (h / 3 + 0.5), grad))
    if name == "hard_sigmoid":  # torch: open interval (-3, 3)
        return torch.where((h > -3) & (h < 3), grad / 6, zero)
    if name == "sigmoid":
        s = torch.sigmoid(h)
        return grad * s * (1 - s)
    if name == "tanh":
        t = torch.tanh(h)
        return grad * (1 - t * t)
    raise ValueError(f"activation {name!r} has no fused form; known: {HIDDEN_ACTS}")


def gate_forward(z: torch.Tensor, gate: str) -> torch.Tensor:
    if gate not in GATE_CODES:
        raise ValueError(f"gate must be one of {sorted(GATE_CODES)}, got {gate!r}")
    return act_forward(z, gate)


def gate_backward(z: torch.Tensor, grad: torch.Tensor, gate: str) -> torch.Tensor:
    return act_backward(z, grad, gate)


#: Hidden activation codes of kernels/gate_math.py ``apply_act`` / ``act_backward``:
#: every fused hidden activation runs inside the SE gate kernels.
HIDDEN_ACT_CODES = {
    "identity": 0, "relu": 1, "relu6": 2, "leaky_relu": 3, "silu": 4,
    "hard_swish": 5, "hard_sigmoid": 6, "sigmoid": 7, "gelu": 8, "gelu_tanh": 9, "tanh": 10,
}
assert set(HIDDEN_ACT_CODES) == set(HIDDEN_ACTS)
