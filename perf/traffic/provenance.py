"""What the counts were taken with: torch, triton and the commit (HEAD, with
"-dirty" when kernels/ or triton_attn/ differ from it). Kept apart from
``perf/measure.py`` so that counting imports nothing of the GPU timing path."""
from __future__ import annotations

import subprocess

from .. import REPO_ROOT


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "kernels", "triton_attn"], cwd=REPO_ROOT)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty.returncode == 1 else "")


def environment() -> dict:
    import torch
    import triton

    return {"torch": torch.__version__, "triton": triton.__version__, "commit": git_commit()}
