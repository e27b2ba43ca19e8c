"""Names and sizes of the devices configs are tuned for."""
from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=None)
def _cuda_name(index: int) -> str:
    return torch.cuda.get_device_name(index)


@functools.lru_cache(maxsize=None)
def _cuda_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def device_name(device: torch.device) -> str:
    """The GPU's marketing name; CPU tensors only run kernels under Triton's
    interpreter, whose timings say nothing about any GPU."""
    if device.type == "cuda":
        return _cuda_name(_index(device))
    return f"triton-interpreter-{device.type}"


def num_sms(device: torch.device) -> int | None:
    """Streaming multiprocessors to fill: ``TRITON_ATTN_SM_COUNT`` when set
    (on any device), the GPU's own count on CUDA, else None (no GPU to fill)."""
    from ..runtime import sm_count_override

    override = sm_count_override()
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    return _cuda_sms(_index(device))
