"""Charts of the counts, into ``perf/charts/traffic/``: passes (bytes moved ÷
bytes of x) per block, mode and provider at each byte shape, with the
README's budget and the SPEC's floor drawn; launches per block, mode and
provider at batch 1 and 32 with the issue's budget. Counts, not speed: the
titles say so. Drawn without pyplot, as ``perf/plot.py``."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from . import budgets
from .plan import BLOCKS, MODES
from .tables import byte_shapes, configs, shape_label

EAGER = "tab:blue"
OURS = {"x": "tab:green", "weight": "tab:olive", "other": "tab:gray"}
LAUNCH_COLORS = {"triton": "tab:green", "aten": "tab:orange"}
WIDTH = 0.38


def _groups(df, modes):
    return [(b, m) for b in BLOCKS for m in modes if not df[(df["block"] == b) & (df["mode"] == m)].empty]


def _row(df, block, mode, provider):
    sel = df[(df["block"] == block) & (df["mode"] == mode) & (df["provider"] == provider)]
    return None if sel.empty else sel.iloc[0]


def _budget_mark(ax, x, bound, label):
    ax.hlines(bound, x - WIDTH / 2, x + WIDTH / 2, colors="black", linewidth=2, label=label)


def passes_figure(df: pd.DataFrame, shape) -> Figure:
    n, c, h, w = shape
    df = df[(df["N"] == n) & (df["C"] == c) & (df["H"] == h) & (df["W"] == w) & (df["counted_by"] == "interpreter")]
    cfgs = configs(df)
    fig = Figure(figsize=(11, 3.6 * len(cfgs)), layout="constrained")
    axes = fig.subplots(len(cfgs), 1, squeeze=False)[:, 0]
    for ax, (dtype, layout) in zip(axes, cfgs):
        sel = df[(df["dtype"] == dtype) & (df["layout"] == layout)]
        groups = _groups(sel, MODES)
        seen = set()
        for i, (block, mode) in enumerate(groups):
            e, o = _row(sel, block, mode, "eager"), _row(sel, block, mode, "triton_attn")
            if e is not None:
                ax.bar(i - WIDTH / 2, e.passes, WIDTH, color=EAGER, label=None if "e" in seen else "eager (all bytes)")
                seen.add("e")
            if o is not None:
                bottom = 0.0
                for cls, col in (("x", "x_passes"), ("weight", "weight_passes"), ("other", "other_passes")):
                    label = None if cls in seen else f"triton_attn: {'x-sized' if cls == 'x' else cls}"
                    ax.bar(i + WIDTH / 2, o[col], WIDTH, bottom=bottom, color=OURS[cls], label=label)
                    bottom += o[col]
                    seen.add(cls)
            bound = budgets.X_PASSES.get((block, mode))
            if bound is not None:
                _budget_mark(ax, i + WIDTH / 2, bound, None if "b" in seen else "README budget (x-sized)")
                seen.add("b")
            floor = budgets.FLOOR[mode]
            ax.hlines(floor, i - WIDTH, i + WIDTH, colors="black", linestyles=":", linewidth=1,
                      label=None if "f" in seen else "floor (SPEC)")
            seen.add("f")
        ax.set_xticks(range(len(groups)), [f"{b.upper()}\n{m}" for b, m in groups], fontsize=8)
        ax.set_ylabel("passes (bytes ÷ bytes of x)")
        ax.set_title(f"{dtype}, {layout}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncols=3)
    fig.suptitle(f"Bytes moved per call at {shape_label(*shape)}, as passes over x — a device-independent count, not speed\n"
                 f"(Triton loads/stores under the interpreter + torch op bytes, planned for {budgets.SM_COUNT} SMs)", fontsize=10)
    return fig


def launches_figure(df: pd.DataFrame, dtype: str, layout: str) -> Figure:
    df = df[(df["dtype"] == dtype) & (df["layout"] == layout) & (df["sm_count"] == budgets.SM_COUNT)]
    batches = [n for n in budgets.LAUNCH_BATCHES if n in set(df["N"])]
    fig = Figure(figsize=(11, 3.4 * max(1, len(batches))), layout="constrained")
    axes = fig.subplots(max(1, len(batches)), 1, squeeze=False)[:, 0]
    for ax, n in zip(axes, batches):
        sel = df[df["N"] == n]
        groups = _groups(sel, ("fwd", "fwd+bwd"))
        seen = set()
        for i, (block, mode) in enumerate(groups):
            rows = sel[(sel["block"] == block) & (sel["mode"] == mode)]
            e = rows[rows["provider"] == "eager"]
            o = rows[rows["provider"] == "triton_attn"]
            if not e.empty:
                ax.bar(i - WIDTH / 2, e["launches"].max(), WIDTH, color=EAGER, label=None if "e" in seen else "eager (aten ops)")
                ax.annotate(f"{int(e['launches'].max())}", (i - WIDTH / 2, e["launches"].max()), ha="center", va="bottom", fontsize=7)
                seen.add("e")
            if not o.empty:
                worst = o.loc[o["launches"].idxmax()]
                ax.bar(i + WIDTH / 2, worst.triton_launches, WIDTH, color=LAUNCH_COLORS["triton"],
                       label=None if "t" in seen else "triton_attn: Triton launches")
                ax.bar(i + WIDTH / 2, worst.aten_launches, WIDTH, bottom=worst.triton_launches, color=LAUNCH_COLORS["aten"],
                       label=None if "a" in seen else "triton_attn: torch ops")
                ax.annotate(f"{int(worst.launches)}", (i + WIDTH / 2, worst.launches), ha="center", va="bottom", fontsize=7)
                seen.update("ta")
            bound = budgets.LAUNCHES.get((block, mode))
            if bound is not None:
                _budget_mark(ax, i + WIDTH / 2, bound, None if "b" in seen else "budget (issue 11)")
                seen.add("b")
        ax.set_xticks(range(len(groups)), [f"{b.upper()}\n{m}" for b, m in groups], fontsize=8)
        ax.set_ylabel("launches per call")
        ax.set_title(f"batch {n} (worst over the ResNet-50 stage shapes counted)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncols=2)
    fig.suptitle(f"Launches per call, {dtype}, {layout}, as a {budgets.SM_COUNT}-SM GPU plans them — a count, not speed",
                 fontsize=10)
    return fig


def passes_path(charts_dir: Path, shape) -> Path:
    return Path(charts_dir) / f"passes_{'x'.join(map(str, shape))}.png"


def launches_path(charts_dir: Path, dtype: str, layout: str) -> Path:
    return Path(charts_dir) / f"launches_{dtype}_{layout}.png"


def draw_all(df: pd.DataFrame, charts_dir: Path) -> list[Path]:
    """Redraw every chart (stale PNGs in the folder are removed first)."""
    charts_dir = Path(charts_dir)
    charts_dir.mkdir(parents=True, exist_ok=True)
    for old in charts_dir.glob("*.png"):
        old.unlink()
    written = []
    for shape in byte_shapes(df):
        path = passes_path(charts_dir, shape)
        passes_figure(df, shape).savefig(path, dpi=100)
        written.append(path)
    launch_rows = df[df["N"].isin(budgets.LAUNCH_BATCHES)]
    for dtype, layout in configs(launch_rows) if not launch_rows.empty else []:
        path = launches_path(charts_dir, dtype, layout)
        launches_figure(df, dtype, layout).savefig(path, dpi=100)
        written.append(path)
    return written

