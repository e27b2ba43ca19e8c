"""One long-format CSV per device under perf/results/, updated in place by key:
re-measuring a (device, block, mode, provider, shape, dtype, layout) replaces
its row, everything else is kept."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from . import COLUMNS, KEY


def device_slug(device: str) -> str:
    """File-name form of a device name: 'NVIDIA H100 80GB HBM3' -> 'nvidia_h100_80gb_hbm3'."""
    return re.sub(r"[^a-z0-9]+", "_", device.lower()).strip("_") or "unknown"


def csv_path(results_dir: Path, device: str) -> Path:
    return Path(results_dir) / f"{device_slug(device)}.csv"


def is_gpu(device: str) -> bool:
    """CPU rows (wall-clock timings of the fallback paths) never join GPU charts."""
    return not str(device).lower().startswith("cpu")


def update_csv(path: Path, rows: list[dict]) -> pd.DataFrame:
    """Merge rows into the CSV at ``path`` by KEY (new rows win) and write it back, sorted."""
    path = Path(path)
    old = read_csv(path) if path.exists() else pd.DataFrame(columns=list(COLUMNS))
    new = pd.DataFrame(rows, columns=list(COLUMNS))
    # concat with an empty frame would reset the column dtypes
    merged = old if new.empty else new if old.empty else pd.concat([old, new], ignore_index=True)
    merged = merged.drop_duplicates(subset=list(KEY), keep="last")
    merged = merged.sort_values(list(KEY), kind="stable").reset_index(drop=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside and renamed over: a run killed mid-write (the GPU
    # command's time limits) never leaves a truncated CSV.
    tmp = path.with_name(f".{path.name}.tmp")
    merged.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return merged


# Text columns pandas could mistake for numbers (an all-digit commit, "3.10").
TEXT = {c: str for c in ("device", "torch", "triton", "commit", "timestamp")}


def read_csv(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, dtype=TEXT)
    missing = set(COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"{path} is not a perf results CSV: missing columns {sorted(missing)}")
    return df[list(COLUMNS)]


def load_results(results_dir: Path) -> dict[str, pd.DataFrame]:
    """Every results CSV in ``results_dir``, by device name. Other CSVs (an
    autotune report, say) are skipped."""
    out = {}
    for path in sorted(Path(results_dir).glob("*.csv")):
        header = pd.read_csv(path, nrows=0).columns
        if not set(COLUMNS) <= set(header):
            continue
        df = read_csv(path)
        for device, rows in df.groupby("device", sort=True):
            out[device] = rows.reset_index(drop=True)
    return out


def gpu_results(results_dir: Path) -> dict[str, pd.DataFrame]:
    return {d: df for d, df in load_results(results_dir).items() if is_gpu(d)}
