"""One measured step of a block with the instruments on.

Modes: ``fwd`` is inference (eval mode, no autograd graph); ``fwd+bwd`` is a
training step of the block (train mode, so CBAM's spatial BatchNorm uses batch
statistics; x requires grad; backward from a random dy in y's layout), whose
records are stamped ``fwd`` then ``bwd`` so the backward alone can be reported.

Instruments (``how``):
``interpreter``  Triton's interpreter runs the kernels: every launch with its
                 loads and stores (``TritonTraffic``), plus the aten log. Needs
                 ``TRITON_INTERPRET=1`` before triton_attn was imported.
``stub``         ``triton_attn.runtime.stubbed_launches``: the CUDA code path
                 on CPU tensors with each launch recorded, not run (no bytes
                 for them), plus the aten log. Needs the interpreter off.
Eager has no Triton launches: under ``stub`` it runs on meta tensors (the
same aten ops and bytes, without the math), so real batch-32 shapes cost
nothing to count.

Every step is preceded by one unmeasured call of the same step (for
triton_attn with its launches stubbed, so it costs no interpretation): what
is counted is a steady-state call, not first-call set-up."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

import triton_attn
from triton_attn import runtime

from ..accounting.aten_log import AtenLog, AtenOp
from ..accounting.tensor_class import TensorClasses
from ..accounting.triton_traffic import LaunchTraffic, TritonTraffic

MODES = ("fwd", "fwd+bwd")
HOWS = ("interpreter", "stub")


@dataclass
class StepRecords:
    """What one step launched: Triton launches (``LaunchTraffic`` under the
    interpreter; under the stub a ``LaunchTraffic`` with a name and grid only)
    and the counted aten ops, each stamped with its phase."""

    how: str
    launches: list[LaunchTraffic] = field(default_factory=list)
    ops: list[AtenOp] = field(default_factory=list)


def make_inputs(shape, dtype: torch.dtype, layout: str, device: str = "cpu", values: bool = True):
    """x and dy in ``layout`` ("channels_last" or "nchw"): seeded normal
    values, or (``values=False``, for stubbed launches whose outputs are
    garbage anyway) uninitialised memory, which costs nothing at batch 32."""
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    if device == "meta" or not values:
        return tuple(torch.empty(shape, device=device, dtype=dtype, memory_format=fmt) for _ in range(2))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen).to(dtype).contiguous(memory_format=fmt)
    dy = torch.randn(shape, generator=gen).to(dtype).contiguous(memory_format=fmt)
    return x, dy


def _call(module, mode: str, x: torch.Tensor, dy: torch.Tensor, phases) -> None:
    """The step itself; ``phases(name)`` is called before each phase."""
    if mode == "fwd":
        module.eval()
        phases("fwd")
        with torch.no_grad():
            module(x)
        return
    if mode != "fwd+bwd":
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    module.train()
    for p in module.parameters():
        p.grad = None  # as optimizer.zero_grad(set_to_none=True): no accumulation op
    leaf = x.detach().requires_grad_(True)
    phases("fwd")
    y = module(leaf)
    phases("bwd")
    y.backward(dy)


def _check_how(how: str, provider: str) -> None:
    if how not in HOWS:
        raise ValueError(f"unknown instrument {how!r}; choose from {', '.join(HOWS)}")
    if provider != "triton_attn":
        return
    if how == "interpreter" and not triton_attn.INTERPRETED:
        raise RuntimeError("counting bytes needs TRITON_INTERPRET=1 set before triton_attn is imported")
    if how == "stub" and triton_attn.INTERPRETED:
        raise RuntimeError("stubbed launches need the interpreter off (TRITON_INTERPRET unset)")


def measure_step(module, provider: str, mode: str, x: torch.Tensor, dy: torch.Tensor, how: str) -> StepRecords:
    """Warm up, then run one step of ``mode`` under the ``how`` instruments."""
    _check_how(how, provider)
    ours = provider == "triton_attn"
    with runtime.stubbed_launches() if ours else contextlib.nullcontext():
        _call(module, mode, x, dy, lambda phase: None)

    weights = [*module.parameters(), *module.buffers()]
    classes = TensorClasses(x.numel(), weights, x_lead=x.shape[:2])
    records = StepRecords(how)
    log = AtenLog(classes)
    traffic = TritonTraffic(classify=classes.classify) if how == "interpreter" else None
    stub = None
    stub_phases: list = []  # (index of the first stubbed launch of a phase, phase)

    def phases(name):
        log.phase = name
        if traffic is not None:
            traffic.phase = name
        if stub is not None:
            stub_phases.append((len(stub), name))

    with contextlib.ExitStack() as stack:
        if traffic is not None:
            stack.enter_context(traffic)
        stub = stack.enter_context(runtime.stubbed_launches()) if (how == "stub" and ours) else None
        log.launch_count = (lambda: len(traffic.launches)) if traffic is not None else (lambda: len(stub or ()))
        stack.enter_context(log)
        _call(module, mode, x, dy, phases)
    records.ops = log.ops
    if traffic is not None:
        records.launches = traffic.launches
    elif stub is not None:
        records.launches = _stub_launches(stub, stub_phases)
    return records


def _stub_launches(stub: list, phases: list) -> list[LaunchTraffic]:
    out = []
    for i, (name, grid, _kwargs) in enumerate(stub):
        phase = None
        for start, p in phases:
            if start <= i:
                phase = p
        out.append(LaunchTraffic(name, tuple(grid), phase))
    return out
