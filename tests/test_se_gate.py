"""The SE gate MLP kernels (kernels/se_gate.py forward, kernels/se_gate_backward.py
backward) against float64 torch, through their launchers: every activation,
gate and pooling, split pooling partials, sample blocks, output slices and
backward programs, fc2 or not (EffectiveSE), biases or not, weights in their
own dtype, and the kinks of the activations."""
from __future__ import annotations

import itertools

import pytest
import torch

import triton_attn
from triton_attn.activations import GATE_CODES, HIDDEN_ACT_CODES, act_forward, gate_forward
from triton_attn.launch import se_gate as gate_launch
from triton_attn.runtime import poison_outputs

pytestmark = pytest.mark.skipif(
    not triton_attn.INTERPRETED and not torch.cuda.is_available(), reason="needs Triton (interpreter or GPU)"
)

_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _weights(N, C, rd, fc2, b1, b2, wdtype, gen):
    r = lambda *s: torch.randn(*s, generator=gen).to(_DEVICE)  # noqa: E731
    out1 = rd if fc2 else C
    w1 = (r(out1, C) / C**0.5).to(wdtype)
    w2 = (r(C, rd) / rd**0.5).to(wdtype) if fc2 else None
    return w1, r(out1).to(wdtype) if b1 else None, w2, r(C).to(wdtype) if (fc2 and b2) else None


def _partials(N, C, pool, split, gen):
    """[P, SPLIT, N, C] as the pooling pass writes them (mean partials sum to
    the mean), and the folded statistics."""
    P = 2 if pool in ("avgmax", "pair") else 1
    part = torch.randn(P, split, N, C, generator=gen).to(_DEVICE) * 2
    first = part[0].amax(0) if pool == "max" else part[0].sum(0)
    second = part[1].amax(0) if P == 2 else first
    return part, first, second


def _forward(part, split, w1, b1, w2, b2, pool, act, slope, gate):
    P, _, N, C = part.shape
    acc = part.dtype
    rd = w1.shape[0]
    width = rd if w2 is not None else C
    spec = gate_launch.gate_spec(N, C, rd, w2 is not None, acc)
    pooled = torch.empty(P, N, C, device=_DEVICE, dtype=acc)
    h = torch.empty(gate_launch.hidden_rows(pool), N, width, device=_DEVICE, dtype=acc)
    scratch = torch.empty(max(gate_launch.forward_scratch_size(spec, N, rd, w2 is not None, pool), 1), device=_DEVICE, dtype=acc)
    g = torch.empty(N, C, device=_DEVICE, dtype=acc)
    with poison_outputs():
        gate_launch.se_gate(spec, True, part, split, pooled, w1, b1, w2, b2, h, scratch, g, pool, act, slope, gate)
    return pooled, h, g, spec


def _reference(first, second, pool, w1, b1, w2, b2, act, slope, gate):
    d = lambda t: None if t is None else t.reshape(t.shape[0], -1).double()  # noqa: E731
    bias1 = b1.double() if b1 is not None else 0
    bias2 = b2.double() if b2 is not None else 0
    if pool == "pair":  # CBAM: the shared MLP on both rows, summed
        h = torch.stack([first.double() @ d(w1).t() + bias1, second.double() @ d(w1).t() + bias1])
        z = sum(act_forward(h[i], act, slope) @ d(w2).t() + bias2 for i in range(2))
        return None, h, z, gate_forward(z, gate)
    q = 0.5 * first.double() + 0.5 * second.double() if pool == "avgmax" else first.double()
    h = q @ d(w1).t() + bias1
    z = h if w2 is None else act_forward(h, act, slope) @ d(w2).t() + bias2
    return q, h[None], z, gate_forward(z, gate)


def _check_forward(N, C, rd, pool, split, fc2, b1, b2, wdtype, act, gate, gen, slope=0.0, tol=2e-5):
    part, first, second = _partials(N, C, pool, split, gen)
    w1, bias1, w2, bias2 = _weights(N, C, rd, fc2, b1, b2, wdtype, gen)
    pooled, h, g, spec = _forward(part, split, w1, bias1, w2, bias2, pool, act, slope, gate)
    _, ref_h, _, ref_g = _reference(first, second, pool, w1, bias1, w2, bias2, act, slope, gate)
    msg = f"N={N} C={C} rd={rd} {pool} split={split} fc2={fc2} {act} {gate} {wdtype} grid={spec.grid}"
    torch.testing.assert_close(pooled[0].double(), first.double(), atol=1e-6, rtol=1e-6, msg=msg)
    torch.testing.assert_close(h.double(), ref_h, atol=tol, rtol=tol, msg=msg)
    torch.testing.assert_close(g.double(), ref_g, atol=tol, rtol=tol, msg=msg)


def test_every_activation_gate_and_pool():
    gen = torch.Generator().manual_seed(0)
    for act, gate, pool in itertools.product(HIDDEN_ACT_CODES, GATE_CODES, ("avg", "max", "avgmax", "pair")):
        _check_forward(3, 24, 8, pool, 2, True, True, True, torch.float32, act, gate, gen, slope=0.2)


@pytest.mark.parametrize("wdtype", [torch.float32, torch.float16, torch.bfloat16])
def test_shapes_slices_blocks_biases_and_weight_dtypes(wdtype):
    gen = torch.Generator().manual_seed(1)
    # C = 700 at N < 8 spreads the output over slices; N = 40 takes two
    # sample blocks; rd = 200 takes two hidden chunks.
    cases = [(1, 1, 1), (3, 3, 8), (1, 700, 24), (40, 130, 200), (2, 24, 1), (40, 300, 16)]
    for i, (N, C, rd) in enumerate(cases):
        fc2 = i % 4 != 3
        pool = ("avg", "max", "avgmax", "pair")[i % 4] if fc2 else "avg"
        act = list(HIDDEN_ACT_CODES)[i % len(HIDDEN_ACT_CODES)]
        _check_forward(N, C, rd, pool, 1 + i % 3, fc2, i % 2 == 0, i % 3 != 0, wdtype, act, list(GATE_CODES)[i % 3], gen, slope=0.01)


def test_conv_shaped_and_strided_weights():
    gen = torch.Generator().manual_seed(2)
    part, first, second = _partials(2, 130, "avgmax", 1, gen)
    w1, b1, w2, b2 = _weights(2, 130, 24, True, True, False, torch.float32, gen)
    w1c, w2t = w1[:, :, None, None], w2.t().contiguous().t()  # [rd, C, 1, 1] and a transposed-storage view
    _, h, g, _ = _forward(part, 1, w1c, b1, w2t, b2, "avgmax", "silu", 0.0, "sigmoid")
    _, ref_h, _, ref_g = _reference(first, second, "avgmax", w1, b1, w2, b2, "silu", 0.0, "sigmoid")
    torch.testing.assert_close(g.double(), ref_g, atol=2e-5, rtol=2e-5)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy on inf * 0 in masked lanes
@pytest.mark.parametrize("act", list(HIDDEN_ACT_CODES))
def test_activations_match_pytorch_at_the_kinks(act):
    # C = rd = 1 with unit weights: g[n] = act(p[n]) exactly, one sample per value.
    values = [-float("inf"), -100.0, -6.0, -3.0, -1e-30, 0.0, 1e-30, 1e-3, 3.0, 6.0, 100.0, float("inf"), float("nan")]
    part = torch.tensor(values, device=_DEVICE).reshape(1, 1, -1, 1)
    one = torch.ones(1, 1, device=_DEVICE)
    _, _, g, _ = _forward(part, 1, one, None, one, None, "avg", act, 0.1, "identity")
    expected = act_forward(part[0, 0].clone(), act, 0.1)
    torch.testing.assert_close(g, expected, equal_nan=True, atol=1e-6, rtol=1e-6)


def _backward_case(N, C, rd, pool, fc2, b1, b2, wdtype, act, gate, gen, need_dx=True, slope=0.05, dg_mode=0):
    acc = torch.float32
    part, first, second = _partials(N, C, pool, 1, gen)
    w1, bias1, w2, bias2 = _weights(N, C, rd, fc2, b1, b2, wdtype, gen)
    pooled, h, g, _ = _forward(part, 1, w1, bias1, w2, bias2, pool, act, slope, gate)
    split = 2
    rows = 1 if dg_mode == 0 else 2
    dg_part = torch.randn(rows, split, N, C, generator=gen).to(_DEVICE)
    coef = torch.randn(2, C, generator=gen).to(_DEVICE) if dg_mode == 2 else None
    cnt_part = torch.randint(0, 3, (split, N, C), generator=gen).to(_DEVICE).to(acc)
    spec = gate_launch.gate_backward_spec(N, C, rd, fc2, acc)
    n_dz, n_dhp, n_dh = gate_launch.scratch_sizes(spec, N, C, rd, fc2, pool)
    width = rd if fc2 else C
    buf = lambda n: torch.empty(max(n, 1), device=_DEVICE, dtype=acc)  # noqa: E731
    grads = [None if t is None else torch.empty(t.shape, device=_DEVICE, dtype=t.dtype) for t in (w1, bias1, w2, bias2)]
    dmean, dmax = torch.empty(N, C, device=_DEVICE), torch.empty(N, C, device=_DEVICE)
    with poison_outputs():
        gate_launch.se_gate_backward(
            spec, True, dg_part, cnt_part, split, g, h, pooled, w1, bias1, w2, bias2, pool, act, slope, gate, 49, need_dx,
            buf(n_dz), buf(n_dhp).view(-1, N, width) if n_dhp else buf(1), buf(n_dh), *grads,
            dmean if pool != "max" else None, dmax if pool != "avg" else None, dg_mode=dg_mode, coef=coef,
        )
    # float64 autograd through the reference MLP, with dg as the incoming gradient of g
    leaves = [None if t is None else t.detach().double().requires_grad_() for t in (w1, bias1, w2, bias2)]
    f, s = first.double().requires_grad_(), second.double().requires_grad_()
    _, _, _, ref_g = _reference(f, s, pool, *leaves, act, slope, gate)
    folded = dg_part.double().sum(1)
    dg = folded[0] if dg_mode == 0 else (folded[0] + folded[1] if dg_mode == 1 else coef.double()[0] * folded[0] + coef.double()[1] * folded[1])
    ref_g.backward(dg)
    msg = f"N={N} C={C} rd={rd} {pool} fc2={fc2} {act} {gate} {wdtype} programs={spec.programs_a}"
    for got, leaf in zip(grads, leaves):
        if leaf is not None:
            assert got.dtype == leaf.grad.dtype or got.dtype == wdtype
            torch.testing.assert_close(got.double(), leaf.grad, atol=3e-2 if wdtype != torch.float32 else 5e-5,
                                       rtol=3e-2 if wdtype != torch.float32 else 5e-5, msg=msg)
    if need_dx:
        if pool != "max":
            torch.testing.assert_close(dmean.double(), f.grad / 49, atol=5e-5, rtol=5e-5, msg=msg)
        if pool != "avg":
            dsec = s.grad if pool in ("avgmax", "pair") else f.grad
            cnt = cnt_part.double().sum(0)
            want = torch.where(cnt > 0, dsec / cnt.clamp_min(1), torch.full_like(dsec, float("nan")))
            torch.testing.assert_close(dmax.double(), want, atol=5e-5, rtol=5e-5, equal_nan=True, msg=msg)


def test_backward_every_activation_gate_and_pool():
    gen = torch.Generator().manual_seed(3)
    for i, (act, gate, pool) in enumerate(itertools.product(HIDDEN_ACT_CODES, GATE_CODES, ("avg", "max", "avgmax", "pair"))):
        _backward_case(3, 24, 8, pool, True, True, True, torch.float32, act, gate, gen, dg_mode=i % 3)


@pytest.mark.parametrize("wdtype", [torch.float32, torch.bfloat16])
def test_backward_shapes_programs_and_no_fc2(wdtype):
    gen = torch.Generator().manual_seed(4)
    # C = 700: several programs per phase; N = 40: two sample blocks; rd = 200: two hidden chunks.
    for i, (N, C, rd) in enumerate([(1, 1, 1), (40, 700, 200), (2, 130, 8), (5, 24, 24)]):
        for fc2 in (True, False):
            pool = ("avg", "max", "avgmax", "pair")[i % 4] if fc2 else ("avg", "max", "avgmax")[i % 3]
            _backward_case(N, C, rd, pool, fc2, i % 2 == 0, True, wdtype,
                           list(HIDDEN_ACT_CODES)[(3 * i) % len(HIDDEN_ACT_CODES)], list(GATE_CODES)[i % 3], gen,
                           need_dx=i != 3)


def test_twin_matches_the_kernels():
    """The pure-PyTorch twin (the CPU path without Triton) computes what the kernels do."""
    gen = torch.Generator().manual_seed(5)
    part, *_ = _partials(4, 40, "avgmax", 3, gen)
    w1, b1, w2, b2 = _weights(4, 40, 8, True, True, True, torch.float32, gen)
    pooled, h, g, spec = _forward(part, 3, w1, b1, w2, b2, "avgmax", "hard_swish", 0.0, "hard_sigmoid")
    tp, th, tg = torch.empty_like(pooled), torch.empty_like(h), torch.empty_like(g)
    gate_launch.se_gate(spec, False, part, 3, tp, w1, b1, w2, b2, th, tg, tg, "avgmax", "hard_swish", 0.0, "hard_sigmoid")
    for a, b in ((pooled, tp), (h, th), (g, tg)):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5)
