"""The project's performance targets (H100/H200, bf16, channels_last, geomean
over the presets), recomputed from a GPU results CSV."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .summary import HEADLINE, geomean_table


@dataclass(frozen=True)
class Target:
    block: str
    mode: str
    ratio: str  # a column of summary.RATIOS
    bound: float
    at_most: bool = False  # time_vs_copy is a ceiling, speedups are floors

    def describe(self) -> str:
        what = {"vs_eager": "x eager", "vs_compile": "x compile", "time_vs_copy": "time of a copy"}[self.ratio]
        return f"{self.block.upper()} {self.mode} {'<=' if self.at_most else '>='} {self.bound:g} {what}"


TARGETS = (
    *(
        t
        for block in ("se", "eca")
        for t in (
            Target(block, "fwd", "vs_compile", 1.3),
            Target(block, "fwd", "vs_eager", 2.5),
            Target(block, "fwd", "time_vs_copy", 1.6, at_most=True),
        )
    ),
    Target("cbam", "fwd+bwd", "vs_compile", 2.0),
    Target("cbam", "fwd+bwd", "vs_eager", 4.0),
)


def check(df: pd.DataFrame) -> list[tuple[Target, float | None, bool | None]]:
    """(target, measured geomean or None, met or None when not measured)."""
    table = geomean_table(df, *HEADLINE).set_index(["block", "mode"])
    out = []
    for t in TARGETS:
        value = table[t.ratio].get((t.block, t.mode)) if len(table) else None
        if value is None or value != value:
            out.append((t, None, None))
        else:
            out.append((t, float(value), bool(value <= t.bound if t.at_most else value >= t.bound)))
    return out


def report_lines(df: pd.DataFrame) -> list[str]:
    lines = []
    for t, value, met in check(df):
        status = "not measured" if met is None else ("met" if met else "MISSED")
        shown = "" if value is None else f": {value:.2f}"
        lines.append(f"{t.describe()}{shown} — {status}")
    return lines
