"""A decomposition for every ``triton_attn::*`` op: what
``torch.export.export(model).run_decompositions()`` and the dynamo-based
``torch.onnx.export`` of an ExportedProgram use to turn the ops into core
ATen ops.

Generic by design: the decomposition of an op is the op's own Python
implementation run with the pure-PyTorch path forced
(``runtime.torch_fallback()``): the launchers' PyTorch twins, i.e. mean/amax,
linear, activations, gates, mul, conv2d and batch norm, traced into the
graph. Nothing here knows an op's schema, so ops added or changed later are
covered as long as they are ``torch.library.custom_op`` (or ``triton_op``)
ops; ``tests/test_export.py`` lists the namespace and fails on any op
without one.

It is registered as the op's ``CompositeImplicitAutograd`` Python kernel,
the one table entry ``torch.export.default_decompositions()`` picks up for
a custom op, and it *declines* (returns ``NotImplemented``) unless a
decomposition is being traced (``_decomposing``): ``torch.compile``'s
AOTAutograd, which also consults that kernel, then keeps the op and its
registered autograd, so compiled models still run the Triton kernels
(and Inductor, whose tables copy the default decompositions, is told to
lower the op as a fallback kernel: ``_inductor_keeps``). Eager calls never
reach it (only the Python dispatcher consults it).

A plain ``torch.export.export`` keeps the ops (pre-dispatch tracing does not
run CompositeImplicitAutograd kernels, and FakeTensor's shape propagation,
which asks, is declined: the registered fakes give the shapes, so a dynamic
batch stays dynamic); ``run_decompositions()`` replaces them."""
from __future__ import annotations

import sys
from typing import Callable

import torch

from ..runtime import torch_fallback

NAMESPACE = "triton_attn"
_CIA = torch._C.DispatchKey.CompositeImplicitAutograd

#: op overloads given a decomposition here -> the Python implementation it runs
_registered: dict[torch._ops.OpOverload, Callable] = {}


def _python_impl(op: torch._ops.OpOverload) -> Callable | None:
    """The function a ``custom_op``/``triton_op`` was defined with, or None."""
    from torch._library.custom_ops import _maybe_get_opdef

    opdef = _maybe_get_opdef(op.name())
    return getattr(opdef, "_init_fn", None) if opdef is not None else None


def _inductor_keeps(op: torch._ops.OpOverload) -> None:
    """Take ``op`` out of Inductor's decomposition tables.

    Inductor builds them from ``torch.export.default_decompositions()`` when
    it is first imported, so they hold every CompositeImplicitAutograd
    custom op known then, ours included; Inductor then refuses to lower the
    op as a fallback kernel ("both a fallback and a decomp for same op").
    The decomposition declines under torch.compile anyway, so the op must be
    a plain fallback there: AOTAutograd calls the decomposition (below)
    before Inductor lowers the graph, which is when this runs."""
    inductor = sys.modules.get("torch._inductor.decomposition")
    if inductor is None:
        return
    tables = [getattr(inductor, "decompositions", None)]
    fast = getattr(inductor, "fast_random_decomps", None)
    if callable(fast):
        tables.append(fast())
    for table in tables:
        if isinstance(table, dict):
            table.pop(op, None)


def _decomposing() -> bool:
    """True only while ``run_decompositions`` (or the ONNX exporter through
    it) traces a graph: an export is running and a post-dispatch proxy mode
    records the ops. The other callers of a CompositeImplicitAutograd kernel
    get ``NotImplemented``: ``torch.compile``'s AOTAutograd (not exporting),
    and FakeTensorMode propagating shapes during ``torch.export.export``
    (no proxy mode), which then uses the op's registered fake instead of
    running the implementation (whose shape-dependent launch planning would
    specialise a dynamic batch)."""
    return (
        torch.compiler.is_exporting()
        and torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.PROXY) is not None
    )


def _make_decomposition(op: torch._ops.OpOverload, impl: Callable) -> Callable:
    def decomposition(*args, **kwargs):
        if not _decomposing():
            if not torch.compiler.is_exporting():
                # torch.compile (AOTAutograd) asks too: keep the op (Triton
                # kernels, registered backward) and keep Inductor lowering it.
                _inductor_keeps(op)
            return NotImplemented
        with torch_fallback():
            return impl(*args, **kwargs)

    decomposition.__name__ = f"decompose_{op.name().replace('::', '_').replace('.', '_')}"
    decomposition.__qualname__ = decomposition.__name__
    decomposition.__doc__ = f"{op.name()} in standard ops: its own implementation with the pure-PyTorch path forced."
    return decomposition


def ops() -> list[torch._ops.OpOverload]:
    """Every overload registered in the ``triton_attn`` namespace."""
    namespace = getattr(torch.ops, NAMESPACE)
    out = []
    for name in sorted(namespace):
        packet = getattr(namespace, name)
        out += [getattr(packet, overload) for overload in packet.overloads()]
    return out


def register_all() -> list[torch._ops.OpOverload]:
    """Give every ``triton_attn`` op registered so far that lacks one its
    decomposition (idempotent). ``triton_attn/__init__.py`` runs it once the
    package has imported its layers, and with them every op it uses; an op
    module imported later must call it again (``tests/test_export.py``
    imports every module of ``triton_attn/ops`` and fails on an op left
    without). Returns the ops it could not cover."""
    missing = []
    for op in ops():
        if op in _registered and _CIA in op.py_kernels:
            continue
        impl = _python_impl(op)
        if impl is None:
            missing.append(op)
            continue
        if _CIA in op.py_kernels:
            del op.py_kernels[_CIA]
        op.py_impl(_CIA)(_make_decomposition(op, impl))
        _registered[op] = impl
        _inductor_keeps(op)  # in case Inductor was imported first
    return missing


def has_decomposition(op: torch._ops.OpOverload) -> bool:
    """True when ``op`` decomposes under ``run_decompositions()``."""
    return op in _registered and _CIA in op.py_kernels
