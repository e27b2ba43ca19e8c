"""``perf/results/traffic.csv``: one long-format table of counts, updated in
place by key (re-counting a case replaces its row). Device-independent, so it
is committed; ``perf/results/host.csv`` (machine-dependent timings) goes
through the same helpers and is not."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .count import COUNT_COLUMNS

KEY = ("block", "mode", "provider", "N", "C", "H", "W", "dtype", "layout", "counted_by", "sm_count")
META = ("torch", "triton", "commit")
COLUMNS = (*KEY, *COUNT_COLUMNS, *META)
FILENAME = "traffic.csv"
TEXT = {c: str for c in ("block", "mode", "provider", "dtype", "layout", "counted_by", "sequence", *META)}


def upsert_csv(path: Path, rows: list[dict], key, columns) -> pd.DataFrame:
    """Merge ``rows`` into the CSV at ``path`` by ``key`` (new rows win), sorted, and write it."""
    path = Path(path)
    new = pd.DataFrame(rows, columns=list(columns))
    if path.exists():
        old = pd.read_csv(path, dtype={c: str for c in TEXT if c in columns}, keep_default_na=False, na_values=[""])
        old = old.reindex(columns=list(columns))
        merged = new if old.empty else old if new.empty else pd.concat([old, new], ignore_index=True)
    else:
        merged = new
    merged = merged.drop_duplicates(subset=list(key), keep="last")
    merged = merged.sort_values(list(key), kind="stable").reset_index(drop=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    merged.to_csv(path, index=False)
    return merged


def update(path: Path, rows: list[dict]) -> pd.DataFrame:
    return upsert_csv(path, rows, KEY, COLUMNS)


def read(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, dtype=TEXT, keep_default_na=False, na_values=[""])
    missing = set(COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"{path} is not a traffic CSV: missing columns {sorted(missing)}")
    return df[list(COLUMNS)]
