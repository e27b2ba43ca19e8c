"""Charts from the GPU results CSVs, one folder per device under perf/charts/:
effective GB/s per shape with the copy floor drawn in, and speedup bars of
triton_attn over eager and over torch.compile. Figures are built without
pyplot (no global state; the Agg renderer writes the PNGs), so the same
functions draw into a notebook."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from . import BLOCKS, DTYPES, LAYOUTS, MODES
from .shapes import Shape
from .store import device_slug, gpu_results
from .summary import ratios, times

STYLE = {
    "eager": dict(color="tab:blue", marker="o"),
    "compile": dict(color="tab:orange", marker="s"),
    "triton_attn": dict(color="tab:green", marker="^", linewidth=2),
    "copy": dict(color="black", linestyle="--", marker="", label="copy (floor)"),
}


def shape_labels(index) -> list[str]:
    return [Shape(*s, preset="").label for s in index]


def _grid(df: pd.DataFrame, block: str, dtype: str):
    sel = df[(df["block"] == block) & (df["dtype"] == dtype)]
    modes = [m for m in MODES if m in set(sel["mode"])]
    layouts = [lay for lay in LAYOUTS if lay in set(sel["layout"])]
    fig = Figure(figsize=(6 * len(layouts), 3.8 * len(modes)), layout="constrained")
    axes = fig.subplots(len(modes), len(layouts), squeeze=False)
    return fig, [(mode, layout, axes[i][j]) for i, mode in enumerate(modes) for j, layout in enumerate(layouts)]


def _xticks(ax, index):
    ax.set_xticks(range(len(index)), shape_labels(index), rotation=45, ha="right", fontsize=8)


def gbps_figure(df: pd.DataFrame, block: str, dtype: str) -> Figure:
    """Effective bandwidth (minimal bytes / median time) per shape, one line per provider."""
    fig, cells = _grid(df, block, dtype)
    for mode, layout, ax in cells:
        wide = times(df, block, mode, dtype, layout, value="gbps")
        for provider in wide.columns:
            style = {"label": provider, **STYLE.get(provider, {})}
            ax.plot(range(len(wide)), wide[provider].to_numpy(), **style)
        _xticks(ax, wide.index)
        ax.set_title(f"{mode}, {layout}", fontsize=10)
        ax.set_ylabel("effective GB/s")
        # batch-1 shapes run at a tenth of the batch-32 bandwidth: log keeps both readable
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    if cells:
        cells[0][2].legend(fontsize=8)
    fig.suptitle(f"{block.upper()} — {_device(df)}, {dtype}: effective bandwidth")
    return fig


def speedup_figure(df: pd.DataFrame, block: str, dtype: str) -> Figure:
    """Speedup of triton_attn over eager and over torch.compile per shape (1 = parity)."""
    fig, cells = _grid(df, block, dtype)
    width = 0.4
    for mode, layout, ax in cells:
        r = ratios(times(df, block, mode, dtype, layout))
        x = range(len(r))
        ax.bar([i - width / 2 for i in x], r["vs_eager"].to_numpy(), width, label="vs eager", color="tab:blue")
        ax.bar([i + width / 2 for i in x], r["vs_compile"].to_numpy(), width, label="vs torch.compile", color="tab:orange")
        ax.axhline(1.0, color="black", linewidth=0.8)
        _xticks(ax, r.index)
        ax.set_title(f"{mode}, {layout}", fontsize=10)
        ax.set_ylabel("speedup of triton_attn (×)")
        ax.grid(axis="y", alpha=0.3)
    if cells:
        cells[0][2].legend(fontsize=8)
    fig.suptitle(f"{block.upper()} — {_device(df)}, {dtype}: speedup of triton_attn")
    return fig


def _device(df: pd.DataFrame) -> str:
    return ", ".join(sorted(df["device"].unique()))


CHART_KINDS = {"gbps": gbps_figure, "speedup": speedup_figure}


def figures(df: pd.DataFrame):
    """(block, dtype, kind, Figure) for every block and dtype in one device's rows."""
    for block in [b for b in BLOCKS if b in set(df["block"])]:
        for dtype in [d for d in DTYPES if d in set(df[df["block"] == block]["dtype"])]:
            for kind, draw in CHART_KINDS.items():
                yield block, dtype, kind, draw(df, block, dtype)


def device_chart_dir(charts_dir: Path, device: str) -> Path:
    return Path(charts_dir) / device_slug(device)


def chart_path(charts_dir: Path, device: str, block: str, dtype: str, kind: str) -> Path:
    return device_chart_dir(charts_dir, device) / f"{block}_{dtype}_{kind}.png"


def chart_files(charts_dir: Path, device: str) -> list[Path]:
    """A device's charts that exist, in block, dtype, kind order."""
    paths = (chart_path(charts_dir, device, b, d, k) for b in BLOCKS for d in DTYPES for k in CHART_KINDS)
    return [p for p in paths if p.is_file()]


def plot_device(df: pd.DataFrame, charts_dir: Path) -> list[Path]:
    """Redraw one device's charts; stale PNGs in its folder are removed first."""
    device = _device(df)
    out_dir = device_chart_dir(charts_dir, device)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.png"):
        old.unlink()
    written = []
    for block, dtype, kind, fig in figures(df):
        path = chart_path(charts_dir, device, block, dtype, kind)
        fig.savefig(path, dpi=110)
        written.append(path)
    return written


def plot_all(results_dir: Path, charts_dir: Path) -> list[Path]:
    """Charts for every GPU results CSV (CPU rows are never drawn)."""
    return [p for df in gpu_results(results_dir).values() for p in plot_device(df, charts_dir)]
