"""The fused attention tail ``act(drop_path(attn(bn(z))) + shortcut)`` through
its module layer (``AttentionTail``, the tail-fused timm ResNet blocks,
``convert(fuse_tail=True)``) and its functional form, against timm's own
unfused sequence: float64 and fp32/bf16, train/eval, BatchNorm's running
statistics over several steps (momentum float and None,
track_running_stats=False, affine=False), drop_path with a fixed seed, no
shortcut, empty batches, PyTorch's one-value error, large-mean stability,
torch.compile, opcheck, whole timm models through two SGD steps, the report,
and the bytes saved for backward.

Small shapes: every case runs the Triton kernels under the interpreter."""
from __future__ import annotations

import copy
import functools
import logging
import pickle

import pytest
import torch
from torch import nn

import triton_attn
import triton_attn.functional as TF
from helpers import TOL
from triton_attn.modules.resnet import FusedTailBasicBlock, FusedTailBottleneck
from triton_attn.modules.tail import AttentionTail
from triton_attn.ops import tail as tail_ops

timm = pytest.importorskip("timm")

from timm.layers import DropPath  # noqa: E402
from timm.layers import eca as timm_eca  # noqa: E402
from timm.layers import squeeze_excite as timm_se  # noqa: E402
from timm.models.resnet import BasicBlock, Bottleneck  # noqa: E402

C = 16

#: CUDA runs the compiled kernels; on CPU they run under the interpreter
#: (tests/conftest.py), so every case here is small.
DEVICE = "cuda" if torch.cuda.is_available() and not triton_attn.INTERPRETED else "cpu"


@pytest.fixture(autouse=True)
def _on_device():
    """Every tensor and module a test builds lives on DEVICE."""
    with torch.device(DEVICE):
        yield


def _rng_state():
    return torch.cuda.get_rng_state() if DEVICE == "cuda" else torch.get_rng_state()


def _err(a, b) -> float:
    return (a.double() - b.double()).abs().max().item() if b.numel() else 0.0


def _mag(t) -> float:
    return max(t.double().abs().max().item(), 1.0) if t.numel() else 1.0


def _bn(channels=C, **kw) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, **kw)
    with torch.no_grad():
        if bn.affine:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0, 0.3)
        if bn.track_running_stats:
            bn.running_mean.normal_(0, 0.3)
            bn.running_var.uniform_(0.5, 1.5)
    return bn


ATTNS = {
    "se": lambda c: timm_se.SEModule(c, rd_ratio=1 / 4),
    "se-avgmax-silu-hsig": lambda c: timm_se.SEModule(c, rd_ratio=1 / 4, add_maxpool=True, act_layer=nn.SiLU,
                                                      gate_layer="hard_sigmoid"),
    "ese": lambda c: timm_se.EffectiveSEModule(c),
    "eca": lambda c: timm_eca.EcaModule(c),
    "ceca-bias": lambda c: timm_eca.CecaModule(c, act_layer=nn.ReLU),  # timm gives CECA a conv bias with an act
    "none": lambda c: None,
}


def _randomize(m):
    if m is not None:
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0, 0.5)
    return m


class Unfused(nn.Module):
    """timm's tail as its blocks run it: bn -> attn -> drop_path -> += shortcut -> act."""

    def __init__(self, bn, attn, act, drop_path=None):
        super().__init__()
        self.bn, self.attn, self.act, self.drop_path = bn, attn, act, drop_path

    def forward(self, z, shortcut=None):
        x = self.bn(z)
        if self.attn is not None:
            x = self.attn(x)
        if self.drop_path is not None:
            x = self.drop_path(x)
        if shortcut is not None:
            x += shortcut
        return self.act(x)


def _pair(attn_kind="se", act=None, drop_path=None, channels=C, **bn_kw):
    """(fused AttentionTail around the converted attention, timm's sequence on
    copies of the same modules)."""
    bn, attn = _bn(channels, **bn_kw), _randomize(ATTNS[attn_kind](channels))
    act = act if act is not None else nn.ReLU(inplace=True)
    ref = Unfused(copy.deepcopy(bn), copy.deepcopy(attn), copy.deepcopy(act), copy.deepcopy(drop_path))
    fused_attn = triton_attn.convert(attn)[0] if attn is not None else None
    return AttentionTail(bn, fused_attn, act, drop_path), ref


def _run(module, z, s, dy):
    """y and the gradients of z, the shortcut and every parameter (by name)."""
    module.zero_grad(set_to_none=True)
    z = z.detach().requires_grad_(True)
    s = s.detach().requires_grad_(True) if s is not None else None
    y = module(z, s)
    y.backward(dy)
    grads = {"z": z.grad, **({"shortcut": s.grad} if s is not None else {})}
    grads.update({n: p.grad for n, p in module.named_parameters()})
    return y.detach(), grads


def _inputs(shape=(2, C, 4, 5), dtype=torch.float32, layout="nchw"):
    z, s, dy = (torch.randn(shape, dtype=dtype) for _ in range(3))
    if layout == "channels_last":
        z, s, dy = (t.contiguous(memory_format=torch.channels_last) for t in (z, s, dy))
    return z, s, dy


def _buffers(m):
    return {n: b.clone() for n, b in m.named_buffers()}


# --- the module against timm's sequence, float64 --------------------------------

CASES = [(k, train) for k in ATTNS for train in (True, False)]


@pytest.mark.parametrize("kind, train", CASES, ids=[f"{k}-{'train' if t else 'eval'}" for k, t in CASES])
def test_module_matches_the_unfused_sequence_in_float64(kind, train):
    """Every attention the op covers, both modes; layout and act alternate
    between cases (NCHW/ReLU, channels_last/SiLU)."""
    i = CASES.index((kind, train))
    layout, act = ("channels_last", nn.SiLU()) if i % 2 else ("nchw", nn.ReLU(inplace=True))
    fused, ref = _pair(kind, act)
    fused, ref = fused.double().train(train), ref.double().train(train)
    assert fused.tail_path() == "fused"
    z, s, dy = _inputs(dtype=torch.float64, layout=layout)
    y, grads = _run(fused, z, s, dy)
    ref_y, ref_grads = _run(ref, z, s, dy)
    assert y.is_contiguous(memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
    assert _err(y, ref_y) <= 1e-10 * _mag(ref_y)
    assert set(grads) == set(ref_grads)
    for k, g in ref_grads.items():
        assert _err(grads[k], g) <= 1e-10 * _mag(g), k
    for k, b in _buffers(ref).items():
        assert torch.allclose(_buffers(fused)[k].double(), b.double(), rtol=1e-12, atol=1e-12), k


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_module_low_precision_is_no_worse_than_timm(dtype):
    """fp32 and bf16 tensors (weights in that dtype too): errors against
    float64 at most twice timm's own, plus one tolerance."""
    fused, ref = _pair("se-avgmax-silu-hsig")
    exact = copy.deepcopy(ref).double()
    fused, ref = fused.to(dtype), ref.to(dtype)
    z, s, dy = _inputs(dtype=dtype, layout="channels_last")
    y, grads = _run(fused, z, s, dy)
    ref_y, ref_grads = _run(ref, z, s, dy)
    ex_y, ex_grads = _run(exact, z.double(), s.double(), dy.double())
    assert y.dtype == dtype
    tol = TOL[dtype]["atol"]
    assert _err(y, ex_y) <= 2 * _err(ref_y, ex_y) + tol * _mag(ex_y)
    for k, g in ex_grads.items():
        assert grads[k].dtype == ref_grads[k].dtype, k
        assert _err(grads[k], g) <= 2 * _err(ref_grads[k], g) + 2 * tol * _mag(g), k


# --- BatchNorm's running statistics ------------------------------------------------

BN_CONFIGS = {
    "momentum": dict(momentum=0.3),
    "cumulative": dict(momentum=None),
    "no-running-stats": dict(track_running_stats=False),
    "no-affine": dict(affine=False),
}


@pytest.mark.parametrize("config", list(BN_CONFIGS))
def test_running_statistics_follow_pytorch_over_steps(config):
    """Three training steps then an eval step: the same running_mean,
    running_var (unbiased) and num_batches_tracked as nn.BatchNorm2d."""
    fused, ref = _pair("eca", **BN_CONFIGS[config])
    for step in range(4):
        train = step < 3
        fused.train(train), ref.train(train)
        z, s, _ = _inputs((3, C, 3, 4))
        z = z * (1 + step) + step  # statistics that move
        with torch.no_grad():
            y, ref_y = fused(z, s), ref(z, s)
        assert _err(y, ref_y) <= 2e-5 * _mag(ref_y), step
        got, want = _buffers(fused), _buffers(ref)
        assert got.keys() == want.keys()
        for k, b in want.items():
            if b.is_floating_point():
                torch.testing.assert_close(got[k], b, rtol=1e-5, atol=1e-6, msg=f"{k} step {step}")
            else:
                assert torch.equal(got[k], b), (k, step, got[k], b)
    if config == "cumulative":
        assert fused.bn.num_batches_tracked.item() == 3


def test_batch_statistics_of_a_large_mean_are_stable():
    """z = 1000 + randn in fp32: the batch statistics (hence y and the running
    variance) match float64 on the same fp32 values, where E[z^2] - E[z]^2
    would lose every digit."""
    fused, _ = _pair("se")
    exact = copy.deepcopy(fused.bn).double()
    z = 1000 + torch.randn(4, C, 6, 6)
    s = torch.zeros_like(z)
    fused.act = nn.Identity()
    fused.attn = None
    with torch.no_grad():
        y = fused(z, s)
        ex = exact(z.double())
    assert _err(y, ex) <= 1e-3, _err(y, ex)  # z itself carries fp32's 6e-5 at 1000
    torch.testing.assert_close(fused.bn.running_var.double(), exact.running_var, rtol=1e-5, atol=0)
    torch.testing.assert_close(fused.bn.running_mean.double(), exact.running_mean, rtol=1e-6, atol=0)


# --- drop_path, shortcut None, empty batches, one value -----------------------------

def test_drop_path_with_a_fixed_seed_draws_timm_s_mask():
    fused, ref = _pair("se", drop_path=DropPath(0.5))
    z, s, dy = _inputs((6, C, 3, 3))
    torch.manual_seed(7)
    y, grads = _run(fused.train(), z, s, dy)
    after = _rng_state()
    torch.manual_seed(7)
    ref_y, ref_grads = _run(ref.train(), z, s, dy)
    assert torch.equal(_rng_state(), after), "a different number of random draws"
    assert _err(y, ref_y) <= 2e-5 * _mag(ref_y)
    for k, g in ref_grads.items():
        assert _err(grads[k], g) <= 2e-5 * _mag(g), k
    # in eval, and with drop_prob 0, drop_path is the identity: no draw
    fused.eval(), ref.eval()
    state = _rng_state()
    with torch.no_grad():
        assert _err(fused(z, s), ref(z, s)) <= 2e-5 * _mag(ref(z, s))
    assert torch.equal(_rng_state(), state)


def test_no_shortcut():
    fused, ref = _pair("ese")
    z, _, dy = _inputs()
    y, grads = _run(fused.train(), z, None, dy)
    ref_y, ref_grads = _run(ref.train(), z, None, dy)
    assert _err(y, ref_y) <= 2e-5 * _mag(ref_y)
    for k, g in ref_grads.items():
        assert _err(grads[k], g) <= 2e-5 * _mag(g), k


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_empty_batch_counts_like_pytorch(train):
    fused, ref = _pair("se")
    fused.train(train), ref.train(train)
    z, s, dy = _inputs((0, C, 4, 4))
    y, grads = _run(fused, z, s, dy)
    ref_y, ref_grads = _run(ref, z, s, dy)
    assert y.shape == z.shape and grads["z"].shape == z.shape
    for k, b in _buffers(ref).items():
        assert torch.equal(_buffers(fused)[k], b), k
    assert fused.bn.num_batches_tracked.item() == (1 if train else 0)
    y = TF.attention_tail(z, s, bn_weight=fused.bn.weight, bn_bias=fused.bn.bias, running_mean=fused.bn.running_mean,
                          running_var=fused.bn.running_var, num_batches_tracked=fused.bn.num_batches_tracked,
                          bn_training=train)
    assert y.shape == z.shape and fused.bn.num_batches_tracked.item() == (2 if train else 0)


def test_one_value_per_channel_in_training_is_pytorchs_error():
    fused, ref = _pair("se")
    z = torch.randn(1, C, 1, 1)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training") as ours:
        fused.train()(z, z)
    with pytest.raises(ValueError) as theirs:
        ref.train()(z, z)
    assert str(ours.value) == str(theirs.value)
    assert fused.bn.num_batches_tracked.item() == ref.bn.num_batches_tracked.item()  # counted before raising, as PyTorch
    bn = fused.bn
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        TF.attention_tail(z, None, bn_weight=bn.weight, bn_bias=bn.bias, running_mean=bn.running_mean,
                          running_var=bn.running_var, bn_training=True)
    fused.eval()(z, z)  # eval uses the running statistics: fine


# --- the functional form ---------------------------------------------------------------

def test_functional_matches_the_module_and_validates():
    fused, _ = _pair("ceca-bias")
    bn, eca = fused.bn, fused.attn
    z, s, _ = _inputs()
    kw = dict(bn_weight=bn.weight, bn_bias=bn.bias, running_mean=bn.running_mean.clone(),
              running_var=bn.running_var.clone(), bn_training=False, eps=bn.eps)
    with torch.no_grad():
        y = TF.attention_tail(z, s, attn="eca", conv_weight=eca.conv.weight, conv_bias=eca.conv.bias, circular=True, **kw)
        want = fused.eval()(z, s)
    assert _err(y, want) <= 1e-6 * _mag(want)
    bad = [
        (dict(attn="eca"), ValueError, "needs conv_weight"),
        (dict(attn="se", conv_weight=eca.conv.weight), ValueError, "takes"),
        (dict(attn="cbam"), ValueError, "attn must be one of"),
        (dict(attn="eca", conv_weight=torch.randn(4)), ValueError, "k odd"),
        (dict(attn="none", act="mish"), ValueError, "act must be one of"),
        (dict(attn="none", pool="max"), ValueError, "pool='max' applies to attn='se' only"),
        (dict(attn="none", drop=torch.ones(5)), ValueError, "one factor per sample"),
    ]
    for extra, exc, msg in bad:
        with pytest.raises(exc, match=msg):
            TF.attention_tail(z, s, **{**kw, **extra})
    with pytest.raises(ValueError, match="shortcut has shape"):
        TF.attention_tail(z, s[:1], **kw)
    with pytest.raises(ValueError, match="bn_weight has shape"):
        TF.attention_tail(z, s, **{**kw, "bn_weight": torch.ones(C + 1)})
    with pytest.raises(ValueError, match="eval"):
        TF.attention_tail(z, s, **{**kw, "running_mean": None, "running_var": None})
    with pytest.raises(TypeError, match="bn_training must be a bool"):
        TF.attention_tail(z, s, **{**kw, "bn_training": 1})
    with pytest.raises(ValueError, match="fc1_weight expects"):
        TF.attention_tail(z, s, attn="se", fc1_weight=torch.randn(4, C + 1), **kw)
    with pytest.raises(ValueError, match="momentum=None"):
        TF.attention_tail(z, s, **{**kw, "bn_training": True, "momentum": None})


# --- fallbacks: what the fused forward would skip ----------------------------------------

def test_hooks_and_foreign_norms_take_the_modules_themselves(caplog):
    fused, ref = _pair("se")
    z, s, _ = _inputs()
    seen = []
    handle = fused.attn.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    assert fused.tail_path().startswith("unfused: hooks are registered on attn")
    with caplog.at_level(logging.INFO, logger="triton_attn"), torch.no_grad():
        y = fused.train()(z, s)
        ref_y = ref.train()(z, s)
    assert seen == [z.shape] and _err(y, ref_y) <= 2e-5 * _mag(ref_y)
    assert any("runs unfused" in r.message and "hooks" in r.message for r in caplog.records)
    handle.remove()
    assert fused.tail_path() == "fused"
    fused.bn = nn.GroupNorm(4, C)
    assert fused.tail_path() == "unfused: bn is GroupNorm (only nn.BatchNorm2d is fused)"
    fused.bn = nn.SyncBatchNorm(C)
    assert "SyncBatchNorm" in fused.tail_path()
    fused.bn, fused.act = _bn(), nn.Mish()
    assert fused.tail_path() == "unfused: act is Mish (no fused form)"


# --- torch.compile and opcheck -------------------------------------------------------------

def _block(attn="se", planes=8, basic=False, **kw):
    from timm.layers import get_attn

    cls = BasicBlock if basic else Bottleneck
    inplanes = planes * cls.expansion
    block = cls(inplanes, planes, attn_layer=get_attn(attn) if attn else None, **kw)
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.3)
    return block, inplanes


def test_compile_fullgraph_of_a_fused_block_in_training():
    torch._dynamo.reset()
    block, Cin = _block("se")
    ref = copy.deepcopy(block).train()
    fused, report = triton_attn.convert(block, fuse_tail=True)
    assert type(fused) is FusedTailBottleneck, str(report)
    compiled = torch.compile(fused.train(), fullgraph=True, backend="aot_eager")
    x = torch.randn(2, Cin, 4, 4)
    dy = torch.randn_like(x)
    y, grads = _run_block(compiled, x, dy)
    ref_y, ref_grads = _run_block(ref, x, dy)
    assert _err(y, ref_y) <= 2e-5 * _mag(ref_y)
    for k, g in ref_grads.items():
        assert _err(grads["_orig_mod." + k if k != "x" else k], g) <= 1e-4 * _mag(g), k
    torch.testing.assert_close(fused.bn3.running_var, ref.bn3.running_var)
    assert fused.bn3.num_batches_tracked.item() == ref.bn3.num_batches_tracked.item() == 1


def _run_block(block, x, dy):
    block.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    y = block(x)
    y.backward(dy)
    return y.detach(), {"x": x.grad, **{n: p.grad for n, p in block.named_parameters()}}


def _op_args(attn, bn_training, running=True):
    r = lambda *s: torch.randn(*s, requires_grad=True)  # noqa: E731
    n, c = 2, 8
    z, s = r(n, c, 2, 3), r(n, c, 2, 3)
    rm, rv, nbt = (torch.zeros(c), torch.ones(c), torch.tensor(2)) if running else (None, None, None)
    if attn == "se":
        w = (r(4, c), r(4), r(c, 4), r(c))
        extra = ("avgmax", "silu", 0.0, "sigmoid", False, torch.tensor([0.0, 2.0]), "relu", 0.0)
    else:
        w = (r(1, 1, 3), None, None, None)
        extra = ("avg", "relu", 0.0, "hard_sigmoid", True, None, "silu", 0.0)
    return (z, s, r(c), r(c), rm, rv, nbt, bn_training, None if running else 0.1, 1e-5, attn, *w, *extra)


OPCHECK_UTILS = ("test_schema", "test_autograd_registration", "test_faketensor")


@pytest.mark.parametrize("attn, bn_training, running", [("se", True, True), ("eca", False, True), ("se", True, False)])
def test_opcheck(attn, bn_training, running):
    """tail_fwd and tail_bwd (``test_aot_dispatch_dynamic`` is left out: the
    op's fake sizes its state from a launch plan keyed on concrete shapes)."""
    args = _op_args(attn, bn_training, running)
    torch.library.opcheck(tail_ops.tail_fwd, args, test_utils=OPCHECK_UTILS)
    z, s, g, b, rm, rv, nbt, bt, mom, eps, a, w1, b1, w2, b2, pool, aact, aparam, gate, circ, drop, act, ap = args
    y, state, *_ = tail_ops.tail_fwd(*args)
    d = lambda t: t.detach() if isinstance(t, torch.Tensor) else t  # noqa: E731
    bwd = (torch.randn(z.shape), d(z), d(y) if act == "relu" else None, None if act == "relu" else d(s), state,
           d(g), d(b), bt, mom, eps, a, d(w1), d(b1), d(w2), d(b2), pool, aact, aparam, gate, circ, drop, act, ap, True)
    torch.library.opcheck(tail_ops.tail_bwd, bwd, test_utils=OPCHECK_UTILS)


# --- whole timm models ------------------------------------------------------------------------

SMALL = dict(layers=(1, 1, 1, 1), channels=(16, 32, 64, 128), num_classes=10)
MODELS = {
    "seresnet50": dict(),
    "ecaresnet26t": dict(),
    "seresnext26d_32x4d": dict(),
    "resnet18-ese": dict(block_args=dict(attn_layer="ese")),
    "resnet18-ceca": dict(block_args=dict(attn_layer="ceca")),
}


def _model(name, **extra):
    """A real timm architecture at one block per stage and narrow stages
    (the interpreter runs every kernel): its stem, downsampling, attention
    and block class as timm builds them. BatchNorm weights are random (timm
    zero-initialises each block's last norm, which would hide the tail)."""
    arch = name.split("-")[0]
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, **SMALL, **MODELS.get(name, {}), **extra)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.2)
    return model


def _steps(model, x, dy, steps=2):
    """Logits of each step, then the input gradient, every parameter's
    gradient and every buffer after the last step (SGD, lr 0.01: larger steps
    make these narrow models chaotic, where fp32 itself drifts by percents)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    logits = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        xx = x.detach().clone().requires_grad_(True)
        y = model(xx)
        y.backward(dy)
        logits.append(y.detach())
        opt.step()
    grads = {n: p.grad for n, p in model.named_parameters()}
    return logits, xx.grad, grads, _buffers(model)


def _assert_no_worse(got, fp32, exact, what, factor=4.0, rtol=1e-5):
    """``got`` (converted, fp32) is as close to float64 as timm's own fp32 run."""
    e, e_ref = _err(got, exact), _err(fp32, exact)
    assert e <= factor * e_ref + rtol * _mag(exact), f"{what}: error {e:.3g} vs timm's {e_ref:.3g}"


@pytest.mark.parametrize("name", list(MODELS))
def test_whole_model_two_training_steps_match_timm(name):
    model = _model(name).train()
    exact = copy.deepcopy(model).double()
    fused, report = triton_attn.convert(model, fuse_tail=True)
    tails = [s for s in report.swapped if "tail" in s.path]
    assert len(tails) == 4 and not report.left, str(report)
    assert list(fused.state_dict()) == list(model.state_dict())
    x, dy = torch.randn(3, 3, 32, 32), torch.randn(3, 10)
    ref = copy.deepcopy(model)
    got = _steps(fused, x, dy)
    want = _steps(ref, x, dy)
    ex = _steps(exact, x.double(), dy.double())
    for i in range(2):
        _assert_no_worse(got[0][i], want[0][i], ex[0][i], f"logits step {i}")
    _assert_no_worse(got[1], want[1], ex[1], "input gradient")
    for k in ex[2]:
        _assert_no_worse(got[2][k], want[2][k], ex[2][k], f"grad {k}")
    for k, b in ex[3].items():
        if b.is_floating_point():
            _assert_no_worse(got[3][k], want[3][k], b, k)
        else:
            assert torch.equal(got[3][k], want[3][k]), k
    # eval mode: running statistics folded in
    fused.eval(), ref.eval()
    with torch.no_grad():
        _assert_no_worse(fused(x), ref(x), exact.eval()(x.double()), "eval logits")


def _fused_copy(model):
    return triton_attn.convert(model, fuse_tail=True)[0]


def test_whole_model_with_drop_path_and_a_fixed_seed():
    model = _model("seresnet50", drop_path_rate=0.5).train()
    fused = _fused_copy(model)
    x, dy = torch.randn(4, 3, 32, 32), torch.randn(4, 10)
    torch.manual_seed(3)
    y, dx = _fwd_bwd(fused, x, dy)
    torch.manual_seed(3)
    ref_y, ref_dx = _fwd_bwd(model, x, dy)
    assert _err(y, ref_y) <= 1e-4 * _mag(ref_y) and _err(dx, ref_dx) <= 1e-4 * _mag(ref_dx)


def _fwd_bwd(model, x, dy):
    x = x.detach().clone().requires_grad_(True)
    y = model(x)
    y.float().backward(dy)
    return y.detach(), x.grad


def test_whole_model_under_bf16_autocast():
    model = _model("resnet18-ceca").train()
    exact = copy.deepcopy(model).double()
    fused = _fused_copy(model)
    x, dy = torch.randn(3, 3, 32, 32), torch.randn(3, 10)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        y, dx = _fwd_bwd(fused, x, dy)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        ref_y, ref_dx = _fwd_bwd(model, x, dy)
    ex_y, ex_dx = _fwd_bwd(exact, x.double(), dy.double())
    assert y.dtype == ref_y.dtype
    _assert_no_worse(y, ref_y, ex_y, "bf16 logits", factor=2.0, rtol=TOL[torch.bfloat16]["atol"])
    _assert_no_worse(dx, ref_dx, ex_dx, "bf16 input gradient", factor=2.0, rtol=TOL[torch.bfloat16]["atol"])


# --- convert: the report, keys, revert ---------------------------------------------------------

def test_report_on_real_models():
    """Full-size architectures (converted, not run)."""
    model = timm.create_model("seresnet50", pretrained=False)
    fused, report = triton_attn.convert(model, fuse_tail=True)
    tails = [s for s in report.swapped if "tail" in s.path]
    assert len(tails) == 16 and not report.left, str(report)
    assert tails[0].path == "tail fused: bn3 -> se (SEModule) -> + shortcut -> act3 (ReLU)"
    assert sum(type(m) is triton_attn.SEModule for m in fused.modules()) == 16
    assert fused.state_dict().keys() == model.state_dict().keys()
    assert "layer1.0: timm.models.resnet.Bottleneck -> triton_attn.modules.resnet.FusedTailBottleneck" in str(report)

    _, default = triton_attn.convert(model)  # fuse_tail defaults to False: the attention modules only
    assert len(default.swapped) == 16 and default.tails_available == 16
    assert "16 residual block tail(s) could be fused too: convert(model, fuse_tail=True)" in str(default)

    model = timm.create_model("resnet26", pretrained=False, block_args=dict(attn_layer="cbam"))
    fused, report = triton_attn.convert(model, fuse_tail=True)
    assert len(report.swapped) == 8 and all(s.path == "fused" for s in report.swapped), str(report)  # the CbamModules
    assert len(report.left) == 8 and all("tail not fused: the tail op does not cover CBAM yet" in m.reason
                                         for m in report.left), str(report)


def test_report_says_why_a_tail_is_left():
    torch.manual_seed(0)
    blocks = {}
    blocks["sync"], _ = _block("se", norm_layer=nn.SyncBatchNorm)
    blocks["group"], _ = _block(None, norm_layer=lambda c, **kw: nn.GroupNorm(4, c, **kw))
    blocks["mish"], _ = _block("eca", act_layer=nn.Mish)
    blocks["hook"], _ = _block("se")
    blocks["hook"].act3.register_forward_hook(lambda *a: None)
    blocks["se-mish"], _ = _block(None)
    blocks["se-mish"].se = timm_se.SEModule(32, act_layer=nn.Mish)
    blocks["norm-act"], _ = _block("se", norm_layer=timm.layers.BatchNormAct2d)  # its act is a ReLU
    blocks["fine"], _ = _block("ese", basic=True, drop_path=DropPath(0.1))
    blocks["fine-norm-act"], _ = _block("eca", norm_layer=functools.partial(timm.layers.BatchNormAct2d, apply_act=False))
    model = nn.Sequential(*blocks.values())
    fused, report = triton_attn.convert(model, fuse_tail=True)
    left = {m.name: m.reason for m in report.left}
    assert left == {
        "0": "tail not fused: bn3 is SyncBatchNorm (only nn.BatchNorm2d is fused)",
        "1": "tail not fused: bn3 is GroupNorm (only nn.BatchNorm2d is fused)",
        "2": "tail not fused: act3 is Mish (no fused form)",
        "3": "tail not fused: hooks are registered on act3 (the fused forward would skip them)",
        "4": "tail not fused: se.act is Mish (no fused form)",
        "5": "tail not fused: bn3 is BatchNormAct2d (only nn.BatchNorm2d is fused)",
    }, str(report)
    assert type(fused[6]) is FusedTailBasicBlock and type(fused[7]) is FusedTailBottleneck
    assert [s.name for s in report.swapped] == ["0.se", "2.se", "3.se", "4.se", "5.se", "6.se", "6", "7.se", "7"], str(report)
    assert report.swapped[-3].path == "tail fused: bn2 -> se (EffectiveSEModule) -> drop_path -> + shortcut -> act2 (ReLU)"
    # timm's BatchNormAct2d without its act computes nn.BatchNorm2d: fused, same numbers and statistics
    ref = copy.deepcopy(blocks["fine-norm-act"]).train()
    x, dy = torch.randn(2, 32, 3, 3), torch.randn(2, 32, 3, 3)
    y, grads = _run_block(fused[7].train(), x, dy)
    ref_y, ref_grads = _run_block(ref, x, dy)
    assert _err(y, ref_y) <= 2e-5 * _mag(ref_y) and _err(grads["x"], ref_grads["x"]) <= 1e-4 * _mag(ref_grads["x"])
    torch.testing.assert_close(fused[7].bn3.running_var, ref.bn3.running_var)


def _noop_hook(module, args):
    return None


def test_fused_block_keeps_every_object_and_reverts():
    block, Cin = _block("eca", basic=False, stride=1)
    block.register_forward_pre_hook(_noop_hook)  # a module-level function: the block stays picklable
    fused, _ = triton_attn.convert(block, inplace=True, fuse_tail=True)
    assert type(fused) is FusedTailBottleneck
    for name, child in block.named_children():
        assert (getattr(fused, name) is child) == (name != "se"), name
    assert type(fused.se) is triton_attn.EcaModule and fused.se.conv is block.se.conv
    assert dict(fused.named_parameters()).keys() == dict(block.named_parameters()).keys()
    assert all(p is q for p, q in zip(fused.parameters(), block.parameters()))
    assert fused.stride == block.stride and fused.dilation == block.dilation and len(fused._forward_pre_hooks) == 1
    fused.zero_init_last()
    assert not fused.bn3.weight.any()
    fused.eval()
    x = torch.randn(2, Cin, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(pickle.loads(pickle.dumps(fused))(x), fused(x))
    back, rreport = triton_attn.revert(fused)
    assert type(back) is Bottleneck and type(back.se) is timm_eca.EcaModule, str(rreport)
    assert back.state_dict().keys() == block.state_dict().keys()
    # converting again leaves a fused block alone
    again, report = triton_attn.convert(fused, fuse_tail=True)
    assert type(again) is FusedTailBottleneck and not report.swapped


def test_pure_pytorch_path_and_jit_trace_of_a_fused_block():
    """Without Triton (``torch_fallback``) the op is its reference composition,
    autograd and running statistics included; ``torch.jit.trace`` records
    timm's own sequence (standard ops only)."""
    block, Cin = _block("ese")
    ref = copy.deepcopy(block).train()
    fused = _fused_copy(block).train()
    x, dy = torch.randn(2, Cin, 3, 3), torch.randn(2, Cin, 3, 3)
    with triton_attn.torch_fallback():
        y, grads = _run_block(fused, x, dy)
    ref_y, ref_grads = _run_block(ref, x, dy)
    assert _err(y, ref_y) <= 2e-5 * _mag(ref_y)
    for k, g in ref_grads.items():
        assert _err(grads[k], g) <= 1e-4 * _mag(g), k
    torch.testing.assert_close(fused.bn3.running_mean, ref.bn3.running_mean)
    fused.eval()
    traced = torch.jit.trace(fused, x)
    assert "triton_attn::" not in str(traced.inlined_graph)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), ref.eval()(x))


def test_fx_trace_records_the_fused_block_as_one_node():
    fused, _ = triton_attn.convert(nn.Sequential(_block("se")[0]), fuse_tail=True)
    gm = torch.fx.symbolic_trace(fused)
    assert [n.op for n in gm.graph.nodes].count("call_module") == 1
    x = torch.randn(2, 32, 3, 3)
    with torch.no_grad():
        assert torch.equal(gm.eval()(x), fused.eval()(x))


# --- saved for backward -----------------------------------------------------------------------

def saved_bytes(fn, like: torch.Tensor) -> dict:
    """Bytes autograd saves for backward while ``fn()`` runs: each storage
    once, at its size (an expanded [N, C, 1, 1] gate is small), and how many
    of them are x-sized (at least ``like``'s bytes)."""
    storages = {}
    x_bytes = like.numel() * like.element_size()

    def pack(t):
        n = t.untyped_storage().nbytes()
        storages[t.untyped_storage().data_ptr()] = n, n >= x_bytes
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    x_sized = [b for b, big in storages.values() if big]
    return dict(bytes=sum(b for b, _ in storages.values()), x_sized=len(x_sized), x_bytes=sum(x_sized), out=out)


def tail_saved_bytes(shape=(2, 64, 8, 8), attn="se", act=None) -> dict:
    """Saved bytes of one training tail, fused vs timm's sequence (the same
    modules): {"fused": {...}, "unfused": {...}}."""
    fused, ref = _pair(attn, act, channels=shape[1])
    z, s = (torch.randn(shape, requires_grad=True) for _ in range(2))
    return {
        "fused": saved_bytes(lambda: fused.train()(z, s), z),
        "unfused": saved_bytes(lambda: ref.train()(z * 1, s), z),  # z * 1: z is not a leaf in a block either
    }


@pytest.mark.parametrize("attn, act", [("se", None), ("eca", nn.SiLU()), ("none", None)], ids=["se-relu", "eca-silu", "none-relu"])
def test_saved_for_backward_is_less_than_eager(attn, act, capsys):
    r = tail_saved_bytes((2, 64, 8, 8), attn, act)
    f, u = r["fused"], r["unfused"]
    with capsys.disabled():
        print(f"\n  saved for backward, 2x64x8x8 fp32 ({64 * 2 * 8 * 8 * 4} B per x-sized tensor), {attn}/"
              f"{type(act).__name__ if act else 'ReLU'} tail: fused {f['bytes']} B ({f['x_sized']} x-sized), "
              f"timm's sequence {u['bytes']} B ({u['x_sized']} x-sized; its 'z * 1' input counted)")
    # timm keeps z (bn), bn(z) (the attention's mul), the activation's input or
    # output; the fused op z and y (ReLU) or the shortcut (other acts).
    one = 2 * 64 * 8 * 8 * 4
    assert f["x_sized"] == 2 and f["x_bytes"] <= u["x_bytes"] - (one if attn != "none" else 0)
    assert f["bytes"] - f["x_bytes"] <= u["bytes"] - u["x_bytes"] + one / 4  # the op's [N, C] state is small
