"""Bytes moved by each Triton launch, counted under the interpreter.

For every ``tl.load``/``tl.store`` (``hooks``) the elements whose mask is true
are counted at their element size: that is what the kernel asks of memory,
re-reads included (ECA's scale kernel re-loads the pooled means per tile). The
distinct bytes touched (loads and stores apart) are what a perfect cache would
let through to DRAM. Each access is attributed to the tensor argument of the
launch whose storage holds its address, and through ``TensorClasses`` to
``x``/``weight``/``other``."""
from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from . import hooks

UNATTRIBUTED = "unattributed"


@dataclass
class LaunchTraffic:
    """One launch: name, grid, and per class (``x``, ``weight``, ``other``,
    ``unattributed``) the bytes loaded/stored and distinct bytes touched."""

    name: str
    grid: tuple | None
    phase: str | None = None
    load_bytes: dict = field(default_factory=lambda: defaultdict(int))
    store_bytes: dict = field(default_factory=lambda: defaultdict(int))
    distinct_load_bytes: dict = field(default_factory=lambda: defaultdict(int))
    distinct_store_bytes: dict = field(default_factory=lambda: defaultdict(int))
    load_elements: int = 0
    store_elements: int = 0

    @property
    def programs(self) -> int | None:
        return None if self.grid is None else math.prod(self.grid)

    @property
    def bytes(self) -> int:
        return sum(self.load_bytes.values()) + sum(self.store_bytes.values())

    @property
    def distinct_bytes(self) -> int:
        return sum(self.distinct_load_bytes.values()) + sum(self.distinct_store_bytes.values())

    def class_bytes(self, cls: str) -> int:
        return self.load_bytes.get(cls, 0) + self.store_bytes.get(cls, 0)


def _covered(starts: np.ndarray, ends: np.ndarray, owners: np.ndarray, n_owners: int) -> np.ndarray:
    """Bytes covered by the union of [start, end) intervals, per owner (the
    owners' ranges never overlap, so each interval's new bytes are its owner's)."""
    out = np.zeros(n_owners + 1, dtype=np.int64)  # last slot: unattributed
    if starts.size == 0:
        return out
    order = np.argsort(starts, kind="stable")
    s, e, o = starts[order], ends[order], owners[order]
    reach = np.maximum.accumulate(e)
    before = np.concatenate([s[:1], reach[:-1]])
    new = np.maximum(0, reach - np.maximum(s, before))
    np.add.at(out, o, new)
    return out


class _Open:
    """Accesses of the launch being interpreted."""

    def __init__(self, record: LaunchTraffic, tensors, classify):
        spans, seen = [], set()
        for t in tensors:
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key in seen or storage.nbytes() == 0:
                continue
            seen.add(key)
            spans.append((key, key + storage.nbytes(), classify(t) if classify else "tensor"))
        spans.sort()
        self.record = record
        self.starts = np.array([s for s, _, _ in spans], dtype=np.int64)
        self.ends = np.array([e for _, e, _ in spans], dtype=np.int64)
        self.labels = [label for _, _, label in spans] + [UNATTRIBUTED]
        self.chunks = {"load": [], "store": []}

    def owners(self, addresses: np.ndarray) -> np.ndarray:
        none = len(self.labels) - 1
        if not self.starts.size:
            return np.full(addresses.shape, none, dtype=np.int64)
        idx = np.searchsorted(self.starts, addresses, side="right") - 1
        inside = (idx >= 0) & (addresses < self.ends[np.clip(idx, 0, None)])
        return np.where(inside, idx, none)

    def close(self) -> LaunchTraffic:
        r = self.record
        for kind, total, distinct in (("load", r.load_bytes, r.distinct_load_bytes), ("store", r.store_bytes, r.distinct_store_bytes)):
            chunks = self.chunks[kind]
            if not chunks:
                continue
            addrs = np.concatenate([a for a, _ in chunks])
            sizes = np.concatenate([np.full(a.size, size, dtype=np.int64) for a, size in chunks])
            owners = self.owners(addrs)
            n = len(self.labels) - 1
            per_owner = np.bincount(owners, weights=sizes, minlength=n + 1).astype(np.int64)
            covered = _covered(addrs, addrs + sizes, owners, n)
            for i, label in enumerate(self.labels):
                if per_owner[i]:
                    total[label] += int(per_owner[i])
                    distinct[label] += int(covered[i])
            if kind == "load":
                r.load_elements += int(addrs.size)
            else:
                r.store_elements += int(addrs.size)
        return r


class TritonTraffic(contextlib.AbstractContextManager):
    """Context manager: ``launches`` collects a ``LaunchTraffic`` per Triton
    launch interpreted inside it. ``classify(tensor) -> str`` labels the
    launch's tensor arguments (default: all "tensor"); ``phase`` is stamped on
    each launch (set it between the forward and the backward)."""

    def __init__(self, classify=None):
        if not hooks.available():
            raise RuntimeError("this Triton has no interpreter the traffic hooks understand")
        self.classify = classify
        self.phase: str | None = None
        self.launches: list[LaunchTraffic] = []
        self._open: _Open | None = None
        self._cm = None

    # hooks listener
    def launch_begin(self, name, grid, tensors):
        self._open = _Open(LaunchTraffic(name, grid, self.phase), tensors, self.classify)

    def launch_end(self):
        if self._open is not None:
            self.launches.append(self._open.close())
            self._open = None

    def access(self, kind, addresses, size):
        if self._open is not None and addresses.size:
            self._open.chunks[kind].append((addresses.astype(np.int64), size))

    def __enter__(self):
        self._cm = hooks.listening(self)
        self._cm.__enter__()
        return self

    def __exit__(self, *exc):
        cm, self._cm = self._cm, None
        return cm.__exit__(*exc)
