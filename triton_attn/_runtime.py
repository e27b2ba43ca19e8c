"""Where a tensor's math runs: Triton on CUDA, Triton's interpreter on CPU when
``TRITON_INTERPRET=1`` was set before the kernels were imported, otherwise a
pure-PyTorch path with the same arithmetic. Never a silent device copy."""
from __future__ import annotations

import contextlib
import os

import torch

from .kernels.channel_pool import channel_pool_kernel

try:  # the class moved between Triton releases; the env var is the fallback
    from triton.runtime.interpreter import InterpretedFunction as _Interpreted
except Exception:  # pragma: no cover
    _Interpreted = None

#: True when the kernels were decorated under ``TRITON_INTERPRET=1``: they then
#: run on CPU tensors (slowly) and cannot run on CUDA ones.
INTERPRETED: bool = (
    isinstance(channel_pool_kernel, _Interpreted)
    if _Interpreted is not None
    else os.environ.get("TRITON_INTERPRET", "0") == "1"
)

_force_torch = False


@contextlib.contextmanager
def torch_fallback(enabled: bool = True):
    """Run the pure-PyTorch path even where Triton could run (tests, debugging)."""
    global _force_torch
    previous, _force_torch = _force_torch, enabled
    try:
        yield
    finally:
        _force_torch = previous


def use_triton(t: torch.Tensor) -> bool:
    if _force_torch:
        return False
    if t.device.type == "cuda":
        return not INTERPRETED
    if t.device.type == "cpu":
        return INTERPRETED
    return False


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype of every reduction and gate: fp32, fp64 for fp64 inputs."""
    return torch.float64 if dtype == torch.float64 else torch.float32
