"""Timing one call of a block on the host.

CPU time (``time.process_time_ns``, all threads; one intra-op thread) per call:
each repeat runs enough calls to last ``MIN_REPEAT_S``, after a warm-up; the
median over repeats is reported, with the wall-clock median beside it."""
from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass

import torch

from triton_attn import runtime

from ..traffic.blocks import build
from ..traffic.count import summarize
from ..traffic.step import make_inputs, measure_step

PROVIDERS = ("triton_attn", "eager")
MODES = ("fwd", "fwd+bwd")
WARMUP_CALLS = 3
MIN_REPEAT_S = 0.02


@dataclass
class Timing:
    us: float  # median CPU µs per call
    us_wall: float  # median wall-clock µs per call
    calls: int  # per repeat
    repeats: int


def step_fn(module, mode: str, x: torch.Tensor, dy: torch.Tensor):
    """One call of the block: inference, or a training step (forward from a
    leaf that requires grad, backward from dy; grads reset to None first, as
    ``zero_grad(set_to_none=True)``)."""
    params = list(module.parameters())
    if mode == "fwd":
        module.eval()

        def fn():
            with torch.no_grad():
                module(x)

        return fn
    if mode != "fwd+bwd":
        raise ValueError(f"unknown mode {mode!r}")
    module.train()
    leaf = x.detach().requires_grad_(True)

    def fn():
        for p in params:
            p.grad = None
        leaf.grad = None
        module(leaf).backward(dy)

    return fn


def time_fn(fn, repeats: int, min_repeat_s: float = MIN_REPEAT_S) -> Timing:
    for _ in range(WARMUP_CALLS):
        fn()
    start = time.perf_counter()
    fn()
    one = max(time.perf_counter() - start, 1e-6)
    calls = max(1, int(min_repeat_s / one))
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time_ns(), time.perf_counter_ns()
        for _ in range(calls):
            fn()
        cpu.append((time.process_time_ns() - c0) / calls / 1e3)
        wall.append((time.perf_counter_ns() - w0) / calls / 1e3)
    return Timing(statistics.median(cpu), statistics.median(wall), calls, repeats)


def setup(block: str, provider: str, shape, dtype: torch.dtype, layout: str):
    """(module, x, dy) of a provider: the same seeded CPU tensors for both."""
    module = build(provider, block, shape[1], dtype)
    x, dy = make_inputs(shape, dtype, layout)
    return module, x, dy


def stubbed(provider: str):
    """Stub the launches for triton_attn (a fresh record list per call is not
    needed: clearing is outside the timed module call's cost, and tiny)."""
    return runtime.stubbed_launches() if provider == "triton_attn" else contextlib.nullcontext([])


def launches(block: str, provider: str, mode: str, shape, dtype, layout) -> int:
    """Launches of one call (Triton, stubbed, + counted torch ops), from a
    separate untimed call with the aten log on."""
    module, x, dy = setup(block, provider, shape, dtype, layout)
    records = measure_step(module, provider, mode, x, dy, "stub")
    return summarize(records, x.numel() * x.element_size())["launches"]


def time_case(block: str, provider: str, mode: str, shape, dtype, layout, repeats: int) -> Timing:
    module, x, dy = setup(block, provider, shape, dtype, layout)
    fn = step_fn(module, mode, x, dy)
    with stubbed(provider) as records:
        def call():
            fn()
            records.clear()

        return time_fn(call, repeats)
