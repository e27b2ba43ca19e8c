"""Every aten op a step runs that computes or moves data, with its bytes.

A ``TorchDispatchMode`` sees the ops below autograd, forward and backward. On a
GPU each of them is (at least) one kernel or copy: the whole eager block, and
for triton_attn the host-side glue around its Triton launches (a split's
combine, the [N, C] MLP, a dtype cast). Not counted, because no GPU work
follows: ops whose every tensor output aliases an input (views such as
``view``, ``t``, ``expand``, ``detach``, and ``to``/``contiguous``/``reshape``
when they return their input), allocations (``empty*``), and the torch calls
the Triton interpreter makes to stage a launch's arguments. In-place ops
(``add_``), and ops that return a new tensor are counted: a dtype cast
(``_to_copy``), a ``copy_``, a ``clone``, a fill (``zeros``) are each a kernel
on a GPU.

Custom ops (``triton_attn::*``) are not counted themselves: the mode descends
into them, so the aten ops and Triton launches inside are. Inside them
autograd is off, so composite ops (``linear``, ``matmul``, ``conv2d``) reach
the mode undecomposed and count once, as the one GEMM or convolution they run.

Bytes of an op: each tensor input read once (expanded dims counted once),
each output written once; the destination of ``copy_``/``fill_``/``zero_``
and ``out=`` arguments are written, not read. This is the traffic of an
unfused kernel per op, which is how eager runs."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch._C import DispatchKey
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from . import hooks
from .tensor_class import TensorClasses, storage_key, tensor_bytes

#: Allocation and metadata-only ops that alias analysis does not mark as views.
NOT_COUNTED = frozenset({
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "empty_permuted",
    "_unsafe_view", "set_", "resize_", "lift_fresh", "_reshape_alias",
    "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "is_same_size", "record_stream",
})
#: In-place ops whose first argument is overwritten without being read.
WRITE_ONLY = frozenset({"copy_", "fill_", "zero_", "normal_", "uniform_", "random_", "bernoulli_", "exponential_"})
ATEN_NAMESPACES = frozenset({"aten", "prim", "prims"})

_AFTER_PYTHON = torch._C._dispatch_keyset_full_after(DispatchKey.Python)


def op_base_name(func) -> str:
    """``aten.add_.Tensor`` -> ``add_``."""
    return func._schema.name.split("::", 1)[-1]


@dataclass
class AtenOp:
    name: str  # e.g. "aten.mean.dim"
    phase: str | None
    read_bytes: dict = field(default_factory=dict)  # class -> bytes
    write_bytes: dict = field(default_factory=dict)
    shapes: tuple = ()  # of the tensor inputs, for reading the log
    after_launches: int = 0  # Triton launches before this op (``AtenLog.launch_count``)

    @property
    def bytes(self) -> int:
        return sum(self.read_bytes.values()) + sum(self.write_bytes.values())

    def class_bytes(self, cls: str) -> int:
        return self.read_bytes.get(cls, 0) + self.write_bytes.get(cls, 0)


def _mutates(func) -> bool:
    return any(a.alias_info is not None and a.alias_info.is_write for a in func._schema.arguments)


def counted(func, args, kwargs, out) -> bool:
    """Whether an aten op is GPU work (see the module docstring)."""
    if op_base_name(func) in NOT_COUNTED:
        return False
    if _mutates(func):
        return True
    outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
    if not outputs:
        return True  # a reduction to a Python value (``item``: a device-to-host copy)
    inputs = {storage_key(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and t.numel()}
    return not all(t.numel() == 0 or storage_key(t) in inputs for t in outputs)


def _read_tensors(func, args, kwargs):
    """Tensors an op reads: all tensor arguments but the write-only ones."""
    write_only = set()
    if op_base_name(func) in WRITE_ONLY:
        write_only.add(0)
    reads = []
    for i, a in enumerate(args):
        if i not in write_only:
            reads.extend(t for t in tree_leaves(a) if isinstance(t, torch.Tensor))
    for name, a in kwargs.items():
        if name != "out":
            reads.extend(t for t in tree_leaves(a) if isinstance(t, torch.Tensor))
    return reads


class AtenLog(TorchDispatchMode):
    """Records an ``AtenOp`` per counted aten op into ``ops``. With
    ``classes`` (a ``TensorClasses``) bytes are split into x/weight/other, and
    an op whose tensor inputs are all weights makes its outputs weights (a cast,
    a reshape-copy of a weight is still the weights). ``phase`` is stamped on
    each op, and ``launch_count()`` (if set: the number of Triton launches so
    far) places it among the launches."""

    def __init__(self, classes: TensorClasses | None = None):
        super().__init__()
        self.classes = classes
        self.phase: str | None = None
        self.ops: list[AtenOp] = []
        self.custom_ops: list[str] = []
        self.launch_count = None
        self._launches = None

    # hooks listener: only the launch boundaries, to ignore the interpreter's staging
    wants_accesses = False

    def launch_begin(self, name, grid, tensors):
        pass

    def launch_end(self):
        pass

    def access(self, kind, addresses, size):  # pragma: no cover - wants_accesses is False
        pass

    def __enter__(self):
        if hooks.available():
            self._launches = hooks.listening(self)
            self._launches.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            cm, self._launches = self._launches, None
            if cm is not None:
                cm.__exit__(*exc)

    def _classify(self, t: torch.Tensor) -> str:
        return self.classes.classify(t) if self.classes is not None else "tensor"

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if hooks.in_launch():
            return func(*args, **kwargs)
        if func.namespace not in ATEN_NAMESPACES:
            # Descend: run the custom op's kernel below the Python key with this
            # mode active again, so the ops inside it are seen.
            self.custom_ops.append(str(func))
            keys = _AFTER_PYTHON
            for t in tree_leaves((args, kwargs)):
                if isinstance(t, torch.Tensor):
                    keys = torch._C._dispatch_keys(t) & _AFTER_PYTHON
                    break
            with self:
                return func.redispatch(keys, *args, **kwargs)
        out = func(*args, **kwargs)
        if not counted(func, args, kwargs, out):
            return out
        reads = _read_tensors(func, args, kwargs)
        writes = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if self.classes is not None and reads and all(self.classes.is_weight(t) for t in reads):
            for t in writes:
                self.classes.add_weight(t)
        op = AtenOp(str(func), self.phase, shapes=tuple(tuple(t.shape) for t in reads),
                    after_launches=self.launch_count() if self.launch_count else 0)
        for tensors, into in ((reads, op.read_bytes), (writes, op.write_bytes)):
            for t in tensors:
                cls = self._classify(t)
                into[cls] = into.get(cls, 0) + tensor_bytes(t)
        self.ops.append(op)
        return out
