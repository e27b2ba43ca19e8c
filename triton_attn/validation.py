"""Input checks shared by the functional API and the modules: bad input gets
a ValueError/TypeError naming the problem, never a Triton error."""
from __future__ import annotations

import numbers

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_input(x, channels: int | None = None, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must be 4-D (N, C, H, W), got {x.dim()}-D with shape {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float16, bfloat16 or float64, got {x.dtype}")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has no channels (shape {tuple(x.shape)}): a channel-attention block needs C >= 1")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} has {x.shape[1]} channels but the block was built for {channels}")
    if x.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} is on {x.device}; triton_attn runs on CUDA (Triton) or CPU")


def check_block_input(x, channels: int | None, *params) -> None:
    """What a module checks before running its op (its own weights have the
    right shapes by construction): x itself, its channel count, and that the
    weights sit on x's device."""
    check_input(x, channels)
    for p in params:
        if p is not None and p.device != x.device:
            raise ValueError(f"the block's weights are on {p.device} but x is on {x.device}; move the module or the input (no silent copies)")


def check_pool_nonempty(x: torch.Tensor, pool: str, name: str = "pool") -> None:
    if pool != "avg" and x.shape[2] * x.shape[3] == 0:
        # torch.amax would raise an IndexError deep in the reference path.
        raise ValueError(f"{name}={pool!r} takes a max over H*W, which is empty for x of shape {tuple(x.shape)}")


def check_cbam_input(x: torch.Tensor, spatial_bn: bool, bn_training: bool) -> None:
    N, _, H, W = x.shape
    if H * W == 0:
        raise ValueError(f"cbam takes a max over H*W, which is empty for x of shape {tuple(x.shape)}")
    # nn.BatchNorm2d's rule: exactly one value per channel is an error; an
    # empty batch is not (empty output, the batch still counts).
    if spatial_bn and bn_training and N * H * W == 1:
        raise ValueError(f"spatial BatchNorm in training needs more than 1 value, got x of shape {tuple(x.shape)}")


def check_param(t, x: torch.Tensor, name: str, shape: tuple | None = None, numel: int | None = None) -> None:
    if t is None:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if t.device != x.device:
        raise ValueError(f"{name} is on {t.device} but x is on {x.device}; move the module or the input (no silent copies)")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
    if numel is not None and t.numel() != numel:
        raise ValueError(f"{name} has {t.numel()} elements, expected {numel}")


def check_choice(value, name: str, choices) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {list(choices)}, got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def check_name(value, name: str, choices) -> str:
    """An activation or gate name, canonicalised (``"swish"`` -> ``"silu"``)."""
    from .activations import canonical_name

    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {list(choices)}, got {type(value).__name__}")
    value = canonical_name(value)
    check_choice(value, name, choices)
    return value


def check_real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)
