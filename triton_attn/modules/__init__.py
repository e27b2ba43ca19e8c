from .cbam import CbamModule, LightCbamModule
from .eca import CecaModule, EcaModule
from .se import EffectiveSEModule, SEModule

__all__ = ["SEModule", "EffectiveSEModule", "EcaModule", "CecaModule", "CbamModule", "LightCbamModule"]
