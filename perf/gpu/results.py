"""The GPU command's result tables: one CSV per table and device under
``results/`` (``<table>_<device slug>.csv``), every row stamped with the
device name, torch and triton versions, the commit and a UTC timestamp.

Plain ``csv`` (no pandas: the GPU image is only promised torch, triton and
timm), merged by each table's key (a re-measured row replaces the old one,
everything else is kept, as ``perf.store`` does for the benchmark CSV), and
written atomically (a temporary file renamed over the old one), so a run
killed mid-write never leaves a truncated table."""
from __future__ import annotations

import csv
import math
import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path



def device_slug(device: str) -> str:
    """``perf.store.device_slug`` (same file names), without importing pandas."""
    return re.sub(r"[^a-z0-9]+", "_", device.lower()).strip("_") or "unknown"


#: Stamped on every row, in this order, after the table's own columns.
ENV = ("device", "torch", "triton", "commit", "timestamp")

#: table -> (columns, key). ``None`` columns: taken from the rows (autotune's
#: report columns belong to triton_attn.autotune). ``replace``: the table
#: describes the latest run only and is rewritten whole.
TABLES: dict[str, dict] = {
    "gpu_steps": dict(
        columns=("step", "title", "status", "reason", "box_s", "duration_s", "items_done", "items_skipped", "started"),
        key=("step",), replace=True,
    ),
    "gpu_skipped": dict(columns=("step", "item", "reason"), key=("step", "item"), replace=True),
    "correctness": dict(
        columns=("check", "variant", "N", "C", "H", "W", "dtype", "layout", "status", "err_ratio", "max_err",
                 "worst", "detail"),
        key=("check", "variant", "N", "C", "H", "W", "dtype", "layout"),
    ),
    "launch_overhead": dict(
        columns=("what", "N", "C", "H", "W", "dtype", "calls", "us_per_call", "kernels_per_call", "us_per_kernel",
                 "status", "detail"),
        key=("what",),
    ),
    "l2_order": dict(
        columns=("block", "mode", "N", "C", "H", "W", "dtype", "layout", "x_bytes", "l2_bytes", "ms_forward",
                 "ms_reverse", "better", "reverse_speedup", "status", "detail"),
        key=("block", "mode", "N", "C", "H", "W", "dtype", "layout"),
    ),
    "e2e": dict(
        columns=("model", "compile", "variant", "batch", "size", "dtype", "layout", "warmup_steps", "steps", "ms",
                 "ms_p20", "ms_p80", "img_per_s", "first_step_s", "swapped", "status", "detail"),
        key=("model", "compile", "variant", "batch", "size", "dtype", "layout"),
    ),
    "latency": dict(
        columns=("block", "provider", "N", "C", "H", "W", "dtype", "layout", "calls", "us_per_call", "status",
                 "detail"),
        key=("block", "provider", "N", "C", "H", "W", "dtype", "layout"),
    ),
    "autotune": dict(
        columns=None,
        key=("kernel", "C", "HW_bucket", "N_bucket", "layout", "dtype", "variant"),
    ),
}


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return str(v)


def read_rows(path: Path) -> list[dict]:
    """A table's rows as dicts of strings ([] when the file is missing)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, columns, rows) -> None:
    """Write ``rows`` under ``columns`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({c: _cell(r.get(c)) for c in columns})
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def num(value, default=float("nan")) -> float:
    """A CSV cell as a float (NaN when empty or not a number)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


class ResultsWriter:
    """Writes the tables of one device under ``results_dir``."""

    def __init__(self, results_dir: Path, env: dict):
        self.results_dir = Path(results_dir)
        self.env = {k: env.get(k, "") for k in ENV if k != "timestamp"}
        self.slug = device_slug(self.env["device"])
        self._fresh: set[str] = set()  # replace-tables already rewritten by this run
        self.written: dict[str, Path] = {}  # table -> path, for the run's list of files

    def path(self, table: str) -> Path:
        return self.results_dir / f"{table}_{self.slug}.csv"

    def columns(self, table: str, rows=()) -> list[str]:
        spec = TABLES[table]["columns"]
        if spec is None:
            seen: dict[str, None] = {}
            for r in rows:
                seen.update(dict.fromkeys(k for k in r if k not in ENV))
            spec = tuple(seen)
        return [*spec, *ENV]

    def _key(self, table: str, row: dict) -> tuple:
        return tuple(_cell(row.get(k)) for k in TABLES[table]["key"])

    def write(self, table: str, rows: list[dict]) -> Path:
        """Merge ``rows`` (stamped with the environment) into the table."""
        stamp = {**self.env, "timestamp": now_utc()}
        new = [{**r, **stamp} for r in rows]
        path = self.path(table)
        replace = TABLES[table].get("replace") and table not in self._fresh
        old = [] if replace else read_rows(path)
        self._fresh.add(table)
        merged: dict[tuple, dict] = {}
        for r in old + new:
            merged[self._key(table, r)] = r  # a re-measured key replaces the old row, in place
        cols = self.columns(table, list(merged.values()))
        write_rows(path, cols, merged.values())
        self.written[table] = path
        return path

    def read(self, table: str) -> list[dict]:
        return read_rows(self.path(table))

    def done_keys(self, table: str, ok=("pass", "ok")) -> set[tuple]:
        """Keys this commit already measured successfully (``--resume``)."""
        commit = self.env.get("commit")
        return {self._key(table, r) for r in self.read(table) if r.get("commit") == commit and r.get("status") in ok}

    def key_of(self, table: str, **fields) -> tuple:
        return self._key(table, fields)
