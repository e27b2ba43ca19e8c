"""From rows to comparisons: per-shape times side by side, speedups of
triton_attn, and their geometric means over the presets."""
from __future__ import annotations

import math

import pandas as pd

from . import BLOCKS, MODES, PROVIDERS
from .shapes import shape_order

#: The configuration the targets and the README table are stated for.
HEADLINE = ("bfloat16", "channels_last")
SHAPE = ["N", "C", "H", "W"]

#: column -> (numerator provider, denominator provider): >1 means triton_attn is
#: faster, except time_vs_copy, triton_attn's time as a multiple of a copy's.
RATIOS = {
    "vs_eager": ("eager", "triton_attn"),
    "vs_compile": ("compile", "triton_attn"),
    "time_vs_copy": ("triton_attn", "copy"),
}


def times(df: pd.DataFrame, block: str, mode: str, dtype: str, layout: str, value: str = "ms") -> pd.DataFrame:
    """``value`` (median ms, or gbps) per shape (rows, in preset order) and provider (columns)."""
    sel = df[(df["block"] == block) & (df["mode"] == mode) & (df["dtype"] == dtype) & (df["layout"] == layout)]
    wide = sel.pivot_table(index=SHAPE, columns="provider", values=value, aggfunc="last")
    order = shape_order()
    ranked = sorted(wide.index, key=lambda s: (order.get(tuple(s), len(order)), *s))
    wide = wide.reindex(ranked)
    return wide[[p for p in PROVIDERS if p in wide.columns]]


def ratios(wide: pd.DataFrame) -> pd.DataFrame:
    """The RATIOS of each shape where both providers were measured (else NaN)."""
    out = pd.DataFrame(index=wide.index)
    for name, (num, den) in RATIOS.items():
        out[name] = wide[num] / wide[den] if {num, den} <= set(wide.columns) else float("nan")
    return out


def geomean(values) -> float:
    vals = [v for v in values if v == v and v > 0]  # v == v drops NaN
    return math.exp(sum(map(math.log, vals)) / len(vals)) if vals else float("nan")


def geomean_table(df: pd.DataFrame, dtype: str, layout: str) -> pd.DataFrame:
    """One row per (block, mode) measured: geomean of each ratio and the shape count."""
    rows = []
    for block in BLOCKS:
        for mode in MODES:
            wide = times(df, block, mode, dtype, layout)
            if wide.empty:
                continue
            r = ratios(wide)
            row = {"block": block, "mode": mode, "shapes": len(wide)}
            row.update({name: geomean(r[name]) for name in RATIOS})
            rows.append(row)
    return pd.DataFrame(rows, columns=["block", "mode", *RATIOS, "shapes"])


def main_config(df: pd.DataFrame) -> tuple[str, str]:
    """HEADLINE when measured, else the (dtype, layout) with the most rows."""
    combos = df.groupby(["dtype", "layout"]).size()
    if HEADLINE in combos.index:
        return HEADLINE
    return tuple(combos.idxmax())
