"""The seed article's classes (tests/seed_reference.py) against their drop-ins
in triton_attn.seed_compat: same constructors, module names and state_dict
keys; a seed checkpoint loads strictly and gives the same outputs and
gradients (compared with the seed module run in float64)."""
import copy

import pytest
import torch
from torch import nn

import seed_reference as seed
import triton_attn.functional as TF
from helpers import TOL, assert_close, float64_copy, make_input, run_fwd_bwd
from triton_attn import seed_compat as compat
from triton_attn.ops import cbam as cbam_ops
from triton_attn.ops import se as se_ops

SHAPE = (2, 16, 5, 6)


def _pair(name, *args, **kwargs):
    """A seed module with fresh random weights and the compat module loaded
    strictly from its state_dict."""
    ref = getattr(seed, name)(*args, **kwargs)
    for p in ref.parameters():
        nn.init.normal_(p, std=0.5)
    ours = getattr(compat, name)(*args, **kwargs)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


def _check_against_seed(ours, ref, shape=SHAPE, dtype=torch.float32, layout="nchw"):
    x = make_input(shape, dtype, layout)
    dy = torch.randn(shape).to(dtype)
    y, grads = run_fwd_bwd(ours.to(dtype), x, dy)
    ref64 = float64_copy(ref)
    ref_y, ref_grads = run_fwd_bwd(ref64, x.double(), dy.double(), poison=False)
    assert y.dtype == dtype and y.shape == x.shape
    assert_close(y, ref_y, dtype, msg="y")
    assert set(grads) == set(ref_grads)
    for name, g in ref_grads.items():
        assert grads[name] is not None, f"no gradient for {name}"
        assert_close(grads[name], g, dtype, msg=f"grad {name}")


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_se_block(mode):
    ours, ref = _pair("SEBlock", mode, 16, 4)
    assert list(ours.state_dict()) == ["fc_layers.0.weight", "fc_layers.2.weight"]
    _check_against_seed(ours, ref)


@pytest.mark.parametrize("channels, gamma, b, k", [(4, 2, 1, 1), (16, 2, 1, 3), (16, 1, 1, 5)])
def test_eca_block_kernel_rule_without_minimum(channels, gamma, b, k):
    ours, ref = _pair("ECABlock", channels, gamma=gamma, b=b)
    assert ours.conv.weight.shape == ref.conv.weight.shape == (1, 1, k)
    assert compat.seed_eca_kernel_size(channels, gamma, b) == k
    _check_against_seed(ours, ref, shape=(2, channels, 5, 6))


def test_channel_attention_parts():
    _check_against_seed(*_pair("Channel_Attention_Module_FC", 16, 4))
    _check_against_seed(*_pair("Channel_Attention_Module_Conv", 16, gamma=1, b=1))


@pytest.mark.parametrize("k", [3, 7])
def test_spatial_attention_part(k):
    ours, ref = _pair("Spatial_Attention_Module", k)
    assert list(ours.state_dict()) == ["conv.weight"] and ours.conv.weight.shape == (1, 2, k, k)
    _check_against_seed(ours, ref)


@pytest.mark.parametrize(
    "args, kwargs",
    [(("FC", 7), dict(channels=16, ratio=4)), (("Conv", 3), dict(channels=16, gamma=1, b=1))],
    ids=["FC", "Conv"],
)
def test_cbam_block_runs_the_fused_op(args, kwargs, monkeypatch):
    ours, ref = _pair("CBAMBlock", *args, **kwargs)
    calls = []
    fused = cbam_ops.cbam
    monkeypatch.setattr(cbam_ops, "cbam", lambda *a, **k: calls.append(k) or fused(*a, **k))
    _check_against_seed(ours, ref, layout="channels_last")
    assert calls and calls[0]["spatial_concat"] == "max_mean" and not calls[0].get("spatial_bn")


def test_cbam_block_bf16_against_float64():
    ours, ref = _pair("CBAMBlock", "FC", 5, channels=16, ratio=4)
    _check_against_seed(ours, ref, dtype=torch.bfloat16)


def test_seed_checkpoint_file_loads_strictly(tmp_path):
    ref = seed.CBAMBlock("FC", 7, channels=16, ratio=4)
    path = tmp_path / "seed_cbam.pt"
    torch.save(ref.state_dict(), path)
    ours = compat.CBAMBlock("FC", 7, channels=16, ratio=4)
    ours.load_state_dict(torch.load(path, weights_only=True), strict=True)
    x = make_input(SHAPE)
    assert_close(ours(x), ref(x), torch.float32)


@pytest.mark.parametrize(
    "name, args",
    [("SEBlock", ("max", 16, 4)), ("ECABlock", (16,)), ("CBAMBlock", ("FC", 7, 16, 4)), ("CBAMBlock", ("Conv", 5, 16, None, 2, 1))],
)
def test_same_module_tree_and_keys(name, args):
    ours, ref = getattr(compat, name)(*args), getattr(seed, name)(*args)
    assert dict(ours.named_modules()).keys() == dict(ref.named_modules()).keys()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}


def test_replaced_activation_takes_the_unfused_path(monkeypatch):
    """A user who swaps the MLP's ReLU for Mish still gets the seed's numbers."""
    ours, ref = _pair("SEBlock", "avg", 16, 4)
    ours.fc_layers[1], ref.fc_layers[1] = nn.Mish(), nn.Mish()
    monkeypatch.setattr(se_ops, "se", lambda *a, **k: pytest.fail("fused op used with an unknown activation"))
    _check_against_seed(ours, ref)


def test_parts_and_blocks_copy_and_pickle():
    import pickle

    ours = compat.CBAMBlock("Conv", 7, 16, gamma=2, b=1)
    x = make_input(SHAPE)
    for clone in (copy.deepcopy(ours), pickle.loads(pickle.dumps(ours))):
        torch.testing.assert_close(clone(x), ours(x), **TOL[torch.float32])


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: compat.SEBlock("min", 16, 4), "mode"),
        (lambda: compat.SEBlock("avg", 4, 8), "ratio"),
        (lambda: compat.ECABlock(0), "channels"),
        (lambda: compat.Spatial_Attention_Module(4), "k must be one of"),
        (lambda: compat.CBAMBlock("FC", 7, channels=16), "needs channels and ratio"),
        (lambda: compat.CBAMBlock("Conv", 7, channels=16, gamma=2), "needs channels, gamma and b"),
        (lambda: compat.CBAMBlock("MLP", 7, 16, 4), "channel_attention_mode"),
    ],
)
def test_bad_arguments_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_wrong_channel_count_raises_value_error():
    with pytest.raises(ValueError, match="channels"):
        compat.SEBlock("avg", 16, 4)(make_input((1, 8, 3, 3)))
