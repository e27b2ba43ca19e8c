"""Gate non-linearities evaluated inside kernels (fp32 in, fp32 out)."""
import triton
import triton.language as tl

@triton.jit
def apply_gate(z, GATE: tl.constexpr):
    # GATE codes: triton_attn/activations.py GATE_CODES.
    if GATE == 1:
        # exp2-based sigmoid: no libdevice call (the CPU interpreter has none),
        # and 1 / (1 + inf) = 0 keeps z = -inf finite.
        return 1.0 / (1.0 + tl.exp2(-z * 1.4426950408889634))
    elif GATE == 2:
        # NaN must stay NaN, as in F.hardsigmoid: plain min/max would clamp
        # a NaN pre-activation to a finite gate and hide it downstream.
        # (Spelled out at each use: the compiler cannot bind the enum to a name.)
        return tl.minimum(
            tl.maximum(z + 3.0, 0.0, propagate_nan=tl.PropagateNan.ALL), 6.0, propagate_nan=tl.PropagateNan.ALL
        ) * (1.0 / 6.0)
    else:
        return z
