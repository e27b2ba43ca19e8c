"""Timers: ``triton.testing.do_bench`` on CUDA (CUDA events, L2 flushed before
each step), a wall clock on CPU where do_bench cannot run. Both return the
median, 20th and 80th percentile in milliseconds."""
from __future__ import annotations

import time

import torch

QUANTILES = (0.5, 0.2, 0.8)
WARMUP_STEPS = 3  # compiles, autotunes and fills the allocator before any timing


def warm_up(fn) -> None:
    for _ in range(WARMUP_STEPS):
        fn()


def cuda_timer(fn, grad_to_none, warmup_ms: int, rep_ms: int) -> tuple[float, float, float]:
    import triton.testing

    warm_up(fn)
    torch.cuda.synchronize()
    ms, p20, p80 = triton.testing.do_bench(
        fn, warmup=warmup_ms, rep=rep_ms, grad_to_none=grad_to_none or None, quantiles=list(QUANTILES)
    )
    return ms, p20, p80


def wall_clock_timer(fn, grad_to_none, warmup_ms: int, rep_ms: int) -> tuple[float, float, float]:
    warm_up(fn)
    deadline = time.perf_counter() + warmup_ms / 1e3
    while time.perf_counter() < deadline:
        fn()
    times = []
    deadline = time.perf_counter() + rep_ms / 1e3
    # At least five samples for the quantiles, however slow one step is.
    while len(times) < 5 or time.perf_counter() < deadline:
        for t in grad_to_none:
            t.grad = None
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    # torch.quantile, as do_bench summarizes its samples
    ms, p20, p80 = torch.quantile(torch.tensor(times, dtype=torch.float64), torch.tensor(QUANTILES, dtype=torch.float64)).tolist()
    return ms, p20, p80


def timer_for(device_type: str):
    return cuda_timer if device_type == "cuda" else wall_clock_timer
