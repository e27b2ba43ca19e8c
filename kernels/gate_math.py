"""Gate and hidden-activation math evaluated inside kernels (fp32 or fp64 in
and out), forward and derivative, with PyTorch's conventions at kinks and for
NaN. Codes: triton_attn/activations.py ``GATE_CODES`` and ``HIDDEN_ACT_CODES``.

Only core Triton math (exp2, erf): no libdevice calls, so the interpreter
runs the same code as the GPU."""
import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
# torch's hardsigmoid / hardswish backward kernels use 1/6 and 1/3 rounded to
# fp32 in every dtype, fp64 included; so do we, so that gradients agree.
SIXTH = tl.constexpr(0.16666667163372040)
THIRD = tl.constexpr(0.3333333432674408)


@triton.jit
def _sigmoid(z):
    # 1 / (1 + inf) = 0 keeps z = -inf finite.
    return 1.0 / (1.0 + tl.exp2(-z * LOG2E))


@triton.jit
def _relu6(z):
    # NaN must stay NaN, as in F.relu6 / F.hardsigmoid: plain min/max would
    # clamp a NaN to a finite value and hide it downstream. (Spelled out at
    # each use: the compiler cannot bind the enum to a name.)
    return tl.minimum(tl.maximum(z, 0.0, propagate_nan=tl.PropagateNan.ALL), 6.0, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _tanh(z):
    # 1 - 2 / (exp(2z) + 1) cancels for small |z|: the Taylor series is exact
    # to the last bit there.
    e = tl.exp2(-2.0 * tl.abs(z) * LOG2E)
    t = (1.0 - e) / (1.0 + e)
    t = tl.where(z < 0, -t, t)
    z2 = z * z
    small = z * (1.0 - z2 * (1.0 / 3.0 - z2 * (2.0 / 15.0)))
    return tl.where(tl.abs(z) < 0.01, small, t)


@triton.jit
def apply_gate(z, GATE: tl.constexpr):
    """GATE: 0 identity, 1 sigmoid, 2 hard_sigmoid (relu6(z + 3) / 6)."""
    if GATE == 1:
        return _sigmoid(z)
    elif GATE == 2:
        return _relu6(z + 3.0) * (1.0 / 6.0)
    else:
        return z


@triton.jit
def gate_backward_from_output(g, grad, GATE: tl.constexpr):
    """grad * d gate / d z, expressed through the gate's output g so that the
    backward needs only the saved gate: sigmoid g(1 - g); hard_sigmoid 1/6 on
    the open interval (-3, 3), i.e. 0 < g < 1. Selected, not multiplied,
    where torch selects (hardsigmoid_backward): an infinite grad outside the
    interval gives 0, not NaN."""
    if GATE == 1:
        return grad * (1.0 - g) * g
    elif GATE == 2:
        return tl.where((g > 0.0) & (g < 1.0), grad * SIXTH, 0.0)
    else:
        return grad


@triton.jit
def apply_act(h, act_param, ACT: tl.constexpr):
    """ACT: 0 identity, 1 relu, 2 relu6, 3 leaky_relu (slope act_param),
    4 silu, 5 hard_swish, 6 hard_sigmoid, 7 sigmoid, 8 gelu (erf), 9 gelu_tanh,
    10 tanh."""
    if ACT == 1:
        return tl.maximum(h, 0.0, propagate_nan=tl.PropagateNan.ALL)
    elif ACT == 2:
        return _relu6(h)
    elif ACT == 3:  # F.leaky_relu keeps h where h > 0 (NaN * slope = NaN)
        return tl.where(h > 0.0, h, h * act_param)
    elif ACT == 4:  # silu as x / (1 + exp(-x)), like PyTorch
        return h / (1.0 + tl.exp2(-h * LOG2E))
    elif ACT == 5:
        return h * _relu6(h + 3.0) * (1.0 / 6.0)
    elif ACT == 6:
        return _relu6(h + 3.0) * (1.0 / 6.0)
    elif ACT == 7:
        return _sigmoid(h)
    elif ACT == 8:
        return 0.5 * h * (1.0 + tl.math.erf(h * 0.7071067811865476))
    elif ACT == 9:
        return 0.5 * h * (1.0 + _tanh(0.7978845608028654 * (h + 0.044715 * h * h * h)))
    elif ACT == 10:
        return _tanh(h)
    else:
        return h


@triton.jit
def act_backward(h, grad, act_param, ACT: tl.constexpr):
    """grad * d act / d h at the pre-activation h, as torch's backward
    kernels compute it: the piecewise ones select (threshold_backward for
    relu passes a NaN h's gradient, relu6 / hard_sigmoid use open intervals,
    hard_swish is 0 at -3 and grad from 3 on), the smooth ones multiply."""
    if ACT == 1:
        return tl.where(h <= 0.0, 0.0, grad)
    elif ACT == 2:
        return tl.where((h > 0.0) & (h < 6.0), grad, 0.0)
    elif ACT == 3:
        return tl.where(h > 0.0, grad, grad * act_param)
    elif ACT == 4:
        s = _sigmoid(h)
        return grad * s * (1.0 + h * (1.0 - s))
    elif ACT == 5:
        return tl.where(h <= -3.0, 0.0, tl.where(h < 3.0, grad * (h * THIRD + 0.5), grad))
    elif ACT == 6:
        return tl.where((h > -3.0) & (h < 3.0), grad * SIXTH, 0.0)
    elif ACT == 7:
        s = _sigmoid(h)
        return grad * s * (1.0 - s)
    elif ACT == 8:
        cdf = 0.5 * (1.0 + tl.math.erf(h * 0.7071067811865476))
        pdf = tl.exp2(-0.5 * h * h * LOG2E) * 0.3989422804014327
        return grad * (cdf + h * pdf)
    elif ACT == 9:
        k = 0.7978845608028654
        t = _tanh(k * (h + 0.044715 * h * h * h))
        return grad * (0.5 * (1.0 + t) + 0.5 * h * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * h * h))
    elif ACT == 10:
        t = _tanh(h)
        return grad * (1.0 - t * t)
    else:
        return grad
