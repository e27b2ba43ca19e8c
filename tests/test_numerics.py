"""Numerics: NaN and +-inf propagate exactly as in the PyTorch reference
(outputs and gradients, max pooling and saturated gates included), fp16
sums that overflow fp16 stay finite, and bf16 reductions over 112x112 stay
within bf16 tolerance of float64."""
import pytest
import torch

import triton_attn as ta
from triton_attn import functional as TF
from triton_attn.reference import EagerEcaModule, EagerSEModule, eca_reference, pool_reference, se_reference

from helpers import check_vs_float64, module_case, se_fn, se_tensors

NAN, INF = float("nan"), float("inf")

# NaN arithmetic inside the interpreter's numpy is the point here.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


def poisoned_input(kind: str, shape=(3, 6, 3, 4), dtype=torch.float32):
    """Sample 0 and 1 carry the non-finite values, the last sample is clean
    (its gradients must stay finite and right)."""
    x = torch.randn(shape)
    if kind in ("nan", "mixed"):
        x[0, 2, 1, 1] = NAN
    if kind in ("+inf", "mixed"):
        x[1, 4, 0, 2] = INF
    if kind in ("-inf", "mixed"):
        x[1, 1] = -INF  # a whole channel: its max is -inf too
        x[0, 5, 2, 3] = -INF
    return x.to(dtype)


@pytest.mark.parametrize("pool", ["avg", "max", "avgmax"])
@pytest.mark.parametrize("kind", ["nan", "+inf", "-inf", "mixed"])
def test_se_non_finite_input_matches_reference(pool, kind):
    gate = "hard_sigmoid" if kind in ("+inf", "mixed") else "sigmoid"
    fn, ref = se_fn(pool, gate=gate)
    t = se_tensors(poisoned_input(kind))
    check_vs_float64(fn, ref, t, torch.float32, list(t), msg=f"se {pool} {kind}", nonfinite=True)


@pytest.mark.parametrize("circular", [False, True])
@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
def test_eca_nan_stays_within_the_filter_reach(circular, gate):
    x = poisoned_input("mixed", shape=(3, 9, 3, 4))
    t = {"x": x, "w": torch.randn(5)}
    y, _ = check_vs_float64(
        lambda x, w: TF.eca(x, w, circular=circular, gate=gate),
        lambda x, w: eca_reference(x, w, circular=circular, gate=gate),
        t, torch.float32, ["x", "w"], msg=f"eca {gate}", nonfinite=True,
    )
    # The NaN sits in channel 2 of sample 0; a 5-tap filter reaches channels
    # 0..4, so channels 5..8 stay finite (bar the -inf element of channel 5,
    # which its own gate may turn into NaN only through -inf * 0).
    assert torch.isnan(y[0, :5]).all()
    assert not torch.isnan(y[0, 6:]).any() and torch.isfinite(y[2]).all()


@pytest.mark.parametrize("mode", ["max", "avgmax"])
def test_channel_pool_non_finite_matches_reference(mode):
    """A NaN max has no tied element: torch gives its whole channel a NaN
    gradient, and so do we; -inf maxima share the gradient as ties."""
    x = poisoned_input("mixed")

    def ours(x):
        out = TF.channel_pool(x, mode)
        return torch.stack(out) if mode == "avgmax" else out

    def ref(x):
        return torch.stack([x.mean((2, 3)), x.amax((2, 3))]) if mode == "avgmax" else pool_reference(x, mode)

    _, grads = check_vs_float64(ours, ref, {"x": x}, torch.float32, ["x"], msg=mode, nonfinite=True)
    assert torch.isnan(grads["x"][0, 2]).all(), "the channel whose max is NaN must get a NaN gradient everywhere"
    assert torch.isfinite(grads["x"][2]).all()


@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
def test_gate_of_plus_minus_inf_is_exactly_one_and_zero(gate):
    """ECA computes its gate inside the scale kernel: z = +inf must give
    exactly 1 and z = -inf exactly 0, never NaN."""
    x = torch.rand(2, 5, 2, 3) + 0.5  # positive: the sign of z follows the taps
    x[0, 1] = INF  # mean +inf: z = +-inf in channels 0, 1, 2 (no tap is 0: 0 * inf = NaN)
    w = torch.tensor([1.0, 1e-3, 1e-3])
    fn = lambda x, w: TF.eca(x, w, gate=gate)  # noqa: E731
    ref = lambda x, w: eca_reference(x, w, gate=gate)  # noqa: E731
    for sign in (1, -1):
        y, _ = check_vs_float64(fn, ref, {"x": x, "w": sign * w}, torch.float32, ["x"], nonfinite=True)
        g = 1.0 if sign > 0 else 0.0
        assert torch.equal(y[0, [0, 2]], x[0, [0, 2]] * g), f"gate({sign} * inf) != {g}"
        assert torch.isposinf(y[0, 1]).all() if sign > 0 else torch.isnan(y[0, 1]).all()  # inf * 0 is NaN, as torch
        assert torch.isfinite(y[0, 3:]).all() and torch.isfinite(y[1]).all()


@pytest.mark.parametrize("kind", ["nan", "mixed"])
def test_modules_non_finite_match_eager(kind):
    x = poisoned_input(kind)
    for ours, eager in (
        (ta.SEModule(6, rd_channels=4, add_maxpool=True), EagerSEModule(6, 4, add_maxpool=True)),
        (ta.EcaModule(kernel_size=3), EagerEcaModule(6, 3)),
        (ta.CecaModule(kernel_size=5), EagerEcaModule(6, 5, circular=True)),
    ):
        fn, ref, t, dtype, names = module_case(ours, eager, x, torch.float32)
        check_vs_float64(fn, ref, t, dtype, names, msg=f"{type(ours).__name__} {kind}", nonfinite=True)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_fp16_sum_overflow_stays_finite_and_right(layout):
    """64x64 values around 20 sum to ~82000 > 65504 (fp16 max): an fp16
    accumulator would give inf; ours accumulates in fp32."""
    x = (20 + torch.randn(2, 4, 64, 64)).half()
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    assert torch.isinf(x.sum((2, 3), dtype=torch.float16)).all()
    t = se_tensors(x, rd=8)
    t["w1"] = t["w1"] * 0.05  # keep the gate off saturation so it carries information
    y, grads = check_vs_float64(*se_fn("avgmax"), t, torch.float16, list(t), msg="se fp16")
    assert torch.isfinite(y).all() and all(torch.isfinite(g).all() for g in grads.values())
    y, grads = check_vs_float64(
        lambda x, w: TF.eca(x, w), lambda x, w: eca_reference(x, w), {"x": x, "w": torch.randn(3) * 0.05},
        torch.float16, ["x", "w"], msg="eca fp16",
    )
    assert torch.isfinite(y).all() and all(torch.isfinite(g).all() for g in grads.values())


def test_fp16_module_half_overflowing_sum():
    """AMP-style: the whole module in fp16 (weights too)."""
    x = (20 + torch.randn(1, 8, 64, 64)).half()
    ours = ta.SEModule(8, rd_channels=8, add_maxpool=True)
    with torch.no_grad():
        ours.fc1.weight.mul_(0.05)
    ours = ours.half()
    fn, ref, t, dtype, names = module_case(ours, EagerSEModule(8, 8, add_maxpool=True), x, torch.float16)
    y, _ = check_vs_float64(fn, ref, t, dtype, names, msg="half module")
    assert torch.isfinite(y).all()


def test_bf16_long_reduction_112x112():
    """bf16 in, fp32 accumulation over 12544 elements: within bf16 rounding
    of float64, forward and every gradient."""
    x = (torch.randn(1, 3, 112, 112) + 0.5).bfloat16()
    t = se_tensors(x, rd=8)
    check_vs_float64(*se_fn("avgmax", act="silu"), t, torch.bfloat16, list(t), msg="se bf16 112x112")
    check_vs_float64(
        lambda x, w: TF.eca(x, w, circular=True), lambda x, w: eca_reference(x, w, circular=True),
        {"x": x.contiguous(memory_format=torch.channels_last), "w": torch.randn(3)},
        torch.bfloat16, ["x", "w"], msg="eca bf16 112x112",
    )


def test_se_gradient_with_saturated_sigmoid():
    """Huge logits saturate the gate to exactly 0 or 1 in fp32; the gradient
    through it is then exactly 0 and dx = dy * g, still finite."""
    x = torch.randn(2, 4, 3, 3)
    t = {"x": x, "w1": torch.eye(4) * 1e4, "w2": torch.eye(4)}
    y, grads = check_vs_float64(
        lambda x, w1, w2: TF.se(x, w1, None, w2, act="identity"),
        lambda x, w1, w2: se_reference(x, w1, None, w2, act="identity"),
        t, torch.float32, ["x", "w1", "w2"], nonfinite=True,
    )
    assert all(torch.isfinite(g).all() for g in grads.values())


if hasattr(ta, "CbamModule"):
    from timm.layers.cbam import CbamModule as TimmCbamModule, LightCbamModule as TimmLightCbamModule

    def _cbam_pair(light, C=6):
        ours, theirs = (ta.LightCbamModule, TimmLightCbamModule) if light else (ta.CbamModule, TimmCbamModule)
        # eval: BatchNorm with running statistics is per sample, so one
        # sample's NaN stays in it (batch statistics spread it, in torch too).
        return ours(C, rd_channels=4, spatial_kernel_size=3).eval(), theirs(C, rd_channels=4, spatial_kernel_size=3).eval()

    @pytest.mark.parametrize("light", [False, True], ids=["cbam", "light_cbam"])
    @pytest.mark.parametrize("kind", ["nan", "mixed"])
    def test_cbam_non_finite_matches_timm(kind, light):
        fn, ref, t, dtype, names = module_case(*_cbam_pair(light), poisoned_input(kind), torch.float32)
        y, grads = check_vs_float64(fn, ref, t, dtype, names, msg=f"cbam {kind}", nonfinite=True)
        assert torch.isfinite(y[2]).all() and torch.isfinite(grads["x"][2]).all()

    def test_cbam_fp16_sum_overflow_stays_finite_and_right():
        x = (20 + torch.randn(2, 6, 64, 64)).half().contiguous(memory_format=torch.channels_last)
        ours, theirs = _cbam_pair(False)
        with torch.no_grad():
            ours.channel.fc1.weight.mul_(0.05)
        fn, ref, t, dtype, names = module_case(ours, theirs, x, torch.float16)
        y, grads = check_vs_float64(fn, ref, t, dtype, names, msg="cbam fp16")
        assert torch.isfinite(y).all() and all(torch.isfinite(g).all() for g in grads.values())
