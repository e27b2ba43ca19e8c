"""Fused CBAM: the functional form against a float64 reference (output, every
gradient, BatchNorm running statistics), tied maxima, forced multi-block and
split launches, timm's CbamModule / LightCbamModule with weights loaded
strictly, the seed article's CBAMBlock ("FC" and "Conv"), opcheck,
torch.compile(fullgraph=True), the pure-PyTorch path and bad input."""
import copy
import itertools

import pytest
import timm.layers.cbam as timm_cbam
import torch
import torch.nn.functional as F
from torch import nn

import triton_attn
from triton_attn.ops import cbam as cbam_ops
from triton_attn import functional as TF
from triton_attn.launch import config as launch_config
from triton_attn.reference import EagerCbamModule, cbam_reference

from helpers import DTYPES, assert_close, assert_fwd_bwd_close, fwd_bwd, make_input, module_fwd_bwd, same_layout
from seed_reference import CBAMBlock

LAYOUTS = ("nchw", "channels_last", "strided")
BN_MODES = ("none", "train", "eval")

# Shapes rotate through the dtype x layout product: C = 3, H = 1, W = 1 and
# maps smaller than the 7x7 kernel all appear (N*H*W > 1 for BatchNorm training).
SHAPES = [(2, 16, 5, 6), (1, 3, 1, 7), (3, 5, 4, 1), (2, 8, 7, 7), (2, 3, 3, 3), (1, 12, 6, 5), (3, 7, 2, 3), (2, 4, 1, 5), (2, 9, 4, 4)]
CASES = [(dt, lay, SHAPES[i]) for i, (dt, lay) in enumerate(itertools.product(DTYPES, LAYOUTS))]
CASE_IDS = [f"{str(dt)[6:]}-{lay}-{'x'.join(map(str, s))}" for dt, lay, s in CASES]

# (spatial_concat, k, channel function, MLP bias, light, act, act_param, gate), rotated through the cases.
VARIANTS = [
    ("mean_max", 7, "mlp", False, False, "relu", 0.0, "sigmoid"),
    ("max_mean", 3, "mlp", True, False, "silu", 0.0, "sigmoid"),
    ("mean_max", 5, "conv", False, False, "relu", 0.0, "sigmoid"),
    ("max_mean", 7, "conv", False, False, "relu", 0.0, "hard_sigmoid"),
    ("mean_max", 3, "mlp", False, True, "relu", 0.0, "sigmoid"),
    ("max_mean", 5, "mlp", True, False, "leaky_relu", 0.1, "hard_sigmoid"),
    ("mean_max", 5, "mlp", True, True, "gelu", 0.0, "hard_sigmoid"),
]


def cbam_params(C, dtype, k, channel="mlp", bias=False, light=False, bn=True, rd=None, same_gate=False):
    """Weights in x's dtype, as a module cast with ``.to(dtype)`` holds them.
    ``same_gate``: identical fc2 rows, so every channel gets the same ca and
    ties in x stay ties in x * ca."""
    if channel == "mlp":
        rd = rd or max(1, C // 4)
        fc2 = torch.randn(1 if same_gate else C, rd, 1, 1).expand(C, rd, 1, 1).clone()
        p = {
            "fc1_weight": torch.randn(rd, C, 1, 1) / C**0.5, "fc1_bias": torch.randn(rd) if bias else None,
            "fc2_weight": fc2 / rd**0.5, "fc2_bias": torch.randn(C) if bias else None,
        }
    else:
        p = {"channel_conv": torch.randn(1, 1, 3)}
    p["spatial_weight"] = torch.randn(1, 1 if light else 2, k, k) / k
    if bn:
        p["bn_weight"], p["bn_bias"] = 1 + 0.2 * torch.randn(1), 0.2 * torch.randn(1)
    return {name: v.to(dtype) for name, v in p.items() if v is not None}


def bn_buffers(dtype):
    return (0.1 * torch.randn(1)).to(dtype), (0.5 + torch.rand(1)).to(dtype)


def check_cbam(x, params, bn_mode, dtype, msg, momentum=0.1, **kw):
    """Poisoned forward + backward of ``TF.cbam`` vs ``cbam_reference`` in
    float64 on the same (rounded) inputs, then the running statistics."""
    rm, rv = bn_buffers(dtype)
    rm64, rv64 = rm.double(), rv.double()
    use_bn = bn_mode != "none"

    def ours(x, **t):
        bn = dict(bn_running_mean=rm, bn_running_var=rv, bn_training=bn_mode == "train", bn_momentum=momentum)
        return TF.cbam(x, spatial_bn=use_bn, **(bn if use_bn else {}), **t, **kw)

    def ref(x, fc1_weight=None, fc1_bias=None, fc2_weight=None, fc2_bias=None, bn_weight=None, bn_bias=None, **t):
        bn = (lambda z: F.batch_norm(z, rm64, rv64, bn_weight, bn_bias, bn_mode == "train", momentum, 1e-5)) if use_bn else None
        return cbam_reference(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, bn=bn, **t, **kw)

    tensors = {"x": x, **params}
    dy = torch.randn(x.shape).to(dtype)
    got = fwd_bwd(ours, tensors, dy)
    want = fwd_bwd(ref, {n: t.double() for n, t in tensors.items()}, dy.double(), poison=False)
    assert got[0].dtype == dtype
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        assert same_layout(got[0], x), f"{msg}: y strides {got[0].stride()} vs x {x.stride()}"
    assert_fwd_bwd_close(got, want, dtype, msg)
    if bn_mode == "train":
        assert_close(rm, rm64, dtype, msg=f"{msg} running_mean")
        assert_close(rv, rv64, dtype, msg=f"{msg} running_var")


@pytest.mark.parametrize("bn_mode", BN_MODES)
@pytest.mark.parametrize("dtype,layout,shape", CASES, ids=CASE_IDS)
def test_matches_float64_reference(dtype, layout, shape, bn_mode):
    i = CASES.index((dtype, layout, shape)) + BN_MODES.index(bn_mode)
    concat, k, channel, bias, light, act, act_param, gate = VARIANTS[i % len(VARIANTS)]
    x = make_input(shape, dtype, layout)
    params = cbam_params(shape[1], dtype, k, channel, bias, light, bn=bn_mode != "none")
    check_cbam(
        x, params, bn_mode, dtype, f"{channel} k={k} {concat} light={light} {act} {gate} bn={bn_mode}",
        spatial_concat=concat, light=light, act=act, act_param=act_param, gate=gate,
    )


def test_eval_and_no_bn_leave_running_statistics_alone():
    x = make_input((2, 6, 4, 4))
    p = cbam_params(6, torch.float32, 3)
    rm, rv = bn_buffers(torch.float32)
    before = rm.clone(), rv.clone()
    TF.cbam(x, spatial_bn=True, bn_running_mean=rm, bn_running_var=rv, bn_training=False, **p)
    assert torch.equal(rm, before[0]) and torch.equal(rv, before[1])


# --- ties, multi-block and split launches -----------------------------------


@pytest.mark.parametrize("layout,split", [("nchw", 1), ("channels_last", 2)])
def test_tied_maxima_share_the_gradient(layout, split):
    """ReLU-ed, rounded inputs tie at the max over H*W; identical fc2 rows give
    every channel the same ca, so they also tie in the max over C of x * ca
    (all-zero pixels at least). torch.amax splits the gradient evenly; the tie
    counts must survive C and H*W splits."""
    x = F.relu(torch.randn(2, 5, 4, 5).mul(1.5).round())
    x[0, 1] = 1.0  # a channel that is all ties
    x[1, :, 2, 3] = 2.0  # a pixel that is all ties, nonzero
    x = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x
    params = cbam_params(5, torch.float32, 3, rd=2, same_gate=True)
    with launch_config.override(block_c=2, block_hw=4, split=split):
        check_cbam(x, params, "train", torch.float32, "ties")


@pytest.mark.parametrize("dtype,layout", [(torch.float32, "nchw"), (torch.float16, "channels_last"), (torch.bfloat16, "strided")])
def test_multi_block_and_split_paths(dtype, layout):
    """block_c=2, block_hw=4, split=3: ragged channel and pixel blocks, C split
    in the per-pixel reductions, partial sums combined on the host."""
    x = make_input((2, 5, 3, 6), dtype, layout)
    with launch_config.override(block_c=2, block_hw=4, split=3):
        check_cbam(x, cbam_params(5, dtype, 5, bias=True), "train", dtype, "split", spatial_concat="max_mean")


def test_backward_is_deterministic():
    x = make_input((2, 5, 3, 6), layout="channels_last")
    p = cbam_params(5, torch.float32, 5)
    dy = torch.randn(x.shape)
    fn = lambda **t: TF.cbam(**t, spatial_bn=True, bn_training=True)  # noqa: E731
    with launch_config.override(block_c=2, block_hw=4, split=3):
        a, b = fwd_bwd(fn, {"x": x, **p}, dy), fwd_bwd(fn, {"x": x, **p}, dy)
    assert torch.equal(a[0], b[0]) and all(torch.equal(a[1][n], b[1][n]) for n in a[1])


def test_nan_propagates_like_torch():
    x = make_input((2, 4, 3, 3))
    x[1, 2, 1, 1] = float("nan")
    p = cbam_params(4, torch.float32, 3)
    y = TF.cbam(x, **p)
    ref = cbam_reference(x.double(), p["fc1_weight"].double(), None, p["fc2_weight"].double(), spatial_weight=p["spatial_weight"].double())
    assert torch.equal(y.isnan(), ref.isnan()) and y[1].isnan().all() and not y[0].isnan().any()


@pytest.mark.parametrize("layout,k,bn_mode", [("nchw", 7, "train"), ("channels_last", 5, "eval"), ("nchw", 3, "none")])
def test_row_blocks_with_halo_and_forced_splits(layout, k, bn_mode):
    """split=4: the pooling and the per-pixel reductions write 3-4 partials
    each (folded by their consumers: the gate, the spatial branch, the gate
    backward), and the spatial branch runs 4 row blocks per sample, each
    folding its own halo of k // 2 rows."""
    x = make_input((1, 6, 9, 5), layout=layout)
    with launch_config.override(block_c=2, block_hw=16, split=4):
        check_cbam(x, cbam_params(6, torch.float32, k, bn=bn_mode != "none"), bn_mode, torch.float32, f"row blocks k={k}",
                   spatial_concat="max_mean")


def _bn_of(module):
    return module.spatial.conv.bn


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum", "cumulative"])
@pytest.mark.parametrize("dtype,layout", [(torch.float32, "nchw"), (torch.bfloat16, "channels_last")])
def test_running_statistics_over_training_steps(momentum, dtype, layout):
    """Three training steps, then eval: running_mean / running_var /
    num_batches_tracked updated in-kernel exactly as nn.BatchNorm2d updates
    timm's (momentum=None: the cumulative average), buffers kept in the
    module's dtype; the eval step then normalises with them."""
    theirs, ours = build_pair("CbamModule", dict(rd_channels=4, spatial_kernel_size=3), 8, dtype)
    for m in (theirs, ours):
        _bn_of(m).momentum = momentum
    ours.train()
    theirs.train()
    for step in range(3):
        x = make_input((2, 8, 5, 4), dtype, layout)
        dy = torch.randn(x.shape).to(dtype)
        got = module_fwd_bwd(ours, x, dy)
        want = module_fwd_bwd(theirs, x.double(), dy.double(), poison=False)
        assert_fwd_bwd_close(got, want, dtype, f"step {step}")
        a, b = _bn_of(ours), _bn_of(theirs)
        assert a.running_mean.dtype == dtype and a.num_batches_tracked.item() == b.num_batches_tracked.item() == step + 1
        assert_close(a.running_mean, b.running_mean, dtype, msg=f"step {step} running_mean")
        assert_close(a.running_var, b.running_var, dtype, msg=f"step {step} running_var")
    ours.eval()
    theirs.eval()
    x = make_input((2, 8, 5, 4), dtype, layout)
    with torch.no_grad():
        assert_close(ours(x), theirs(x.double()), dtype, msg="eval after training")


def test_batch_norm_without_tracking_or_affine():
    """track_running_stats=False (batch statistics in eval too, no buffers
    touched) and affine=False (no weight or bias)."""
    theirs, ours = build_pair("CbamModule", dict(rd_channels=2, spatial_kernel_size=3), 6)
    for m in (theirs, ours):
        m.spatial.conv.bn = nn.BatchNorm2d(1, track_running_stats=False, affine=False).to(next(m.parameters()).dtype)
    for training in (True, False):
        ours.train(training)
        theirs.train(training)
        x = make_input((2, 6, 4, 5))
        dy = torch.randn(x.shape)
        assert_fwd_bwd_close(module_fwd_bwd(ours, x, dy), module_fwd_bwd(theirs, x.double(), dy.double(), poison=False),
                             torch.float32, f"untracked training={training}")


def test_launches_as_a_132_sm_gpu_plans_them(monkeypatch):
    """Issue 11's budget: forward 5 Triton launches (eval; training too),
    backward 7 with training BatchNorm, and no torch compute op on the way
    (launches stubbed: only counted)."""
    from perf.accounting.aten_log import AtenLog

    monkeypatch.setenv("TRITON_ATTN_SM_COUNT", "132")
    for shape, layout in (((1, 64, 7, 7), "nchw"), ((4, 32, 14, 14), "channels_last")):
        module = triton_attn.CbamModule(shape[1])
        x = make_input(shape, layout=layout).requires_grad_(True)
        dy = torch.ones(shape)
        with AtenLog() as log, triton_attn.runtime.stubbed_launches() as launches:
            with torch.no_grad():
                module.eval()(x)
            n_eval = len(launches)
            y = module.train()(x)
            n_train = len(launches) - n_eval
            y.backward(dy)
        names = [name for name, _, _ in launches]
        assert (n_eval, n_train, len(names) - n_eval - n_train) == (5, 5, 7), names
        assert not log.ops, [op.name for op in log.ops]


def test_conv_channel_mode_launches(monkeypatch):
    """The seed's Conv channel attention: its gate is computed inside the
    statistics pass (4 launches forward) and its backward is one launch
    (5 backward without BatchNorm)."""
    monkeypatch.setenv("TRITON_ATTN_SM_COUNT", "132")
    x = make_input((2, 16, 6, 6)).requires_grad_(True)
    p = {n: t.requires_grad_(True) for n, t in cbam_params(16, torch.float32, 7, channel="conv", bn=False).items()}
    dy = torch.ones(x.shape)
    with triton_attn.runtime.stubbed_launches() as launches:
        y = TF.cbam(x, spatial_concat="max_mean", **p)
        n_fwd = len(launches)
        y.backward(dy)
    assert (n_fwd, len(launches) - n_fwd) == (4, 5), [name for name, _, _ in launches]


def test_empty_batch_at_the_op():
    """N = 0 reaches the op itself: empty y, the batch counted in
    num_batches_tracked, running statistics left alone, zero weight grads."""
    x, p = _op_args("mlp_bn_train_running")
    x = x.detach()[:0].requires_grad_(True)
    y, state, rm, rv, nbt = cbam_ops.cbam_fwd(x, *p)
    assert y.shape == x.shape and state.numel() == 0 + 2
    assert torch.equal(rm, p[8]) and torch.equal(rv, p[9]) and nbt.item() == p[10].item() + 1
    grads = cbam_ops.cbam_bwd(torch.zeros_like(x), x.detach(), state, *(t.detach() if isinstance(t, torch.Tensor) else t
                              for i, t in enumerate(p) if i not in (10, 13)), True)
    assert grads[0].shape == x.shape and all(not g.any() for g in grads[1:])


# --- timm's modules, weights loaded strictly --------------------------------

TIMM_CONFIGS = [
    ("cbam", "CbamModule", dict(spatial_kernel_size=7)),
    ("cbam_bias_silu_k3", "CbamModule", dict(rd_channels=4, mlp_bias=True, act_layer=nn.SiLU, spatial_kernel_size=3)),
    ("cbam_hardsigmoid_k5", "CbamModule", dict(rd_ratio=0.25, rd_divisor=2, gate_layer="hard_sigmoid", spatial_kernel_size=5)),
    ("light", "LightCbamModule", dict(rd_channels=4, spatial_kernel_size=5)),
    ("cbam_mish_unfused", "CbamModule", dict(rd_channels=4, act_layer=nn.Mish, spatial_kernel_size=3)),
    ("light_mish_unfused", "LightCbamModule", dict(rd_channels=4, act_layer=nn.Mish, spatial_kernel_size=3)),
]


def build_pair(cls_name, kwargs, C, dtype=torch.float32):
    """(timm module in float64, ours in dtype) with the same random weights and
    running statistics, loaded strictly."""
    theirs = getattr(timm_cbam, cls_name)(C, **kwargs)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn_like(p) / p[0].numel() ** 0.5)
        bn = theirs.spatial.conv.bn
        bn.weight.add_(1.0)
        bn.running_mean.normal_(0, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    ours = getattr(triton_attn, cls_name)(C, **kwargs)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return theirs.double(), ours.to(dtype)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("config", TIMM_CONFIGS, ids=[c[0] for c in TIMM_CONFIGS])
def test_matches_timm(config, training):
    name, cls_name, kwargs = config
    theirs, ours = build_pair(cls_name, kwargs, 16)
    assert set(theirs.state_dict()) == set(ours.state_dict())
    theirs.train(training)
    ours.train(training)
    for step in range(2 if training else 1):  # two steps: num_batches_tracked and running stats
        x = make_input((2, 16, 5, 4), layout="channels_last" if step else "nchw")
        dy = torch.randn(x.shape)
        got = module_fwd_bwd(ours, x, dy)
        want = module_fwd_bwd(theirs, x.double(), dy.double(), poison=False)
        assert_fwd_bwd_close(got, want, torch.float32, f"{name} step {step}")
    for (n, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert_close(a, b, torch.float32, msg=f"{name} {n}")


def test_fused_path_taken_for_known_layers(monkeypatch):
    calls = []
    real = cbam_ops.cbam_forward_impl  # behind both the eager Function and the registered op
    monkeypatch.setattr(cbam_ops, "cbam_forward_impl", lambda *a: calls.append(1) or real(*a))
    x = make_input((2, 16, 3, 3))
    for config in TIMM_CONFIGS:
        calls.clear()
        build_pair(config[1], config[2], 16)[1](x)
        assert bool(calls) == ("unfused" not in config[0]), config[0]


def test_options_beyond_timm():
    """spatial_concat="max_mean" and spatial_bn=False match the eager baseline
    built the same way (keys included)."""
    ours = triton_attn.CbamModule(8, rd_channels=2, spatial_kernel_size=3, spatial_concat="max_mean", spatial_bn=False, mlp_bias=True)
    eager = EagerCbamModule(8, 2, spatial_kernel_size=3, concat="max_mean", bn=False, mlp_bias=True)
    eager.load_state_dict(ours.state_dict(), strict=True)
    x = make_input((2, 8, 4, 5))
    dy = torch.randn(x.shape)
    want = module_fwd_bwd(eager.double(), x.double(), dy.double(), poison=False)
    assert_fwd_bwd_close(module_fwd_bwd(ours, x, dy), want, torch.float32, "max_mean no-bn")


# --- the seed article's CBAMBlock via the functional form --------------------


@pytest.mark.parametrize("mode,k", [("FC", 7), ("Conv", 3)])
def test_matches_seed_cbam_block(mode, k):
    """Seed: [max, mean] concat, no BN, bias-free MLP or ECA conv. Its spatial
    max is torch.max (gradient to one index), so the input has no ties."""
    C = 16
    seed = CBAMBlock(mode, k, channels=C, ratio=4) if mode == "FC" else CBAMBlock(mode, k, channels=C, gamma=2, b=1)
    ch = seed.channel_attention_block
    params = {"spatial_weight": seed.spatial_attention_block.conv.weight}
    if mode == "FC":
        params.update(fc1_weight=ch.fc_layers[0].weight, fc2_weight=ch.fc_layers[2].weight)
    else:
        params["channel_conv"] = ch.conv.weight
    x = make_input((2, C, 6, 5), layout="channels_last")
    dy = torch.randn(x.shape)
    got = fwd_bwd(lambda **t: TF.cbam(**t, spatial_concat="max_mean"), {"x": x, **params}, dy)
    seed64 = copy.deepcopy(seed).double()
    seed_params = {n: p for n, p in seed64.named_parameters()}
    seed64.zero_grad()
    x64 = x.double().requires_grad_(True)
    seed64(x64).backward(dy.double())
    want_grads = {"x": x64.grad, "spatial_weight": seed_params["spatial_attention_block.conv.weight"].grad}
    if mode == "FC":
        want_grads["fc1_weight"] = seed_params["channel_attention_block.fc_layers.0.weight"].grad
        want_grads["fc2_weight"] = seed_params["channel_attention_block.fc_layers.2.weight"].grad
    else:
        want_grads["channel_conv"] = seed_params["channel_attention_block.conv.weight"].grad
    assert_fwd_bwd_close(got, (seed64(x.double()), want_grads), torch.float32, f"seed {mode}")


# --- torch.library.opcheck, torch.compile ------------------------------------


def _op_args(variant):
    x = make_input((2, 5, 3, 4), layout="channels_last", requires_grad=True)
    r = lambda *s: torch.randn(*s, requires_grad=True)  # noqa: E731
    rm, rv = bn_buffers(torch.float32)
    nbt = torch.tensor(3)
    if variant == "mlp_bias_bn_eval":
        p = (r(2, 5, 1, 1), r(2), r(5, 2, 1, 1), r(5), None, r(1, 2, 3, 3), r(1), r(1), rm, rv, None, True, False, 0.1, 1e-5, "mean_max", "relu", 0.0, "sigmoid", False)
    elif variant == "conv_bn_train":
        p = (None, None, None, None, r(1, 1, 3), r(1, 2, 5, 5), r(1), r(1), None, None, None, True, True, 0.1, 1e-5, "max_mean", "relu", 0.0, "hard_sigmoid", False)
    elif variant == "mlp_bn_train_running":
        p = (r(2, 5), None, r(5, 2), None, None, r(1, 2, 3, 3), r(1), None, rm, rv, nbt, True, True, None, 1e-5, "mean_max", "gelu", 0.0, "sigmoid", False)
    else:  # light, no BN
        p = (r(2, 5), None, r(5, 2), None, None, r(1, 1, 3, 3), None, None, None, None, None, False, False, 0.1, 1e-5, "mean_max", "silu", 0.0, "sigmoid", True)
    return x, p


@pytest.mark.parametrize("variant", ["mlp_bias_bn_eval", "conv_bn_train", "mlp_bn_train_running", "light_no_bn"])
def test_opcheck(variant):
    x, p = _op_args(variant)
    torch.library.opcheck(cbam_ops.cbam_fwd, (x, *p))
    _, state, *_ = cbam_ops.cbam_fwd(x, *p)
    d = lambda t: t.detach() if isinstance(t, torch.Tensor) else t  # noqa: E731
    fwd_only = (10, 13)  # num_batches_tracked, momentum (after x)
    bwd_params = tuple(d(t) for i, t in enumerate(p) if i not in fwd_only)
    bwd_args = (torch.randn(x.shape), d(x), state, *bwd_params, variant != "light_no_bn")
    torch.library.opcheck(cbam_ops.cbam_bwd, bwd_args)


def test_torch_compile_fullgraph_matches_eager():
    """Training mode: BatchNorm batch statistics, running-statistics and
    num_batches_tracked updates (momentum and the cumulative average), all
    inside one graph: the registered op returns the updates, the caller
    copies them into the buffers."""
    torch._dynamo.reset()
    model = nn.Sequential(
        triton_attn.CbamModule(8, rd_channels=2, spatial_kernel_size=3),
        triton_attn.LightCbamModule(8, rd_channels=2, spatial_kernel_size=3, spatial_bn=False),
        triton_attn.CbamModule(8, rd_channels=2, spatial_kernel_size=3),
    )
    model[2].spatial.conv.bn.momentum = None
    compiled = torch.compile(copy.deepcopy(model), fullgraph=True, backend="aot_eager")
    x = make_input((2, 8, 5, 4), layout="channels_last")
    dy = torch.randn(x.shape)
    y, grads = module_fwd_bwd(model, x, dy)
    cy, cgrads = module_fwd_bwd(compiled, x, dy)
    assert same_layout(cy, x)
    assert_close(cy, y, torch.float32, msg="compiled y")
    for k, g in grads.items():
        assert_close(cgrads[k if k == "x" else f"_orig_mod.{k}"], g, torch.float32, msg=f"compiled grad {k}")
    for (n, a), (_, b) in zip(compiled.state_dict().items(), model.state_dict().items()):
        assert_close(a, b, torch.float32, msg=f"compiled {n}")


# --- the pure-PyTorch path, empty and bad input ------------------------------


@pytest.mark.parametrize("cls_name,dtype,layout", [
    ("CbamModule", torch.float16, "channels_last"), ("LightCbamModule", torch.bfloat16, "strided"),
])
def test_torch_fallback_matches_triton(cls_name, dtype, layout):
    _, ours = build_pair(cls_name, dict(rd_channels=3, spatial_kernel_size=5), 7)
    x = make_input((3, 7, 5, 6), dtype, layout)
    dy = torch.randn(x.shape).to(dtype)
    ours = ours.train()
    triton_out = module_fwd_bwd(ours, x, dy)
    with triton_attn.torch_fallback():
        torch_out = module_fwd_bwd(ours, x, dy)
    assert_fwd_bwd_close(triton_out, torch_out, dtype, f"{cls_name} fallback")


def test_empty_batch():
    _, ours = build_pair("CbamModule", dict(rd_channels=2, spatial_kernel_size=3), 6)
    x = torch.randn(0, 6, 4, 4, requires_grad=True)
    y = ours.eval()(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad.shape == x.shape


def test_bad_input_raises():
    x = make_input((2, 6, 4, 4))
    p = cbam_params(6, torch.float32, 3, bn=False)
    sw = p.pop("spatial_weight")
    cases = [
        (ValueError, "exactly one", dict(spatial_weight=sw)),
        (ValueError, "exactly one", dict(spatial_weight=sw, channel_conv=torch.randn(3), **p)),
        (ValueError, "spatial_weight", dict(spatial_weight=torch.randn(1, 2, 4, 4), **p)),
        (ValueError, "spatial_weight", dict(spatial_weight=sw, light=True, **p)),
        (ValueError, "spatial_concat", dict(spatial_weight=sw, spatial_concat="max_avg", **p)),
        (ValueError, "running", dict(spatial_weight=sw, spatial_bn=True, **p)),
        (ValueError, "channel_conv", dict(spatial_weight=sw, channel_conv=torch.randn(4))),
        (ValueError, "fc2_weight", dict(spatial_weight=sw, fc1_weight=p["fc1_weight"], fc2_weight=torch.randn(6, 3))),
        (ValueError, "act", dict(spatial_weight=sw, act="mish", **p)),
        (TypeError, "floating", dict(spatial_weight=sw.long(), **p)),
    ]
    for exc, match, kw in cases:
        with pytest.raises(exc, match=match):
            TF.cbam(x, **kw)
    with pytest.raises(TypeError, match="float"):
        TF.cbam(x.long(), spatial_weight=sw, **p)
    with pytest.raises(ValueError, match="empty"):
        TF.cbam(torch.randn(2, 6, 0, 4), spatial_weight=sw, **p)
    with pytest.raises(ValueError, match="more than 1 value"):
        TF.cbam(make_input((1, 6, 1, 1)), spatial_weight=sw, spatial_bn=True, bn_training=True, **p)
    m = triton_attn.CbamModule(8)
    with pytest.raises(ValueError, match="channels"):
        m(x)
    with pytest.raises(ValueError, match="odd"):
        triton_attn.CbamModule(8, spatial_kernel_size=4)
    with pytest.raises(ValueError, match="spatial_concat"):
        triton_attn.CbamModule(8, spatial_concat="avg_max")


# --- GPU only ------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available() or triton_attn.INTERPRETED, reason="needs a CUDA GPU (real Triton kernels and shapes)")
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_gpu_real_shapes(layout, monkeypatch):
    # The spatial conv follows PyTorch's cuDNN TF32 setting, as timm's does.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    x = make_input((8, 64, 56, 56), torch.float16, layout, device="cuda")
    p = {n: t.cuda() for n, t in cbam_params(64, torch.float16, 7, rd=4).items()}
    dy = torch.randn(x.shape, device="cuda").half()
    fn = lambda **t: TF.cbam(**t, spatial_bn=True, bn_training=True)  # noqa: E731
    got = fwd_bwd(fn, {"x": x, **p}, dy)
    again = fwd_bwd(fn, {"x": x, **p}, dy)
    assert all(torch.equal(got[1][n], again[1][n]) for n in got[1]), "not deterministic"
    ref = lambda x, fc1_weight, fc2_weight, spatial_weight, bn_weight, bn_bias: cbam_reference(  # noqa: E731
        x, fc1_weight, None, fc2_weight, spatial_weight=spatial_weight,
        bn=lambda z: F.batch_norm(z, None, None, bn_weight, bn_bias, True, 0.1, 1e-5))
    want = fwd_bwd(ref, {n: t.double() for n, t in {"x": x, **p}.items()}, dy.double(), poison=False)
    assert_fwd_bwd_close(got, want, torch.float16, f"gpu {layout}")
