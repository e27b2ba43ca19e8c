"""What each step runs: the GPU plan (real preset shapes, batch 64 at 224²)
and the dry run (the same plan on tiny shapes, on CPU, in seconds).

Everything a step iterates over is listed here in priority order: a step
that runs out of time has done the first items, and skipped (and recorded)
the rest."""
from __future__ import annotations

from dataclasses import dataclass

from ..shapes import GPU_QUICK_SHAPES, GPU_SHAPES, RESNET50_STAGES, Shape

#: (dtype, layout) groups of the block benchmark, in the order the issue asks.
BENCH_GROUPS = (
    ("bfloat16", "channels_last"), ("bfloat16", "nchw"),
    ("float16", "channels_last"), ("float16", "nchw"),
    ("float32", "channels_last"), ("float32", "nchw"),
)
#: Passes within a group, (blocks, modes, shapes): the rows the targets are
#: stated on (SE and ECA forward, CBAM forward+backward) first on the
#: profile's first shapes, then on the other shapes, then the other modes. A
#: run cut short has every target measured on some shapes.
BENCH_PASSES = (
    (("se", "eca"), ("fwd",), "first"),
    (("cbam",), ("fwd+bwd",), "first"),
    (("se", "eca"), ("fwd",), "rest"),
    (("cbam",), ("fwd+bwd",), "rest"),
    (("se", "eca"), ("fwd+bwd",), "all"),
    (("cbam",), ("fwd",), "all"),
)

#: Step weights (shares of the budget): a step that finishes early passes
#: its rest on, the last step gets whatever is left.
WEIGHTS = {"correctness": 0.13, "bench": 0.30, "l2": 0.07, "e2e": 0.40, "autotune": 0.10}


@dataclass(frozen=True)
class Profile:
    name: str
    # step 1: correctness
    check_shapes: tuple  # (N, C, H, W)
    check_dtypes: tuple
    check_layouts: tuple
    diagonal: bool  # True: each variant at one (dtype, layout) combination, cycling (dry run)
    graph_shape: tuple
    big_shape: tuple  # > 2**31 elements on the GPU (past 2**31 across samples)
    big_sample_shape: tuple  # one sample of > 2**31 elements (offsets within a sample past 2**31)
    overhead_shape: tuple
    overhead_calls: int
    # step 2: block benchmark
    bench_shapes: tuple
    bench_first_shapes: tuple  # the shapes each group's target rows are measured on first
    bench_groups: tuple
    bench_modes: tuple
    bench_compile: bool  # False: the compile provider is skipped (recorded)
    warmup_ms: int
    rep_ms: int
    # step 3: L2-aware tile order
    l2_shapes: tuple
    l2_blocks: tuple
    l2_modes: tuple
    l2_rounds: int
    # step 4: end to end
    e2e_pairs: tuple  # (attention model, its plain twin)
    e2e_model_kwargs: dict  # extra timm.create_model arguments (the dry run: one block per stage)
    e2e_batch: int
    e2e_size: int
    e2e_classes: int
    e2e_warmup: int
    e2e_steps: int
    e2e_compile: bool
    compile_estimate_s: float  # until one compile has been timed
    latency_shapes: tuple
    latency_calls: int
    # step 5: autotune
    autotune_shapes: tuple
    autotune_blocks: str
    # boxes
    min_box_s: dict
    reserve_s: float
    quick_timer: bool  # dry run: a timer with fewer samples (the CPU wall clock)


def _stages(N):
    return tuple((N, c, s, s) for c, s in RESNET50_STAGES)


GPU = Profile(
    name="gpu",
    # each ResNet-50 stage at batch 8 and two MobileNetV3 shapes at batch 1
    check_shapes=_stages(8) + ((1, 72, 28, 28), (1, 960, 7, 7)),
    check_dtypes=("bfloat16", "float16", "float32"),
    check_layouts=("channels_last", "nchw"),
    diagonal=False,
    graph_shape=(8, 256, 28, 28),
    # 129 x 64 x 512 x 512 = 2.16e9 elements: the last sample starts at element 2**31
    big_shape=(129, 64, 512, 512),
    big_sample_shape=(1, 2048, 1100, 1000),  # 2.25e9 elements, 4.5 GB in bf16
    overhead_shape=(1, 64, 8, 8),
    overhead_calls=200,
    bench_shapes=tuple(GPU_SHAPES),
    bench_first_shapes=tuple(GPU_QUICK_SHAPES),  # ResNet-50 stages at batch 32, two MobileNetV3 shapes
    bench_groups=BENCH_GROUPS,
    bench_modes=("fwd", "fwd+bwd"),
    bench_compile=True,
    warmup_ms=5,
    rep_ms=25,
    # x from 1.6 MB to 205 MB in bf16: below, around and well past an H100/H200's 50-60 MB of L2
    l2_shapes=_stages(32) + _stages(128) + _stages(8) + _stages(64),
    l2_blocks=("se", "eca", "cbam"),
    l2_modes=("fwd", "fwd+bwd"),
    l2_rounds=2,
    e2e_pairs=(("seresnet50", "resnet50"), ("ecaresnet50d", "resnet50d")),
    e2e_model_kwargs={},
    e2e_batch=64,
    e2e_size=224,
    e2e_classes=1000,
    e2e_warmup=3,
    e2e_steps=15,
    e2e_compile=True,
    compile_estimate_s=75.0,
    latency_shapes=((1, 256, 56, 56), (1, 2048, 7, 7)),
    latency_calls=200,
    autotune_shapes=(),  # the resnet50 preset, filled in by the step (batch 1, then 64)
    autotune_blocks="se,eca,cbam",
    min_box_s={"correctness": 15, "bench": 30, "l2": 8, "e2e": 20, "autotune": 10},
    reserve_s=25.0,
    quick_timer=False,
)

DRY_RUN = Profile(
    name="dry-run",
    check_shapes=((2, 16, 5, 4),),
    check_dtypes=("bfloat16", "float16", "float32"),
    check_layouts=("channels_last", "nchw"),
    diagonal=True,
    graph_shape=(2, 16, 4, 4),
    big_shape=(3, 8, 2, 3),  # the same checks, at sizes the interpreter runs at once
    big_sample_shape=(1, 8, 3, 5),
    overhead_shape=(1, 16, 4, 4),
    overhead_calls=3,
    bench_shapes=(Shape(1, 8, 3, 3, "dry_run"),),
    bench_first_shapes=(Shape(1, 8, 3, 3, "dry_run"),),
    bench_groups=BENCH_GROUPS[:1],  # the other groups run the same code (correctness covers their kernels)
    bench_modes=("fwd", "fwd+bwd"),
    bench_compile=False,
    warmup_ms=0,
    rep_ms=1,
    l2_shapes=((2, 16, 4, 4),),
    l2_blocks=("se",),
    l2_modes=("fwd", "fwd+bwd"),
    l2_rounds=1,
    e2e_pairs=(("seresnet18", "resnet18"),),
    e2e_model_kwargs={"layers": [1, 1, 1, 1]},  # 4 SE blocks: interpreted kernels cost ~15 ms a launch
    e2e_batch=2,
    e2e_size=32,
    e2e_classes=10,
    e2e_warmup=0,
    e2e_steps=1,
    e2e_compile=False,
    compile_estimate_s=600.0,
    latency_shapes=((1, 16, 4, 4),),
    latency_calls=3,
    autotune_shapes=((1, 8, 4, 4),),
    autotune_blocks="se",
    min_box_s={"correctness": 0.2, "bench": 0.2, "l2": 0.2, "e2e": 0.2, "autotune": 0.2},
    reserve_s=1.0,
    quick_timer=True,
)
