"""The measuring loop: for each (block, shape, dtype, layout) build the inputs
once, every provider's module from one set of weights, time each mode, and
merge the rows into the device's CSV before moving on (a run cut short keeps
what it measured)."""
from __future__ import annotations

import gc
import itertools
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import torch
import torch._functorch.config
import triton

import triton_attn
from triton_attn.tuning.tuner import bar_safe_output, progress

from . import KEY
from .provenance import device_label, git_commit
from .providers import bench_fn, build, make_reference, unavailable_reason
from .shapes import Shape
from .store import csv_path, read_csv, update_csv
from .timing import timer_for

# A pool of input buffers at least twice the L2 cache, so that a small shape's
# next step does not find its input still cached (do_bench flushes L2 as well).
L2_MULTIPLE = 2
MAX_BUFFERS = 16
MAX_POOL_BYTES = 1 << 30

PASSES = {"fwd": 2, "bwd": 3, "fwd+bwd": 5}  # x in, y out | dy, x in, dx out | both


@dataclass
class Plan:
    device: torch.device
    blocks: list[str]
    modes: list[str]
    providers: list[str]
    dtypes: list[str]
    layouts: list[str]
    shapes: list[Shape]
    warmup_ms: int = 10
    rep_ms: int = 50
    resume: bool = False
    failures: list[str] = field(default_factory=list)
    #: time.monotonic() after which no new case starts (``python -m perf gpu``'s
    #: time box); the cases not reached are listed in ``skipped``.
    deadline: Optional[float] = None
    #: replaces timer_for(device.type) (the GPU command's dry run: fewer samples)
    timer: Optional[Callable] = None
    skipped: list[str] = field(default_factory=list)


def pass_bytes(shape: Shape, dtype: torch.dtype) -> int:
    """One pass over x: the unit of the traffic model."""
    return shape.N * shape.C * shape.H * shape.W * torch.finfo(dtype).bits // 8


def minimal_bytes(mode: str, shape: Shape, dtype: torch.dtype) -> int:
    return PASSES[mode] * pass_bytes(shape, dtype)


def buffer_count(shape: Shape, dtype: torch.dtype, device: torch.device) -> int:
    if device.type != "cuda":
        return 2
    nbytes = max(1, pass_bytes(shape, dtype))
    l2 = torch.cuda.get_device_properties(device).L2_cache_size
    return max(1, min(MAX_BUFFERS, math.ceil(L2_MULTIPLE * l2 / nbytes), MAX_POOL_BYTES // nbytes))


def make_inputs(shape: Shape, dtype: torch.dtype, layout: str, device: torch.device, count: int):
    """``count`` (x, dy) pairs, seeded: every provider sees the same tensors."""
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    gen = torch.Generator(device=device).manual_seed(1)
    size = (shape.N, shape.C, shape.H, shape.W)

    def one():
        return torch.randn(size, device=device, dtype=dtype, generator=gen).contiguous(memory_format=fmt)

    xs = [one() for _ in range(count)]
    dys = [one() for _ in range(count)]
    return xs, dys


def _done_keys(path: Path, commit: str) -> set[tuple]:
    if not path.exists():
        return set()
    df = read_csv(path)
    df = df[df["commit"] == commit]
    return set(df[[k for k in KEY if k != "device"]].itertuples(index=False, name=None))


def _work(plan: Plan, done: set[tuple]):
    """[(block, shape, dtype, layout, [(provider, mode), ...]), ...] still to measure."""
    out = []
    for block, shape, dtype, layout in itertools.product(plan.blocks, plan.shapes, plan.dtypes, plan.layouts):
        items = [
            (p, m)
            for p, m in itertools.product(plan.providers, plan.modes)
            if m in shape.modes and (block, m, p, shape.N, shape.C, shape.H, shape.W, dtype, layout) not in done
        ]
        if items:
            out.append((block, shape, dtype, layout, items))
    return out


def run(plan: Plan, results_dir: Path) -> tuple[Path, list[dict]]:
    """Measure the plan and merge it into ``results_dir/<device>.csv``; returns
    that path and the rows measured."""
    device = plan.device
    env = {
        "device": device_label(device), "torch": torch.__version__, "triton": triton.__version__,
        "commit": git_commit(),
    }
    path = csv_path(results_dir, env["device"])
    for block in plan.blocks:
        reason = unavailable_reason(block)
        if reason:
            print(f"perf: skipping {block}: {reason}")
    plan.blocks = [b for b in plan.blocks if not unavailable_reason(b)]
    work = _work(plan, _done_keys(path, env["commit"]) if plan.resume else set())
    timer = plan.timer or timer_for(device.type)
    total = sum(len(items) for *_, items in work)
    print(f"perf: {total} measurements on {env['device']} -> {path}")
    measured = []
    # AOTAutograd donates saved buffers to the backward by default, which
    # forbids retain_graph=True: the "bwd" mode replays each graph many times.
    # The bar draws only on a terminal (a log file gets no escape codes) and
    # leaves no second copy of itself; warnings print above it (bar_safe_output).
    with torch._functorch.config.patch(donated_buffer=False), bar_safe_output(), progress(
        total=total, unit="run", disable=None
    ) as bar:
        for block, shape, dtype_name, layout, items in work:
            if plan.deadline is not None and time.monotonic() >= plan.deadline:
                plan.skipped.append(f"{block} {shape.label} {dtype_name} {layout}: {len(items)} measurements")
                bar.update(len(items))
                continue
            bar.set_description(f"{block} {shape.label} {dtype_name} {layout}")
            rows = _measure_case(plan, env, timer, block, shape, dtype_name, layout, items, bar)
            update_csv(path, rows)
            measured.extend(rows)
    return path, measured


def _measure_case(plan, env, timer, block, shape, dtype_name, layout, items, bar):
    device, dtype = plan.device, getattr(torch, dtype_name)
    xs, dys = make_inputs(shape, dtype, layout, device, buffer_count(shape, dtype, device))
    reference = make_reference(block, shape.C).to(device=device, dtype=dtype)
    # Every module is built before any is run: training steps change BatchNorm
    # statistics, and all providers must start from the same state.
    modules = {}
    for provider in dict.fromkeys(p for p, _ in items):
        try:
            modules[provider] = build(provider, block, reference, shape.C)
        except Exception as exc:  # reported with each of its rows below
            modules[provider] = exc
    rows = []
    for provider, mode in items:
        try:
            if isinstance(modules[provider], Exception):
                raise modules[provider]
            fn, grads = bench_fn(modules[provider], mode, xs, dys)
            ms, p20, p80 = timer(fn, grads, plan.warmup_ms, plan.rep_ms)
        except Exception as exc:  # one failing provider must not lose the rest of a long run
            msg = f"{block} {mode} {provider} {shape.label} {dtype_name} {layout}: {type(exc).__name__}: {exc}"
            plan.failures.append(msg)
            bar.write(f"perf: FAILED {msg}")
        else:
            rows.append({
                "block": block, "mode": mode, "provider": provider,
                "N": shape.N, "C": shape.C, "H": shape.H, "W": shape.W, "dtype": dtype_name, "layout": layout,
                "ms": ms, "ms_p20": p20, "ms_p80": p80,
                "gbps": minimal_bytes(mode, shape, dtype) / (ms * 1e-3) / 1e9,
                **env,
                "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            })
        finally:
            fn = grads = None
            bar.update(1)
    del modules, reference, xs, dys
    # Each case compiles its own static-shape graphs; without a reset the
    # recompile limit would silently send later shapes to eager.
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows
