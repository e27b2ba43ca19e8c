"""Shared test utilities: inputs, layouts, per-dtype tolerances, comparisons."""
from __future__ import annotations

import copy

import torch

from triton_attn.runtime import poison_outputs

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
    # detach, not clone: a clone of a strided view is dense, and the test
    # would silently stop exercising the strided path.
    x = x.detach().requires_grad_(True)
    with poison_outputs(poison):
        y = module(x)
        y.backward(dy)
    grads = {"x": x.grad}
    grads.update({n: p.grad for n, p in module.named_parameters()})
    return y.detach(), grads


def float64_copy(module):
    return copy.deepcopy(module).double()


# --- forward + backward with strides kept (SE/ECA tests) ---


def grad_leaf(t):
    """A leaf that requires grad and keeps ``t``'s strides: ``clone()`` would
    turn a non-dense view (``layout="strided"``) into a dense tensor."""
    return None if t is None else t.detach().requires_grad_(True)


def fwd_bwd(fn, tensors: dict, dy, poison=True):
    """``fn(**tensors)`` and the gradient of every non-None tensor, by name,
    with kernel outputs NaN-poisoned first."""
    leaves = {k: grad_leaf(v) for k, v in tensors.items()}
    with poison_outputs(poison):
        y = fn(**leaves)
        y.backward(dy)
    return y.detach(), {k: v.grad for k, v in leaves.items() if v is not None}


def module_fwd_bwd(module, x, dy, poison=True):
    """Output and all gradients of a module: ``"x"`` first, then parameters by name."""
    module.zero_grad(set_to_none=True)
    y, grads = fwd_bwd(lambda x: module(x), {"x": x}, dy, poison)
    grads.update({n: p.grad for n, p in module.named_parameters()})
    return y, grads


def assert_fwd_bwd_close(actual, expected, dtype, msg=""):
    """``actual`` and ``expected`` are (y, grads) pairs; every gradient present in
    the reference must be present (never None) and close."""
    (y, grads), (ref_y, ref_grads) = actual, expected
    assert_close(y, ref_y, dtype, msg=f"{msg} y")
    assert set(grads) == set(ref_grads), f"{msg}: gradients {sorted(grads)} != {sorted(ref_grads)}"
    for name, ref in ref_grads.items():
        assert grads[name] is not None, f"{msg}: no gradient for {name}"
        assert_close(grads[name], ref, dtype, msg=f"{msg} grad {name}")


def max_abs_err(actual, expected) -> float:
    return (actual.double() - expected.double()).abs().max().item() if expected.numel() else 0.0


def assert_no_worse_than(actual, baseline, expected, dtype, factor=2.0, msg=""):
    """Our error vs the float64 ``expected`` is at most ``factor`` x the
    baseline's (eager timm in the same dtype), plus one ulp at the magnitude."""
    mag = max(expected.abs().max().item(), 1.0) if expected.numel() else 1.0
    ours, theirs = max_abs_err(actual, expected), max_abs_err(baseline, expected)
    floor = torch.finfo(dtype).eps * mag
    assert ours <= factor * theirs + floor, f"{msg}: error {ours:.3g} > {factor} x baseline {theirs:.3g} + {floor:.3g}"


# --- float64 comparison keeping NaN/inf positions (reliability tests) ---


def run_with_grads(fn, tensors: dict, grad_names=(), dy=None, poison=True):
    """``fn(**tensors)`` with only the tensors named in ``grad_names`` as
    grad-requiring leaves (strides kept). Returns y, dy and {name: grad}; dy is
    a fresh random tensor in y's dtype unless given."""
    leaves = {k: v.detach().requires_grad_(k in grad_names) if isinstance(v, torch.Tensor) else v for k, v in tensors.items()}
    with poison_outputs(poison):
        y = fn(**leaves)
        if grad_names:
            if dy is None:
                dy = torch.randn(y.shape, device=y.device).to(y.dtype)
            y.backward(dy)
    return y.detach(), dy, {k: leaves[k].grad for k in grad_names}


def assert_close_nonfinite(actual, expected, dtype, msg="", scale=None):
    """NaN and +-inf at exactly the reference's positions, the finite elements
    close to it (tolerance scaled by the finite reference's magnitude)."""
    expected, actual = expected.double(), actual.double()
    assert actual.shape == expected.shape, f"{msg}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    for what, mask in (("NaN", torch.isnan), ("+inf", torch.isposinf), ("-inf", torch.isneginf)):
        a, e = mask(actual), mask(expected)
        assert torch.equal(a, e), f"{msg}: {what} at {a.nonzero().tolist()[:6]}, reference at {e.nonzero().tolist()[:6]}"
    finite = torch.isfinite(expected)
    if scale is None:
        scale = max(expected[finite].abs().max().item(), 1.0) if finite.any() else 1.0
    assert_close(actual[finite], expected[finite], dtype, scale=scale, msg=msg)


def check_vs_float64(fn, ref_fn, tensors: dict, dtype, grad_names=(), msg="", nonfinite=False):
    """Output and the gradients of ``grad_names`` of ``fn`` against ``ref_fn``
    run on float64 copies of the same tensors, with the same dy. With
    ``nonfinite``, the output's NaN/inf must sit where the reference has them
    and gradients are compared where the reference's is finite (torch's amax
    backward multiplies by a mask, so a non-finite pooled gradient reaches
    even the non-maxima as NaN there: 0 * inf; ours selects, not multiplies)."""
    y, dy, grads = run_with_grads(fn, tensors, grad_names)
    t64 = {k: v.detach().double() if isinstance(v, torch.Tensor) else v for k, v in tensors.items()}
    ref_y, _, ref_grads = run_with_grads(ref_fn, t64, grad_names, None if dy is None else dy.double(), poison=False)
    for name, actual, expected in [("y", y, ref_y)] + [(f"grad {k}", grads[k], ref_grads[k]) for k in grad_names]:
        assert actual is not None, f"{msg}: no {name}"
        if nonfinite and name == "y":
            assert_close_nonfinite(actual, expected, dtype, msg=f"{msg} {name}")
        elif nonfinite:
            finite = torch.isfinite(expected)
            scale = max(expected[finite].abs().max().item(), 1.0) if finite.any() else 1.0
            assert_close(actual[finite], expected[finite], dtype, scale=scale, msg=f"{msg} {name} (where finite)")
        else:
            assert_close(actual, expected, dtype, scale=None if expected.numel() else 1.0, msg=f"{msg} {name}")
    for k in grad_names:
        assert grads[k].dtype == tensors[k].dtype, f"{msg}: grad {k} dtype {grads[k].dtype} != {tensors[k].dtype}"
    return y, grads


# --- case builders of the reliability tests (hostile input, numerics, properties) ---


def rand(*shape, dtype=torch.float32):
    return torch.randn(shape).to(dtype)


def se_tensors(x, rd=8, wdtype=torch.float32, bias=True):
    C = x.shape[1]
    t = {"x": x, "w1": rand(rd, C, dtype=wdtype) * 0.5, "w2": rand(C, rd, dtype=wdtype) * 0.5}
    if bias:
        t.update(b1=rand(rd, dtype=wdtype), b2=rand(C, dtype=wdtype))
    return t


def se_fn(pool="avg", **kw):
    """(functional SE, its float64 reference) over named tensors x, w1, w2, b1, b2."""
    from triton_attn import functional as TF
    from triton_attn.reference import se_reference

    def fn(x, w1, w2, b1=None, b2=None):
        return TF.se(x, w1, b1, w2, b2, pool=pool, **kw)

    def ref(x, w1, w2, b1=None, b2=None):
        return se_reference(x, w1, b1, w2, b2, pool=pool, **kw)

    return fn, ref


def module_case(ours, eager, x, dtype, grad_x=True):
    """A module against its eager timm-style twin in float64, the parameters
    passed explicitly so that their gradients are compared too."""
    eager.load_state_dict(ours.state_dict())
    eager64 = copy.deepcopy(eager).double()
    params = dict(ours.named_parameters())
    fn = lambda x, **p: torch.func.functional_call(ours, p, (x,))  # noqa: E731
    ref = lambda x, **p: torch.func.functional_call(eager64, p, (x,))  # noqa: E731
    names = (["x"] if grad_x else []) + list(params)
    return fn, ref, {"x": x, **params}, dtype, names


def make_input_here(shape, dtype=torch.float32, layout="nchw", requires_grad=False):
    """``make_input`` on the default device: a test that sets it (``with
    torch.device(device)``) makes every tensor where the kernels run."""
    return make_input(shape, dtype, layout, device=torch.get_default_device(), requires_grad=requires_grad)
