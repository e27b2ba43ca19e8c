"""What ``python -m perf traffic`` counts: cases and the default shape sets.

Bytes need Triton's interpreter, which runs ~1 ms of Python per program and
statement group, so the byte shapes are chosen to keep the default run to a
few minutes on two cores:

- ``1×256×14²``: ResNet-50 stage-1 channels with H·W scaled from 56² to 14²
  (a quarter of the pixels per side). Pass counts are ratios of x's bytes,
  set by which tensors each launch reads and writes, not by H·W, so the
  scaled shape gives the real ratios; at batch 1 a 132-SM plan splits every
  reduction, so the split partials and their combine are counted too.
- ``8×2048×7²``: ResNet-50 stage 4 at batch 8, unscaled: the issue's weight
  budget ("at 7×7 with large C the weights cost less than one pass at N ≥ 8")
  is about exactly this shape, and the fused tail's targets are stated for
  N ≥ 8. SE, CBAM and the SE tail (ECA's weights are k taps), bf16
  channels_last by default; ``--full`` adds the other dtype and layout.

Launches need no interpreter: with ``stubbed_launches`` the CUDA code path
runs on CPU tensors and each launch is recorded, not run, so every ResNet-50
stage shape is counted at batch 1 and 32 (eager on meta tensors: its aten ops
and their bytes, without the math). ``--full`` also counts bytes at the real
ResNet-50 stage shapes at batch 1 (slow: tens of minutes)."""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

from .blocks import PROVIDERS

BLOCKS = ("se", "eca", "cbam", "se_tail", "eca_tail")
DTYPES = ("bfloat16", "float32")
LAYOUTS = ("channels_last", "nchw")
#: Modes counted; "bwd" rows are the "bwd" phase of the fwd+bwd step.
STEP_MODES = ("fwd", "fwd+bwd")
MODES = ("fwd", "bwd", "fwd+bwd")
#: The GPU the heuristics plan for (TRITON_ATTN_SM_COUNT): an H100 SXM.
SM_COUNT = 132

RESNET50_STAGES = ((256, 56), (512, 28), (1024, 14), (2048, 7))
SCALED_SHAPE = (1, 256, 14, 14)
WEIGHT_SHAPE = (8, 2048, 7, 7)
LAUNCH_BATCHES = (1, 32)


@dataclass(frozen=True)
class Case:
    """One measured step: a block, a step mode (fwd or fwd+bwd), a provider,
    a shape, dtype and layout, and the instrument (``how``)."""

    block: str
    mode: str
    provider: str
    N: int
    C: int
    H: int
    W: int
    dtype: str
    layout: str
    how: str  # "interpreter" or "stub"

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.N, self.C, self.H, self.W)

    def to_dict(self) -> dict:
        return asdict(self)


def cases(shapes, how: str, blocks=BLOCKS, dtypes=DTYPES, layouts=LAYOUTS, providers=PROVIDERS, modes=STEP_MODES):
    return [
        Case(block, mode, provider, *shape, dtype, layout, how)
        for shape, block, dtype, layout, provider, mode in itertools.product(shapes, blocks, dtypes, layouts, providers, modes)
    ]


def default_plan(full: bool = False, blocks=BLOCKS, dtypes=DTYPES, layouts=LAYOUTS, providers=PROVIDERS) -> list[Case]:
    """The default cases (see the module docstring)."""
    def sub(wanted, allowed):
        return [v for v in wanted if v in allowed]

    plan = cases([SCALED_SHAPE], "interpreter", blocks, dtypes, layouts, providers)
    weight_blocks = sub(("se", "cbam", "se_tail"), blocks) if not full else list(blocks)
    plan += cases([WEIGHT_SHAPE], "interpreter", weight_blocks,
                  dtypes if full else sub(("bfloat16",), dtypes) or dtypes[:1],
                  layouts if full else sub(("channels_last",), layouts) or layouts[:1], providers)
    if full:
        plan += cases([(1, c, s, s) for c, s in RESNET50_STAGES], "interpreter", blocks, dtypes, layouts, providers)
    launch_shapes = [(n, c, s, s) for n in LAUNCH_BATCHES for c, s in RESNET50_STAGES]
    plan += cases(launch_shapes, "stub", blocks, dtypes, layouts, providers)
    return plan


def parse_shapes(text: str) -> list[tuple[int, int, int, int]]:
    """``"N,C,H,W;N,C,H,W"`` -> [(N, C, H, W), ...]."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        values = tuple(int(v) for v in part.split(","))
        if len(values) != 4 or min(values) < 1:
            raise ValueError(f"a shape is N,C,H,W with positive sizes, got {part!r}")
        out.append(values)
    if not out:
        raise ValueError("no shapes given")
    return out
