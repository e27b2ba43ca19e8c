"""Property tests: random shapes, strides, dtypes, layouts, tile/split
overrides and block configurations against the float64 reference, forward
and every gradient. Derandomized (no example database): a failure prints
the same falsifying example on every machine and every run."""
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from triton_attn import functional as TF
from triton_attn.launch import config as launch_config
from triton_attn.activations import HIDDEN_ACTS
from triton_attn.reference import cbam_reference, eca_reference, pool_reference, se_reference

from helpers import check_vs_float64

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
LAYOUTS = ["nchw", "channels_last", "channel_slice", "hw_transposed", "batch_expanded", "hw_expanded", "crop", "overlapping", "misaligned"]

PROPERTY_SETTINGS = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def make_x(layout, N, C, H, W, dtype, gen):
    def rnd(*shape):
        return torch.randn(shape, generator=gen).to(dtype)

    if layout == "channels_last":
        return rnd(N, C, H, W).contiguous(memory_format=torch.channels_last)
    if layout == "channel_slice":
        return rnd(N, 2 * C, H, W)[:, 1::2]
    if layout == "hw_transposed":
        return rnd(N, C, W, H).transpose(2, 3)
    if layout == "batch_expanded":
        return rnd(1, C, H, W).expand(N, -1, -1, -1)
    if layout == "hw_expanded":
        return rnd(N, C, 1, W).expand(-1, -1, H, -1)
    if layout == "crop":  # H and W cannot be merged: the launcher copies
        return rnd(N, C, H + 1, W + 2).contiguous(memory_format=torch.channels_last)[:, :, 1:, 1:-1]
    if layout == "overlapping":  # every stride 1: neighbours share elements
        return rnd(N + C + H + W).as_strided((N, C, H, W), (1, 1, 1, 1))
    if layout == "misaligned":  # data pointer one element past an aligned one
        return rnd(N * C * H * W + 1)[1:].view(N, C, H, W)
    return rnd(N, C, H, W)


@st.composite
def problems(draw):
    op = draw(st.sampled_from(["se", "ese", "eca", "channel_pool", "channel_scale", "cbam"]))
    N, C, H, W = draw(st.integers(1, 2)), draw(st.integers(1, 9)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dtype = draw(st.sampled_from(DTYPES))
    layout = draw(st.sampled_from(LAYOUTS))
    tiles = draw(st.sampled_from([{}, {"block_c": 2, "block_hw": 4}, {"block_c": 4, "block_hw": 2, "split": 2}, {"block_hw": 2, "split": 3}]))
    grad_x = draw(st.booleans()) or op in ("channel_pool", "channel_scale")
    seed = draw(st.integers(0, 2**16))
    cfg = {}
    if op in ("se", "ese"):
        cfg = dict(
            pool=draw(st.sampled_from(["avg", "max", "avgmax"])),
            gate=draw(st.sampled_from(["sigmoid", "hard_sigmoid", "identity"])),
            bias=draw(st.booleans()),
        )
        if op == "se":
            cfg.update(act=draw(st.sampled_from(HIDDEN_ACTS)), rd=draw(st.integers(1, 6)))
    elif op == "eca":
        cfg = dict(k=draw(st.sampled_from([1, 3, 5, 7])), circular=draw(st.booleans()),
                   gate=draw(st.sampled_from(["sigmoid", "hard_sigmoid"])), bias=draw(st.booleans()))
    elif op == "channel_pool":
        cfg = dict(mode=draw(st.sampled_from(["avg", "max", "avgmax"])))
    elif op == "cbam":
        cfg = dict(
            light=draw(st.booleans()), k=draw(st.sampled_from([1, 3, 5])), concat=draw(st.sampled_from(["mean_max", "max_mean"])),
            channel=draw(st.sampled_from(["mlp", "mlp_bias", "conv"])), rd=draw(st.integers(1, 4)),
            act=draw(st.sampled_from(HIDDEN_ACTS)), gate=draw(st.sampled_from(["sigmoid", "hard_sigmoid"])),
            bn=draw(st.sampled_from([None, "eval", "train"] if N * H * W > 1 else [None, "eval"])),
        )
    return op, (N, C, H, W), dtype, layout, tiles, grad_x, seed, cfg


def build(op, shape, dtype, layout, grad_x, seed, cfg):
    """(fn, ref_fn, tensors, gradient names) of one drawn problem."""
    gen = torch.Generator().manual_seed(seed)
    N, C, H, W = shape
    x = make_x(layout, N, C, H, W, dtype, gen)
    wdt = torch.float64 if dtype == torch.float64 else torch.float32

    def param(*s):
        return (torch.randn(s, generator=gen) * 0.5).to(wdt)

    t = {"x": x}
    if op == "se":
        rd = cfg["rd"]
        t.update(w1=param(rd, C), w2=param(C, rd))
        if cfg["bias"]:
            t.update(b1=param(rd), b2=param(C))
        kw = dict(pool=cfg["pool"], act=cfg["act"], act_param=0.1 if cfg["act"] == "leaky_relu" else 0.0, gate=cfg["gate"])
        fn = lambda x, w1, w2, b1=None, b2=None: TF.se(x, w1, b1, w2, b2, **kw)  # noqa: E731
        ref = lambda x, w1, w2, b1=None, b2=None: se_reference(x, w1, b1, w2, b2, **kw)  # noqa: E731
    elif op == "ese":
        t.update(w1=param(C, C))
        if cfg["bias"]:
            t.update(b1=param(C))
        kw = dict(pool=cfg["pool"], gate=cfg["gate"])
        fn = lambda x, w1, b1=None: TF.se(x, w1, b1, **kw)  # noqa: E731
        ref = lambda x, w1, b1=None: se_reference(x, w1, b1, **kw)  # noqa: E731
    elif op == "eca":
        t.update(w=param(cfg["k"]))
        if cfg["bias"]:
            t.update(b=param(1))
        kw = dict(circular=cfg["circular"], gate=cfg["gate"])
        fn = lambda x, w, b=None: TF.eca(x, w, b, **kw)  # noqa: E731
        ref = lambda x, w, b=None: eca_reference(x, w, b, **kw)  # noqa: E731
    elif op == "channel_pool":
        mode = cfg["mode"]
        fn = lambda x: torch.stack(TF.channel_pool(x, mode)) if mode == "avgmax" else TF.channel_pool(x, mode)  # noqa: E731
        ref = lambda x: torch.stack([x.mean((2, 3)), x.amax((2, 3))]) if mode == "avgmax" else pool_reference(x, mode)  # noqa: E731
    elif op == "channel_scale":
        t.update(g=param(N, C))
        fn = lambda x, g: TF.channel_scale(x, g)  # noqa: E731
        ref = lambda x, g: x * g[:, :, None, None]  # noqa: E731
    else:
        fn, ref = cbam_problem(t, C, cfg, param)
    names = [k for k in t if (k != "x" or grad_x) and k not in ("rm", "rv")]
    return fn, ref, t, names


def cbam_problem(t, C, cfg, param):
    """CBAM with an MLP (optionally biased) or a channel conv, one or two
    spatial maps in either order, and no / eval / training BatchNorm."""
    if cfg["channel"] == "conv":
        t.update(cc=param(3))
    else:
        t.update(w1=param(cfg["rd"], C), w2=param(C, cfg["rd"]))
        if cfg["channel"] == "mlp_bias":
            t.update(b1=param(cfg["rd"]), b2=param(C))
    k = cfg["k"]
    t.update(sw=param(1, 1 if cfg["light"] else 2, k, k))
    bn = cfg["bn"]
    if bn:
        t.update(bw=param(1) + 1, bb=param(1), rm=param(1) * 0.1, rv=param(1).abs() + 0.5)
    kw = dict(spatial_concat=cfg["concat"], light=cfg["light"], act=cfg["act"], gate=cfg["gate"])

    def fn(x, sw, w1=None, b1=None, w2=None, b2=None, cc=None, bw=None, bb=None, rm=None, rv=None):
        return TF.cbam(
            x, w1, b1, w2, b2, channel_conv=cc, spatial_weight=sw, spatial_bn=bn is not None, bn_weight=bw, bn_bias=bb,
            bn_running_mean=None if rm is None else rm.clone(), bn_running_var=None if rv is None else rv.clone(),
            bn_training=bn == "train", **kw,
        )

    def ref(x, sw, w1=None, b1=None, w2=None, b2=None, cc=None, bw=None, bb=None, rm=None, rv=None):
        norm = None if bn is None else (lambda z: F.batch_norm(z, rm.clone(), rv.clone(), bw, bb, training=bn == "train"))
        return cbam_reference(x, w1, b1, w2, b2, channel_conv=cc, spatial_weight=sw, bn=norm, **kw)

    return fn, ref


@PROPERTY_SETTINGS
@given(problems())
def test_random_problem_matches_float64(problem):
    op, shape, dtype, layout, tiles, grad_x, seed, cfg = problem
    fn, ref, tensors, names = build(op, shape, dtype, layout, grad_x, seed, cfg)
    tol = dtype
    if dtype == torch.float64 and {cfg.get("gate"), cfg.get("act")} & {"hard_sigmoid", "hard_swish"}:
        # torch's CPU hardsigmoid/hardswish backward use 1/6 and 1/3 as fp32
        # constants even in float64: the reference itself is off by ~3e-8.
        tol = torch.float32
    with launch_config.override(**tiles):
        check_vs_float64(fn, ref, tensors, tol, names, msg=f"{op} {cfg} {shape} {dtype} {layout} {tiles}")
