"""triton_attn.convert and create_attn: every recognised block is swapped for
its fused equivalent with the same tensors, keys, device, dtype and
train/eval state, and whole timm / torchvision models give the same logits
and input gradients as the originals."""
import pytest
import torch
from torch import nn

import seed_reference as seed
import triton_attn
from helpers import TOL, make_input, run_fwd_bwd

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

from timm.layers import cbam as timm_cbam  # noqa: E402
from timm.layers import eca as timm_eca  # noqa: E402
from timm.layers import squeeze_excite as timm_se  # noqa: E402
from timm.models._efficientnet_blocks import SqueezeExcite as TimmEffNetSE  # noqa: E402

C = 16

# (id, factory of the original block, fused class, expected path prefix)
BLOCKS = [
    ("timm-se", lambda: timm_se.SEModule(C), triton_attn.SEModule, "fused"),
    ("timm-se-maxpool-silu-hsig", lambda: timm_se.SEModule(C, add_maxpool=True, act_layer=nn.SiLU, gate_layer="hard_sigmoid"), triton_attn.SEModule, "fused"),
    ("timm-se-mish", lambda: timm_se.SEModule(C, act_layer=nn.Mish), triton_attn.SEModule, "unfused: act is Mish"),
    ("timm-se-bn", lambda: timm_se.SEModule(C, norm_layer=nn.BatchNorm2d), triton_attn.SEModule, "unfused: bn is BatchNorm2d"),
    ("timm-ese", lambda: timm_se.EffectiveSEModule(C), triton_attn.EffectiveSEModule, "fused"),
    ("timm-eca", lambda: timm_eca.EcaModule(C), triton_attn.EcaModule, "fused"),
    ("timm-ecam", lambda: timm_eca.EcaModule(C, use_mlp=True), triton_attn.EcaModule, "unfused: conv2"),
    ("timm-ceca", lambda: timm_eca.CecaModule(C, kernel_size=5), triton_attn.CecaModule, "fused"),
    ("timm-cbam", lambda: timm_cbam.CbamModule(C, rd_ratio=1 / 4), triton_attn.CbamModule, "fused"),
    ("timm-lcbam", lambda: timm_cbam.LightCbamModule(C, rd_ratio=1 / 4, spatial_kernel_size=3), triton_attn.LightCbamModule, "fused"),
    ("timm-effnet-se", lambda: TimmEffNetSE(C, act_layer=nn.SiLU), triton_attn.EfficientNetSqueezeExcite, "fused"),
    ("torchvision-se", lambda: torchvision.ops.SqueezeExcitation(C, 4, scale_activation=nn.Hardsigmoid), triton_attn.SqueezeExcitation, "fused"),
    ("seed-se", lambda: seed.SEBlock("max", C, 4), triton_attn.seed_compat.SEBlock, "fused"),
    ("seed-eca", lambda: seed.ECABlock(C), triton_attn.seed_compat.ECABlock, "fused"),
    ("seed-cbam-fc", lambda: seed.CBAMBlock("FC", 7, C, 4), triton_attn.seed_compat.CBAMBlock, "fused"),
    ("seed-cbam-conv", lambda: seed.CBAMBlock("Conv", 3, C, gamma=2, b=1), triton_attn.seed_compat.CBAMBlock, "fused"),
    ("seed-spatial", lambda: seed.Spatial_Attention_Module(5), triton_attn.seed_compat.Spatial_Attention_Module, "unfused: a CBAM part"),
]


def _randomize(module):
    """Random weights (and BN statistics): never the defaults that hide bugs."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.5)
        for name, b in module.named_buffers():
            if b.is_floating_point():
                b.uniform_(0.5, 1.5) if name.endswith("running_var") else b.normal_(0, 0.2)
    return module


def _randomize_norms(model):
    """Whole models keep their own init (convs scaled for depth) but get
    random norm weights and statistics: timm zero-initialises the last norm of
    each residual block, which would multiply the attention output by zero."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.2), m.running_var.uniform_(0.5, 1.5)
    return model


def _assert_same(actual, expected, rtol, msg):
    """Relative to the expected tensor's magnitude (random models can have
    tiny logits, where an absolute tolerance would check nothing)."""
    scale = expected.abs().max().item()
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= rtol * scale, f"{msg}: max error {err:.3g} > {rtol} x {scale:.3g}"


@pytest.mark.parametrize("make, fused_cls, path", [b[1:] for b in BLOCKS], ids=[b[0] for b in BLOCKS])
def test_block_is_swapped_with_the_same_tensors_and_numbers(make, fused_cls, path):
    old = _randomize(make()).train()
    model = nn.Sequential(nn.Identity(), old)
    new_model, report = triton_attn.convert(model)
    new = new_model[1]
    assert type(new) is fused_cls
    assert [(s.name, s.path.startswith(path)) for s in report.swapped] == [("1", True)], str(report)
    assert model[1] is old and new.training
    old_sd, new_sd = old.state_dict(), new.state_dict()
    assert list(new_sd) == list(old_sd) or set(new_sd) == set(old_sd)
    for k in old_sd:
        assert torch.equal(new_sd[k], old_sd[k]), k

    # Training mode: CBAM's spatial BatchNorm normalises with batch statistics
    # and both update their running statistics identically.
    x = make_input((2, C, 5, 6))
    dy = torch.randn_like(x)
    y, grads = run_fwd_bwd(new, x, dy)
    ref_y, ref_grads = run_fwd_bwd(old, x, dy, poison=False)
    torch.testing.assert_close(y, ref_y, **TOL[torch.float32])
    assert set(grads) == set(ref_grads)
    for k, g in ref_grads.items():
        torch.testing.assert_close(grads[k], g, **TOL[torch.float32], msg=k)
    for k, b in old.state_dict().items():
        torch.testing.assert_close(new.state_dict()[k], b, **TOL[torch.float32], msg=k)


def test_inplace_keeps_parameter_objects_device_dtype_and_modes():
    model = nn.Sequential(nn.Conv2d(3, C, 3), timm_se.SEModule(C), timm_eca.EcaModule(C), timm_cbam.CbamModule(C)).double()
    model.eval()
    model[3].train()
    params = {n: p for n, p in model.named_parameters()}
    buffers = {n: b for n, b in model.named_buffers()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out, report = triton_attn.convert(model, inplace=True)
    assert out is model and len(report.swapped) == 3 and not report.left
    assert {n: p for n, p in model.named_parameters()} == params
    assert all(b is buffers[n] for n, b in model.named_buffers())
    assert [m.training for m in model] == [False, False, False, True]
    assert model[3].spatial.conv.bn.training and not model[1].fc1.training
    assert all(p.dtype == torch.float64 for p in model.parameters())
    # The optimizer built before the conversion still trains the converted model.
    before = model[1].fc1.weight.detach().clone()
    model(make_input((1, 3, 6, 6), torch.float64)).sum().backward()
    opt.step()
    assert not torch.equal(model[1].fc1.weight, before)


def test_copy_leaves_the_original_alone_and_shares_nothing():
    model = nn.Sequential(timm_se.SEModule(C), timm_eca.EcaModule(C))
    new, _ = triton_attn.convert(model)
    assert type(model[0]) is timm_se.SEModule and type(model[1]) is timm_eca.EcaModule
    ours = {id(p) for p in new.parameters()}
    assert not ours & {id(p) for p in model.parameters()}


def test_shared_block_stays_shared_and_root_block_is_swapped():
    se = timm_se.SEModule(C)
    model = nn.Sequential(se, nn.Identity(), se)
    new, report = triton_attn.convert(model)
    assert new[0] is new[2] and type(new[0]) is triton_attn.SEModule and len(report.swapped) == 1
    root, report = triton_attn.convert(timm_eca.CecaModule(C))
    assert type(root) is triton_attn.CecaModule and report.swapped[0].name == ""
    same, report = triton_attn.convert(root)
    assert type(same) is triton_attn.CecaModule and not report.swapped and not report.left


def test_report_lists_what_was_left_and_why():
    class MySE(timm_se.SEModule):
        def forward(self, x):
            return 2 * super().forward(x)

    class SEBlock(nn.Module):  # a seed-named class that is not the seed's block
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(C, C)

    model = nn.Sequential(MySE(C), SEBlock(), timm.layers.GlobalContext(C), nn.Conv2d(C, C, 1))
    new, report = triton_attn.convert(model)
    left = {m.name: m.reason for m in report.left}
    assert not report.swapped and set(left) == {"0", "1", "2"}, str(report)
    assert "subclass of timm.layers.squeeze_excite.SEModule" in left["0"]
    assert "not the seed SEBlock's structure" in left["1"]
    assert "no fused equivalent" in left["2"]
    assert "GlobalContext" in str(report)


def test_convert_does_not_import_timm_or_torchvision(monkeypatch):
    """On a model without timm or torchvision blocks convert never imports them
    (they stay optional dependencies)."""
    import builtins

    real_import = builtins.__import__

    def guarded(name, *args, **kwargs):
        assert name.split(".")[0] not in ("timm", "torchvision"), f"convert imported {name}"
        return real_import(name, *args, **kwargs)

    model = nn.Sequential(nn.Conv2d(3, 8, 1), seed.SEBlock("avg", 8, 2), triton_attn.EcaModule(8))
    monkeypatch.setattr(builtins, "__import__", guarded)
    new, report = triton_attn.convert(model)
    monkeypatch.undo()
    assert [s.name for s in report.swapped] == ["1"]


def _resnet(attn, layers=(1, 1, 1, 1)):
    from timm.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, list(layers), num_classes=10, block_args=dict(attn_layer=attn))


MODELS = [
    ("seresnet18", lambda: timm.create_model("seresnet18", pretrained=False, num_classes=10), triton_attn.SEModule, 8),
    ("ecaresnet26t", lambda: timm.create_model("ecaresnet26t", pretrained=False, num_classes=10), triton_attn.EcaModule, 8),
    ("resnet-cbam", lambda: _resnet("cbam"), triton_attn.CbamModule, 4),
    ("mobilenetv3_small_050", lambda: timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=10), triton_attn.EfficientNetSqueezeExcite, 9),
]


@pytest.mark.parametrize("make, fused_cls, count", [m[1:] for m in MODELS], ids=[m[0] for m in MODELS])
def test_whole_model_same_logits_and_input_gradients(make, fused_cls, count):
    model = _randomize_norms(make()).eval()
    new, report = triton_attn.convert(model)
    assert not report.left and len(report.swapped) == count, str(report)
    assert all(s.path == "fused" for s in report.swapped), str(report)
    assert sum(type(m) is fused_cls for m in new.modules()) == count
    new.load_state_dict(model.state_dict(), strict=True)
    x = make_input((1, 3, 32, 32))
    logits, grads = run_fwd_bwd(new, x, torch.ones(1, 10))
    ref_logits, ref_grads = run_fwd_bwd(model, x, torch.ones(1, 10), poison=False)
    _assert_same(logits, ref_logits, 1e-4, "logits")
    _assert_same(grads["x"], ref_grads["x"], 1e-4, "input gradient")


# --- create_attn -----------------------------------------------------------

FUSED_NAMES = [
    ("se", triton_attn.SEModule), ("ese", triton_attn.EffectiveSEModule), ("eca", triton_attn.EcaModule),
    ("ecam", triton_attn.EcaModule), ("ceca", triton_attn.CecaModule), ("cbam", triton_attn.CbamModule),
    ("lcbam", triton_attn.LightCbamModule),
]


@pytest.mark.parametrize("name, cls", FUSED_NAMES, ids=[n for n, _ in FUSED_NAMES])
def test_create_attn_mirrors_timm(name, cls):
    ours = triton_attn.create_attn(name.upper(), 64)
    theirs = timm.layers.create_attn(name, 64)
    assert type(ours) is cls
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = make_input((2, 64, 3, 4))
    torch.testing.assert_close(ours(x), theirs(x), **TOL[torch.float32])


def test_create_attn_other_arguments():
    assert triton_attn.create_attn(None, 8) is None and triton_attn.create_attn(False, 8) is None
    assert type(triton_attn.create_attn(True, 8)) is triton_attn.SEModule
    assert triton_attn.create_attn("se", 64, rd_ratio=1 / 4).fc1.out_channels == 16
    assert type(triton_attn.create_attn(triton_attn.EcaModule, 8)) is triton_attn.EcaModule
    block = triton_attn.SEModule(8)
    assert triton_attn.create_attn(block, 8) is block and triton_attn.get_attn(block) is block
    assert triton_attn.get_attn("gc") is timm.layers.GlobalContext  # no fused form: timm's own
    with pytest.raises(ValueError, match="invalid attention type"):
        triton_attn.create_attn("bogus", 8)
    with pytest.raises(TypeError, match="attn_type"):
        triton_attn.get_attn(3.5)


def test_timm_model_built_with_fused_attention_loads_timm_checkpoint():
    """timm's own factories take our classes as ``attn_layer``."""
    theirs = _randomize_norms(_resnet("se")).eval()
    ours = _resnet(triton_attn.SEModule).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = make_input((1, 3, 32, 32))
    _assert_same(ours(x), theirs(x), 1e-4, "logits")


def test_example_script():
    import pathlib
    import runpy

    path = pathlib.Path(__file__).parents[1] / "examples" / "convert_timm_model.py"
    main = runpy.run_path(str(path))["main"]
    errors = main(["--model", "resnet10t", "--attn", "eca", "--size", "32", "--batch", "1"])
    assert all(err <= 1e-4 for err in errors.values()), errors
