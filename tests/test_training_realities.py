"""What training code does to converted blocks: autocast, torch.compile of a
whole converted model, DistributedDataParallel, state_dict round trips,
deepcopy and pickling."""
import copy
import os
import pickle
from datetime import timedelta

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import seed_reference as seed
import triton_attn
from helpers import TOL, make_input, run_fwd_bwd
from triton_attn.runtime import poison_outputs

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

from timm.layers import cbam as timm_cbam  # noqa: E402
from timm.layers import eca as timm_eca  # noqa: E402
from timm.layers import squeeze_excite as timm_se  # noqa: E402

C = 16


def _blocks():
    """One block of each family, as a user's model holds them."""
    return {
        "timm-se": timm_se.SEModule(C, rd_ratio=1 / 4),
        "timm-eca": timm_eca.EcaModule(C),
        "timm-cbam": timm_cbam.CbamModule(C, rd_ratio=1 / 4),
        "torchvision-se": torchvision.ops.SqueezeExcitation(C, 4),
        "seed-cbam": seed.CBAMBlock("FC", 7, C, 4),
    }


def _converted(name):
    torch.manual_seed(1)
    old = _blocks()[name]
    with torch.no_grad():
        for p in old.parameters():
            p.normal_(0, 0.5)
    new, report = triton_attn.convert(old)
    assert report.swapped and report.swapped[0].path == "fused", str(report)
    return old, new


def _err(a, b):
    return (a.double() - b.double()).abs().max().item()


# --- autocast ---------------------------------------------------------------

def _autocast_fwd_bwd(module, x, dy, dtype):
    """Forward under autocast, backward outside it (as PyTorch recommends)."""
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    with poison_outputs(), torch.autocast("cpu", dtype=dtype):
        y = module(x)
    with poison_outputs():
        y.backward(dy)
    return y.detach(), {"x": x.grad, **{n: p.grad for n, p in module.named_parameters()}}



@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", list(_blocks()))
def test_autocast_cpu(name, dtype):
    """x in low precision, weights fp32, under CPU autocast (as a block sees it
    after an autocast conv): same output dtype as the original, values at
    least as close to float64 as the original's (whose MLP runs in low
    precision), and the same gradient dtypes."""
    old, new = _converted(name)
    old.train(), new.train()
    x = make_input((2, C, 5, 6), dtype)
    dy = torch.randn(x.shape).to(dtype)
    y, grads = _autocast_fwd_bwd(new, x, dy, dtype)
    ref_y, ref_grads = _autocast_fwd_bwd(old, x, dy, dtype)
    exact_y, exact_grads = run_fwd_bwd(copy.deepcopy(old).double(), x.double(), dy.double(), poison=False)
    assert y.dtype == ref_y.dtype == dtype
    mag = max(exact_y.abs().max().item(), 1.0)
    assert _err(y, exact_y) <= 2 * _err(ref_y, exact_y) + TOL[dtype]["atol"] * mag, (name, _err(y, exact_y), _err(ref_y, exact_y))
    for k, g in exact_grads.items():
        assert grads[k].dtype == ref_grads[k].dtype, k
        mag = max(g.abs().max().item(), 1.0)
        assert _err(grads[k], g) <= 2 * _err(ref_grads[k], g) + 2 * TOL[dtype]["atol"] * mag, (k, _err(grads[k], g), _err(ref_grads[k], g))


# --- torch.compile ------------------------------------------------------------

def _small_resnet(attn):
    from timm.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10, block_args=dict(attn_layer=attn))


def test_compile_fullgraph_whole_converted_model():
    """Every attention layer runs under the interpreter here, hence aot_eager
    (Inductor works too, but takes minutes to build the model on CPU)."""
    torch.manual_seed(0)
    model = _small_resnet("se").eval()
    new, report = triton_attn.convert(model)
    assert len(report.swapped) == 4
    compiled = torch.compile(new, fullgraph=True, backend="aot_eager")
    x = make_input((1, 3, 32, 32))
    y, grads = run_fwd_bwd(compiled, x, torch.ones(1, 10), poison=False)
    ref_y, ref_grads = run_fwd_bwd(model, x, torch.ones(1, 10), poison=False)
    torch.testing.assert_close(y, ref_y, **TOL[torch.float32])
    torch.testing.assert_close(grads["x"], ref_grads["x"], **TOL[torch.float32])


def test_compile_fullgraph_blocks_in_training_mode():
    """ECA and CBAM (whose spatial BatchNorm updates running statistics in
    training) in one compiled graph."""
    torch.manual_seed(0)
    model = nn.Sequential(timm_eca.EcaModule(C), timm_cbam.CbamModule(C, rd_ratio=1 / 4)).train()
    new, _ = triton_attn.convert(model)
    compiled = torch.compile(new, fullgraph=True, backend="aot_eager")
    x = make_input((2, C, 5, 6))
    dy = torch.randn_like(x)
    y, grads = run_fwd_bwd(compiled, x, dy, poison=False)
    ref_y, ref_grads = run_fwd_bwd(model, x, dy, poison=False)
    torch.testing.assert_close(y, ref_y, **TOL[torch.float32])
    for k, g in ref_grads.items():
        torch.testing.assert_close(grads[k if k == "x" else "_orig_mod." + k], g, **TOL[torch.float32], msg=k)
    bn, ref_bn = new[1].spatial.conv.bn, model[1].spatial.conv.bn
    torch.testing.assert_close(bn.running_mean, ref_bn.running_mean)
    assert bn.num_batches_tracked.item() == ref_bn.num_batches_tracked.item() == 1


# --- DistributedDataParallel ---------------------------------------------------

WORLD = 2


def _ddp_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, C, 3, padding=1), nn.BatchNorm2d(C), nn.ReLU(),
        timm_se.SEModule(C, rd_ratio=1 / 4), timm_eca.EcaModule(C), timm_cbam.CbamModule(C, rd_ratio=1 / 4),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(C, 5),
    )


def _ddp_batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2 * WORLD, 3, 6, 6, generator=g), torch.randint(0, 5, (2 * WORLD,), generator=g)


def _ddp_worker(rank, init_file, out_dir):
    # Runs in a spawned child. TRITON_INTERPRET=1 reached it through the
    # inherited environment (tests/conftest.py sets it in the parent), so the
    # kernels were decorated for the interpreter when this module was imported.
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=300))
    try:
        model, report = triton_attn.convert(_ddp_model())
        assert len(report.swapped) == 3, str(report)
        ddp = DDP(model)
        x, target = _ddp_batch()
        loss = F.cross_entropy(ddp(x.chunk(WORLD)[rank]), target.chunk(WORLD)[rank])
        loss.backward()
        torch.save({n: p.grad for n, p in model.named_parameters()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_training_step_matches_unfused_model(tmp_path):
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    assert triton_attn.INTERPRETED == (os.environ.get("TRITON_INTERPRET") == "1")
    mp.spawn(_ddp_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=WORLD, join=True)

    # The unfused model on the same shards: DDP averages the shards' gradients.
    model = _ddp_model()
    x, target = _ddp_batch()
    losses = [F.cross_entropy(model(xs), ts) for xs, ts in zip(x.chunk(WORLD), target.chunk(WORLD))]
    (sum(losses) / WORLD).backward()
    expected = {n: p.grad for n, p in model.named_parameters()}
    for rank in range(WORLD):
        grads = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert grads.keys() == expected.keys()
        for k, g in expected.items():
            torch.testing.assert_close(grads[k], g, **TOL[torch.float32], msg=f"rank {rank} {k}")


# --- state_dict, deepcopy, pickle ---------------------------------------------------

@pytest.mark.parametrize("name", list(_blocks()))
def test_state_dict_round_trip_deepcopy_and_pickle(name, tmp_path):
    old, new = _converted(name)
    old.eval(), new.eval()
    x = make_input((2, C, 5, 6))
    y = new(x)

    path = tmp_path / "block.pt"
    torch.save(new.state_dict(), path)
    fresh_old = _blocks()[name].eval()
    fresh_old.load_state_dict(torch.load(path, weights_only=True), strict=True)  # back into the original class
    fresh_new, _ = triton_attn.convert(_blocks()[name].eval())
    fresh_new.load_state_dict(torch.load(path, weights_only=True), strict=True)
    torch.testing.assert_close(fresh_old(x), y, **TOL[torch.float32])
    torch.testing.assert_close(fresh_new(x), y, **TOL[torch.float32])

    for clone in (copy.deepcopy(new), pickle.loads(pickle.dumps(new))):
        assert type(clone) is type(new)
        assert all(not a.data_ptr() == b.data_ptr() for a, b in zip(clone.parameters(), new.parameters()))
        torch.testing.assert_close(clone(x), y, rtol=0, atol=0)


def test_deepcopy_and_pickle_of_a_converted_model():
    model = _small_resnet("cbam").eval()
    new, _ = triton_attn.convert(model)
    x = make_input((1, 3, 32, 32))
    y = new(x)
    for clone in (copy.deepcopy(new), pickle.loads(pickle.dumps(new))):
        assert sum(type(m) is triton_attn.CbamModule for m in clone.modules()) == 4
        torch.testing.assert_close(clone(x), y, rtol=0, atol=0)
