"""The counts as markdown tables (the terminal and the README): launches per
block and mode at batch 1 and 32, passes per block and mode at each byte
shape, and the budgets. Units are in every header: launches are kernels and
copies, passes are bytes moved ÷ the bytes of x."""
from __future__ import annotations

import math

import pandas as pd

from . import budgets
from .plan import BLOCKS, MODES

HEADLINE = ("bfloat16", "channels_last")


def _fmt(v, digits=2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.{digits}f}" if isinstance(v, float) and not float(v).is_integer() else f"{int(v)}"


def shape_label(n, c, h, w) -> str:
    return f"{n}×{c}×{h}²" if h == w else f"{n}×{c}×{h}×{w}"


def _sel(df, **kw):
    out = df
    for k, v in kw.items():
        out = out[out[k] == v]
    return out


def launch_table(df: pd.DataFrame, dtype: str, layout: str) -> str:
    """Launches (max over the shapes counted at each batch) per block and mode."""
    df = _sel(df, dtype=dtype, layout=layout, sm_count=budgets.SM_COUNT)
    batches = [n for n in budgets.LAUNCH_BATCHES if n in set(df["N"])]
    head = ["block", "mode", *[f"eager, N={n} (launches)" for n in batches],
            *[f"triton_attn, N={n} (launches: Triton + torch)" for n in batches], "budget (launches)"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for block in BLOCKS:
        for mode in ("fwd", "fwd+bwd"):
            cells = []
            for provider in ("eager", "triton_attn"):
                for n in batches:
                    sel = _sel(df, block=block, mode=mode, provider=provider, N=n)
                    if sel.empty:
                        cells.append("—")
                        continue
                    worst = sel.loc[sel["launches"].idxmax()]
                    if provider == "triton_attn":
                        cells.append(f"{int(worst.launches)} ({int(worst.triton_launches)} + {int(worst.aten_launches)})")
                    else:
                        cells.append(f"{int(worst.launches)}")
            if all(c == "—" for c in cells):
                continue
            bound = budgets.LAUNCHES.get((block, mode))
            lines.append(f"| {block.upper()} | {mode} | " + " | ".join(cells) + f" | ≤ {bound} |")
    return "\n".join(lines)


def passes_table(df: pd.DataFrame, shape, dtype: str, layout: str) -> str:
    """Passes per block and mode at one shape: eager's total, ours split into
    x-sized / weights / other, ours with each launch's re-reads of an address
    counted once (distinct), and the README's x-sized budget."""
    n, c, h, w = shape
    df = _sel(df, N=n, C=c, H=h, W=w, dtype=dtype, layout=layout, counted_by="interpreter")
    head = ["block", "mode", "eager (passes)", "triton_attn (passes)", "x-sized (passes)", "weights (passes)",
            "other (passes)", "distinct (passes)", "README budget (x-sized passes)", "launches (eager → triton_attn)"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for block in BLOCKS:
        for mode in MODES:
            eager = _sel(df, block=block, mode=mode, provider="eager")
            ours = _sel(df, block=block, mode=mode, provider="triton_attn")
            if eager.empty and ours.empty:
                continue
            e = eager.iloc[0] if not eager.empty else None
            o = ours.iloc[0] if not ours.empty else None
            bound = budgets.X_PASSES.get((block, mode))
            lines.append(
                f"| {block.upper()} | {mode} | {_fmt(e.passes) if e is not None else '—'} "
                f"| {_fmt(o.passes) if o is not None else '—'} | {_fmt(o.x_passes) if o is not None else '—'} "
                f"| {_fmt(o.weight_passes) if o is not None else '—'} | {_fmt(o.other_passes) if o is not None else '—'} "
                f"| {_fmt(o.distinct_bytes / o.x_bytes) if o is not None else '—'} "
                f"| {'≤ ' + str(bound) if bound else '—'} "
                f"| {int(e.launches) if e is not None else '—'} → {int(o.launches) if o is not None else '—'} |"
            )
    return "\n".join(lines)


def byte_shapes(df: pd.DataFrame) -> list[tuple[int, int, int, int]]:
    sel = df[df["counted_by"] == "interpreter"]
    return sorted({tuple(int(v) for v in r) for r in sel[["N", "C", "H", "W"]].itertuples(index=False)},
                  key=lambda s: (s[0] * s[1] * s[2] * s[3], s))


def configs(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(dtype, layout) pairs present, the headline first."""
    pairs = sorted(set(df[["dtype", "layout"]].itertuples(index=False, name=None)))
    return sorted(pairs, key=lambda p: (p != HEADLINE, p))


def budget_table(df: pd.DataFrame) -> str:
    lines = ["| budget | worst counted | rows | status |", "|---|---:|---:|---|"]
    for b, value, met, n in budgets.check(df):
        status = "not counted" if met is None else ("met" if met else "**missed**")
        lines.append(f"| {b.describe()} | {_fmt(value) if value is not None else '—'} | {n} | {status} |")
    return "\n".join(lines)
