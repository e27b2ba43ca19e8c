"""What only a GPU can show: a real tensor of more than 2**31 elements,
kernels launched on the caller's CUDA stream, CUDA graph capture (plain,
``make_graphed_callables`` with backward, ``torch.compile(mode=
"reduce-overhead")``) after warm-up, and bit-identical gradients with the
H*W split the heuristics pick for a real 112x112 map. Skipped, with the
reason, without CUDA (or when Triton runs in its CPU interpreter)."""
import copy

import pytest
import torch

import triton_attn as ta
from triton_attn import functional as TF
from triton_attn.reference import eca_reference, se_reference

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU: streams, graphs and >2**31-element tensors", allow_module_level=True)
if ta.INTERPRETED:
    pytest.skip("TRITON_INTERPRET=1: the kernels run on CPU tensors only", allow_module_level=True)

DEV = "cuda"


def _modules(C=64):
    torch.manual_seed(0)
    blocks = {
        "se": ta.SEModule(C, add_maxpool=True).to(DEV),
        "eca": ta.EcaModule(C).to(DEV),
        "ceca": ta.CecaModule(C).to(DEV),
    }
    if hasattr(ta, "CbamModule"):
        # eval: the BatchNorm's running statistics stay put between the
        # graphed/compiled run and the eager one it is compared with.
        blocks["cbam"] = ta.CbamModule(C).to(DEV).eval()
    return blocks


def _fwd_bwd(module, x, dy):
    module.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    y = module(x)
    y.backward(dy)
    return [y.detach(), x.grad] + [p.grad for p in module.parameters()]


def _assert_all_close(actual, expected, msg, **tol):
    for i, (a, e) in enumerate(zip(actual, expected)):
        torch.testing.assert_close(a, e, msg=lambda m: f"{msg} #{i}: {m}", **tol)


@pytest.mark.parametrize("block", ["se", "eca"])
def test_more_than_2_31_elements(block):
    """129 x 64 x 512 x 512 bf16 = 2.16e9 elements: the last sample starts at
    element 2**31 exactly, so every address in it needs int64 offsets."""
    need = 4 * 129 * 64 * 512 * 512 * 2 + 2**30  # x, y, dy, dx in bf16
    if torch.cuda.get_device_properties(0).total_memory < need:
        pytest.skip(f"needs {need / 2**30:.0f} GiB of GPU memory")
    N, C, H, W = 129, 64, 512, 512
    assert N * C * H * W > 2**31
    x = torch.randn(N, C, H, W, device=DEV, dtype=torch.bfloat16)
    if block == "eca":
        x = x.contiguous(memory_format=torch.channels_last)
    dy = torch.randn_like(x)
    if block == "se":
        w1, w2 = torch.randn(8, C, device=DEV) * 0.1, torch.randn(C, 8, device=DEV) * 0.1
        fn = lambda x: TF.se(x, w1, None, w2, pool="avgmax")  # noqa: E731
        ref = lambda x: se_reference(x, w1.double(), None, w2.double(), pool="avgmax")  # noqa: E731
    else:
        w = torch.randn(5, device=DEV)
        fn = lambda x: TF.eca(x, w)  # noqa: E731
        ref = lambda x: eca_reference(x, w.double())  # noqa: E731
    xg = x.requires_grad_(True)
    y = fn(xg)
    y.backward(dy)
    torch.cuda.synchronize()
    for n in (0, N - 1):  # the gate is per sample: one sample's reference is enough
        xs = x[n : n + 1].detach().double().requires_grad_(True)
        ys = ref(xs)
        ys.backward(dy[n : n + 1].double())
        torch.testing.assert_close(y[n : n + 1].detach().double(), ys.detach(), rtol=1.6e-2, atol=1.6e-2 * ys.abs().max().item())
        torch.testing.assert_close(xg.grad[n : n + 1].double(), xs.grad, rtol=1.6e-2, atol=1.6e-2 * xs.grad.abs().max().item())
    del x, xg, y, dy


def test_kernels_run_on_the_current_stream():
    """x is written on a side stream after a long GPU sleep; a kernel launched
    on any other stream would read it before it exists."""
    for name, module in _modules().items():
        src = torch.randn(4, 64, 28, 28, device=DEV)
        dy = torch.randn_like(src)
        expected = _fwd_bwd(module, src, dy)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            x = torch.empty_like(src)
            torch.cuda._sleep(100_000_000)  # ~50 ms of GPU time before x is written
            x.copy_(src)
            got = _fwd_bwd(module, x, dy)
        side.synchronize()
        _assert_all_close(got, expected, f"{name} on a side stream")


def test_cuda_graph_capture_forward():
    for name, module in _modules().items():
        static_x = torch.randn(8, 64, 14, 14, device=DEV)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(3):  # compile and tune before capture
                module(static_x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.no_grad():
            static_y = module(static_x)
        for _ in range(2):
            new_x = torch.randn_like(static_x)
            static_x.copy_(new_x)
            graph.replay()
            torch.cuda.synchronize()
            with torch.no_grad():
                torch.testing.assert_close(static_y, module(new_x), msg=lambda m: f"{name} graph replay: {m}")


def test_make_graphed_callables_forward_and_backward():
    for name, module in _modules().items():
        eager = copy.deepcopy(module)  # make_graphed_callables patches module.forward in place
        sample = torch.randn(8, 64, 14, 14, device=DEV, requires_grad=True)
        graphed = torch.cuda.make_graphed_callables(module, (sample,))
        for _ in range(2):
            x = torch.randn_like(sample)
            dy = torch.randn_like(sample)
            got = [t.clone() for t in _fwd_bwd(graphed, x, dy)]  # static buffers: the next replay overwrites them
            expected = _fwd_bwd(eager, x, dy)
            _assert_all_close(got, expected, f"{name} graphed")


def test_torch_compile_reduce_overhead():
    for name, module in _modules().items():
        compiled = torch.compile(module, mode="reduce-overhead", fullgraph=True)
        for _ in range(4):  # warm-up runs, then cudagraph replays
            torch.compiler.cudagraph_mark_step_begin()
            x = torch.randn(8, 64, 14, 14, device=DEV)
            dy = torch.randn_like(x)
            got = [t.clone() for t in _fwd_bwd(compiled, x, dy)]
            expected = _fwd_bwd(module, x, dy)
            _assert_all_close(got, expected, f"{name} reduce-overhead")


def test_deterministic_with_heuristic_split(monkeypatch):
    """1 x 64 x 112 x 112 leaves the GPU idle without an H*W split, so the
    heuristics split it; the gradients still agree bit for bit."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for name, module in _modules().items():
            x = torch.randn(1, 64, 112, 112, device=DEV, dtype=torch.bfloat16)
            dy = torch.randn_like(x)
            first, second = _fwd_bwd(module, x, dy), _fwd_bwd(module, x, dy)
            for i, (a, b) in enumerate(zip(first, second)):
                assert torch.equal(a, b), f"{name}: result #{i} differs between runs"
    finally:
        torch.use_deterministic_algorithms(previous)
