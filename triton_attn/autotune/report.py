"""The autotune report: one row per (kernel, tuning key) a run touched."""
from __future__ import annotations

import math

import pandas as pd

from ..tuning.key import KEY_FIELDS
from ..tuning.tuner import Record

COLUMNS = ["kernel", *KEY_FIELDS, "config", "ms", "runner_up", "runner_up_ms", "n_configs", "source"]


def frame(records: list[Record]) -> pd.DataFrame:
    rows = []
    for r in records:
        e = r.entry
        rows.append({
            "kernel": r.kernel,
            **dict(zip(KEY_FIELDS, r.key)),
            "config": e.config.describe(),
            "ms": e.ms,
            "runner_up": e.runner_up.describe() if e.runner_up is not None else "",
            "runner_up_ms": e.runner_up_ms,
            "n_configs": e.n_configs,
            "source": r.source,
        })
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.sort_values(["kernel", "variant", "C", "HW_bucket", "N_bucket"], kind="stable", ignore_index=True)


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def markdown(df: pd.DataFrame) -> str:
    """A GitHub table, without pandas' optional ``tabulate`` dependency."""
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)
