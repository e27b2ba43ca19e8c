"""What each provider runs for a block, on the same inputs and the same weights.

eager        timm-style PyTorch modules (``triton_attn.reference.Eager*``)
compile      torch.compile of those modules (default mode, static shapes)
triton_attn  our modules, loaded with the eager modules' state_dict
copy         the bandwidth floor: a kernel that moves exactly the mode's minimal
             bytes (fwd ``x.clone()``; bwd ``dy + x``; fwd+bwd both)
"""
from __future__ import annotations

import copy
from itertools import cycle

import torch
from torch import nn

import triton_attn
from triton_attn import make_divisible
from triton_attn.reference import EagerEcaModule, EagerSEModule

try:
    from triton_attn.reference import EagerCbamModule
except ImportError:  # CBAM lands separately; its rows are skipped until then
    EagerCbamModule = None

CBAM_SPATIAL_KERNEL = 7

#: Fused attention tails (issue 14): ``act(attn(bn(z)) + shortcut)``, timed as
#: one module call on one input buffer (the shortcut is z's own buffer, so a
#: call reads one tensor and writes one). The perf.gpu harness asks for these.
TAIL_BLOCKS = ("se_tail", "eca_tail")


class EagerTail(nn.Module):
    """timm's block tail, eager: ``relu(attn(bn(z)) + shortcut)`` with
    nn.BatchNorm2d and the eager attention module (keys ``bn.*``, ``attn.*``,
    as ``triton_attn.modules.tail.AttentionTail``)."""

    def __init__(self, channels: int, attn: nn.Module):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.attn = attn
        self.act = nn.ReLU(inplace=True)

    def forward(self, z, shortcut=None):
        x = self.attn(self.bn(z))
        x += z if shortcut is None else shortcut
        return self.act(x)


def rd_channels(block: str, channels: int) -> int:
    """timm's default hidden width: SEModule C/16 rounded to 8, CbamModule C/16."""
    return make_divisible(channels / 16, 8 if block in ("se", "se_tail") else 1, round_limit=0.0)


def unavailable_reason(block: str) -> str | None:
    """Why a block cannot be benchmarked in this checkout (None when it can)."""
    if block in TAIL_BLOCKS and not hasattr(triton_attn, "AttentionTail"):
        return "triton_attn.AttentionTail is missing"
    if block == "cbam":
        if EagerCbamModule is None:
            return "triton_attn.reference.EagerCbamModule is missing"
        if not hasattr(triton_attn, "CbamModule"):
            return "triton_attn.CbamModule is missing"
    return None


if hasattr(triton_attn, "AttentionTail"):
    class _OursTail(triton_attn.AttentionTail):
        """The fused tail on one input buffer, as ``EagerTail``: no shortcut
        given = z's own buffer."""

        def forward(self, z, shortcut=None):
            return super().forward(z, z if shortcut is None else shortcut)


def make_reference(block: str, channels: int) -> nn.Module:
    """The eager module of a block, with weights drawn from a fixed seed."""
    torch.manual_seed(0)
    rd = rd_channels(block, channels)
    if block == "se":
        return EagerSEModule(channels, rd)
    if block == "eca":
        return EagerEcaModule(channels)
    if block == "cbam":
        return EagerCbamModule(channels, rd, spatial_kernel_size=CBAM_SPATIAL_KERNEL)
    if block in TAIL_BLOCKS:
        tail = EagerTail(channels, EagerSEModule(channels, rd) if block == "se_tail" else EagerEcaModule(channels))
        with torch.no_grad():  # statistics an eval-mode fold really uses
            tail.bn.weight.uniform_(0.5, 1.5), tail.bn.bias.normal_(0, 0.2)
            tail.bn.running_mean.normal_(0, 0.2), tail.bn.running_var.uniform_(0.5, 1.5)
        return tail
    raise ValueError(f"unknown block {block!r}")


def _ours(block: str, channels: int) -> nn.Module:
    rd = rd_channels(block, channels)
    if block == "se":
        return triton_attn.SEModule(channels, rd_channels=rd)
    if block == "eca":
        return triton_attn.EcaModule(channels=channels)
    if block in TAIL_BLOCKS:
        attn = triton_attn.SEModule(channels, rd_channels=rd) if block == "se_tail" else triton_attn.EcaModule(channels=channels)
        return _OursTail(channels, attn)
    return triton_attn.CbamModule(channels, rd_channels=rd, spatial_kernel_size=CBAM_SPATIAL_KERNEL)


def build(provider: str, block: str, reference: nn.Module, channels: int) -> nn.Module | None:
    """The module a provider times (None for ``copy``), on the reference's
    device and dtype."""
    p = next(reference.parameters())
    if provider == "eager":
        return reference
    if provider == "compile":  # compiled lazily, inside measure.run's config patch
        return torch.compile(copy.deepcopy(reference), dynamic=False)
    if provider == "triton_attn":
        ours = _ours(block, channels).to(device=p.device, dtype=p.dtype)
        ours.load_state_dict(reference.state_dict(), strict=True)
        return ours
    if provider == "copy":
        return None
    raise ValueError(f"unknown provider {provider!r}")


def bench_fn(module: nn.Module | None, mode: str, xs: list[torch.Tensor], dys: list[torch.Tensor]):
    """A step to time and the tensors whose ``.grad`` is reset between steps.

    Each call takes the next of several input buffers (the caller sizes the
    pool so that small shapes do not sit in L2). ``fwd`` is inference (eval mode,
    no autograd graph); ``bwd`` replays the backward of graphs built here, once
    per buffer; ``fwd+bwd`` is one training step of the block."""
    if module is None:
        pairs = cycle(list(zip(xs, dys)))
        steps = {
            "fwd": lambda x, dy: x.clone(),
            "bwd": lambda x, dy: torch.add(dy, x),
            "fwd+bwd": lambda x, dy: (x.clone(), torch.add(dy, x)),
        }
        step = steps[mode]
        return (lambda: step(*next(pairs))), []

    module.train(mode != "fwd")
    if mode == "fwd":
        inputs = cycle(xs)

        def fn():
            with torch.no_grad():
                module(next(inputs))

        return fn, []

    leaves = [x.detach().requires_grad_(True) for x in xs]
    params = [p for p in module.parameters() if p.requires_grad]
    if mode == "bwd":
        graphs = cycle([(module(x), dy) for x, dy in zip(leaves, dys)])

        def fn():
            y, dy = next(graphs)
            y.backward(dy, retain_graph=True)

    elif mode == "fwd+bwd":
        pairs = cycle(list(zip(leaves, dys)))

        def fn():
            x, dy = next(pairs)
            module(x).backward(dy)

    else:
        raise ValueError(f"unknown mode {mode!r}")
    return fn, leaves + params
