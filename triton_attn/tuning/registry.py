"""Which kernels can be tuned, in which space, and the fingerprint of their
device code (a changed kernel must not reuse configs tuned for the old one).

To make another kernel tunable: add a ``register(name, kernel, space)``
line below (or call it from the module that launches the kernel), then
launch through ``triton_attn.launch.config.run_tuned(name, ...)``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import sys

from ..kernels.cbam_gate_grad_backward import cbam_gate_grad_kernel
from ..kernels.cbam_scale import cbam_scale_kernel
from ..kernels.cbam_scale_backward import cbam_scale_backward_kernel
from ..kernels.cbam_stats_backward import cbam_stats_backward_kernel
from ..kernels.channel_gate_grad import channel_gate_grad_kernel
from ..kernels.channel_pool import channel_pool_kernel
from ..kernels.channel_scale import channel_scale_kernel
from ..kernels.channel_scale_backward import channel_scale_backward_kernel
from ..kernels.spatial_stats import spatial_stats_kernel
from ..kernels.tail_apply import tail_apply_kernel
from ..kernels.tail_dz import tail_dz_kernel
from ..kernels.tail_grad import tail_grad_kernel
from ..kernels.tail_stats import tail_stats_kernel
from .spaces import CHANNEL_REDUCTION, REDUCTION, TILE, Space


@dataclasses.dataclass
class TunedKernel:
    name: str
    kernel: object
    space: Space
    _source_hash: str | None = None

    @property
    def source_hash(self) -> str:
        if self._source_hash is None:
            self._source_hash = source_hash(self.kernel)
        return self._source_hash


_KERNELS: dict[str, TunedKernel] = {}


def register(name: str, kernel, space: Space) -> None:
    """Make ``kernel`` tunable under ``name`` (idempotent)."""
    _KERNELS[name] = TunedKernel(name, kernel, space)


def get(name: str) -> TunedKernel:
    try:
        return _KERNELS[name]
    except KeyError:
        raise ValueError(f"no tunable kernel named {name!r}; known: {sorted(_KERNELS)}") from None


def names() -> list[str]:
    return sorted(_KERNELS)


def _python_fn(kernel):
    # JITFunction and the interpreter's InterpretedFunction both keep the
    # Python function in .fn; a plain function is its own source.
    return getattr(kernel, "fn", kernel)


def source_hash(kernel) -> str:
    """sha256 of the kernel's module source and of the modules of the
    @triton.jit helpers it calls (reduce_utils, gate_math, ...)."""
    fn = _python_fn(kernel)
    modules = {fn.__module__}
    for value in vars(sys.modules[fn.__module__]).values():
        inner = _python_fn(value)
        if inner is not value and hasattr(inner, "__module__") and inner.__module__ in sys.modules:
            modules.add(inner.__module__)
    h = hashlib.sha256()
    for mod in sorted(modules):
        try:
            h.update(inspect.getsource(sys.modules[mod]).encode())
        except (OSError, TypeError):  # no source (frozen install): the name must do
            h.update(mod.encode())
    return h.hexdigest()[:16]


register("channel_pool", channel_pool_kernel, REDUCTION)
register("channel_gate_grad", channel_gate_grad_kernel, REDUCTION)
register("channel_scale", channel_scale_kernel, TILE)
register("channel_scale_backward", channel_scale_backward_kernel, TILE)
# CBAM (triton_attn/launch/spatial_stats.py, launch/cbam_scale.py): its
# per-pixel reductions loop over C, so their split runs along C.
register("spatial_stats", spatial_stats_kernel, CHANNEL_REDUCTION)
register("cbam_gate_grad", cbam_gate_grad_kernel, CHANNEL_REDUCTION)
register("cbam_stats_grad", cbam_stats_backward_kernel, CHANNEL_REDUCTION)
register("cbam_scale", cbam_scale_kernel, TILE)
register("cbam_scale_backward", cbam_scale_backward_kernel, TILE)
# The fused attention tail (triton_attn/launch/tail.py): its two reductions
# over H*W and its two elementwise passes.
register("tail_stats", tail_stats_kernel, REDUCTION)
register("tail_grad", tail_grad_kernel, REDUCTION)
register("tail_apply", tail_apply_kernel, TILE)
register("tail_dz", tail_dz_kernel, TILE)
