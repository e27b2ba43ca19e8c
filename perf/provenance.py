"""What a result was taken with: the device label, torch, triton and the
commit (HEAD, with "-dirty" when kernels/ or triton_attn/ differ from it).
One place for every harness (timing, traffic counts, host time, the GPU
command); it imports nothing of the timing path (no pandas, no tqdm), and
torch only when asked."""
from __future__ import annotations

import subprocess

from . import REPO_ROOT


def git_commit() -> str:
    """HEAD, with '-dirty' when the measured code differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "kernels", "triton_attn"], cwd=REPO_ROOT)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty.returncode == 1 else "")


def device_label(device) -> str:
    import torch

    import triton_attn

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    # Interpreted Triton on CPU is a different program from the fallback: keep
    # its timings apart.
    return "cpu-interpreter" if triton_attn.INTERPRETED else "cpu"


def environment() -> dict:
    import torch
    import triton

    return {"torch": torch.__version__, "triton": triton.__version__, "commit": git_commit()}
