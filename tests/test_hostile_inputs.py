"""Hostile input, table-driven: every case either matches the float64
reference (output and every gradient asked for) or raises a ValueError /
TypeError whose message names the problem. Never a Triton compile error, a
crash or silent garbage. Modules and ``triton_attn.functional`` both."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import triton_attn as ta
from triton_attn import functional as TF
from triton_attn.reference import EagerEcaModule, EagerSEModule, eca_reference, pool_reference

from helpers import check_vs_float64, module_case, rand, se_fn, se_tensors

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="mixed-device input needs a CUDA device beside the CPU")


def se_2d_reference(x, w1, w2, b1=None, b2=None):
    """SE for 2-D weights of any size (``se_reference`` reshapes with -1,
    which an empty weight makes ambiguous)."""
    h = torch.relu(F.linear(x.mean((2, 3)), w1, b1))
    return x * torch.sigmoid(F.linear(h, w2, b2))[:, :, None, None]


def eca_fn(circular=False, gate="sigmoid"):
    return (
        lambda x, w: TF.eca(x, w, circular=circular, gate=gate),
        lambda x, w: eca_reference(x, w, circular=circular, gate=gate),
    )


def se_case(x, dtype=None, pool="avg", grads=None, **kw):
    t = se_tensors(x, **kw)
    return (*se_fn(pool), t, dtype or x.dtype, list(t) if grads is None else grads)


def eca_case(x, k=3, dtype=None, circular=False, wdtype=torch.float32, grads=("x", "w")):
    return (*eca_fn(circular), {"x": x, "w": rand(k, dtype=wdtype)}, dtype or x.dtype, list(grads))


def base(N=2, C=6, H=3, W=4, dtype=torch.float32):
    return rand(N, C, H, W, dtype=dtype)


def channels_last(t):
    return t.contiguous(memory_format=torch.channels_last)


def pool_case(x, mode):
    fn = lambda x: TF.channel_pool(x, mode)  # noqa: E731
    ref = lambda x: pool_reference(x, mode)  # noqa: E731
    return fn, ref, {"x": x}, torch.float32, ["x"]


def scale_case(x, g):
    fn = lambda x, g: TF.channel_scale(x, g)  # noqa: E731
    ref = lambda x, g: x * g.reshape(x.shape[0], x.shape[1], 1, 1)  # noqa: E731
    return fn, ref, {"x": x, "g": g}, x.dtype, ["x", "g"]


# Each builder returns (fn, ref_fn, tensors, tolerance dtype, gradient names).
VALID = {
    "float64 x": lambda: se_case(base(dtype=torch.float64), pool="avgmax", wdtype=torch.float64),
    "fp16 weights, fp32 x": lambda: se_case(base(), dtype=torch.float16, wdtype=torch.float16),
    "fp64 weights, fp16 x": lambda: eca_case(base(dtype=torch.float16), wdtype=torch.float64),
    "module fp32 weights, bf16 x": lambda: module_case(ta.SEModule(6, rd_channels=4), EagerSEModule(6, 4), base(dtype=torch.bfloat16), torch.bfloat16),
    "module fp16 weights, fp32 x": lambda: module_case(ta.EcaModule(kernel_size=5).half(), EagerEcaModule(6, 5), base(), torch.float16),
    "N=0": lambda: se_case(base(N=0), pool="avg"),
    "N=0 eca": lambda: eca_case(base(N=0)),
    "N=0 module": lambda: module_case(ta.SEModule(6, rd_channels=4, add_maxpool=True), EagerSEModule(6, 4, add_maxpool=True), base(N=0), torch.float32),
    "N=0 channel_pool max": lambda: pool_case(base(N=0), "max"),
    "H=0 channel_scale": lambda: scale_case(base(H=0), rand(2, 6)),
    "H=W=1": lambda: se_case(base(H=1, W=1), pool="avgmax"),
    "H=1": lambda: eca_case(channels_last(base(H=1, W=5)), circular=True),
    "W=1": lambda: se_case(base(H=5, W=1), pool="max"),
    "huge C, 2x2": lambda: se_case(base(C=4096, H=2, W=2), rd=256, pool="avgmax"),
    "huge C channels_last eca": lambda: eca_case(channels_last(base(C=4096, H=2, W=2)), k=7),
    "channel slice": lambda: se_case(base(C=12)[:, ::2], pool="avgmax"),
    "H, W transposed (dense permutation)": lambda: se_case(base(H=3, W=5).transpose(2, 3)),
    "H, W transposed eca": lambda: eca_case(base(H=3, W=5).transpose(2, 3)),
    "H, W transposed module": lambda: module_case(ta.CecaModule(kernel_size=3), EagerEcaModule(6, 3, circular=True), base().transpose(2, 3), torch.float32),
    "spatial crop of channels_last": lambda: eca_case(channels_last(base(H=5, W=6))[:, :, 1:4, 2:5]),
    "expanded batch (stride 0)": lambda: se_case(base(N=1).expand(3, -1, -1, -1), pool="avgmax"),
    "expanded H, W (stride 0)": lambda: eca_case(base(H=1, W=1).expand(-1, -1, 4, 5)),
    "expanded H only": lambda: se_case(base(H=1, W=4).expand(-1, -1, 3, -1), pool="max"),
    "overlapping as_strided": lambda: se_case(rand(64).as_strided((2, 6, 3, 4), (5, 3, 2, 1)), pool="avgmax"),
    "grad on weights only": lambda: se_case(base(), pool="avgmax", grads=["w1", "b1", "w2", "b2"]),
    "grad on eca weight only": lambda: eca_case(base(), grads=("w",)),
    "grad on module weights only": lambda: module_case(ta.SEModule(6, rd_channels=4), EagerSEModule(6, 4), base(), torch.float32, grad_x=False),
    "grad on x only": lambda: se_case(base(), grads=["x"]),
    "transposed weights": lambda: (*se_fn(), {"x": base(), "w1": rand(6, 8).t(), "w2": rand(8, 6).t()}, torch.float32, ["x", "w1", "w2"]),
    "expanded eca weight": lambda: (*eca_fn(), {"x": base(), "w": rand(1).expand(3)}, torch.float32, ["x", "w"]),
    "eca k > C": lambda: eca_case(base(C=2), k=7),
    "ceca k > C": lambda: eca_case(base(C=2), k=7, circular=True),
    "eca k = 1": lambda: eca_case(base(), k=1),
    "hidden width 0": lambda: (se_fn()[0], se_2d_reference, se_tensors(base(), rd=0), torch.float32, ["x", "w1", "b1", "w2", "b2"]),
    "C=1": lambda: se_case(base(C=1), pool="avgmax"),
    "unfused module, N=0": lambda: module_case(ta.SEModule(6, rd_channels=4, act_layer=nn.Mish), EagerSEModule(6, 4, act_layer=nn.Mish), base(N=0), torch.float32),
    "unfused module, transposed": lambda: module_case(ta.SEModule(6, rd_channels=4, act_layer=nn.Mish), EagerSEModule(6, 4, act_layer=nn.Mish), base().transpose(2, 3), torch.float32),
    "channel_scale g [N,C,1,1] strided": lambda: scale_case(base(), rand(6, 2).t()[:, :, None, None]),
    "channel_pool avgmax, H=1": lambda: (lambda x: torch.stack(TF.channel_pool(x, "avgmax")), lambda x: torch.stack([x.mean((2, 3)), x.amax((2, 3))]), {"x": base(H=1)}, torch.float32, ["x"]),
}


if hasattr(ta, "CbamModule"):
    from timm.layers.cbam import CbamModule as TimmCbamModule, LightCbamModule as TimmLightCbamModule

    def cbam_case(x, light=False, dtype=None):
        ours, timm_cls = (ta.LightCbamModule, TimmLightCbamModule) if light else (ta.CbamModule, TimmCbamModule)
        return module_case(ours(6, rd_channels=4, spatial_kernel_size=3), timm_cls(6, rd_channels=4, spatial_kernel_size=3), x, dtype or x.dtype)

    VALID.update({
        "cbam H, W transposed": lambda: cbam_case(base(H=3, W=5).transpose(2, 3)),
        "cbam expanded batch": lambda: cbam_case(base(N=1).expand(3, -1, -1, -1), light=True),
        "cbam overlapping": lambda: cbam_case(rand(64).as_strided((2, 6, 3, 4), (5, 3, 2, 1))),
        "cbam crop of channels_last, bf16": lambda: cbam_case(channels_last(base(H=5, W=6, dtype=torch.bfloat16))[:, :, 1:4, 2:5]),
        "cbam H=W=1": lambda: cbam_case(base(H=1, W=1)),
    })


@pytest.mark.parametrize("case", list(VALID))
def test_valid_hostile_input_matches_float64(case):
    fn, ref, tensors, dtype, grads = VALID[case]()
    check_vs_float64(fn, ref, tensors, dtype, grads, msg=case)


def test_h0_gives_pytorch_semantics():
    """The mean over an empty H*W is NaN in PyTorch: y is empty, the weight
    gradients are NaN as the reference's (no crash, no launch)."""
    fn, ref, t, _, grads = se_case(base(H=0))
    check_vs_float64(fn, ref, t, torch.float32, grads, msg="H=0", nonfinite=True)


def _x():
    return base()


def _w():
    return se_tensors(_x())


def _se(x=None, pool="avg", **over):
    t = _w()
    if x is not None:
        t["x"] = x
    t.update(over)
    return lambda: TF.se(t["x"], t["w1"], t.get("b1"), t.get("w2"), t.get("b2"), pool=pool)


# (call, exception type, words the message must contain)
INVALID = {
    "x 3-D": (_se(rand(2, 6, 4)), ValueError, "4-D"),
    "x 5-D eca": (lambda: TF.eca(rand(1, 2, 6, 3, 3), rand(3)), ValueError, "4-D"),
    "x not a tensor": (lambda: TF.channel_pool([[1.0]]), TypeError, "torch.Tensor"),
    "x int": (lambda: TF.eca(torch.ones(2, 6, 3, 3, dtype=torch.int32), rand(3)), TypeError, "int32"),
    "x bool": (lambda: TF.channel_scale(torch.ones(2, 6, 3, 3, dtype=torch.bool), rand(2, 6)), TypeError, "bool"),
    "x complex": (_se(rand(2, 6, 3, 3).to(torch.complex64)), TypeError, "complex64"),
    "x on meta": (lambda: TF.channel_pool(torch.empty(2, 6, 3, 3, device="meta")), ValueError, "meta"),
    "C=0": (lambda: TF.channel_pool(rand(2, 0, 3, 3)), ValueError, "no channels"),
    "C=0 module": (lambda: ta.EcaModule(kernel_size=3)(rand(2, 0, 3, 3)), ValueError, "no channels"),
    "channels != module": (lambda: ta.SEModule(6)(rand(2, 7, 3, 3)), ValueError, "7 channels"),
    "channels != fc1": (_se(rand(2, 7, 3, 3)), ValueError, "fc1_weight"),
    "fc1 3x3 kernel": (_se(w1=rand(8, 6, 3, 3)), ValueError, "fc1_weight"),
    "fc2 wrong shape": (_se(w2=rand(6, 4)), ValueError, "fc2_weight"),
    "fc1 bias 2-D": (_se(b1=rand(2, 4)), ValueError, "fc1_bias"),
    "fc2 bias wrong size": (_se(b2=rand(7)), ValueError, "fc2_bias"),
    "no fc2, fc1 not C -> C": (lambda: TF.se(_x(), rand(8, 6)), ValueError, "fc1"),
    "fc2 bias without fc2": (lambda: TF.se(_x(), rand(6, 6), None, None, rand(6)), ValueError, "fc2_bias"),
    "weight int": (_se(w1=torch.ones(8, 6, dtype=torch.int64)), TypeError, "fc1_weight"),
    "weight not a tensor": (_se(w2=[[0.0] * 8] * 6), TypeError, "fc2_weight"),
    "g bool": (lambda: TF.channel_scale(_x(), torch.ones(2, 6, dtype=torch.bool)), TypeError, "g "),
    "g wrong shape": (lambda: TF.channel_scale(_x(), rand(6, 2)), ValueError, "g must be"),
    "eca even taps": (lambda: TF.eca(_x(), rand(4)), ValueError, "odd"),
    "eca no taps": (lambda: TF.eca(_x(), rand(0)), ValueError, "odd"),
    "eca 0-d weight": (lambda: TF.eca(_x(), torch.tensor(0.5)), ValueError, "conv_weight"),
    "eca [3, 1] weight": (lambda: TF.eca(_x(), rand(3, 1)), ValueError, "one filter"),
    "eca bias 2 elements": (lambda: TF.eca(_x(), rand(3), rand(2)), ValueError, "conv_bias"),
    "eca module even k": (lambda: ta.EcaModule(kernel_size=4), ValueError, "odd"),
    "module gate name": (lambda: ta.SEModule(6, gate_layer="relu7"), ValueError, "relu7"),
    "max pool over H=0": (_se(base(H=0), pool="max"), ValueError, "empty"),
    "channel_pool max over W=0": (lambda: TF.channel_pool(base(W=0), "avgmax"), ValueError, "empty"),
    "module add_maxpool over H=0": (lambda: ta.SEModule(6, add_maxpool=True)(base(H=0)), ValueError, "empty"),
    "pool name": (_se(pool="min"), ValueError, "pool"),
    "pool None": (_se(pool=None), TypeError, "pool"),
    "mode name": (lambda: TF.channel_pool(_x(), "sum"), ValueError, "mode"),
    "gate name": (lambda: TF.eca(_x(), rand(3), gate="relu"), ValueError, "gate"),
    "gate not a string": (lambda: TF.se(_x(), rand(6, 6), gate=torch.sigmoid), TypeError, "gate"),
    "act name": (lambda: TF.se(**{"x": _x(), "fc1_weight": rand(8, 6), "fc2_weight": rand(6, 8)}, act="mish"), ValueError, "act"),
    "act None": (lambda: TF.se(_x(), rand(8, 6), None, rand(6, 8), act=None), TypeError, "act"),
    "act_param string": (lambda: TF.se(_x(), rand(8, 6), None, rand(6, 8), act="leaky_relu", act_param="0.1"), TypeError, "act_param"),
}


if hasattr(ta, "CbamModule"):
    INVALID.update({
        "cbam H=0": (lambda: ta.CbamModule(6)(base(H=0)), ValueError, "empty"),
        # N = 0 is not an error (an empty output, as nn.BatchNorm2d: tests/test_empty_batch.py); one value is.
        "cbam one value training BatchNorm": (lambda: ta.CbamModule(6)(base(N=1, H=1, W=1)), ValueError, "more than 1 value"),
        "cbam channels != module": (lambda: ta.CbamModule(6)(base(C=5)), ValueError, "5 channels"),
        "cbam even spatial kernel": (lambda: ta.CbamModule(6, spatial_kernel_size=4), ValueError, "odd"),
        "cbam spatial weight shape": (lambda: TF.cbam(_x(), rand(4, 6), None, rand(6, 4), spatial_weight=rand(1, 1, 3, 3)), ValueError, "spatial_weight"),
        "cbam two channel functions": (lambda: TF.cbam(_x(), rand(4, 6), None, rand(6, 4), channel_conv=rand(3), spatial_weight=rand(1, 2, 3, 3)), ValueError, "exactly one"),
        "cbam concat name": (lambda: TF.cbam(_x(), channel_conv=rand(3), spatial_weight=rand(1, 2, 3, 3), spatial_concat="max"), ValueError, "spatial_concat"),
    })


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_input_raises_a_named_error(case):
    call, exc, words = INVALID[case]
    with pytest.raises(exc) as info:
        call()
    assert type(info.value) in (ValueError, TypeError), f"{case}: {type(info.value).__name__}: {info.value}"
    assert words in str(info.value), f"{case}: message {str(info.value)!r} does not name {words!r}"


@needs_cuda
@pytest.mark.parametrize("where", ["weights on cpu", "g on cpu", "module on cpu"])
def test_mixed_devices_raise(where):
    x = rand(2, 6, 3, 3).cuda()
    with pytest.raises(ValueError, match="cpu"):
        if where == "weights on cpu":
            TF.se(x, rand(8, 6), None, rand(6, 8))
        elif where == "g on cpu":
            TF.channel_scale(x, rand(2, 6))
        else:
            ta.EcaModule(6)(x)


def test_weight_grad_only_leaves_x_alone():
    """requires_grad on the weights only: no dx pass, x.grad stays None."""
    t = se_tensors(base())
    w1 = t["w1"].requires_grad_()
    y = TF.se(t["x"], w1, t["b1"], t["w2"], t["b2"], pool="avgmax")
    y.sum().backward()
    assert t["x"].grad is None and w1.grad is not None and torch.isfinite(w1.grad).all()
