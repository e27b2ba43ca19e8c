"""Element offsets past 2**31: every kernel must compute addresses in int64.

A stride S that fits in int32 is passed to Triton as i32, and ``n * S`` in
i32 wraps for n >= 2 when S > 2**30. So each test builds a small tensor whose
stride along one axis is S = 2**30 + 8 over a storage of ~2*S fp16 elements
(4 GiB of address space; on CPU only the touched pages are ever backed by
memory), puts index 2 of that axis past 2**31 elements, and checks every
kernel of SE and ECA, forward and backward, against float64. A kernel that
multiplies in int32 reads or writes at a wrapped address: a wrong value or
a segfault (pytest's faulthandler then names the test). The real
> 2**31-element run is in ``test_cuda_only.py``."""
import pytest
import torch

from triton_attn import functional as TF
from triton_attn.reference import eca_reference

from helpers import assert_close, run_with_grads, se_fn, se_tensors

S = 2**30 + 8
assert S < 2**31 <= 2 * S

# (shape, strides) with the huge stride S along one axis and a size of 3 there.
VIEWS = {
    "batch": ((3, 4, 2, 2), (S, 4, 2, 1)),
    "channel": ((1, 3, 2, 2), (1, S, 2, 1)),
    "hw": ((1, 2, 1, 3), (1, 1, 1, S)),
}


def huge_view(shape, strides, device, dtype=torch.float16):
    extent = 1 + sum((n - 1) * s for n, s in zip(shape, strides))
    try:
        storage = torch.empty(extent, dtype=dtype, device=device)
    except (MemoryError, RuntimeError) as e:  # pragma: no cover - machine-dependent
        pytest.skip(f"cannot reserve {extent * 2 / 2**30:.1f} GiB of address space: {e}")
    view = storage.as_strided(shape, strides)
    view.copy_(torch.randn(shape))
    assert view.storage_offset() + max((n - 1) * s for n, s in zip(shape, strides)) >= 2**31
    return view


def check(fn, ref_fn, tensors, dy, names, msg):
    y, _, grads = run_with_grads(fn, tensors, names, dy=dy)
    t64 = {k: v.detach().double() for k, v in tensors.items()}
    ref_y, _, ref_grads = run_with_grads(ref_fn, t64, names, dy=dy.double(), poison=False)
    assert_close(y, ref_y, torch.float16, msg=f"{msg} y")
    for k in names:
        assert_close(grads[k], ref_grads[k], torch.float16, msg=f"{msg} grad {k}")


@pytest.mark.parametrize("axis", list(VIEWS))
def test_offsets_past_2_31_elements(axis, device):
    """x and dy both huge-strided: the pooling, sum(dy * x) with tie count,
    scale and dx kernels all address elements past 2**31."""
    shape, strides = VIEWS[axis]
    x = huge_view(shape, strides, device)
    dy = huge_view(shape, strides, device)
    t = {k: v.to(device) for k, v in se_tensors(x, rd=4).items()}
    check(*se_fn("avgmax"), t, dy, list(t), msg=f"se {axis}")
    w = torch.randn(3, device=device)
    check(
        lambda x, w: TF.eca(x, w, circular=True), lambda x, w: eca_reference(x, w, circular=True),
        {"x": x, "w": w}, dy, ["x", "w"], msg=f"eca {axis}",
    )
