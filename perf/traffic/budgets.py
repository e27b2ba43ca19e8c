"""Issue 11's budgets, checked on the rows of ``traffic.csv``.

Launches (Triton + torch compute ops, as a 132-SM GPU plans them), per block,
fwd and fwd+bwd, bf16 and fp32, both layouts, batch 1 and 32:
SE ≤ 3 / ≤ 7, ECA ≤ 2 / ≤ 5, CBAM ≤ 6 / ≤ 12.
x-sized passes: at most the README's "What runs where" table — SE fwd 3,
bwd 4 (5 with max pooling, not the default module), ECA 3 / 4, CBAM 4 / 6.
Weights: at 7×7 with large C (≥ 1024) and N ≥ 8, less than one pass.
Fused tails (issue 14), SE and ECA: launches forward ≤ 4, backward ≤ 5 (so
fwd+bwd ≤ 9); x-sized passes forward ≤ 4.2, backward ≤ 7.5 (z, the shortcut,
y, dy, dz and d_shortcut all count)."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

LAUNCHES = {
    ("se", "fwd"): 3, ("se", "fwd+bwd"): 7,
    ("eca", "fwd"): 2, ("eca", "fwd+bwd"): 5,
    ("cbam", "fwd"): 6, ("cbam", "fwd+bwd"): 12,
    ("se_tail", "fwd"): 4, ("se_tail", "fwd+bwd"): 9,
    ("eca_tail", "fwd"): 4, ("eca_tail", "fwd+bwd"): 9,
}
X_PASSES = {
    ("se", "fwd"): 3, ("se", "bwd"): 4,
    ("eca", "fwd"): 3, ("eca", "bwd"): 4,
    ("cbam", "fwd"): 4, ("cbam", "bwd"): 6,
    ("se_tail", "fwd"): 4.2, ("se_tail", "bwd"): 7.5,
    ("eca_tail", "fwd"): 4.2, ("eca_tail", "bwd"): 7.5,
}
#: The SPEC's floor (read x, write y | read dy and x, write dx), drawn on the charts.
FLOOR = {"fwd": 2, "bwd": 3, "fwd+bwd": 5}
WEIGHT_PASSES = 1.0
WEIGHT_MIN_N, WEIGHT_MIN_C, WEIGHT_HW = 8, 1024, (7, 7)
LAUNCH_BATCHES = (1, 32)
SM_COUNT = 132


@dataclass(frozen=True)
class Budget:
    kind: str  # "launches", "x_passes" or "weight_passes"
    block: str
    mode: str
    bound: float
    strict: bool = False  # weight passes: less than, not at most

    @property
    def column(self) -> str:
        return self.kind

    def met(self, value: float) -> bool:
        return value < self.bound if self.strict else value <= self.bound

    def describe(self) -> str:
        unit = {"launches": "launches", "x_passes": "x-sized passes", "weight_passes": "passes of weights"}[self.kind]
        return f"{self.block.upper()} {self.mode} {'<' if self.strict else '≤'} {self.bound:g} {unit}"


BUDGETS = (
    *(Budget("launches", b, m, v) for (b, m), v in LAUNCHES.items()),
    *(Budget("x_passes", b, m, v) for (b, m), v in X_PASSES.items()),
    *(Budget("weight_passes", b, m, WEIGHT_PASSES, strict=True) for b in ("se", "eca", "cbam") for m in ("fwd", "bwd")),
)


def applies(budget: Budget, df: pd.DataFrame) -> pd.DataFrame:
    """The triton_attn rows a budget is stated for (bytes: rows that have them)."""
    sel = df[(df["provider"] == "triton_attn") & (df["block"] == budget.block) & (df["mode"] == budget.mode)
             & (df["sm_count"] == SM_COUNT)]
    if budget.kind == "launches":
        return sel[sel["N"].isin(LAUNCH_BATCHES)]
    sel = sel[sel[budget.column].notna()]
    if budget.kind == "weight_passes":
        sel = sel[(sel["N"] >= WEIGHT_MIN_N) & (sel["C"] >= WEIGHT_MIN_C) & (sel["H"] == WEIGHT_HW[0]) & (sel["W"] == WEIGHT_HW[1])]
    return sel


def check(df: pd.DataFrame) -> list[tuple[Budget, float | None, bool | None, int]]:
    """(budget, worst value over its rows or None, met or None when no row
    applies, rows checked)."""
    out = []
    for b in BUDGETS:
        rows = applies(b, df)
        if rows.empty:
            out.append((b, None, None, 0))
            continue
        worst = float(rows[b.column].max())
        out.append((b, worst, bool(b.met(worst)), len(rows)))
    return out


def report_lines(df: pd.DataFrame) -> list[str]:
    lines = []
    for b, value, met, n in check(df):
        if met is None:
            lines.append(f"{b.describe()}: not counted")
        else:
            lines.append(f"{b.describe()}: worst {value:.3g} over {n} rows — {'met' if met else 'MISSED'}")
    return lines
