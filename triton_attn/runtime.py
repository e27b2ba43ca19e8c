"""Where a tensor's math runs: Triton on CUDA, Triton's interpreter on CPU when
``TRITON_INTERPRET=1`` was set before the kernels were imported, otherwise a
pure-PyTorch path with the same arithmetic. Never a silent device copy.

Every kernel launch goes through ``launch``, so that instruments (the host
benchmark's ``stubbed_launches``) see each one."""
from __future__ import annotations

import contextlib
import functools
import inspect
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
_poison = False
#: Launches recorded while ``stubbed_launches`` is active, else None.
_stub: list | None = None


@contextlib.contextmanager
def poison_outputs(enabled: bool = True):
    """Fill every buffer a kernel is about to write with NaN (tests): an element
    a kernel forgets to write then shows up instead of passing by luck."""
    global _poison
    previous, _poison = _poison, enabled
    try:
        yield
    finally:
        _poison = previous


def new_buffer(shape, *, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """torch.empty for kernel outputs, NaN-filled under ``poison_outputs``."""
    t = torch.empty(shape, device=like.device, dtype=dtype)
    return t.fill_(float("nan")) if _poison else t


def new_like_4d(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Same shape and memory format as ``x`` (a non-dense view gets the dense
    layout it resembles), NaN-filled under ``poison_outputs``."""
    t = torch.empty_like(x, dtype=dtype, memory_format=torch.preserve_format)
    return t.fill_(float("nan")) if _poison else t


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
        return INTERPRETED or _stub is not None
    return False


def launch(kernel, grid, *args, **kwargs) -> None:
    """``kernel[grid](*args, **kwargs)``; under ``stubbed_launches`` only
    recorded (kernel name, grid, constexpr/launch keywords)."""
    if _stub is not None:
        _stub.append((getattr(getattr(kernel, "fn", kernel), "__name__", str(kernel)), tuple(grid), kwargs))
        return
    kernel[grid](*args, **kwargs)


@contextlib.contextmanager
def stubbed_launches():
    """Drive the CUDA code path on CPU tensors with every Triton launch
    replaced by a record ``(kernel name, grid, keywords)`` in the yielded
    list: the host benchmark (``python -m perf host``) times everything a
    call does except the kernels. Outputs are left unwritten (garbage), so
    use it for timing and counting only. Not with the interpreter (which
    runs the kernels for real) or on CUDA tensors (which launch for real)."""
    global _stub
    previous, _stub = _stub, []
    try:
        yield _stub
    finally:
        _stub = previous


def sm_count_override() -> int | None:
    """``TRITON_ATTN_SM_COUNT``: plan launches (the split of the reductions)
    for a GPU with this many SMs, on any device. Lets the interpreter and the
    traffic accounting see the grids a real GPU would get; unset, CPU tensors
    plan for no GPU (no split) and CUDA tensors for their own device."""
    value = os.environ.get("TRITON_ATTN_SM_COUNT")
    if not value:
        return None
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"TRITON_ATTN_SM_COUNT must be a positive integer, got {value!r}") from None
    if count < 1:
        raise ValueError(f"TRITON_ATTN_SM_COUNT must be a positive integer, got {value!r}")
    return count


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype of every reduction and gate: fp32, fp64 for fp64 inputs."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def autocast_off(fn):
    """Run a custom op's implementation with autocast disabled.

    Custom ops have no autocast kernel, so an enclosing ``torch.autocast``
    reaches the torch ops inside them: the [N, C] gate MLP would then run in
    bf16/fp16 (NaN gates in bf16), breaking the fp32-math guarantee."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with contextlib.ExitStack() as stack:
            for device_type in ("cuda", "cpu"):
                if torch.is_autocast_enabled(device_type):
                    stack.enter_context(torch.autocast(device_type, enabled=False))
            return fn(*args, **kwargs)

    # custom_op infers its schema from the signature; resolve the (lazy,
    # string) annotations in fn's own module, not in this one.
    wrapper.__signature__ = inspect.signature(fn, eval_str=True)
    return wrapper
