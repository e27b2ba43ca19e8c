"""Empty inputs behave as PyTorch (and timm/torchvision/the seed code) behave:
N = 0 in training and eval mode gives an empty output of the right shape,
dtype and memory format, gradients like the original's, and a spatial
BatchNorm that counts the batch in ``num_batches_tracked`` and leaves its
running statistics alone, exactly as ``nn.BatchNorm2d`` on an empty batch.
An empty H*W follows the original too (avg-pooled blocks give an empty
output; a max over it is an error)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import triton_attn

timm = pytest.importorskip("timm")


def _originals():
    from timm.layers import cbam, eca, squeeze_excite
    from timm.models import _efficientnet_blocks

    import seed_reference as seed

    yield "timm SEModule", lambda: squeeze_excite.SEModule(16)
    yield "timm SEModule add_maxpool", lambda: squeeze_excite.SEModule(16, add_maxpool=True)
    yield "timm EffectiveSEModule", lambda: squeeze_excite.EffectiveSEModule(16)
    yield "timm EcaModule", lambda: eca.EcaModule(16)
    yield "timm EcaModule use_mlp", lambda: eca.EcaModule(16, use_mlp=True)
    yield "timm CecaModule", lambda: eca.CecaModule(16)
    yield "timm CbamModule", lambda: cbam.CbamModule(16)
    yield "timm LightCbamModule", lambda: cbam.LightCbamModule(16)
    yield "timm EfficientNet SqueezeExcite", lambda: _efficientnet_blocks.SqueezeExcite(16)
    yield "seed SEBlock", lambda: seed.SEBlock("avg", 16, 4)
    yield "seed ECABlock", lambda: seed.ECABlock(16)
    yield "seed CBAMBlock FC", lambda: seed.CBAMBlock("FC", 7, channels=16, ratio=4)
    yield "seed CBAMBlock Conv", lambda: seed.CBAMBlock("Conv", 3, channels=16, gamma=2, b=1)
    try:
        import torchvision
    except ImportError:  # pragma: no cover
        return
    yield "torchvision SqueezeExcitation", lambda: torchvision.ops.SqueezeExcitation(16, 4)


ORIGINALS = list(_originals())
MAX_POOLED = {"timm SEModule add_maxpool", "timm CbamModule", "timm LightCbamModule", "seed CBAMBlock FC", "seed CBAMBlock Conv"}


def _pair(make, train: bool):
    torch.manual_seed(0)
    original = make().train(train)
    fused, report = triton_attn.convert(original)
    assert len(report.swapped) == 1, report
    assert type(fused).__module__.startswith("triton_attn")
    return original, fused


def _run(module, x):
    x = x.detach().requires_grad_(True)
    y = module(x)
    y.sum().backward()
    grads = {n: p.grad for n, p in module.named_parameters()}
    return y, x.grad, grads


def _buffers(module):
    return {n: b.clone() for n, b in module.named_buffers()}


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("make", [m for _, m in ORIGINALS], ids=[n for n, _ in ORIGINALS])
def test_empty_batch_matches_the_original(make, train, layout):
    original, fused = _pair(make, train)
    x = torch.randn(0, 16, 5, 5)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    got_y, got_dx, got_grads = _run(fused, x)
    assert got_y.shape == x.shape and got_y.dtype == x.dtype and got_dx.shape == x.shape
    assert got_y.is_contiguous(memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
    try:
        want_y, _, want_grads = _run(original, x)
    except RuntimeError as e:
        # Some originals fail here (timm's EcaModule: ``view(0, 1, -1)`` is
        # ambiguous); the fused block gives what PyTorch's ops would: an empty
        # output and zero gradients.
        assert "0 elements" in str(e) or "empty" in str(e), e
        want_y, want_grads = got_y, {n: torch.zeros_like(p) for n, p in original.named_parameters()}
    assert want_y.shape == x.shape
    assert set(got_grads) == set(want_grads)
    for name, want in want_grads.items():
        got = got_grads[name]
        if want is None or not want.any():
            assert got is None or not got.any(), name
        else:  # pragma: no cover - an empty batch has no gradient
            assert torch.equal(got, want), name
    # BatchNorm: the batch counted, the running statistics untouched, as PyTorch.
    fused_buffers, original_buffers = _buffers(fused), _buffers(original)
    assert fused_buffers.keys() == original_buffers.keys()
    for name, want in original_buffers.items():
        assert torch.equal(fused_buffers[name], want), name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("make", [m for n, m in ORIGINALS if "Cbam" in n or "CBAM" in n], ids=[n for n, _ in ORIGINALS if "Cbam" in n or "CBAM" in n])
def test_empty_batch_cbam_in_half_precision(make, dtype):
    _, fused = _pair(make, True)
    y, dx, _ = _run(fused.to(dtype), torch.randn(0, 16, 5, 5, dtype=dtype))
    assert y.shape == (0, 16, 5, 5) and y.dtype == dtype and dx.dtype == dtype


@pytest.mark.parametrize("make", [m for n, m in ORIGINALS if n not in MAX_POOLED], ids=[n for n, _ in ORIGINALS if n not in MAX_POOLED])
def test_empty_hw_matches_the_original(make):
    original, fused = _pair(make, True)
    x = torch.randn(2, 16, 0, 3)
    got_y, got_dx, _ = _run(fused, x)
    assert got_y.shape == x.shape and got_dx.shape == x.shape
    try:
        want_y, _, _ = _run(original, x)
    except RuntimeError as e:  # timm's EcaModule cannot view an empty H*W either
        assert "0 elements" in str(e), e
    else:
        assert want_y.shape == x.shape


@pytest.mark.parametrize("make", [m for n, m in ORIGINALS if n in MAX_POOLED], ids=[n for n, _ in ORIGINALS if n in MAX_POOLED])
def test_max_over_empty_hw_is_a_clear_error(make):
    original, fused = _pair(make, True)
    x = torch.randn(2, 16, 0, 3)
    with pytest.raises((IndexError, RuntimeError, ValueError)):
        original(x)
    with pytest.raises(ValueError, match="empty"):
        fused(x)


def test_training_batchnorm_with_one_value_is_pytorchs_error():
    _, fused = _pair(lambda: timm.layers.cbam.CbamModule(16), True)
    with pytest.raises(ValueError, match="more than 1 value"):
        fused(torch.randn(1, 16, 1, 1))
    fused(torch.randn(2, 16, 1, 1))  # two values: fine, as nn.BatchNorm2d


def test_functional_cbam_empty_batch_counts_like_batch_norm():
    F = triton_attn.functional
    x = torch.randn(0, 16, 4, 4, requires_grad=True)
    w1, w2 = torch.randn(4, 16, requires_grad=True), torch.randn(16, 4, requires_grad=True)
    sw = torch.randn(1, 2, 7, 7, requires_grad=True)
    bw, bb = torch.ones(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    rm, rv = torch.zeros(1), torch.ones(1)
    for training in (True, False):
        y = F.cbam(x, w1, None, w2, None, spatial_weight=sw, spatial_bn=True, bn_weight=bw, bn_bias=bb,
                   bn_running_mean=rm, bn_running_var=rv, bn_training=training)
        y.sum().backward()
        assert y.shape == x.shape and torch.equal(rm, torch.zeros(1)) and torch.equal(rv, torch.ones(1))
    assert not w1.grad.any() and not sw.grad.any() and not bw.grad.any()


def test_fused_tail_and_other_future_blocks_are_listed_here():
    """Every fused block class the package exports is covered above (a new
    one, such as the attention tail, must be added to ORIGINALS)."""
    covered = set()
    for _, make in ORIGINALS:
        _, fused = _pair(make, False)
        covered.add(type(fused).__name__)
    exported = {
        name for name in triton_attn.__all__
        if isinstance(getattr(triton_attn, name), type) and issubclass(getattr(triton_attn, name), nn.Module)
    }
    # SEModule/SqueezeExcite and EffectiveSEModule/EffectiveSqueezeExcite are aliases.
    exported = {getattr(triton_attn, n).__name__ for n in exported}
    assert exported <= covered, f"blocks without an empty-batch test: {sorted(exported - covered)}"
