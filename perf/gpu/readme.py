"""What the GPU command adds to the README's results section for a device:
a link to its one-page summary and, when measured, the SE tax table and the
fused tail's target (``perf.readme_table.render`` calls ``lines_for``)."""
from __future__ import annotations

import os
from pathlib import Path

from .results import device_slug, read_rows
from .summary import se_tax_lines, se_tax_target


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()


def lines_for(results_dir: Path, device: str, here: Path) -> list[str]:
    slug = device_slug(device)
    summary = Path(results_dir) / f"gpu_summary_{slug}.md"
    if not summary.is_file():
        return []
    lines = [f"GPU check (`python -m perf gpu`): [one-page summary]({_rel(summary, here)}) — correctness on CUDA, "
             "L2 tile order, autotune report, what was skipped."]
    e2e = read_rows(Path(results_dir) / f"e2e_{slug}.csv")
    if any(r.get("status") == "ok" for r in e2e):
        pairs = list(dict.fromkeys(_pairs(e2e)))
        lines += ["", "SE tax (training step of the attention model ÷ its plain twin, bf16, channels_last):", "",
                  *se_tax_lines(e2e, pairs), "", f"- {se_tax_target(e2e)}"]
    return lines


def _pairs(rows):
    from .profiles import DRY_RUN, GPU

    models = {r["model"] for r in rows}
    for attn, plain in (*GPU.e2e_pairs, *DRY_RUN.e2e_pairs):
        if attn in models or plain in models:
            yield attn, plain
