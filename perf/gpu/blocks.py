"""The block variants the GPU command checks and times, each with its float64
reference, and the detection of what this build has (the fused attention
tail arrives later: its entries report "not available in this build" until
``triton_attn.convert`` takes ``fuse_tail``).

A variant builds a ``Case``: our module, and a reference module computing
the same function with ``triton_attn.reference``'s pure-PyTorch math from a
copy of our module's parameters (so gradients compare by parameter name).
The reference runs in float64 for the check, and in the input's dtype as
the eager baseline a result outside tolerance is compared with."""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

import triton_attn
from triton_attn import functional as TF
from triton_attn.reference import cbam_reference, eca_reference, se_reference


def tail_unavailable() -> str | None:
    """Why the fused attention tail cannot run here (None when it can)."""
    try:
        params = inspect.signature(triton_attn.convert).parameters
    except (TypeError, ValueError):
        return "not available in this build (triton_attn.convert has no signature)"
    if "fuse_tail" not in params:
        return "not available in this build (triton_attn.convert has no fuse_tail)"
    return None


def cbam_tail_unavailable() -> str | None:
    """The tail op fuses CBAM once ``triton_attn.ops.tail.ATTNS`` has it;
    until then convert leaves CBAM tails unfused (nothing to check or time)."""
    from triton_attn.ops import tail as tail_ops

    if "cbam" not in getattr(tail_ops, "ATTNS", ()):
        return "not available in this build (the tail op has no CBAM yet: convert leaves CBAM tails unfused)"
    return None


def timm_unavailable() -> str | None:
    try:
        import timm  # noqa: F401
    except Exception as e:  # ImportError, or a broken install
        return f"timm not importable ({type(e).__name__}: {e})"
    return None


class RefModule(nn.Module):
    """``fn(m, x)`` over a copy ``m`` of our module: the reference math on the
    very same parameters (BatchNorm modules in it run as plain torch)."""

    def __init__(self, ours: nn.Module, fn: Callable, dtype: torch.dtype):
        super().__init__()
        self.m = copy.deepcopy(ours).to(dtype)
        self.fn = fn

    def forward(self, *inputs):
        return self.fn(self.m, *inputs)


class FunctionalSE(nn.Module):
    """SE with max pooling (no module has it: ``TF.se(pool="max")``), on an
    SEModule's parameters."""

    def __init__(self, channels: int):
        super().__init__()
        self.se = triton_attn.SEModule(channels)

    def forward(self, x):
        se = self.se
        return TF.se(x, se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias, pool="max")


@dataclass
class Case:
    ours: nn.Module
    reference: Callable[[torch.dtype], nn.Module]  # dtype -> module computing the reference in that dtype
    training: bool = True
    inputs: int = 1  # tensors the module takes, all of x's shape (a tail takes z and the shortcut)
    param_prefix: str = "m."  # the reference module's parameter names = prefix + ours'


def _bn_stats(module: nn.Module) -> None:
    """Non-trivial BatchNorm affine parameters and running statistics (eval mode
    then really uses them)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.normal_(1.0, 0.2)
                m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)


def _se_ref(pool):
    return lambda m, x: se_reference(x, m.fc1.weight, m.fc1.bias, m.fc2.weight, m.fc2.bias, pool=pool)


def _se_max_ref(m, x):
    se = m.se
    return se_reference(x, se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias, pool="max")


def _ese_ref(m, x):
    return se_reference(x, m.fc.weight, m.fc.bias, None, None, pool="avg", gate="hard_sigmoid")


def _eca_ref(circular):
    return lambda m, x: eca_reference(x, m.conv.weight, m.conv.bias, circular=circular)


def _cbam_ref(light):
    def ref(m, x):
        ch, conv = m.channel, m.spatial.conv
        return cbam_reference(
            x, ch.fc1.weight, ch.fc1.bias, ch.fc2.weight, ch.fc2.bias, spatial_weight=conv.conv.weight,
            bn=None if isinstance(conv.bn, nn.Identity) else conv.bn, light=light,
        )

    return ref


def _case(ours: nn.Module, fn: Callable, training: bool = True) -> Case:
    _bn_stats(ours)
    ours.train(training)
    return Case(ours, lambda dtype: RefModule(ours, fn, dtype).train(training), training)


def _tail_case(attn: str, C: int) -> Case:
    """timm's Bottleneck with ``attn`` (C -> C, stride 1): ours is
    ``convert(block, fuse_tail=True)``, the reference the unconverted block."""
    from timm.layers import get_attn
    from timm.models.resnet import Bottleneck

    block = Bottleneck(C, C // 4, attn_layer=get_attn(attn))
    _bn_stats(block)
    ours, _ = triton_attn.convert(block, fuse_tail=True)
    return Case(ours, lambda dtype: copy.deepcopy(block).to(dtype).train(), True, 1, "")


#: variant -> (builder(C) -> Case, why it cannot run or None). The three
#: tail lines are all it takes to check the fused tail once it exists.
VARIANTS: dict[str, tuple[Callable[[int], Case], Callable[[], str | None]]] = {
    "se_avg": (lambda C: _case(triton_attn.SEModule(C), _se_ref("avg")), lambda: None),
    "se_max": (lambda C: _case(FunctionalSE(C), _se_max_ref), lambda: None),
    "se_avgmax": (lambda C: _case(triton_attn.SEModule(C, add_maxpool=True), _se_ref("avgmax")), lambda: None),
    "ese": (lambda C: _case(triton_attn.EffectiveSEModule(C), _ese_ref), lambda: None),
    "eca": (lambda C: _case(triton_attn.EcaModule(channels=C), _eca_ref(False)), lambda: None),
    "ceca": (lambda C: _case(triton_attn.CecaModule(channels=C), _eca_ref(True)), lambda: None),
    "cbam_train": (lambda C: _case(triton_attn.CbamModule(C), _cbam_ref(False), True), lambda: None),
    "cbam_eval": (lambda C: _case(triton_attn.CbamModule(C), _cbam_ref(False), False), lambda: None),
    "lightcbam_train": (lambda C: _case(triton_attn.LightCbamModule(C), _cbam_ref(True), True), lambda: None),
    "lightcbam_eval": (lambda C: _case(triton_attn.LightCbamModule(C), _cbam_ref(True), False), lambda: None),
    "se_tail": (lambda C: _tail_case("se", C), lambda: tail_unavailable() or timm_unavailable()),
    "eca_tail": (lambda C: _tail_case("eca", C), lambda: tail_unavailable() or timm_unavailable()),
    "cbam_tail": (lambda C: _tail_case("cbam", C), lambda: tail_unavailable() or cbam_tail_unavailable() or timm_unavailable()),
}

#: The blocks of the CUDA-graph, stream and >2**31 checks (eval: a graph
#: replay must not move BatchNorm statistics between the compared runs).
SPECIAL_VARIANTS = ("se_avgmax", "eca", "ceca", "cbam_eval")

#: Blocks of the benchmark (perf.providers knows them); the tail blocks join
#: once perf.providers builds them (a two-input block: z and the shortcut).
BENCH_BLOCKS = ("se", "eca", "cbam")
BENCH_TAIL_BLOCKS = ("se_tail", "eca_tail", "cbam_tail")


def bench_block_unavailable(block: str) -> str | None:
    """Why the block benchmark cannot time ``block`` in this checkout."""
    from ..providers import make_reference, unavailable_reason

    if block in BENCH_TAIL_BLOCKS:
        why = tail_unavailable() or (cbam_tail_unavailable() if block == "cbam_tail" else None)
        if why:
            return why
        try:
            make_reference(block, 16)
        except Exception as e:  # perf.providers does not build the tail yet
            return f"perf.providers cannot build {block} yet ({type(e).__name__}: {e})"
    return unavailable_reason(block)
