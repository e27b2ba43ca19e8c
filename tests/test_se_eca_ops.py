"""Functional SE/ECA and the torch.library ops under them: float64
references (outputs and every gradient), gradcheck, opcheck, forced
multi-block and split launches, fp16 sums that overflow, empty and bad input."""
import itertools

import pytest
import torch

from triton_attn import functional as TF
from triton_attn.launch import config as launch_config
from triton_attn.ops import eca as eca_ops
from triton_attn.ops import se as se_ops
from triton_attn.ops import unfused
from triton_attn.reference import eca_reference, se_reference

from helpers import DTYPES, assert_close, assert_fwd_bwd_close, fwd_bwd, make_input_here, same_layout

LAYOUTS = ("nchw", "channels_last", "strided")


@pytest.fixture(autouse=True)
def _on_test_device(device):
    """Every factory call below (torch.randn, module constructors) makes its
    tensors where the kernels run: CUDA, else CPU under the interpreter."""
    with torch.device(device):
        yield


# Every C in {1, 3, 7, 24, 130}, H*W in {1, 49, 5x7, 7x1} and N in {1, 3}
# appears; the dtype x layout product is full and the shapes rotate through it.
# (7x1 and 1x1 are degenerate spatial axes; 5x7 is an odd rectangle.)
SHAPES = [
    (1, 1, 1, 1), (3, 3, 7, 7), (1, 7, 5, 7), (3, 24, 1, 1), (1, 130, 5, 7),
    (3, 24, 7, 7), (1, 130, 7, 7), (3, 7, 7, 1), (3, 1, 5, 7),
]
CASES = [(dt, lay, SHAPES[i]) for i, (dt, lay) in enumerate(itertools.product(DTYPES, LAYOUTS))]
CASE_IDS = [f"{str(dt)[6:]}-{lay}-{'x'.join(map(str, s))}" for dt, lay, s in CASES]

# SE variants rotated through the cases: (act, act_param, gate, bias, fc2).
SE_VARIANTS = [
    ("relu", 0.0, "sigmoid", True, True),
    ("silu", 0.0, "hard_sigmoid", False, True),
    ("gelu", 0.0, "sigmoid", True, False),
    ("hard_swish", 0.0, "sigmoid", False, True),
    ("leaky_relu", 0.1, "hard_sigmoid", True, True),
    ("gelu_tanh", 0.0, "sigmoid", True, True),
    ("tanh", 0.0, "hard_sigmoid", True, False),
]


def se_params(C, dtype, bias, fc2, rd=None):
    """Weights in x's dtype, as a module cast with ``.to(dtype)`` holds them."""
    rd = rd or (max(1, C // 4) if fc2 else C)
    p = {"fc1_weight": torch.randn(rd, C, 1, 1) / C**0.5, "fc1_bias": torch.randn(rd) if bias else None}
    if fc2:
        p["fc2_weight"] = torch.randn(C, rd, 1, 1) / rd**0.5
        p["fc2_bias"] = torch.randn(C) if bias else None
    return {k: (v.to(dtype) if v is not None else None) for k, v in p.items()}


def float64(tensors):
    return {k: (v.double() if v is not None else None) for k, v in tensors.items()}


def check_against_float64(fn, ref_fn, tensors, dtype, msg):
    """Poisoned forward + backward of ``fn`` vs ``ref_fn`` in float64 on the same
    (rounded) inputs; y keeps x's memory format."""
    x = tensors["x"]
    dy = torch.randn(x.shape).to(dtype)
    ours = fwd_bwd(fn, tensors, dy)
    ref = fwd_bwd(ref_fn, float64(tensors), dy.double(), poison=False)
    assert ours[0].dtype == dtype
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        assert same_layout(ours[0], x), f"{msg}: y strides {ours[0].stride()} vs x {x.stride()}"
    assert_fwd_bwd_close(ours, ref, dtype, msg)


@pytest.mark.parametrize("pool", ["avg", "max", "avgmax"])
@pytest.mark.parametrize("dtype,layout,shape", CASES, ids=CASE_IDS)
def test_se_matches_float64_reference(dtype, layout, shape, pool):
    i = CASES.index((dtype, layout, shape)) + ("avg", "max", "avgmax").index(pool)
    act, act_param, gate, bias, fc2 = SE_VARIANTS[i % len(SE_VARIANTS)]
    x = make_input_here(shape, dtype, layout)
    tensors = {"x": x, **se_params(shape[1], dtype, bias, fc2)}
    kw = dict(pool=pool, act=act, act_param=act_param, gate=gate)
    check_against_float64(
        lambda **t: TF.se(**t, **kw),
        lambda x, fc1_weight, fc1_bias=None, fc2_weight=None, fc2_bias=None: se_reference(
            x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, **kw),
        tensors, dtype, f"se {pool} {act} {gate} bias={bias} fc2={fc2}",
    )


@pytest.mark.parametrize("dtype,layout,shape", CASES, ids=CASE_IDS)
def test_eca_matches_float64_reference(dtype, layout, shape):
    i = CASES.index((dtype, layout, shape))
    k = (3, 5, 1, 7)[i % 4]  # k > C included: taps that only ever see padding
    circular, bias, gate = i % 2 == 1, i % 3 != 0, ("sigmoid", "hard_sigmoid")[(i // 2) % 2]
    x = make_input_here(shape, dtype, layout)
    tensors = {"x": x, "conv_weight": torch.randn(1, 1, k).to(dtype), "conv_bias": torch.randn(1).to(dtype) if bias else None}
    kw = dict(circular=circular, gate=gate)
    check_against_float64(
        lambda **t: TF.eca(**t, **kw),
        lambda x, conv_weight, conv_bias=None: eca_reference(x, conv_weight, conv_bias, **kw),
        tensors, dtype, f"eca k={k} circular={circular} bias={bias} {gate}",
    )


@pytest.mark.parametrize("layout", LAYOUTS)
def test_channel_pool_and_scale_match_float64_reference(layout):
    x = make_input_here((3, 7, 5, 7), torch.float16, layout)
    g = torch.rand(3, 7)
    mean, amax = TF.channel_pool(x, "avgmax")
    assert mean.dtype == amax.dtype == torch.float32
    assert_close(mean, x.double().mean((2, 3)), torch.float32, msg="mean")
    assert torch.equal(amax, x.float().amax((2, 3)))
    check_against_float64(TF.channel_scale, lambda x, g: x * g[:, :, None, None], {"x": x, "g": g}, torch.float16, "scale")
    # g built from every pooling mode: the pool_hw backward (mean share, max
    # ties) and the scale backward both reach dx.
    check_against_float64(
        lambda x: TF.channel_scale(x, _pooled_gate(*TF.channel_pool(x, "avgmax"), TF.channel_pool(x, "avg"), TF.channel_pool(x, "max"))),
        lambda x: x * _pooled_gate(x.mean((2, 3)), x.amax((2, 3)), x.mean((2, 3)), x.amax((2, 3)))[:, :, None, None],
        {"x": x}, torch.float16, "pool backward",
    )


def _pooled_gate(mean, amax, avg_only, max_only):
    return torch.sigmoid(mean * amax + avg_only - 2 * max_only)


# --- gradcheck (float64, small shape) ----------------------------------------


@pytest.mark.parametrize("fc2", [True, False], ids=["fc2", "no_fc2"])
@pytest.mark.parametrize("pool", ["avg", "max", "avgmax"])
def test_se_gradcheck(pool, fc2):
    x = torch.randn(2, 3, 2, 3, dtype=torch.float64)
    p = {k: v.double() for k, v in se_params(3, torch.float32, True, fc2, rd=2 if fc2 else None).items()}
    inputs = tuple(t.requires_grad_() for t in (x, *p.values()))
    fn = (lambda x, w1, b1, w2, b2: TF.se(x, w1, b1, w2, b2, pool=pool, act="silu")) if fc2 else (
        lambda x, w1, b1: TF.se(x, w1, b1, pool=pool, gate="sigmoid"))
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)


@pytest.mark.parametrize("circular", [False, True], ids=["zero", "circular"])
def test_eca_gradcheck(circular):
    x = torch.randn(2, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 1, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: TF.eca(x, w, b, circular=circular), (x, w, b), fast_mode=True)


# --- torch.library.opcheck on every op ---------------------------------------


def _opcheck_inputs(layout):
    x = make_input_here((2, 5, 3, 3), torch.float32, layout, requires_grad=True)
    w1, b1 = torch.randn(2, 5, 1, 1, requires_grad=True), torch.randn(2, requires_grad=True)
    w2, b2 = torch.randn(5, 2, 1, 1, requires_grad=True), torch.randn(5, requires_grad=True)
    w, b = torch.randn(1, 1, 3, requires_grad=True), torch.randn(1, requires_grad=True)
    dy = make_input_here((2, 5, 3, 3), torch.float32, layout)
    _, pooled = se_ops.se_fwd(x, w1, b1, w2, b2, "avgmax", "relu", 0.0, "sigmoid")
    _, mean = eca_ops.eca_fwd(x, w, b, True, "sigmoid")
    amax = x.detach().float().amax((2, 3))
    g = torch.rand(2, 5, requires_grad=True)
    d = lambda *ts: tuple(t.detach() if isinstance(t, torch.Tensor) else t for t in ts)  # noqa: E731
    return {
        "se_fwd": (se_ops.se_fwd, (x, w1, b1, w2, b2, "avgmax", "relu", 0.0, "sigmoid")),
        "se_fwd_ese": (se_ops.se_fwd, (x, torch.randn(5, 5, 1, 1, requires_grad=True), None, None, None, "max", "relu", 0.0, "hard_sigmoid")),
        "se_bwd": (se_ops.se_bwd, d(dy, x, pooled, w1, b1, w2, b2, "avgmax", "relu", 0.0, "sigmoid", True)),
        "eca_fwd": (eca_ops.eca_fwd, (x, w, b, True, "sigmoid")),
        "eca_bwd": (eca_ops.eca_bwd, d(dy, x, mean, w, b, False, "sigmoid", True)),
        "pool_hw": (unfused.pool_hw, (x, True, True)),
        "pool_hw_bwd": (unfused.pool_hw_bwd, d(torch.randn(2, 5), torch.randn(2, 5), x, amax, True, True)),
        "scale": (unfused.scale, (x, g)),
        "scale_bwd": (unfused.scale_bwd, d(dy, x, g)),
    }


OPS = ["se_fwd", "se_fwd_ese", "se_bwd", "eca_fwd", "eca_bwd", "pool_hw", "pool_hw_bwd", "scale", "scale_bwd"]


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("op", OPS)
def test_opcheck(op, layout):
    fn, args = _opcheck_inputs(layout)[op]
    torch.library.opcheck(fn, args)


# --- forced multi-block / split launches -------------------------------------


@pytest.mark.parametrize("dtype,layout", [(torch.float32, "nchw"), (torch.float16, "channels_last"), (torch.bfloat16, "strided")])
def test_multi_block_and_split_paths(dtype, layout):
    """block_c=2, block_hw=4, split=3: several channel blocks with a ragged
    last one, several H*W blocks, and partial reductions combined on the host."""
    x = make_input_here((2, 7, 5, 7), dtype, layout)
    se_t = {"x": x, **se_params(7, dtype, True, True)}
    eca_t = {"x": x, "conv_weight": torch.randn(1, 1, 5).to(dtype), "conv_bias": torch.randn(1).to(dtype)}
    with launch_config.override(block_c=2, block_hw=4, split=3):
        check_against_float64(
            lambda **t: TF.se(**t, pool="avgmax"), lambda **t: se_reference(*t.values(), pool="avgmax"),
            se_t, dtype, "se split")
        check_against_float64(
            lambda **t: TF.eca(**t, circular=True), lambda **t: eca_reference(*t.values(), circular=True),
            eca_t, dtype, "eca split")


@pytest.mark.parametrize("split", [1, 3], ids=["one_pass", "split"])
def test_max_pool_ties_share_the_gradient(split):
    """Tied maxima (common after ReLU) split the gradient evenly, as torch.amax
    does, with the tie count summed across H*W splits."""
    x = torch.randint(0, 3, (2, 5, 3, 5)).float()  # many ties at the max
    x[0, 0] = 0.0  # a channel that is all ties
    tensors = {"x": x, **se_params(5, torch.float32, True, True)}
    with launch_config.override(block_c=2, block_hw=4, split=split):
        check_against_float64(
            lambda **t: TF.se(**t, pool="max"), lambda **t: se_reference(*t.values(), pool="max"),
            tensors, torch.float32, "ties")
        check_against_float64(  # the unfused pool_hw backward
            lambda x: TF.channel_scale(x, torch.sigmoid(TF.channel_pool(x, "max"))),
            lambda x: x * torch.sigmoid(x.amax((2, 3)))[:, :, None, None],
            {"x": x}, torch.float32, "unfused ties")


def test_max_pool_propagates_nan():
    x = make_input_here((1, 3, 4, 4))
    x[0, 1, 2, 3] = float("nan")
    amax = TF.channel_pool(x, "max")
    assert torch.isnan(amax[0, 1]) and not torch.isnan(amax[0, [0, 2]]).any()


# --- fp16 sums that overflow fp16 --------------------------------------------


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_fp16_sum_overflow_stays_finite(layout):
    """64*64 values near 30000 sum to ~1.2e8, far past fp16's 65504: pooling
    must accumulate in fp32. fp32 weights (master weights under AMP)."""
    x = (30000 + 100 * torch.randn(1, 2, 64, 64)).half()
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    assert torch.isinf(x.sum((2, 3), dtype=torch.float16)).all()  # the failure we guard against
    se_t = {"x": x, "fc1_weight": torch.randn(2, 2) * 1e-4, "fc1_bias": None, "fc2_weight": torch.randn(2, 2), "fc2_bias": torch.randn(2)}
    eca_t = {"x": x, "conv_weight": torch.randn(1, 1, 3) * 1e-4, "conv_bias": torch.randn(1)}
    for name, fn, ref_fn, tensors in [
        ("se", lambda **t: TF.se(**t, pool="avgmax"), lambda **t: se_reference(*t.values(), pool="avgmax"), se_t),
        ("eca", TF.eca, lambda **t: eca_reference(*t.values()), eca_t),
    ]:
        dy = torch.randn(x.shape).half()
        y, grads = fwd_bwd(fn, tensors, dy)
        assert torch.isfinite(y).all() and all(torch.isfinite(g).all() for g in grads.values()), name
        ref = fwd_bwd(ref_fn, float64(tensors), dy.double(), poison=False)
        assert_fwd_bwd_close((y, grads), ref, torch.float16, name)
    mean = TF.channel_pool(x, "avg")
    assert_close(mean, x.double().mean((2, 3)), torch.float32, msg="mean")


# --- empty and bad input -----------------------------------------------------


@pytest.mark.parametrize("shape", [(0, 4, 3, 3), (2, 4, 0, 3)], ids=["N=0", "HW=0"])
def test_empty_input(shape):
    x = torch.randn(shape, requires_grad=True)
    p = se_params(4, torch.float32, True, True)
    pool = "avgmax" if shape[0] == 0 else "avg"
    for y in (TF.se(x, *p.values(), pool=pool), TF.eca(x, torch.randn(1, 1, 3), circular=True)):
        assert y.shape == shape and y.dtype == x.dtype
        y.sum().backward()
    assert x.grad.shape == shape
    if shape[0] > 0:  # a max over an empty H*W is bad input, not an IndexError
        with pytest.raises(ValueError, match="empty"):
            TF.se(x, *p.values(), pool="max")


def test_bad_input_raises():
    x = make_input_here((2, 4, 3, 3))
    w1, w2 = torch.randn(2, 4, 1, 1), torch.randn(4, 2, 1, 1)
    w = torch.randn(1, 1, 3)
    with pytest.raises(ValueError, match="4-D"):
        TF.se(x[0], w1, None, w2)
    with pytest.raises(ValueError, match="4-D"):
        TF.eca(x[0], w)
    with pytest.raises(TypeError, match="float"):
        TF.se(x.to(torch.int32), w1, None, w2)
    with pytest.raises(TypeError, match="float"):
        TF.eca(x.to(torch.int64), w)
    with pytest.raises(TypeError, match="torch.Tensor"):
        TF.se(x.cpu().numpy(), w1, None, w2)
    with pytest.raises(TypeError, match="float"):
        TF.se(x, w1.int(), None, w2)
    with pytest.raises(ValueError, match="input channels"):
        TF.se(x, torch.randn(2, 5, 1, 1), None, torch.randn(5, 2, 1, 1))
    with pytest.raises(ValueError, match="fc2_weight"):
        TF.se(x, w1, None, torch.randn(4, 3, 1, 1))
    with pytest.raises(ValueError, match="fc1 must map C -> C"):
        TF.se(x, w1)
    with pytest.raises(ValueError, match="pool"):
        TF.se(x, w1, None, w2, pool="min")
    with pytest.raises(ValueError, match="act"):
        TF.se(x, w1, None, w2, act="mish")
    with pytest.raises(ValueError, match="odd"):
        TF.eca(x, torch.randn(1, 1, 4))
    with pytest.raises(ValueError, match="conv_bias"):
        TF.eca(x, w, torch.randn(2))
    with pytest.raises(ValueError, match="gate"):
        TF.eca(x, w, gate="relu")
    with pytest.raises(ValueError, match="g must be"):
        TF.channel_scale(x, torch.rand(2, 3))


def test_weights_on_another_device_raise():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device to put the weights elsewhere than x")
    x = torch.randn(2, 4, 3, 3, device="cuda")
    with pytest.raises(ValueError, match="on cpu"):
        TF.se(x, torch.randn(2, 4, 1, 1, device="cpu"), None, torch.randn(4, 2, 1, 1, device="cpu"))
    with pytest.raises(ValueError, match="on cpu"):
        TF.eca(x, torch.randn(1, 1, 3, device="cpu"))
