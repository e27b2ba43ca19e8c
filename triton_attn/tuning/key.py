"""The tuning key: which launches share one tuned choice.

C stays exact: CNNs use a handful of channel counts, and C decides how many
C-blocks a tile leaves, so 96 and 128 channels can want different tiles.
H*W and N are rounded up to the next power of two (FlagGems' "log" buckets):
the candidate blocks are powers of two clamped to next_pow2(H*W), so every
H*W in a bucket sees the same candidates, and a new batch size only re-tunes
when it crosses a power of two.
"""
from __future__ import annotations

import torch

#: Column names of the key fields, in key order (reports use them as is).
KEY_FIELDS = ("C", "HW_bucket", "N_bucket", "layout", "dtype", "variant")

_DTYPE_NAMES = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float64: "fp64",
}


def pow2_bucket(n: int) -> int:
    """Smallest power of two >= n (1 for n <= 1)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def dtype_name(dtype: torch.dtype) -> str:
    return _DTYPE_NAMES.get(dtype) or str(dtype).replace("torch.", "")


def layout_name(strides: tuple[int, int, int], C: int) -> str:
    """From [N, C, H*W] strides: which axis is the fast one."""
    if C > 1 and strides[1] == 1:
        return "channels_last"
    if strides[2] == 1:
        return "nchw"
    return "strided"


def layouts_name(C: int, x_strides, *others) -> str:
    """x's layout, plus that of each other operand (dy) that differs, since
    a tile that coalesces reads of x may stride through dy."""
    base = layout_name(x_strides, C)
    extra = [layout_name(s, C) for s in others if s is not None]
    extra = [name for name in extra if name != base]
    return base if not extra else base + "+" + "+".join(extra)


def tune_key(N: int, C: int, HW: int, layout: str, dtype: torch.dtype, variant: str) -> tuple:
    return (C, pow2_bucket(HW), pow2_bucket(N), layout, dtype_name(dtype), variant)


def key_to_str(key: tuple) -> str:
    return "|".join(str(v) for v in key)


def key_from_str(s: str) -> tuple:
    parts = s.split("|")
    if len(parts) != len(KEY_FIELDS):
        raise ValueError(f"not a tuning key: {s!r}")
    return (int(parts[0]), int(parts[1]), int(parts[2]), *parts[3:])
