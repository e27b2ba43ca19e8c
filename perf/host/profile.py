"""Where triton_attn's host time goes: cProfile over many stubbed calls, the
self time grouped by source file (our modules, torch's Python, torch's C++
ops, the rest) and the functions with the most self time. cProfile slows
Python calls more than C ones, so read the shares, not the absolute µs."""
from __future__ import annotations

import cProfile
import os
import pstats
from collections import defaultdict

import triton_attn

from .bench import WARMUP_CALLS, setup, step_fn, stubbed

OURS = os.path.dirname(os.path.dirname(os.path.abspath(triton_attn.__file__)))


def category(filename: str, name: str) -> str:
    """A profile entry's group: ``triton_attn/<file>`` (our code), ``torch
    (Python)``, ``torch ops (C++)`` (C functions of torch), ``<package>
    (Python)`` for other installed packages, ``Python builtins``, ``Python stdlib``."""
    if filename == "~":  # a C function: "{method 'x' of 'torch._C.TensorBase' objects}", "{built-in method torch.empty}"
        return "torch ops (C++)" if ("torch" in name or "Tensor" in name) else "Python builtins"
    path = os.path.abspath(filename)
    if "site-packages" in path:
        package = path.split("site-packages" + os.sep, 1)[1].split(os.sep, 1)[0]
        return f"{package} (Python)"
    if path.startswith(OURS + os.sep):
        return os.path.relpath(path, OURS)
    return "Python stdlib"


def _short(filename: str) -> str:
    path = os.path.abspath(filename)
    if "site-packages" in path:
        return path.split("site-packages" + os.sep, 1)[1]
    return os.path.relpath(path, OURS) if path.startswith(OURS + os.sep) else os.path.basename(path)


def profile_case(block: str, mode: str, shape, dtype, layout, calls: int = 200):
    """(µs per call under the profiler, [(group, share)], [(function, share)])."""
    module, x, dy = setup(block, "triton_attn", shape, dtype, layout)
    fn = step_fn(module, mode, x, dy)
    prof = cProfile.Profile()
    with stubbed("triton_attn") as records:
        for _ in range(WARMUP_CALLS):
            fn()
            records.clear()
        prof.enable()
        for _ in range(calls):
            fn()
            records.clear()
        prof.disable()
    stats = pstats.Stats(prof)
    total = sum(v[2] for v in stats.stats.values()) or 1e-12  # self times add up to the total
    groups: dict[str, float] = defaultdict(float)
    funcs = []
    for (filename, line, name), (_cc, _nc, tottime, _cum, _callers) in stats.stats.items():
        groups[category(filename, name)] += tottime
        where = name if filename == "~" else f"{_short(filename)}:{line}({name})"
        funcs.append((where, tottime))
    by_group = sorted(((g, t / total) for g, t in groups.items()), key=lambda p: -p[1])
    top = sorted(((f, t / total) for f, t in funcs), key=lambda p: -p[1])[:12]
    return total / calls * 1e6, by_group, top


def report(block: str, mode: str, shape, dtype, layout, calls: int = 200) -> str:
    us, by_group, top = profile_case(block, mode, shape, dtype, layout, calls)
    label = "x".join(map(str, shape))
    lines = [f"{block} {mode} {label} {str(dtype).removeprefix('torch.')} {layout}: "
             f"{us:.0f} µs per call under cProfile (inflated; shares of self time below)"]
    lines += [f"  {share * 100:5.1f} %  {group}" for group, share in by_group[:10]]
    lines.append("  top functions by self time:")
    lines += [f"  {share * 100:5.1f} %  {where}" for where, share in top]
    return "\n".join(lines)
