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
from .compat.revert import RevertReport, revert
from .compat.efficientnet import EfficientNetSqueezeExcite
from .compat.torchvision import SqueezeExcitation
from .modules import CbamModule, CecaModule, EcaModule, EffectiveSEModule, LightCbamModule, SEModule
from .modules.se import EffectiveSqueezeExcite, SqueezeExcite, make_divisible
# The fused attention tail (issue 14; convert(model, fuse_tail=True) builds the blocks).
from .modules.resnet import FusedTailBasicBlock, FusedTailBottleneck
from .modules.tail import AttentionTail
from .runtime import INTERPRETED, torch_fallback, where_it_runs

# Every triton_attn:: op gets its decomposition (run_decompositions(), ONNX):
# after the imports above, which registered the ops.
from .ops import decompositions as _decompositions  # noqa: E402

_decompositions.register_all()

# ``import triton_attn.seed_compat`` / ``from triton_attn.seed_compat import X``
# keep working: the seed classes now live in compat/seed.py.
_sys.modules[__name__ + ".seed_compat"] = seed_compat

__version__ = "0.1.0"

__all__ = [
    "SEModule", "EffectiveSEModule", "EcaModule", "CecaModule", "CbamModule", "LightCbamModule",
    "SqueezeExcite", "EffectiveSqueezeExcite", "SqueezeExcitation", "EfficientNetSqueezeExcite",
    "seed_compat", "convert", "ConversionReport", "revert", "RevertReport", "create_attn", "get_attn",
    "functional", "create_act_layer", "make_divisible", "torch_fallback", "INTERPRETED", "where_it_runs",
]
