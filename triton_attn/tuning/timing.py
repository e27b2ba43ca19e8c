"""How long one launch of a candidate takes, in milliseconds.

Our own loop rather than ``triton.testing.do_bench``: its signature and
return modes changed between Triton 3.2 and 3.9, and the interpreter needs a
timer that needs no GPU at all.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

#: Bytes written before each timed CUDA run to push the previous run's data
#: out of L2 (H100/H200 L2 is 50 MB): a CNN's activation arrives from a conv
#: that streamed far more than L2 holds, so an L2-warm timing would flatter
#: small tiles that re-read.
_FLUSH_BYTES = 256 * 1024 * 1024


def cuda_ms(fn: Callable[[], object], warmup_ms: float = 5.0, rep_ms: float = 25.0) -> float:
    """Median of per-launch CUDA-event timings, L2 flushed before each."""
    fn()
    torch.cuda.synchronize()
    flush = torch.empty(_FLUSH_BYTES // 4, dtype=torch.int32, device="cuda")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        flush.zero_()
        fn()
    end.record()
    torch.cuda.synchronize()
    estimate = max(start.elapsed_time(end) / 5, 1e-3)
    for _ in range(max(1, int(warmup_ms / estimate))):
        fn()
    n = max(5, min(1000, int(rep_ms / estimate)))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for s, e in zip(starts, ends):
        flush.zero_()
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def wall_ms(fn: Callable[[], object], reps: int = 2) -> float:
    """Interpreter timing: best of ``reps`` wall-clock runs after one warm-up
    (which rewrites the kernel's AST once). It ranks configs by how much
    Python the interpreter executes, not by GPU speed: it exists so the
    tuning code runs, and is tested, without a GPU."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def bench_for(device: torch.device) -> Callable[[Callable[[], object]], float]:
    return cuda_ms if device.type == "cuda" else wall_ms
