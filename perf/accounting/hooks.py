"""The one patch of Triton's interpreter the instruments share.

Under ``TRITON_INTERPRET=1`` a launch ``kernel[grid](...)`` calls
``InterpretedFunction.run`` once, which then executes every program of the grid
in Python; each ``tl.load``/``tl.store`` becomes a call of the interpreter
builder's ``create_load``/``create_masked_load``/``create_store``/
``create_masked_store`` with numpy arrays of byte addresses and a mask
(tensor-descriptor loads and stores are routed through the masked ones). This
module wraps those methods on the classes, once however many instruments are
active, and forwards each event to the registered listeners:

- ``launch_begin(name, grid, tensors)`` / ``launch_end()``,
- ``access(kind, addresses, element_size)`` with ``kind`` "load" or "store"
  and ``addresses`` the uint64 addresses of the elements whose mask is true
  (atomics count as a load and a store of their masked elements).

``in_launch()`` tells the aten log to ignore the torch calls the interpreter
makes to stage arguments (its storage copies are not GPU work)."""
from __future__ import annotations

import contextlib
import threading

import numpy as np

_lock = threading.Lock()
_listeners: list = []
_saved: dict = {}
_depth = 0  # launches being interpreted (nested: a kernel never launches another)
_in_access = 0  # create_load -> create_masked_load: count the outer call only


def in_launch() -> bool:
    """True while the interpreter is running a launch's programs."""
    return _depth > 0


def _interpreter():
    """Triton's interpreter module, or None when this Triton has none we know."""
    try:
        from triton.runtime import interpreter
    except Exception:  # pragma: no cover - Triton without an interpreter
        return None
    if not hasattr(interpreter, "InterpreterBuilder"):
        return None
    return interpreter


def _element_size(handle) -> int:
    """Bytes of one element a pointer handle points at (bool/int1: 1 byte)."""
    dtype = handle.get_element_ty() if hasattr(handle, "get_element_ty") else handle.dtype
    bits = getattr(dtype, "primitive_bitwidth", None) or getattr(dtype, "int_bitwidth", 8)
    return max(1, bits // 8)


def _counting() -> bool:
    """Whether any listener wants the accesses (the aten log only needs the
    launch boundaries)."""
    return any(getattr(listener, "wants_accesses", True) for listener in _listeners)


def _emit(kind: str, ptrs, mask) -> None:
    addresses = np.asarray(ptrs.data)
    if mask is not None:
        m = np.broadcast_to(np.asarray(mask.data, dtype=bool), addresses.shape)
        addresses = addresses[m]
    addresses = addresses.reshape(-1).astype(np.uint64, copy=False)
    size = _element_size(ptrs)
    for listener in list(_listeners):
        if getattr(listener, "wants_accesses", True):
            listener.access(kind, addresses, size)


def _wrap_access(original, kind: str, mask_index: int | None):
    """Wrap a builder method whose first argument is the pointer handle and
    whose ``mask_index``-th argument (None: no mask) is the mask."""

    def wrapper(self, *args, **kwargs):
        global _in_access
        outer = _in_access == 0
        _in_access += 1
        try:
            if outer and _counting():
                mask = None
                if mask_index is not None:
                    mask = args[mask_index] if len(args) > mask_index else kwargs.get("mask")
                _emit(kind, args[0], mask)
            return original(self, *args, **kwargs)
        finally:
            _in_access -= 1

    wrapper.__wrapped__ = original
    return wrapper


def _wrap_atomic(original, ptr_index: int, mask_index: int | None):
    def wrapper(self, *args, **kwargs):
        if _counting():
            mask = args[mask_index] if mask_index is not None and len(args) > mask_index else None
            _emit("load", args[ptr_index], mask)
            _emit("store", args[ptr_index], mask)
        return original(self, *args, **kwargs)

    wrapper.__wrapped__ = original
    return wrapper


def _tensors(args, kwargs) -> list:
    out = []
    for value in (*args, *kwargs.values()):
        base = getattr(value, "base", None) if type(value).__name__ == "TensorWrapper" else value
        if hasattr(base, "untyped_storage") and hasattr(base, "data_ptr"):
            out.append(base)
    return out


def _kernel_name(fn) -> str:
    inner = getattr(fn, "fn", fn)
    return getattr(inner, "__name__", str(inner))


def _wrap_run(original):
    """``InterpretedFunction.run(self, *args, grid, warmup, **kwargs)``: one launch."""

    def run(self, *args, grid, warmup, **kwargs):
        global _depth
        if warmup or not _listeners:
            return original(self, *args, grid=grid, warmup=warmup, **kwargs)
        shape = tuple(grid) if not callable(grid) else None
        for listener in list(_listeners):
            listener.launch_begin(_kernel_name(self), shape, _tensors(args, kwargs))
        _depth += 1
        try:
            return original(self, *args, grid=grid, warmup=warmup, **kwargs)
        finally:
            _depth -= 1
            for listener in list(_listeners):
                listener.launch_end()

    run.__wrapped__ = original
    return run


def _install() -> None:
    interp = _interpreter()
    if interp is None:
        return
    builder = interp.InterpreterBuilder
    plan = {
        (builder, "create_load"): lambda f: _wrap_access(f, "load", None),
        (builder, "create_masked_load"): lambda f: _wrap_access(f, "load", 1),
        (builder, "create_store"): lambda f: _wrap_access(f, "store", None),
        (builder, "create_masked_store"): lambda f: _wrap_access(f, "store", 2),
        (builder, "create_atomic_rmw"): lambda f: _wrap_atomic(f, 1, 3),
        (builder, "create_atomic_cas"): lambda f: _wrap_atomic(f, 0, None),
        (interp.InterpretedFunction, "run"): _wrap_run,
    }
    for (owner, name), wrap in plan.items():
        original = owner.__dict__.get(name)
        if original is None:
            continue
        _saved[(owner, name)] = original
        setattr(owner, name, wrap(original))


def _uninstall() -> None:
    for (owner, name), original in _saved.items():
        setattr(owner, name, original)
    _saved.clear()


def available() -> bool:
    """Whether this Triton has an interpreter these hooks understand."""
    interp = _interpreter()
    return interp is not None and "run" in interp.InterpretedFunction.__dict__


@contextlib.contextmanager
def listening(listener):
    """Forward the interpreter's launches and accesses to ``listener`` (an
    object with ``launch_begin``, ``launch_end`` and ``access``; one whose
    ``wants_accesses`` is False gets no ``access`` calls) while active."""
    with _lock:
        if not _listeners:
            _install()
        _listeners.append(listener)
    try:
        yield listener
    finally:
        with _lock:
            _listeners.remove(listener)
            if not _listeners:
                _uninstall()
