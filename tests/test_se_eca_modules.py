"""SE/ECA modules against timm's (same state_dict, same outputs and
gradients, error never worse than eager timm's own), against the seed
article's SEBlock/ECABlock, under torch.compile, on the pure-PyTorch path,
and with checkpoints, empty and bad input."""
import copy
import itertools

import pytest
import timm.layers
import torch
from torch import nn

import triton_attn
from triton_attn import functional as TF
from triton_attn.modules import CecaModule, EcaModule, EffectiveSEModule, SEModule
from triton_attn.ops import eca as eca_ops
from triton_attn.ops import se as se_ops

from helpers import (
    DTYPES, assert_close, assert_fwd_bwd_close, assert_no_worse_than, float64_copy, make_input_here, module_fwd_bwd,
    same_layout,
)
from seed_reference import ECABlock, SEBlock

LAYOUTS = ("nchw", "channels_last", "strided")


@pytest.fixture(autouse=True)
def _on_test_device(device):
    """Every factory call below (torch.randn, module constructors) makes its
    tensors where the kernels run: CUDA, else CPU under the interpreter.
    Convolutions in true fp32: the fp32 tolerance (and the unfused paths,
    which run the modules' own 1x1 convs) assume it, and cuDNN allows TF32."""
    with torch.device(device), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        yield


SHAPES = [(3, 24, 7, 7), (1, 7, 5, 7), (3, 130, 1, 1), (1, 3, 7, 7), (3, 1, 5, 7), (1, 130, 5, 7), (3, 24, 1, 1)]

# (name, class name shared by timm and triton_attn, constructor kwargs without channels)
TIMM_CONFIGS = [
    ("se", "SEModule", {}),
    ("se_maxpool_silu", "SEModule", dict(add_maxpool=True, act_layer=nn.SiLU)),
    ("se_gelu_hardsigmoid", "SEModule", dict(act_layer=nn.GELU, gate_layer="hard_sigmoid")),
    ("se_hardswish_nobias", "SEModule", dict(rd_channels=4, bias=False, act_layer=nn.Hardswish)),
    ("se_batchnorm", "SEModule", dict(norm_layer=nn.BatchNorm2d)),  # unfused path, eval mode
    ("se_mish_maxpool", "SEModule", dict(act_layer=nn.Mish, add_maxpool=True)),  # unfused path, avgmax
    ("ese", "EffectiveSEModule", {}),
    ("ese_maxpool", "EffectiveSEModule", dict(add_maxpool=True)),
    ("eca", "EcaModule", {}),
    ("eca_k5_hardsigmoid", "EcaModule", dict(channels=None, kernel_size=5, gate_layer="hard_sigmoid")),
    ("eca_mlp", "EcaModule", dict(use_mlp=True)),  # unfused path
    ("ceca", "CecaModule", {}),
    ("ceca_bias", "CecaModule", dict(act_layer=nn.ReLU)),  # timm gives the conv a bias
]
TIMM_CASES = [(cfg, dt) for cfg, dt in itertools.product(TIMM_CONFIGS, DTYPES)]


def build_pair(cls_name, kwargs, C, dtype):
    """timm's module and ours, built with the same arguments, ours loaded
    from timm's state_dict with strict=True."""
    kw = dict(kwargs)
    if kw.get("channels", C) is not None:
        kw["channels"] = C
    timm_mod = getattr(timm.layers, cls_name)(**kw)
    for m in timm_mod.modules():
        if isinstance(m, nn.BatchNorm2d):
            # Eval mode with non-trivial statistics: in training, batch
            # statistics of a pooled N x rd x 1 x 1 map are so ill-conditioned
            # that eager timm itself misses the fp16 tolerance (and fc1.bias's
            # gradient is exactly zero, pure cancellation noise).
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            nn.init.normal_(m.weight)
            nn.init.normal_(m.bias)
            timm_mod.eval()
    timm_mod = timm_mod.to(dtype)
    ours = getattr(triton_attn, cls_name)(**kw).to(dtype).train(timm_mod.training)
    ours.load_state_dict(timm_mod.state_dict(), strict=True)
    return timm_mod, ours


@pytest.mark.parametrize(
    "config,dtype", TIMM_CASES, ids=[f"{c[0]}-{str(dt)[6:]}" for c, dt in TIMM_CASES])
def test_matches_timm(config, dtype):
    name, cls_name, kwargs = config
    i = TIMM_CASES.index((config, dtype))
    shape = SHAPES[i % len(SHAPES)]
    layout = LAYOUTS[i % len(LAYOUTS)]
    timm_mod, ours = build_pair(cls_name, kwargs, shape[1], dtype)
    ref_mod = float64_copy(timm_mod)
    x = make_input_here(shape, dtype, layout)
    dy = torch.randn(shape).to(dtype)

    y, grads = module_fwd_bwd(ours, x, dy)
    ty, tgrads = module_fwd_bwd(timm_mod, x, dy, poison=False)
    ry, rgrads = module_fwd_bwd(ref_mod, x.double(), dy.double(), poison=False)

    msg = f"{name} {layout} {shape}"
    assert y.dtype == dtype and set(grads) == set(tgrads)
    if layout != "strided":
        assert same_layout(y, x), f"{msg}: y strides {y.stride()}"
    assert_fwd_bwd_close((y, grads), (ry, rgrads), dtype, msg)
    assert_close(y, ty, dtype, msg=f"{msg} y vs timm")
    assert_no_worse_than(y, ty, ry, dtype, msg=f"{msg} y")
    for k in rgrads:
        assert_close(grads[k], tgrads[k], dtype, scale=max(rgrads[k].abs().max().item(), 1.0), msg=f"{msg} grad {k} vs timm")
        assert_no_worse_than(grads[k], tgrads[k], rgrads[k], dtype, msg=f"{msg} grad {k}")


def test_fused_path_taken_for_known_layers(monkeypatch):
    """The layers the fused ops understand must not fall back to the unfused
    path (which is correct but slower): count the fused op calls."""
    calls = []
    for op, module in (("se", se_ops), ("eca", eca_ops)):
        real = getattr(module, op)
        monkeypatch.setattr(module, op, lambda *a, _real=real, _op=op, **k: calls.append(_op) or _real(*a, **k))
    x = make_input_here((1, 16, 3, 3))
    fused = [name for name, _, _ in TIMM_CONFIGS if name not in ("se_batchnorm", "se_mish_maxpool", "eca_mlp")]
    for name, cls_name, kwargs in TIMM_CONFIGS:
        calls.clear()
        _, ours = build_pair(cls_name, kwargs, 16, torch.float32)
        ours(x)
        assert bool(calls) == (name in fused), f"{name}: fused calls {calls}"


# --- the seed article's modules ----------------------------------------------

# (C, ratio): hidden widths 6, 8, 3 and 1 x expansion for C=3.
SEED_SE_SHAPES = [((3, 24, 7, 7), 4), ((1, 130, 5, 7), 16), ((3, 7, 1, 1), 2), ((1, 3, 5, 7), 1)]


def seed_k(C, gamma=2, b=1):
    """The seed's ECA k rule: no minimum of 3 (C < 8 gives k = 1)."""
    import math

    t = int(abs((math.log(C, 2) + b) / gamma))
    return t if t % 2 else t + 1


def fill_distinct_per_channel(x):
    """Values distinct within each (n, c) slice, exact in bf16: no tied max."""
    N, C, H, W = x.shape
    k = torch.argsort(torch.rand(N, C, H * W), dim=-1).reshape(N, C, H, W)
    x.copy_((k - H * W / 2) / 8)


class SeedSEAsOurs(nn.Module):
    """SEBlock's weights as our SE: Linear [out, in] -> 1x1 conv [out, in, 1, 1];
    "avg" is our SEModule(bias=False), "max" the functional se(pool="max")."""

    def __init__(self, seed: SEBlock, mode: str):
        super().__init__()
        fc1, fc2 = seed.fc_layers[0], seed.fc_layers[2]
        rd, C = fc1.weight.shape
        self.mode = mode
        self.se = SEModule(C, rd_channels=rd, bias=False).to(fc1.weight.dtype)
        self.se.load_state_dict({
            "fc1.weight": fc1.weight.detach().reshape(rd, C, 1, 1),
            "fc2.weight": fc2.weight.detach().reshape(C, rd, 1, 1),
        }, strict=True)

    def forward(self, x):
        if self.mode == "avg":
            return self.se(x)
        return TF.se(x, self.se.fc1.weight, None, self.se.fc2.weight, None, pool="max")


def _seed_grads_as_ours(grads):
    """Seed parameter names -> ours, weights reshaped to [out, in, 1, 1]."""
    out = {"x": grads["x"]}
    for seed_key, our_key in (("fc_layers.0.weight", "se.fc1.weight"), ("fc_layers.2.weight", "se.fc2.weight")):
        out[our_key] = grads[seed_key][..., None, None]
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=[str(d)[6:] for d in DTYPES])
@pytest.mark.parametrize("mode", ["avg", "max"])
def test_matches_seed_se_block(mode, dtype):
    i = ("avg", "max").index(mode) * 3 + DTYPES.index(dtype)
    shape, ratio = SEED_SE_SHAPES[i % len(SEED_SE_SHAPES)]
    layout = LAYOUTS[i % len(LAYOUTS)]
    seed = SEBlock(mode, shape[1], ratio).to(dtype)
    ours = SeedSEAsOurs(seed, mode)
    x = make_input_here(shape, dtype, layout)
    if mode == "max":
        # AdaptiveMaxPool2d sends the gradient to one of tied maxima, amax
        # (our choice, the SPEC's) splits it: compare on tie-free input.
        fill_distinct_per_channel(x)
    dy = torch.randn(shape).to(dtype)
    y, grads = module_fwd_bwd(ours, x, dy)
    ry, rgrads = module_fwd_bwd(float64_copy(seed), x.double(), dy.double(), poison=False)
    assert_fwd_bwd_close((y, grads), (ry, _seed_grads_as_ours(rgrads)), dtype, f"SEBlock {mode} {shape}")


ECA_SEED_CASES = [(dt, lay, (1, 3, 7, 24, 130)[i % 5]) for i, (dt, lay) in enumerate(itertools.product(DTYPES, LAYOUTS))]


@pytest.mark.parametrize("dtype,layout,C", ECA_SEED_CASES, ids=[f"{str(d)[6:]}-{lay}-C{c}" for d, lay, c in ECA_SEED_CASES])
def test_matches_seed_eca_block(dtype, layout, C):
    shape = ((3, C, 5, 7), (1, C, 7, 7), (3, C, 1, 1))[C % 3]
    seed = ECABlock(C).to(dtype)
    k = seed_k(C)
    assert seed.conv.kernel_size == (k,)
    ours = EcaModule(kernel_size=k).to(dtype)
    ours.load_state_dict(seed.state_dict(), strict=True)  # same key: conv.weight [1, 1, k]
    x = make_input_here(shape, dtype, layout)
    dy = torch.randn(shape).to(dtype)
    ref = module_fwd_bwd(float64_copy(seed), x.double(), dy.double(), poison=False)
    assert_fwd_bwd_close(module_fwd_bwd(ours, x, dy), ref, dtype, f"ECABlock C={C} k={k}")


# --- checkpoints -------------------------------------------------------------


@pytest.mark.parametrize("cls_name,kwargs", [("EcaModule", {}), ("CecaModule", dict(act_layer=nn.ReLU))], ids=["eca", "ceca_bias"])
def test_checkpoint_with_another_kernel_size(cls_name, kwargs):
    """k comes from the checkpoint's weight shape, not from our channels rule."""
    C = 24  # our rule gives k = 3
    timm_mod = getattr(timm.layers, cls_name)(kernel_size=7, **kwargs)
    ours = getattr(triton_attn, cls_name)(C, **kwargs)
    assert ours.conv.weight.shape[-1] == 3
    ours.load_state_dict(timm_mod.state_dict(), strict=True)
    assert ours.conv.weight.shape[-1] == ours.kernel_size == 7
    x = make_input_here((2, C, 5, 7), layout="channels_last")
    dy = torch.randn(x.shape)
    ref = module_fwd_bwd(float64_copy(timm_mod), x.double(), dy.double(), poison=False)
    assert_fwd_bwd_close(module_fwd_bwd(ours, x, dy), ref, torch.float32, f"{cls_name} k=7")
    # and back: a k=7 module saves a checkpoint a fresh k=7 timm module loads
    timm_mod.load_state_dict(ours.state_dict(), strict=True)


# --- torch.compile -----------------------------------------------------------


class Blocks(nn.Module):
    def __init__(self, C, unfused=False):
        super().__init__()
        if unfused:
            self.blocks = nn.Sequential(SEModule(C, norm_layer=nn.BatchNorm2d), EcaModule(C, use_mlp=True))
        else:
            self.blocks = nn.Sequential(
                SEModule(C, rd_channels=4, add_maxpool=True), EffectiveSEModule(C),
                EcaModule(C), CecaModule(C, act_layer=nn.ReLU),
            )

    def forward(self, x):
        return self.blocks(x)


@pytest.mark.parametrize("backend,layout,unfused", [
    ("inductor", "nchw", False),
    ("aot_eager", "channels_last", False),
    ("aot_eager", "nchw", True),
], ids=["inductor", "aot_eager-channels_last", "aot_eager-unfused"])
def test_torch_compile_fullgraph_matches_eager(backend, layout, unfused):
    torch._dynamo.reset()
    model = Blocks(8, unfused)
    compiled = torch.compile(copy.deepcopy(model), fullgraph=True, backend=backend)
    x = make_input_here((3, 8, 5, 7), layout=layout)
    dy = torch.randn(x.shape)
    y, grads = module_fwd_bwd(model, x, dy)
    cy, cgrads = module_fwd_bwd(compiled, x, dy)
    assert same_layout(cy, x)
    assert_close(cy, y, torch.float32, msg=f"{backend} y")
    assert set(cgrads) == {"x"} | {f"_orig_mod.{k}" for k in grads if k != "x"}
    for k, g in grads.items():
        assert_close(cgrads[k if k == "x" else f"_orig_mod.{k}"], g, torch.float32, msg=f"{backend} grad {k}")


# --- the pure-PyTorch path ---------------------------------------------------

FALLBACK_CASES = [
    ("se_maxpool_silu", torch.float32, "channels_last"), ("ese_maxpool", torch.float16, "nchw"),
    ("eca_k5_hardsigmoid", torch.bfloat16, "strided"), ("ceca_bias", torch.float16, "channels_last"),
    ("se_mish_maxpool", torch.float32, "strided"), ("se_gelu_hardsigmoid", torch.bfloat16, "nchw"),
]


@pytest.mark.parametrize("name,dtype,layout", FALLBACK_CASES, ids=[f"{n}-{str(d)[6:]}-{lay}" for n, d, lay in FALLBACK_CASES])
def test_torch_fallback_matches_triton(name, dtype, layout):
    _, cls_name, kwargs = next(c for c in TIMM_CONFIGS if c[0] == name)
    _, ours = build_pair(cls_name, kwargs, 7, dtype)
    x = make_input_here((3, 7, 5, 7), dtype, layout)
    dy = torch.randn(x.shape).to(dtype)
    triton_out = module_fwd_bwd(ours, x, dy)
    with triton_attn.torch_fallback():
        torch_out = module_fwd_bwd(ours, x, dy)
    assert_fwd_bwd_close(triton_out, torch_out, dtype, f"{name} fallback")


# --- empty and bad input -----------------------------------------------------


@pytest.mark.parametrize("name", ["se_maxpool_silu", "se_mish_maxpool", "ese", "eca", "ceca_bias", "eca_mlp"])
def test_module_empty_batch(name):
    _, cls_name, kwargs = next(c for c in TIMM_CONFIGS if c[0] == name)
    _, ours = build_pair(cls_name, kwargs, 7, torch.float32)
    x = torch.randn(0, 7, 5, 7, requires_grad=True)
    y = ours(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad.shape == x.shape


def test_module_bad_input_raises():
    se, eca = SEModule(8), EcaModule(8)
    for m in (se, eca, EffectiveSEModule(8), CecaModule(8)):
        with pytest.raises(ValueError, match="channels"):
            m(make_input_here((2, 4, 3, 3)))
        with pytest.raises(ValueError, match="4-D"):
            m(torch.randn(8, 3, 3))
        with pytest.raises(TypeError, match="float"):
            m(torch.ones(1, 8, 3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="odd"):
        EcaModule(kernel_size=4)


def test_module_weights_on_another_device_raise():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device to put the module elsewhere than its input")
    x = torch.randn(2, 8, 3, 3, device="cuda")
    with pytest.raises(ValueError, match="on cpu"):
        SEModule(8, device="cpu")(x)
    with pytest.raises(ValueError, match="on cpu"):
        CecaModule(8, device="cpu")(x)
