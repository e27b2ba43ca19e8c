"""The README's results section, generated from the GPU CSVs (never typed by
hand): per device, geomean speedups per block and mode, the targets, chart links."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .plot import chart_files
from .store import csv_path, gpu_results
from .summary import HEADLINE, geomean_table, main_config
from .targets import report_lines

START, END = "<!-- perf:start -->", "<!-- perf:end -->"

NO_RESULTS = (
    "No GPU results yet. `python -m perf` on a CUDA machine measures SE, ECA and CBAM against eager "
    "PyTorch, torch.compile and a copy, writes `perf/results/<gpu>.csv` and regenerates this section "
    "and the charts in `perf/charts/`. (Without a GPU it times only the CPU paths, which are not "
    "shown here.)"
)


def _fmt(value: float, suffix: str = "") -> str:
    return "—" if value != value else f"{value:.2f}{suffix}"


def markdown_table(table: pd.DataFrame) -> str:
    lines = [
        "| block | mode | speedup vs eager | speedup vs torch.compile | time ÷ copy | shapes |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in table.itertuples(index=False):
        lines.append(
            f"| {r.block.upper()} | {r.mode} | {_fmt(r.vs_eager, '×')} | {_fmt(r.vs_compile, '×')} "
            f"| {_fmt(r.time_vs_copy)} | {r.shapes} |"
        )
    return "\n".join(lines)


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()


def _joined(df: pd.DataFrame, column: str) -> str:
    return ", ".join(sorted(map(str, df[column].unique())))


def render(results_dir: Path, charts_dir: Path, readme: Path) -> str:
    gpus = gpu_results(results_dir)
    if not gpus:
        return NO_RESULTS
    here = Path(readme).parent
    parts = []
    for device, df in gpus.items():
        dtype, layout = main_config(df)
        parts.append(
            f"**{device}**: geometric mean over the preset shapes, {dtype}, {layout} "
            f"([data]({_rel(csv_path(results_dir, device), here)}); torch {_joined(df, 'torch')}, "
            f"triton {_joined(df, 'triton')}, commit {_joined(df, 'commit')}). Speedup = time of the "
            "baseline ÷ time of triton_attn; time ÷ copy compares with a kernel that moves the same "
            "minimal bytes."
        )
        parts.append("")
        parts.append(markdown_table(geomean_table(df, dtype, layout)))
        if (dtype, layout) == HEADLINE:
            parts.append("")
            parts.append("Targets:")
            parts.extend(f"- {line}" for line in report_lines(df))
        charts = chart_files(charts_dir, device)
        if charts:
            parts.append("")
            parts.append("Charts: " + " · ".join(f"[{c.stem.replace('_', ' ')}]({_rel(c, here)})" for c in charts))
        from .gpu.readme import lines_for  # the GPU command's summary and SE tax, when it ran

        extra = lines_for(results_dir, device, here)
        parts.extend(["", *extra] if extra else [])
        parts.append("")
    return "\n".join(parts).rstrip()


def update_readme(readme: Path, body: str) -> bool:
    """Replace the text between the perf markers; False when the file or its markers are missing."""
    readme = Path(readme)
    if not readme.is_file():
        return False
    text = readme.read_text()
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        return False
    new = text[: start + len(START)] + "\n" + body + "\n" + text[end:]
    if new != text:
        readme.write_text(new)
    return True
