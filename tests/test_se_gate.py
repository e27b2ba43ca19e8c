"""The one-launch SE gate MLP kernel (kernels/se_gate.py) against the float64
torch MLP, and the dispatch that uses it only at small batch."""
from __future__ import annotations

import itertools

import pytest
import torch

import triton_attn
from triton_attn.launch import se_gate as se_gate_mod
from triton_attn.activations import GATE_CODES, HIDDEN_ACT_CODES, act_forward, gate_forward
from triton_attn.launch.se_gate import MAX_KERNEL_BATCH, kernel_applies, se_gate

from helpers import make_input

pytestmark = pytest.mark.skipif(
    not triton_attn.INTERPRETED and not torch.cuda.is_available(), reason="needs Triton (interpreter or GPU)"
)

_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
_TOL = {torch.float32: 2e-5, torch.float16: 2e-5, torch.bfloat16: 2e-5}  # weights are exact in fp32


def _case(N, C, rd, pool, fc2, b1, b2, wdtype, gen):
    P = 2 if pool == "avgmax" else 1
    r = lambda *s: torch.randn(*s, generator=gen).to(_DEVICE)  # noqa: E731
    pooled = r(P, N, C) * 2
    out1 = rd if fc2 else C
    w1 = (r(out1, C) / C**0.5).to(wdtype)
    w2 = (r(C, rd) / rd**0.5).to(wdtype) if fc2 else None
    bias1 = r(out1).to(wdtype) if b1 else None
    bias2 = r(C).to(wdtype) if (fc2 and b2) else None
    return pooled, w1, bias1, w2, bias2


def _reference(pooled, pool, w1, b1, w2, b2, act, slope, gate):
    d = lambda t: None if t is None else t.reshape(t.shape[0], -1).double()  # noqa: E731
    p = pooled.double()
    p = 0.5 * p[0] + 0.5 * p[1] if pool == "avgmax" else p[0]
    z = p @ d(w1).t() + (b1.double() if b1 is not None else 0)
    if w2 is not None:
        z = act_forward(z, act, slope) @ d(w2).t() + (b2.double() if b2 is not None else 0)
    return gate_forward(z, gate)


def _check(pooled, pool, w1, b1, w2, b2, act, gate, slope=0.0):
    assert kernel_applies(pooled, w1, w2, act)
    g = se_gate(pooled, pool, w1, b1, w2, b2, act, slope, gate)
    assert g.dtype == pooled.dtype and g.shape == pooled.shape[1:] and g.is_contiguous()
    ref = _reference(pooled, pool, w1, b1, w2, b2, act, slope, gate)
    tol = _TOL.get(w1.dtype, 1e-10)
    torch.testing.assert_close(g.double(), ref, atol=tol, rtol=tol, msg=f"{pool} {act} {gate} {w1.dtype}")


def test_every_activation_gate_and_pool():
    gen = torch.Generator().manual_seed(0)
    for act, gate, pool in itertools.product(HIDDEN_ACT_CODES, GATE_CODES, ("avg", "max", "avgmax")):
        # h spans the activations' kinks (+-3, 0, 6): pooled values up to ~+-6.
        pooled, w1, b1, w2, b2 = _case(3, 24, 8, pool, True, True, True, torch.float32, gen)
        _check(pooled, pool, w1, b1, w2, b2, act, gate, slope=0.2 if act == "leaky_relu" else 0.0)


@pytest.mark.parametrize("wdtype", [torch.float32, torch.float16, torch.bfloat16])
def test_shapes_biases_and_weight_dtypes(wdtype):
    gen = torch.Generator().manual_seed(1)
    cases = itertools.product((1, 3, 24, 130), (1, 8, 24), (1, 3))
    for i, (C, rd, N) in enumerate(cases):
        # Rotate the bias / fc2 / pool / activation variants over the shapes.
        fc2 = i % 4 != 3
        b1, b2 = (i % 2 == 0), (i % 3 != 0)
        pool = ("avg", "max", "avgmax")[i % 3]
        act = list(HIDDEN_ACT_CODES)[i % len(HIDDEN_ACT_CODES)]
        gate = list(GATE_CODES)[i % 3]
        pooled, w1, bias1, w2, bias2 = _case(N, C, rd, pool, fc2, b1, b2, wdtype, gen)
        _check(pooled, pool, w1, bias1, w2, bias2, act, gate, slope=0.01)


def test_fp64_conv_weights_and_strided_weight():
    gen = torch.Generator().manual_seed(2)
    pooled, w1, b1, w2, b2 = _case(2, 130, 24, "avgmax", True, True, False, torch.float64, gen)
    _check(pooled.double(), "avgmax", w1[:, :, None, None], b1, w2.t().contiguous().t(), b2, "silu", "sigmoid")
    pooled, w1, b1, _, _ = _case(2, 24, 24, "avg", False, False, False, torch.float32, gen)
    _check(pooled, "avg", w1, b1, None, None, "gelu", "hard_sigmoid")  # no fc2: the activation is unused


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy on inf * 0 in masked lanes
@pytest.mark.parametrize("act", list(HIDDEN_ACT_CODES))
def test_activations_match_pytorch_at_the_kinks(act):
    # C = rd = 1 with unit weights: g[n] = act(p[n]) exactly, one sample per value.
    values = [-float("inf"), -100.0, -6.0, -3.0, -1e-30, 0.0, 1e-30, 3.0, 6.0, 100.0, float("inf"), float("nan")]
    pooled = torch.tensor(values, device=_DEVICE).reshape(1, -1, 1)
    one = torch.ones(1, 1, device=_DEVICE)
    g = se_gate(pooled, "avg", one, None, one, None, act, 0.1, "identity")
    expected = act_forward(pooled[0].clone(), act, 0.1)
    torch.testing.assert_close(g, expected, equal_nan=True, atol=1e-6, rtol=1e-6)


def test_unsupported_shapes_keep_the_torch_mlp():
    pooled = torch.randn(1, 2, 8, device=_DEVICE)
    w1, w2 = torch.randn(4, 8, device=_DEVICE), torch.randn(8, 4, device=_DEVICE)
    assert not kernel_applies(pooled, w1, w2, "gelu")
    assert not kernel_applies(pooled, w1, w2, "tanh")
    assert not kernel_applies(torch.randn(1, MAX_KERNEL_BATCH + 1, 8, device=_DEVICE), w1, w2, "relu")
    assert not kernel_applies(pooled, torch.randn(513, 8, device=_DEVICE), torch.randn(8, 513, device=_DEVICE), "relu")
    assert kernel_applies(pooled, torch.randn(512, 8, device=_DEVICE), torch.randn(8, 512, device=_DEVICE), "relu")
    with triton_attn.torch_fallback():
        assert not kernel_applies(pooled, w1, w2, "relu")


class _CountingKernel:
    def __init__(self, kernel):
        self.kernel, self.launches = kernel, 0

    def __getitem__(self, grid):
        self.launches += 1
        return self.kernel[grid]


@pytest.mark.parametrize("N, expect", [(2, 1), (MAX_KERNEL_BATCH + 1, 0)])
@pytest.mark.parametrize("effective", [False, True])
def test_module_uses_the_kernel_only_at_small_batch(monkeypatch, N, expect, effective):
    counter = _CountingKernel(se_gate_mod.se_gate_kernel)
    monkeypatch.setattr(se_gate_mod, "se_gate_kernel", counter)
    C = 8
    block = triton_attn.EffectiveSEModule(C) if effective else triton_attn.SEModule(C, rd_channels=4)
    block = block.to(_DEVICE)
    x = make_input((N, C, 2, 2), device=_DEVICE, requires_grad=True)
    y = block(x)
    assert counter.launches == expect
    y.backward(torch.randn_like(y))
    assert counter.launches == expect  # the backward recomputes g in torch
    xd = x.detach().double()
    s = xd.mean((2, 3), keepdim=True)
    with torch.no_grad():
        ref = _module_reference(block, xd, s, effective)
    torch.testing.assert_close(y.detach().double(), ref, atol=1e-5, rtol=1e-5)


def _module_reference(block, xd, s, effective):
    if effective:
        return xd * torch.nn.functional.hardsigmoid(block.fc(s.float()).double())
    return xd * torch.sigmoid(block.fc2(block.act(block.fc1(s.float()))).double())
