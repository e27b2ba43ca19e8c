"""Fused Triton kernels for the attention blocks of CNNs: SE, ECA and CBAM."""
from . import functional, seed_compat
from ._runtime import INTERPRETED, torch_fallback
from .activations import create_act_layer
from .convert import ConversionReport, convert
from .create_attn import create_attn, get_attn
from .efficientnet_compat import EfficientNetSqueezeExcite
from .modules import CbamModule, CecaModule, EcaModule, EffectiveSEModule, LightCbamModule, SEModule
from .modules.se import EffectiveSqueezeExcite, SqueezeExcite, make_divisible
from .torchvision_compat import SqueezeExcitation

__version__ = "0.1.0"

__all__ = [
    "SEModule", "EffectiveSEModule", "EcaModule", "CecaModule", "CbamModule", "LightCbamModule",
    "SqueezeExcite", "EffectiveSqueezeExcite", "SqueezeExcitation", "EfficientNetSqueezeExcite",
    "seed_compat", "convert", "ConversionReport", "create_attn", "get_attn",
    "functional", "create_act_layer", "make_divisible", "torch_fallback", "INTERPRETED",
]
