"""From a step's records to one row of counts.

launches = Triton launches + counted aten ops (each one kernel or copy on a
GPU). bytes = Triton bytes (loaded + stored, mask-true elements × element
size) + aten bytes (each op's tensors once). passes = bytes / x_bytes, with
the split into x-sized passes (the README's pass count), weight passes and the
rest. distinct_bytes counts each Triton launch's bytes once per address (loads
and stores apart): the DRAM traffic of a launch whose re-reads all hit cache."""
from __future__ import annotations

import math

from ..accounting.tensor_class import CLASSES

#: Counts a row carries, in CSV order (after the key columns).
COUNT_COLUMNS = (
    "launches", "bytes", "x_bytes", "passes", "x_passes", "weight_passes", "other_passes",
    "triton_launches", "aten_launches", "triton_bytes", "aten_bytes",
    "x_sized_bytes", "weight_bytes", "other_bytes", "distinct_bytes",
    "triton_load_bytes", "triton_store_bytes", "sequence",
)


def _in_phase(items, phase):
    return [r for r in items if phase is None or r.phase == phase]


def summarize(records, x_bytes: int, phase: str | None = None) -> dict:
    """One row's counts from ``StepRecords`` (``phase``: only that phase's
    records, e.g. "bwd"). Under the stub the Triton byte columns are NaN."""
    launches = _in_phase(records.launches, phase)
    ops = _in_phase(records.ops, phase)
    has_bytes = records.how == "interpreter" or not launches
    nan = float("nan")

    def triton(fn):
        return sum(fn(r) for r in launches) if has_bytes else nan

    by_class = {
        cls: triton(lambda r, c=cls: r.class_bytes(c)) + sum(o.class_bytes(cls) for o in ops) for cls in CLASSES
    }
    # accesses outside every tensor argument of a launch (none expected) count as "other"
    by_class["other"] += triton(lambda r: r.class_bytes("unattributed"))
    triton_bytes = triton(lambda r: r.bytes)
    aten_bytes = sum(o.bytes for o in ops)
    total = triton_bytes + aten_bytes

    def passes(b):
        return b / x_bytes if x_bytes and not math.isnan(b) else nan

    return {
        "launches": len(launches) + len(ops),
        "bytes": total,
        "x_bytes": x_bytes,
        "passes": passes(total),
        "x_passes": passes(by_class["x"]),
        "weight_passes": passes(by_class["weight"]),
        "other_passes": passes(by_class["other"]),
        "triton_launches": len(launches),
        "aten_launches": len(ops),
        "triton_bytes": triton_bytes,
        "aten_bytes": aten_bytes,
        "x_sized_bytes": by_class["x"],
        "weight_bytes": by_class["weight"],
        "other_bytes": by_class["other"],
        "distinct_bytes": triton(lambda r: r.distinct_bytes) + aten_bytes,
        "triton_load_bytes": triton(lambda r: sum(r.load_bytes.values())),
        "triton_store_bytes": triton(lambda r: sum(r.store_bytes.values())),
        "sequence": " ".join(_sequence(records, phase)),
    }


def _sequence(records, phase):
    """Kernel and aten-op names in call order (aten ops without "aten.")."""
    launches = list(records.launches)
    out, done = [], 0
    for op in records.ops:
        while done < min(op.after_launches, len(launches)):
            out.append(launches[done])
            done += 1
        out.append(op)
    out.extend(launches[done:])
    return [r.name.removeprefix("aten.") for r in out if phase is None or r.phase == phase]
