"""Shared test utilities: inputs, layouts, per-dtype tolerances, comparisons."""
from __future__ import annotations

import copy

import torch

from triton_attn._runtime import poison_outputs

DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Relative-to-magnitude tolerances per dtype: one output rounding plus fp32
# accumulation (FlagGems uses fp16 1e-3, bf16 1.6e-2, fp32 1.3e-6 relative).
TOL = {
    torch.float32: dict(atol=2e-5, rtol=2e-5),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2),
    torch.float64: dict(atol=1e-10, rtol=1e-10),
}


def make_input(shape, dtype=torch.float32, layout="nchw", device="cpu", requires_grad=False):
    """Fresh random input (never zeros) in the requested layout:
    ``nchw``, ``channels_last`` or ``strided`` (a non-contiguous channel slice)."""
    N, C, H, W = shape
    if layout == "strided":
        base = torch.randn(N, 2 * C, H, W, device=device).to(dtype)
        x = base[:, ::2]
    else:
        x = torch.randn(shape, device=device).to(dtype)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
    x = x.detach()
    return x.requires_grad_(requires_grad)


def same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    fmt = torch.channels_last if b.is_contiguous(memory_format=torch.channels_last) and not b.is_contiguous() else torch.contiguous_format
    return a.is_contiguous(memory_format=fmt)


def assert_close(actual, expected, dtype, scale=None, msg=""):
    """Compare against a float64 reference, tolerances scaled by the
    reference's magnitude (gradients of large reductions are large)."""
    expected = expected.double()
    actual = actual.double()
    assert actual.shape == expected.shape, f"{msg}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert not torch.isnan(actual).any() or torch.isnan(expected).any(), f"{msg}: NaN in output (unwritten element?)"
    tol = TOL[dtype]
    mag = scale if scale is not None else max(expected.abs().max().item(), 1.0)
    err = (actual - expected).abs().max().item() if actual.numel() else 0.0
    assert err <= tol["atol"] * mag + tol["rtol"] * mag, f"{msg}: max error {err:.3g} > {tol} x {mag:.3g}"


def run_fwd_bwd(module, x, dy, poison=True):
    """Output and all gradients (input first, then parameters by name)."""
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    with poison_outputs(poison):
        y = module(x)
        y.backward(dy)
    grads = {"x": x.grad}
    grads.update({n: p.grad for n, p in module.named_parameters()})
    return y.detach(), grads


def float64_copy(module):
    return copy.deepcopy(module).double()
