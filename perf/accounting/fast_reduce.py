"""A vectorised ``tl.reduce`` for Triton's interpreter (speed only).

The interpreter runs a reduction with a user combine function
(``tl.reduce(acc, 1, max_propagate_nan)`` in the channel pooling) one element
at a time in Python: ~1 s per program for a 4096-element tile, which makes
CBAM's traffic uncountable at real shapes. This applies the same combine
function to whole slices instead, folding along the axis in the same order
(acc = combine(acc, x[k]) for k = 1, 2, ...), so every output element sees
exactly the same operations as before and the result is bit-identical. It
changes no load or store: counts are the same with or without it.

Only for elementwise combine functions (Triton's are: they see one element
of each operand at a time); anything it does not handle goes to the
original."""
from __future__ import annotations

import contextlib

import numpy as np


def _interp():
    try:
        from triton.runtime import interpreter
    except Exception:  # pragma: no cover
        return None
    ops = getattr(interpreter, "ReduceOps", None)
    return interpreter if ops is not None and "generic_reduce" in ops.__dict__ else None


def _make(original, tl):
    def generic_reduce(self, given):
        axis_given = self.axis
        input, axis = self.unravel(given, self.axis)
        datas = [arg.handle.data for arg in input]
        shape = datas[0].shape
        if len(shape) == 0 or shape[axis] == 0:
            return original(self, given)
        out_shape = shape[:axis] + shape[axis + 1:]
        work = out_shape or (1,)

        def column(d, k):
            return np.take(d, k, axis=axis).reshape(work)

        acc = [column(d, 0).copy() for d in datas]
        for k in range(1, shape[axis]):
            acc_t = tuple(self.to_tensor(a, input[i].dtype) for i, a in enumerate(acc))
            in_t = tuple(self.to_tensor(column(d, k), input[i].dtype) for i, d in enumerate(datas))
            ret = self.combine_fn.fn(*acc_t, *in_t)
            ret = ret if isinstance(ret, tuple) else (ret,)
            acc = [
                np.broadcast_to(r.handle.data if isinstance(r, tl.core.tensor) else np.asarray(r), work).astype(datas[j].dtype)
                for j, r in enumerate(ret)
            ]
        out = []
        for i, data in enumerate(acc):
            data = data.reshape(out_shape)
            if self.keep_dims:
                if axis_given is not None:
                    data = np.expand_dims(data, axis)
                else:
                    for _ in range(len(shape)):
                        data = np.expand_dims(data, 0)
            elif axis_given is None:
                data = data.item()
            out.append(self.to_tensor(data, input[i].dtype))
        return out

    generic_reduce.__wrapped__ = original
    return generic_reduce


@contextlib.contextmanager
def fast_reduce(enabled: bool = True):
    """Swap in the vectorised ``generic_reduce`` while active (no-op where
    this Triton's interpreter has no such method)."""
    interp = _interp() if enabled else None
    if interp is None:
        yield False
        return
    import triton.language as tl

    ops = interp.ReduceOps
    original = ops.__dict__["generic_reduce"]
    ops.generic_reduce = _make(original, tl)
    try:
        yield True
    finally:
        ops.generic_reduce = original
