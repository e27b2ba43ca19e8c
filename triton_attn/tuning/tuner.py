"""The tuning loop: time every pruned candidate of a kernel's space on the
launch at hand, keep the fastest, persist it.

Ours rather than ``triton.autotune``: the split over H*W changes host-side
buffer shapes and the grid, which a ``triton.autotune`` config cannot do,
and owning the loop keeps Triton 3.2-3.9 differences (``cache_results``,
custom ``do_bench``) out of the picture. Every candidate run allocates its
own outputs (the launchers' ``run(cfg)`` closures do), so trials never see
each other's writes.

Off unless asked for (``TRITON_ATTN_AUTOTUNE=1``, ``set_enabled(True)`` or
``with tuning():``): tuning each new shape under the interpreter would make
the test suite crawl, and a surprise pause mid-training is not wanted either.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from typing import Callable, TypeVar

import torch
from tqdm.auto import tqdm
from tqdm.contrib import DummyTqdmFile
from tqdm.contrib.logging import logging_redirect_tqdm

from ..runtime import env_raw
from . import registry, table, timing
from .config import LaunchConfig
from .key import KEY_FIELDS
from .spaces import Problem
from .table import Entry

T = TypeVar("T")

_enabled: bool | None = None
_progress: bool | None = None
_recorder: list | None = None


def enabled() -> bool:
    if _enabled is not None:
        return _enabled
    raw = env_raw("TRITON_ATTN_AUTOTUNE")
    return raw is not None and raw in (b"1", "1")


def set_enabled(flag: bool | None) -> None:
    """True/False: tune (or not) launches with no cached choice; None:
    follow ``TRITON_ATTN_AUTOTUNE`` again."""
    global _enabled
    _enabled = flag


@contextlib.contextmanager
def tuning(flag: bool = True, *, progress: bool | None = None):
    """Tuning on (or off) inside the block; ``progress`` forces the tqdm bar
    on or off (default: on when stderr is a terminal)."""
    global _enabled, _progress
    previous = _enabled, _progress
    _enabled, _progress = flag, progress
    try:
        yield
    finally:
        _enabled, _progress = previous


def _terminal_stderr():
    """The real stderr, also while ``bar_safe_output`` has replaced it."""
    err = sys.stderr
    return err._wrapped if isinstance(err, DummyTqdmFile) else err


@contextlib.contextmanager
def bar_safe_output():
    """While progress bars may be on screen (stderr is a terminal): whatever
    else is written to stderr (a warning such as the cache's "corrupted,
    ignored", a log record) goes above the bars through ``tqdm.write``
    instead of through them. Off a terminal the bars do not draw, so nothing
    changes. Warnings keep their usual hooks (``catch_warnings(record=True)``
    still records); restores everything on exit; nests."""
    err = sys.stderr
    if isinstance(err, DummyTqdmFile) or not getattr(err, "isatty", lambda: False)():
        yield
        return
    sys.stderr = DummyTqdmFile(err)
    try:
        with logging_redirect_tqdm(loggers=[logging.root, logging.getLogger("triton_attn")]):
            yield
    finally:
        sys.stderr = err


def progress(iterable=None, **kwargs):
    """A tqdm bar that only draws on a terminal (``disable=None``: a log file
    gets no escape sequences), leaves nothing behind (``leave=False``: the
    caller prints a summary line instead of a second copy of the finished
    bar), on the real stderr. ``tuning(progress=True/False)`` forces it on or
    off."""
    kwargs.setdefault("disable", None if _progress is None else not _progress)
    kwargs.setdefault("leave", False)
    kwargs.setdefault("file", _terminal_stderr())
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


@dataclasses.dataclass(frozen=True)
class Record:
    kernel: str
    key: tuple
    entry: Entry
    source: str  # "tuned" or "cache"


@contextlib.contextmanager
def recording():
    """Collects a Record for every tuned launch in the block (the CLI's
    report), first occurrence of each (kernel, key) only."""
    global _recorder
    previous, _recorder = _recorder, []
    try:
        yield _recorder
    finally:
        _recorder = previous


def note(kernel: str, key: tuple, entry: Entry, source: str) -> None:
    if _recorder is not None and not any(r.kernel == kernel and r.key == key for r in _recorder):
        _recorder.append(Record(kernel, key, entry, source))


def _candidates(space, problem: Problem, heuristic: LaunchConfig) -> list[LaunchConfig]:
    # The heuristic always competes (first, so it wins ties): tuning can
    # only improve on the untuned launch.
    out: list[LaunchConfig] = []
    for cfg in [space.normalize(heuristic, problem), *space.candidates(problem)]:
        if cfg not in out:
            out.append(cfg)
    return out


def tune(
    kernel: str, key: tuple, problem: Problem, heuristic: LaunchConfig,
    run: Callable[[LaunchConfig], T], device: torch.device,
) -> Entry:
    """Times every candidate with ``run(cfg)``, stores and returns the best."""
    space = registry.get(kernel).space
    candidates = _candidates(space, problem, heuristic)
    bench = timing.bench_for(device)
    label = f"tune {kernel} " + " ".join(f"{f}={v}" for f, v in zip(KEY_FIELDS, key))
    timed: list[tuple[float, int, LaunchConfig]] = []
    first_error: Exception | None = None
    ctx = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with ctx, bar_safe_output():
        for i, cfg in enumerate(progress(candidates, desc=label)):
            try:
                ms = bench(lambda: run(cfg))
            except Exception as e:  # a config the compiler rejects (shared memory, registers) just drops out
                first_error = first_error or e
                continue
            timed.append((ms, i, cfg))
    if not timed:
        raise RuntimeError(f"every candidate config of {kernel} failed for key {key}") from first_error
    timed.sort(key=lambda t: (t[0], t[1]))
    (best_ms, _, best), second = timed[0], (timed[1] if len(timed) > 1 else None)
    entry = Entry(
        config=best, ms=best_ms,
        runner_up=second[2] if second else None, runner_up_ms=second[0] if second else None,
        n_configs=len(candidates),
    )
    table.store(kernel, device, key, entry)
    note(kernel, key, entry, "tuned")
    return entry
