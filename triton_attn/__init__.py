"""Fused Triton kernels for the channel-attention blocks of CNNs (SE, ECA)."""
from . import functional
from ._runtime import INTERPRETED, torch_fallback
from .activations import create_act_layer
from .modules import CecaModule, EcaModule, EffectiveSEModule, SEModule
from .modules.se import EffectiveSqueezeExcite, SqueezeExcite, make_divisible

__version__ = "0.1.0"

__all__ = [
    "SEModule", "EffectiveSEModule", "EcaModule", "CecaModule", "SqueezeExcite", "EffectiveSqueezeExcite",
    "functional", "create_act_layer", "make_divisible", "torch_fallback", "INTERPRETED",
]
