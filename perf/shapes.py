"""Benchmark shapes, taken from the networks these blocks live in (at 224x224).

Training presets run every mode; batch-1 inference presets run the forward
only. Hidden widths follow timm's defaults for every shape (SE: C/16 rounded to
8; CBAM: C/16), not each network's own rule: the MLP on N x C costs nothing
next to the passes over x, and one rule keeps a shape's rows comparable."""
from __future__ import annotations

from dataclasses import dataclass

from . import MODES


@dataclass(frozen=True)
class Shape:
    N: int
    C: int
    H: int
    W: int
    preset: str
    inference: bool = False

    @property
    def modes(self) -> tuple[str, ...]:
        return ("fwd",) if self.inference else MODES

    @property
    def label(self) -> str:
        hw = f"{self.H}²" if self.H == self.W else f"{self.H}×{self.W}"
        return f"{self.N}×{self.C}×{hw}"


def _square(preset, N, channels_and_sizes, inference=False):
    return [Shape(N, c, s, s, preset, inference) for c, s in channels_and_sizes]


# ResNet-50 stage outputs (where SE-ResNet / ECA-ResNet / CBAM-ResNet attach).
RESNET50_STAGES = [(256, 56), (512, 28), (1024, 14), (2048, 7)]
# MobileNetV3-Large: expanded channels of the bottlenecks that carry SE.
MOBILENETV3_LARGE_SE = [(72, 28), (120, 28), (480, 14), (672, 14), (672, 7), (960, 7)]
# EfficientNet-B0: expanded channels after the depthwise conv of each MBConv.
EFFICIENTNET_B0_SE = [
    (32, 112), (96, 56), (144, 56), (144, 28), (240, 28), (240, 14), (480, 14), (672, 14), (672, 7), (1152, 7),
]


def _unique(shapes):
    seen, out = set(), []
    for s in shapes:
        key = (s.N, s.C, s.H, s.W)
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


GPU_SHAPES = _unique(
    _square("resnet50", 32, RESNET50_STAGES)
    + _square("resnet50", 128, RESNET50_STAGES)
    + _square("mobilenetv3_large", 1, MOBILENETV3_LARGE_SE, inference=True)
    + _square("efficientnet_b0", 1, EFFICIENTNET_B0_SE, inference=True)
)
GPU_QUICK_SHAPES = _unique(
    _square("resnet50", 32, RESNET50_STAGES)
    + _square("mobilenetv3_large", 1, [(72, 28), (960, 7)], inference=True)
)

# Without a GPU only the paths' overheads are meaningful: tiny shapes keep
# `python -m perf` short on a laptop or a CI runner.
CPU_SHAPES = [Shape(2, 64, 14, 14, "cpu_tiny"), Shape(1, 120, 28, 28, "cpu_tiny", inference=True)]
CPU_QUICK_SHAPES = CPU_SHAPES[:1]


def shapes_for(device_type: str, quick: bool) -> list[Shape]:
    if device_type == "cuda":
        return GPU_QUICK_SHAPES if quick else GPU_SHAPES
    return CPU_QUICK_SHAPES if quick else CPU_SHAPES


def shape_order(shapes=None) -> dict[tuple[int, int, int, int], int]:
    """Position of (N, C, H, W) in the preset lists: the x-axis order of the charts."""
    shapes = _unique(GPU_SHAPES + CPU_SHAPES if shapes is None else shapes)
    return {(s.N, s.C, s.H, s.W): i for i, s in enumerate(shapes)}
