"""The README's traffic section (between ``<!-- traffic:start -->`` and
``<!-- traffic:end -->``), generated from ``traffic.csv``, never typed."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from . import budgets
from .charts import launches_path, passes_path
from .tables import HEADLINE, budget_table, byte_shapes, configs, launch_table, passes_table, shape_label

START, END = "<!-- traffic:start -->", "<!-- traffic:end -->"

NO_COUNTS = "No counts yet: `python -m perf traffic` writes `perf/results/traffic.csv` and regenerates this section."

HOW = (
    "Counted, not timed: launches = Triton launches + the torch ops that compute or copy (each is a kernel on a "
    "GPU; views and allocations are not), per call, planned for a {sm}-SM GPU (`TRITON_ATTN_SM_COUNT={sm}`). "
    "Bytes = every Triton load and store whose mask is true × its element size (Triton's interpreter, "
    "instrumented) + the bytes of each torch op's tensors. passes = bytes ÷ bytes of x; x-sized passes count only "
    "x-sized tensors (x, y, dy, dx and eager's x-sized intermediates), the unit of the table in *What runs "
    "where*; distinct counts each address once per launch (a launch's re-reads of the same gate or pooled values, "
    "cached on a GPU, drop out). Eager is "
    "timm's module. torch.compile is left out: Inductor's CUDA code cannot be generated without a GPU here."
)


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()


def _joined(df: pd.DataFrame, column: str) -> str:
    return ", ".join(sorted(map(str, df[column].dropna().unique())))


def render(df: pd.DataFrame | None, csv_path: Path, charts_dir: Path, readme: Path) -> str:
    if df is None or df.empty:
        return NO_COUNTS
    here = Path(readme).parent
    dtype, layout = HEADLINE if HEADLINE in configs(df) else configs(df)[0]
    parts = [HOW.format(sm=budgets.SM_COUNT), ""]
    parts.append(f"Launches per call, {dtype}, {layout} (worst over the ResNet-50 stage shapes at each batch; "
                 "Triton + torch in brackets):")
    parts += ["", launch_table(df, dtype, layout), ""]
    for shape in byte_shapes(df):
        sel = df[(df["N"] == shape[0]) & (df["C"] == shape[1]) & (df["H"] == shape[2]) & (df["W"] == shape[3])]
        cfg = (dtype, layout) if (dtype, layout) in configs(sel) else configs(sel)[0]
        parts.append(f"Bytes per call at {shape_label(*shape)}, {cfg[0]}, {cfg[1]}, in passes (bytes ÷ bytes of x):")
        parts += ["", passes_table(df, shape, *cfg), ""]
    parts.append("Budgets of issues 11 and 14 (triton_attn; worst over every dtype, layout and shape counted):")
    parts += ["", budget_table(df), ""]
    charts = [passes_path(charts_dir, s) for s in byte_shapes(df)]
    charts += [launches_path(charts_dir, d, lay) for d, lay in configs(df)]
    charts = [c for c in charts if c.is_file()]
    if charts:
        parts.append("Charts: " + " · ".join(f"[{c.stem.replace('_', ' ')}]({_rel(c, here)})" for c in charts))
        parts.append("")
    parts.append(f"Data: [{Path(csv_path).name}]({_rel(csv_path, here)}) (commit {_joined(df, 'commit')}; "
                 f"torch {_joined(df, 'torch')}, triton {_joined(df, 'triton')}).")
    return "\n".join(parts).rstrip()


def update_readme(readme: Path, body: str) -> bool:
    """Replace the text between the traffic markers; False when the file or its markers are missing."""
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
