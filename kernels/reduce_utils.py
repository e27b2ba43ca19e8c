"""Small ``@triton.jit`` helpers shared by the reduction kernels."""
import triton
import triton.language as tl


@triton.jit
def max_propagate_nan(a, b):
    # torch.amax propagates NaN; tl.maximum's default lets the hardware
    # fmax drop it, which would turn a NaN activation into a finite gate.
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)
