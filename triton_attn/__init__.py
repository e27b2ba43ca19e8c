"""Fused Triton kernels for the attention blocks of CNNs: SE, ECA and CBAM.

Layers, top to bottom (each folder imports only from the layers below it):
``compat`` (convert, drop-in classes) -> ``modules`` -> ``functional`` ->
``ops`` (torch.library ops and autograd) -> ``launch`` (host launchers and
their PyTorch twins) -> ``tuning`` (config choice) -> ``kernels`` (device
code). ``runtime``, ``validation``, ``activations`` and ``reference`` are
shared leaves; ``autotune`` is the tuning CLI on top."""
import sys as _sys

from . import functional
from .activations import create_act_layer
from .compat import seed as seed_compat
from .compat.convert import ConversionReport, convert
from .compat.create_attn import create_attn, get_attn
from .compat.efficientnet import EfficientNetSqueezeExcite
from .compat.torchvision import SqueezeExcitation
from .modules import CbamModule, CecaModule, EcaModule, EffectiveSEModule, LightCbamModule, SEModule
from .modules.se import EffectiveSqueezeExcite, SqueezeExcite, make_divisible
from .runtime import INTERPRETED, torch_fallback

# ``import triton_attn.seed_compat`` / ``from triton_attn.seed_compat import X``
# keep working: the seed classes now live in compat/seed.py.
_sys.modules[__name__ + ".seed_compat"] = seed_compat

__version__ = "0.1.0"

__all__ = [
    "SEModule", "EffectiveSEModule", "EcaModule", "CecaModule", "CbamModule", "LightCbamModule",
    "SqueezeExcite", "EffectiveSqueezeExcite", "SqueezeExcitation", "EfficientNetSqueezeExcite",
    "seed_compat", "convert", "ConversionReport", "create_attn", "get_attn",
    "functional", "create_act_layer", "make_divisible", "torch_fallback", "INTERPRETED",
]
