"""Shapes worth tuning for: the activations real networks put attention
blocks on, at 224x224 input, each at batch 1 (inference) and 64 (training).
(C, H, W) are the tensors the SE/ECA block sees: the stage output for
ResNet-50, the expanded depthwise output for MobileNetV3 and EfficientNet."""
from __future__ import annotations

BATCHES = (1, 64)

STAGES: dict[str, tuple[tuple[int, int, int], ...]] = {
    # SE-ResNet-50 / ECA-ResNet-50: one block per bottleneck, on its output.
    "resnet50": ((256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)),
    # mobilenetv3_large_100: SE on the expanded channels of the SE bnecks.
    "mobilenetv3": ((72, 28, 28), (120, 28, 28), (480, 14, 14), (672, 14, 14), (672, 7, 7), (960, 7, 7)),
    # efficientnet_b0: SE in every MBConv, on the expanded depthwise output.
    "efficientnet_b0": (
        (32, 112, 112), (96, 56, 56), (144, 56, 56), (144, 28, 28), (240, 28, 28),
        (240, 14, 14), (480, 14, 14), (672, 14, 14), (672, 7, 7), (1152, 7, 7),
    ),
}


def preset_shapes(name: str) -> list[tuple[int, int, int, int]]:
    return [(n, c, h, w) for n in BATCHES for c, h, w in STAGES[name]]


def parse_shapes(text: str) -> list[tuple[int, int, int, int]]:
    """A preset name, or ``"N,C,H,W;N,C,H,W"``."""
    if text in STAGES:
        return preset_shapes(text)
    shapes = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        try:
            dims = tuple(int(v) for v in part.split(","))
        except ValueError:
            dims = ()
        if len(dims) != 4 or min(dims) < 1:
            raise ValueError(
                f"bad shape {part!r}: expected N,C,H,W with four positive integers, "
                f"or a preset ({', '.join(STAGES)})"
            )
        shapes.append(dims)
    if not shapes:
        raise ValueError(f"no shapes in {text!r}")
    return shapes
