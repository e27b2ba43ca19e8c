"""Shipping a converted model: ONNX (TorchScript-based and dynamo exporters,
run in onnxruntime against the unconverted model), torch.export (the ops kept,
and decomposed to core ATen by ``run_decompositions()``), torch.compile still
keeping the ops, torch.jit (trace: standard ops; script: a clear error),
torch.fx (timm's own fx tests, ``features_only``, torchvision's feature
extractor) and ``revert``."""
from __future__ import annotations

import collections
import copy
import io
import operator
import warnings

import pytest
import torch
from torch import nn

import triton_attn
from triton_attn.ops import decompositions

timm = pytest.importorskip("timm")

# Every timm attention block convert swaps, on the smallest timm ResNet.
ATTN = ["se", "ese", "eca", "ecam", "ceca", "cbam", "lcbam"]


def _resnet(attn: str, train: bool = False) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=5, block_args=dict(attn_layer=attn))
    # Non-trivial BatchNorm statistics, so that eval mode really uses them.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.train(train)


def _x(n: int = 2, size: int = 32) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(n, 3, size, size)


def _fused(model: nn.Module) -> nn.Module:
    fused, report = triton_attn.convert(model)
    assert report.swapped and not report.left, report
    return fused


def _calls(gm: torch.fx.GraphModule) -> list:
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


def _ours(targets) -> set[str]:
    return {str(t) for t in targets if str(t).startswith("triton_attn.")}


# --- every op has a decomposition ---------------------------------------------

def test_every_registered_op_has_a_decomposition():
    """Lists the namespace after importing every op module: an op added or
    changed later without a decomposition (an op module the package does not
    import at ``import triton_attn``, or an op that is not a ``custom_op``
    with a Python implementation) fails here."""
    import importlib
    import pkgutil

    import triton_attn.ops

    for info in pkgutil.iter_modules(triton_attn.ops.__path__):
        importlib.import_module(f"triton_attn.ops.{info.name}")
    ops = decompositions.ops()
    assert len(ops) >= 2
    missing = [op.name() for op in ops if not decompositions.has_decomposition(op)]
    assert not missing, (
        f"triton_attn ops with no decomposition (run_decompositions()/ONNX would keep them): {missing}; "
        "import their module from the package before triton_attn/__init__.py calls register_all()"
    )
    assert decompositions.register_all() == []  # idempotent, nothing left over


# --- torch.export -----------------------------------------------------------------

def _non_core(ep) -> set[str]:
    return {
        str(t) for t in _calls(ep.graph_module)
        if t is not operator.getitem and isinstance(t, torch._ops.OpOverload) and torch.Tag.core not in t.tags
    }


def _block_net(block: str, train: bool = False) -> nn.Module:
    """conv -> BN -> ReLU -> a timm/torchvision attention block -> conv."""
    from timm.layers import cbam, eca, squeeze_excite
    from timm.models import _efficientnet_blocks

    make = {
        "se": lambda: squeeze_excite.SEModule(16, add_maxpool=True),
        "ese": lambda: squeeze_excite.EffectiveSEModule(16),
        "eca": lambda: eca.EcaModule(16),
        "ceca": lambda: eca.CecaModule(16),
        "cbam": lambda: cbam.CbamModule(16),
        "lcbam": lambda: cbam.LightCbamModule(16),
        "effnet_se": lambda: _efficientnet_blocks.SqueezeExcite(16, act_layer=nn.SiLU),
    }[block]
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), make(), nn.Conv2d(16, 8, 1))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net.train(train)


# What core ATen leaves of the model itself: BatchNorm in training, and
# export's own metadata checks. Converting must add nothing else.
_MODEL_NON_CORE = {"aten._native_batch_norm_legit_functional.default", "aten._assert_tensor_metadata.default"}


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("block", ["se", "ese", "eca", "ceca", "cbam", "lcbam", "effnet_se"])
def test_torch_export_keeps_the_ops_and_run_decompositions_gives_core_aten(block, train):
    model = _block_net(block, train)
    fused = _fused(model)
    x = _x(2, 8)
    ep = torch.export.export(fused, (x,))
    assert _ours(_calls(ep.graph_module)), "a plain torch.export keeps the triton_attn ops"
    core = ep.run_decompositions()
    assert not _ours(_calls(core.graph_module)), "run_decompositions() leaves a triton_attn op"
    assert _non_core(core) <= (_MODEL_NON_CORE if train else {"aten._assert_tensor_metadata.default"})
    # Run both exported programs (fresh copies: training mode updates BatchNorm buffers).
    expected = copy.deepcopy(model)(x)
    for program in (ep, core):
        torch.testing.assert_close(program.module()(x), expected, atol=1e-5, rtol=1e-5)


def test_exported_program_with_dynamic_batch():
    model = _block_net("cbam")
    ep = torch.export.export(_fused(model), (_x(2, 8),), dynamic_shapes=({0: torch.export.Dim("N", min=1, max=64)},))
    core = ep.run_decompositions()
    assert not _ours(_calls(core.graph_module))
    x = _x(3, 8)
    torch.testing.assert_close(core.module()(x), model(x), atol=1e-4, rtol=1e-4)


def test_torch_compile_still_runs_the_ops():
    """The decompositions decline outside export: AOTAutograd keeps the ops
    (forward and backward) and Inductor lowers them as fallback kernels."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._inductor.utils import run_and_get_code

    se = triton_attn.SEModule(16)
    x = torch.randn(2, 16, 4, 4, requires_grad=True)
    graphs = []

    def keep(gm, _inputs):
        graphs.append(_ours(_calls(gm)))
        return gm

    compiled = torch.compile(copy.deepcopy(se), fullgraph=True, backend=aot_autograd(fw_compiler=keep, bw_compiler=keep))
    compiled(x).sum().backward()
    assert graphs == [{"triton_attn.se_fwd.default"}, {"triton_attn.se_bwd.default"}]

    inductor = torch.compile(copy.deepcopy(se), fullgraph=True)  # the default backend: Inductor (C++ on CPU)
    # No on-disk graph caches: they are keyed on the graph, not on the ops'
    # fake implementations, so a run of another version of the ops could answer.
    with torch._inductor.config.patch(fx_graph_cache=False), torch._functorch.config.patch(enable_autograd_cache=False):
        y, code = run_and_get_code(inductor, x)
    assert "triton_attn.se_fwd" in "\n".join(code)
    torch.testing.assert_close(y, se(x))


# --- ONNX -------------------------------------------------------------------------

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _onnx(model: nn.Module, x: torch.Tensor, dynamo: bool, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notes
        if dynamo:
            return torch.onnx.export(model, (x,), dynamo=True, verbose=False, **kwargs).model_proto
        f = io.BytesIO()
        torch.onnx.export(model, (x,), f, dynamo=False, **kwargs)
        return onnx.load_from_string(f.getvalue())


def _run_onnx(proto, x: torch.Tensor):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def _node_types(proto) -> collections.Counter:
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}, "a non-standard ONNX domain"
    return collections.Counter(n.op_type for n in proto.graph.node)


# Shape plumbing the exporters emit differently for timm's ``expand_as`` and
# our broadcast multiply; everything else must match node for node.
_PLUMBING = {"Shape", "Expand", "Constant", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Gather", "CastLike", "Cast"}


@pytest.mark.parametrize("attn", ATTN)
def test_onnx_torchscript_exporter_gives_timms_graph_and_outputs(attn):
    model = _resnet(attn)
    fused = _fused(model)
    x = _x()
    proto = _onnx(fused, x, dynamo=False)
    ours, theirs = _node_types(proto), _node_types(_onnx(model, x, dynamo=False))
    strip = lambda c: {k: v for k, v in c.items() if k not in _PLUMBING}  # noqa: E731
    assert strip(ours) == strip(theirs)
    assert ours["ReduceMean"] >= 4  # each of the 4 blocks pools
    if "cbam" in attn:
        assert ours["ReduceMax"] == 8 and ours["MaxPool"] == 1  # amax over H,W and over C; the stem's MaxPool only
    torch.testing.assert_close(_run_onnx(proto, x), model(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("attn", ["se", "eca", "cbam"])
def test_onnx_dynamo_exporter_gives_standard_ops_and_outputs(attn):
    pytest.importorskip("onnxscript")
    model = _resnet(attn)
    x = _x()
    # optimize=False keeps the graph as traced: the spatial BatchNorm stays a
    # BatchNormalization node instead of being folded into its conv.
    proto = _onnx(_fused(model), x, dynamo=True, optimize=False)
    types = _node_types(proto)
    assert {"ReduceMean", "Sigmoid", "Mul", "Conv"} <= set(types)
    if attn == "cbam":
        assert types["ReduceMax"] == 8 and types["MaxPool"] == 1
        # Every BatchNorm a BatchNormalization node, the 4 spatial ones included.
        assert types["BatchNormalization"] == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(_run_onnx(proto, x), model(x), atol=1e-4, rtol=1e-4)


def test_onnx_dynamo_exporter_of_an_exported_program_uses_the_decompositions():
    """A program exported with the ops in it: the ONNX exporter decomposes
    them with the registered decompositions."""
    pytest.importorskip("onnxscript")
    model = _resnet("cbam")
    x = _x()
    ep = torch.export.export(_fused(model), (x,))
    assert _ours(_calls(ep.graph_module))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proto = torch.onnx.export(ep, dynamo=True, verbose=False).model_proto
    types = _node_types(proto)
    # The ops' own implementation: its amax over H, W and over C (and over
    # any split partials) are ReduceMax; never a fixed-kernel MaxPool.
    assert types["ReduceMax"] >= 8 and types["MaxPool"] == 1
    torch.testing.assert_close(_run_onnx(proto, x), model(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("source", ["timm_mobilenetv3", "torchvision_mobilenet_v3"])
def test_onnx_of_efficientnet_and_torchvision_squeeze_excite(source):
    torch.manual_seed(0)
    if source == "timm_mobilenetv3":
        model = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=5).eval()
    else:
        torchvision = pytest.importorskip("torchvision")
        model = torchvision.models.mobilenet_v3_small(num_classes=5).eval()
    fused = _fused(model)
    x = _x(1, 64)
    proto = _onnx(fused, x, dynamo=False)
    types = _node_types(proto)
    assert types["HardSigmoid"] >= 1 and types["Mul"] >= 1
    torch.testing.assert_close(_run_onnx(proto, x), model(x), atol=1e-4, rtol=1e-4)


def test_onnx_of_seed_blocks_and_functional_forms():
    import seed_reference as seed

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, padding=1)
            self.se = seed.SEBlock("max", 16, 4)
            self.eca = seed.ECABlock(16)
            self.cbam = seed.CBAMBlock("FC", 5, channels=16, ratio=4)
            self.w1, self.w2 = nn.Parameter(torch.randn(4, 16)), nn.Parameter(torch.randn(16, 4))
            self.taps, self.sw = nn.Parameter(torch.randn(5)), nn.Parameter(torch.randn(1, 2, 3, 3))

        def forward(self, x):
            F = triton_attn.functional
            y = self.cbam(self.eca(self.se(self.stem(x))))
            y = F.se(y, self.w1, None, self.w2, None, pool="avgmax", act="silu")
            y = F.eca(y, self.taps, circular=True, gate="hard_sigmoid")
            y = F.cbam(y, channel_conv=self.taps, spatial_weight=self.sw, spatial_bn=True, bn_running_mean=torch.zeros(1),
                       bn_running_var=torch.full((1,), 2.0), bn_eps=1e-3)
            mean, amax = F.channel_pool(y, "avgmax")
            return F.channel_scale(y, torch.sigmoid(mean - amax))

    torch.manual_seed(0)
    model = Net().eval()
    fused, report = triton_attn.convert(model)
    assert len(report.swapped) == 3
    x = _x(2, 16)
    proto = _onnx(fused, x, dynamo=False)
    types = _node_types(proto)
    assert types["ReduceMax"] >= 3 and "MaxPool" not in types and "GlobalMaxPool" not in types
    torch.testing.assert_close(_run_onnx(proto, x), model(x), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(_run_onnx(_onnx(fused, x, dynamo=True), x), model(x), atol=1e-4, rtol=1e-4)


# --- torch.jit -----------------------------------------------------------------------

def test_jit_trace_records_standard_ops():
    model = _resnet("cbam")
    fused = _fused(model)
    x = _x()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(fused, (x,), check_trace=False)
    kinds = {n.kind() for n in traced.inlined_graph.nodes()}
    assert not [k for k in kinds if k.startswith("triton_attn::")], kinds
    torch.testing.assert_close(traced(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("block", [
    lambda: triton_attn.SEModule(16), lambda: triton_attn.EcaModule(16), lambda: triton_attn.CbamModule(16),
    lambda: triton_attn.SqueezeExcitation(16, 4), lambda: triton_attn.EfficientNetSqueezeExcite(16),
    lambda: triton_attn.seed_compat.CBAMBlock("Conv", 3, channels=16, gamma=2, b=1),
])
def test_jit_script_says_what_to_use_instead(block):
    model = nn.Sequential(nn.Conv2d(3, 16, 1), block())
    with pytest.raises(RuntimeError, match="torch.jit.script.*torch.compile.*torch.export"):
        torch.jit.script(model)


# --- torch.fx ----------------------------------------------------------------------

def _timm_fx_model(model: nn.Module, train: bool = False):
    """timm's ``tests/test_models.py::_create_fx_model``, verbatim in substance."""
    from timm.layers import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import NodePathTracer, create_feature_extractor, get_graph_node_names

    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(), param_shapes_constant=True)
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    eval_return_nodes, train_return_nodes = [eval_nodes[-1]], [train_nodes[-1]]
    if train:
        graph = NodePathTracer(**tracer_kwargs).trace(model)
        graph_nodes = list(reversed(graph.nodes))
        output_node_names = [n.name for n in graph_nodes[0]._input_nodes.keys()]
        graph_node_names = [n.name for n in graph_nodes]
        output_node_indices = [-graph_node_names.index(node_name) for node_name in output_node_names]
        train_return_nodes = [train_nodes[ix] for ix in output_node_indices]
    return create_feature_extractor(
        model, train_return_nodes=train_return_nodes, eval_return_nodes=eval_return_nodes, tracer_kwargs=tracer_kwargs,
    )


def _fused_nodes(gm) -> int:
    return sum(
        1 for n in gm.graph.nodes
        if n.op == "call_module" and type(gm.get_submodule(n.target)).__module__.startswith("triton_attn")
    )


@pytest.mark.parametrize("attn", ["se", "eca", "cbam"])
def test_timm_fx_forward_and_backward(attn):
    """timm's test_model_forward_fx and test_model_backward_fx on a converted model."""
    pytest.importorskip("torchvision")
    model = timm.create_model("resnet10t", pretrained=False, num_classes=42, block_args=dict(attn_layer=attn))
    model = _fused(model).eval()
    with torch.inference_mode():
        x = torch.randn(1, 3, 32, 32)
        outputs = model(x)
        fx_model = _timm_fx_model(model)
        fx_outputs = torch.cat(tuple(fx_model(x).values()))
    assert _fused_nodes(fx_model) == 4  # every block is one call_module node: the fused path runs
    assert torch.all(fx_outputs == outputs)

    model.train()
    fx_model = _timm_fx_model(model, train=True)
    outputs = torch.cat(tuple(fx_model(torch.randn(2, 3, 32, 32)).values()))
    outputs.mean().backward()
    assert outputs.shape[-1] == 42
    for n, p in fx_model.named_parameters():
        assert p.grad is not None, f"no gradient for {n}"


def test_feature_extraction_timm_features_only_and_torchvision():
    """timm's fx feature extractor (``feature_cls="fx"``) traces the model it
    is given: build it from the converted model. ``features_only`` models
    (hooks) convert as they are. torchvision's extractor likewise."""
    pytest.importorskip("torchvision")
    from timm.models import FeatureGraphNet
    from torchvision.models.feature_extraction import create_feature_extractor

    model = timm.create_model("resnet10t", pretrained=False, block_args=dict(attn_layer="cbam")).eval()
    fused = _fused(model)
    x = torch.randn(1, 3, 32, 32)
    graph_net = FeatureGraphNet(fused, out_indices=(1, 2, 3, 4))
    assert _fused_nodes(graph_net.graph_module) == 4
    for got, want in zip(graph_net(x), FeatureGraphNet(model, out_indices=(1, 2, 3, 4))(x)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)

    hooks = timm.create_model("resnet10t", pretrained=False, features_only=True, block_args=dict(attn_layer="eca")).eval()
    for got, want in zip(_fused(hooks)(x), hooks(x)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)

    extractor = create_feature_extractor(fused, return_nodes={"layer2": "c3", "layer4": "c5"})
    out = extractor(x)
    assert out["c3"].shape == (1, 128, 4, 4) and out["c5"].shape == (1, 512, 1, 1)
    assert _fused_nodes(extractor) == 4  # each CBAM block is one node, run fused


def test_symbolic_trace_of_modules_and_functional_forms():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.se = triton_attn.SEModule(16)
            self.w = nn.Parameter(torch.randn(1, 1, 3))

        def forward(self, x):
            y = triton_attn.functional.eca(self.se(x), self.w)
            mean, amax = triton_attn.functional.channel_pool(y, "avgmax")
            return triton_attn.functional.channel_scale(y, torch.sigmoid(mean + amax))

    net = Net()
    gm = torch.fx.symbolic_trace(net)
    targets = [n.target for n in gm.graph.nodes if n.op in ("call_function", "call_module")]
    assert "se" in targets and triton_attn.functional.eca in targets and triton_attn.functional.channel_scale in targets
    x = torch.randn(2, 16, 4, 4)
    torch.testing.assert_close(gm(x), net(x))


def test_fx_proxy_is_not_the_only_non_tensor_accepted():
    with pytest.raises(TypeError, match="torch.Tensor"):
        triton_attn.SEModule(8)([1.0, 2.0])


# --- revert -------------------------------------------------------------------------

def _timm_models():
    yield "seresnet18", lambda: timm.create_model("seresnet18", pretrained=False, num_classes=5)
    for attn in ATTN:
        yield f"resnet10t-{attn}", lambda attn=attn: _resnet(attn, train=True)
    yield "mobilenetv3_small_050", lambda: timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=5)


@pytest.mark.parametrize("make", [m for _, m in _timm_models()], ids=[n for n, _ in _timm_models()])
def test_revert_round_trip_gives_the_original_classes_tensors_and_outputs(make):
    model = make().eval()
    classes = [(n, type(m)) for n, m in model.named_modules()]
    tensors = model.state_dict(keep_vars=True)
    x = _x()
    expected = model(x)
    fused, report = triton_attn.convert(model, inplace=True)
    assert report.swapped
    back, rreport = triton_attn.revert(fused, inplace=True)
    assert len(rreport.reverted) == len(report.swapped) and not rreport.left
    assert [(n, type(m)) for n, m in back.named_modules()] == classes
    after = back.state_dict(keep_vars=True)
    assert list(after) == list(tensors) and all(after[k] is v for k, v in tensors.items())
    assert torch.equal(back(x), expected)
    assert not [m for m in back.modules() if type(m).__module__.startswith("triton_attn")]


def test_revert_keeps_training_flags_hooks_and_current_tensors():
    model = _resnet("cbam", train=True)
    fused = _fused(model)
    block = fused.layer1[0].se
    calls = []
    block.register_forward_hook(lambda m, i, o: calls.append(type(m).__name__))
    block.spatial.conv.bn.momentum = 0.01
    block.channel.fc1.eval()
    fused.double()  # new buffer objects, parameters converted in place
    back, report = triton_attn.revert(fused, inplace=True)
    orig = back.layer1[0].se
    assert type(orig).__module__ == "timm.layers.cbam" and type(orig.spatial.conv.bn).__name__ == "BatchNormAct2d"
    assert orig.training and not orig.channel.fc1.training
    assert orig.spatial.conv.bn.momentum == 0.01
    assert orig.spatial.conv.bn.running_mean is block.spatial.conv.bn.running_mean
    assert orig.spatial.conv.bn.running_mean.dtype == torch.float64
    back(_x().double())
    assert calls == ["CbamModule"]


def test_revert_of_seed_and_torchvision_blocks_and_what_it_leaves():
    import seed_reference as seed

    torchvision = pytest.importorskip("torchvision")
    model = nn.Sequential(
        seed.SEBlock("avg", 16, 4), seed.CBAMBlock("Conv", 3, channels=16, gamma=2, b=1),
        torchvision.ops.SqueezeExcitation(16, 4), triton_attn.SEModule(16),
    ).eval()
    classes = [type(m) for m in model.modules()]
    fused, report = triton_attn.convert(model)
    back, rreport = triton_attn.revert(fused)
    assert [type(m) for m in back.modules()] == classes
    assert len(rreport.reverted) == 3 and [r.name for r in rreport.left] == ["3"]
    assert "no original class recorded" in str(rreport)
    x = torch.randn(2, 16, 4, 4)
    torch.testing.assert_close(back(x), model(x))
    assert "no block converted" in str(triton_attn.revert(nn.Conv2d(1, 1, 1))[1])
