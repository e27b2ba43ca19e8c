"""Where a tensor's math runs: Triton on CUDA, Triton's interpreter on CPU when
``TRITON_INTERPRET=1`` was set before the kernels were imported, otherwise a
pure-PyTorch path with the same arithmetic. Never a silent device copy.

Every kernel launch goes through ``launch``, so that instruments (the host
benchmark's ``stubbed_launches``) see each one."""
from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os

import torch
import torch.fx

from .kernels.channel_pool import channel_pool_kernel

try:  # the class moved between Triton releases; the env var is the fallback
    from triton.runtime.interpreter import InterpretedFunction as _Interpreted
except Exception:  # pragma: no cover
    _Interpreted = None

#: True when the kernels were decorated under ``TRITON_INTERPRET=1``: they then
#: run on CPU tensors (slowly) and cannot run on CUDA ones.
INTERPRETED: bool = (
    isinstance(channel_pool_kernel, _Interpreted)
    if _Interpreted is not None
    else os.environ.get("TRITON_INTERPRET", "0") == "1"
)

_force_torch = False
_poison = False
#: Launches recorded while ``stubbed_launches`` is active, else None.
_stub: list | None = None


@contextlib.contextmanager
def poison_outputs(enabled: bool = True):
    """Fill every buffer a kernel is about to write with NaN (tests): an element
    a kernel forgets to write then shows up instead of passing by luck."""
    global _poison
    previous, _poison = _poison, enabled
    try:
        yield
    finally:
        _poison = previous


def new_buffer(shape, *, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """torch.empty for kernel outputs, NaN-filled under ``poison_outputs``."""
    t = torch.empty(shape, device=like.device, dtype=dtype)
    return t.fill_(float("nan")) if _poison else t


def new_grad_buffer(w: torch.Tensor | None) -> torch.Tensor | None:
    """A parameter's gradient buffer: its shape and dtype, contiguous (the
    kernels write it row-major); None for an absent parameter.
    ``empty_like`` costs ~2 us on the host where ``torch.empty(w.shape, ...)``
    costs ~6 (a backward allocates up to eight of these)."""
    if w is None:
        return None
    if _force_torch and torch.compiler.is_exporting():  # traced into core ATen: plain empty
        return torch.empty(w.shape, device=w.device, dtype=w.dtype)
    return torch.empty_like(w, memory_format=torch.contiguous_format)


def new_like_4d(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Same shape and memory format as ``x`` (a non-dense view gets the dense
    layout it resembles), NaN-filled under ``poison_outputs``."""
    if _force_torch and torch.compiler.is_exporting():
        # Traced into an exported graph (an op's decomposition): the same
        # strides, allocated with core ATen's empty_strided rather than
        # empty_permuted, which core ATen lacks.
        from torch._prims_common import compute_elementwise_output_strides

        return torch.empty_strided(x.shape, compute_elementwise_output_strides(x), dtype=dtype or x.dtype, device=x.device)
    t = torch.empty_like(x, dtype=dtype, memory_format=torch.preserve_format)
    return t.fill_(float("nan")) if _poison else t


@contextlib.contextmanager
def torch_fallback(enabled: bool = True):
    """Run the pure-PyTorch path even where Triton could run (tests, debugging)."""
    global _force_torch
    previous, _force_torch = _force_torch, enabled
    try:
        yield
    finally:
        _force_torch = previous


def where_it_runs(device) -> str:
    """In words, what a block's math runs as on ``device`` in this process."""
    kind = torch.device(device).type
    if _force_torch:
        return "the pure-PyTorch path (forced by triton_attn.torch_fallback())"
    if kind == "cuda":
        return ("the pure-PyTorch path (TRITON_INTERPRET=1 was set: the kernels are interpreted, CPU only)"
                if INTERPRETED else "the Triton kernels (compiled for this GPU)")
    if kind == "cpu":
        return ("the Triton kernels under Triton's interpreter (TRITON_INTERPRET=1; slow, for tests)"
                if INTERPRETED else "the pure-PyTorch path (set TRITON_INTERPRET=1 before importing triton_attn "
                "to run the Triton kernels under the interpreter)")
    return f"nothing: triton_attn runs on CUDA or CPU, not {kind}"


def use_triton(t: torch.Tensor) -> bool:
    if _force_torch:
        return False
    # is_cuda / is_cpu: ~0.15 us each, t.device.type ~0.9 (builds a device object)
    if t.is_cuda:
        if INTERPRETED and not _told["cuda_interpreted"]:
            tell_once("cuda_interpreted")
        return not INTERPRETED
    if t.is_cpu:
        if INTERPRETED or _stub is not None:
            return True
        if not _told["cpu_torch"]:
            tell_once("cpu_torch")
        return False
    return False


# --- which path runs, said once --------------------------------------------
# One INFO (or WARNING) per process on the "triton_attn" logger the first
# time a path is taken that a user might not expect. The hot path pays one
# dict lookup of a boolean; ``logging.getLogger("triton_attn").setLevel``
# silences or shows them (INFO is hidden unless logging is configured).

logger = logging.getLogger("triton_attn")

_MESSAGES = {
    "cpu_torch": (logging.INFO,
        "triton_attn: CPU tensors run the pure-PyTorch path (same arithmetic as the kernels, no Triton). "
        "CUDA tensors run the Triton kernels; set TRITON_INTERPRET=1 before importing triton_attn to run "
        "the kernels on CPU under Triton's interpreter (slow: for tests)."),
    "cuda_interpreted": (logging.WARNING,
        "triton_attn: TRITON_INTERPRET=1 was set when triton_attn was imported, so the kernels are "
        "interpreted and CUDA tensors take the pure-PyTorch path. Unset it to run the compiled kernels."),
    "autotune_cpu": (logging.WARNING,
        "triton_attn: TRITON_ATTN_AUTOTUNE=1 is set but nothing can be tuned here: CPU tensors run the "
        "pure-PyTorch path (no kernels) without TRITON_INTERPRET=1. Tuning happens on CUDA; "
        "`python -m triton_attn.autotune` re-runs itself under the interpreter on CPU."),
}
_told = {key: False for key in _MESSAGES}


def tell_once(key: str) -> None:
    """Log message ``key`` of ``_MESSAGES`` if it has not been logged yet."""
    if _told[key]:
        return
    _told[key] = True
    level, text = _MESSAGES[key]
    logger.log(level, text)
    if key == "cpu_torch" and os.environ.get("TRITON_ATTN_AUTOTUNE", "0") == "1":
        tell_once("autotune_cpu")


# --- export and tracing ------------------------------------------------------

def exporting() -> bool:
    """True while a graph is being captured for deployment: ``torch.onnx.export``
    (the TorchScript-based exporter traces, the dynamo one runs torch.export
    with its ONNX flag set) or ``torch.jit.trace``. The blocks then compute
    with standard PyTorch ops (the layers' own modules: mean/amax, conv,
    activation, gate, mul, BatchNorm), so the exported graph holds no
    ``triton_attn::`` op and runs anywhere (ONNX Runtime, libtorch).

    A plain ``torch.export.export`` and ``torch.compile`` keep the fused ops
    (``run_decompositions()`` turns them into core ATen ops afterwards, see
    ``triton_attn/ops/decompositions.py``). Costs two flag reads per call."""
    return torch.jit.is_tracing() or (torch.compiler.is_exporting() and torch.onnx.is_in_onnx_export())


def fx_leaf(module: torch.nn.Module, *args, **kwargs):
    """A block's forward called with a ``torch.fx`` Proxy: record the block as
    one ``call_module`` node, exactly as a tracer's leaf module (the
    GraphModule then calls the block, fused path included). Works with any
    ``torch.fx.Tracer`` (timm's ``features_only``/``create_feature_extractor``,
    torchvision's ``create_feature_extractor``, ``symbolic_trace``) without
    registering the classes. Anything else that is not a tensor is a
    TypeError, as the checks would raise."""
    proxy = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.fx.Proxy)), None)
    if proxy is None:
        bad = next((a for a in (*args, *kwargs.values()) if not isinstance(a, torch.Tensor)), None)
        raise TypeError(f"x must be a torch.Tensor, got {type(bad).__name__}")
    tracer = proxy.tracer
    return tracer.create_proxy("call_module", tracer.path_of_module(module), args, kwargs)


def not_scriptable(module: torch.nn.Module):
    """``__prepare_scriptable__`` of every block: ``torch.jit.script`` stops
    with a message saying what to use instead (the blocks call Python custom
    ops with Triton kernels, which TorchScript cannot compile)."""
    name = type(module).__name__
    raise RuntimeError(
        f"triton_attn.{name} cannot be compiled by torch.jit.script (deprecated by PyTorch; the block calls "
        "Python-registered Triton ops). Use torch.compile(model) for speed, torch.export.export(model) or "
        "torch.onnx.export(model, (x,)) to deploy (both give standard ops), or triton_attn.revert(model) "
        "to get the original timm/torchvision/seed blocks back and script those."
    )


def launch(kernel, grid, *args, **kwargs) -> None:
    """``kernel[grid](*args, **kwargs)``; under ``stubbed_launches`` only
    recorded (kernel name, grid, constexpr/launch keywords)."""
    if _stub is not None:
        fn = getattr(kernel, "fn", kernel)
        _stub.append((fn.__name__ if hasattr(fn, "__name__") else str(kernel), tuple(grid), kwargs))
        return
    kernel[grid](*args, **kwargs)


@contextlib.contextmanager
def stubbed_launches():
    """Drive the CUDA code path on CPU tensors with every Triton launch
    replaced by a record ``(kernel name, grid, keywords)`` in the yielded
    list: the host benchmark (``python -m perf host``) times everything a
    call does except the kernels. Outputs are left unwritten (garbage), so
    use it for timing and counting only. Not with the interpreter (which
    runs the kernels for real) or on CUDA tensors (which launch for real)."""
    global _stub
    previous, _stub = _stub, []
    try:
        yield _stub
    finally:
        _stub = previous


# Environment reads on the launch path: os.environ.get encodes the key and
# decodes the value on every call (~0.3 us, several per block call); the
# mapping's own byte-keyed dict answers the same question, always current.
_ENV_DATA = getattr(os.environ, "_data", None)
_ENV_ENCODE = getattr(os.environ, "encodekey", None)


def env_raw(name: str, _keys: dict = {}):  # noqa: B006 - a per-process cache of encoded keys
    """``os.environ.get(name)``, cheaply (the raw stored value: compare it,
    parse it with ``env_str``)."""
    if _ENV_DATA is None or _ENV_ENCODE is None:
        return os.environ.get(name)
    key = _keys.get(name)
    if key is None:
        key = _keys[name] = _ENV_ENCODE(name)
    return _ENV_DATA.get(key)


def env_str(raw) -> str | None:
    if raw is None or isinstance(raw, str):
        return raw
    return os.environ.decodevalue(raw) if hasattr(os.environ, "decodevalue") else raw.decode()


_sm_cache: tuple = (object(), None)


def sm_count_override() -> int | None:
    """``TRITON_ATTN_SM_COUNT``: plan launches (the split of the reductions)
    for a GPU with this many SMs, on any device. Lets the interpreter and the
    traffic accounting see the grids a real GPU would get; unset, CPU tensors
    plan for no GPU (no split) and CUDA tensors for their own device."""
    global _sm_cache
    raw = env_raw("TRITON_ATTN_SM_COUNT")
    if raw == _sm_cache[0]:
        return _sm_cache[1]
    count = _parse_sm_count(env_str(raw))
    _sm_cache = (raw, count)
    return count


def _parse_sm_count(value: str | None) -> int | None:
    if not value:
        return None
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"TRITON_ATTN_SM_COUNT must be a positive integer, got {value!r}") from None
    if count < 1:
        raise ValueError(f"TRITON_ATTN_SM_COUNT must be a positive integer, got {value!r}")
    return count


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype of every reduction and gate: fp32, fp64 for fp64 inputs."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def autocast_off(fn):
    """Run a custom op's implementation with autocast disabled.

    Custom ops have no autocast kernel, so an enclosing ``torch.autocast``
    reaches the torch ops inside them: the [N, C] gate MLP would then run in
    bf16/fp16 (NaN gates in bf16), breaking the fp32-math guarantee."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with contextlib.ExitStack() as stack:
            for device_type in ("cuda", "cpu"):
                if torch.is_autocast_enabled(device_type):
                    stack.enter_context(torch.autocast(device_type, enabled=False))
            return fn(*args, **kwargs)

    # custom_op infers its schema from the signature; resolve the (lazy,
    # string) annotations in fn's own module, not in this one.
    wrapper.__signature__ = inspect.signature(fn, eval_str=True)
    return wrapper


_is_wrapped = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", lambda t: False)


def eager_call(x) -> bool:
    """Whether a block's call may skip the ``torch.library`` dispatch and run
    its ``autograd.Function`` with direct launches (the lean eager path):
    a plain tensor, outside torch.compile / torch.export / tracing and
    functorch transforms. Everything else goes through the registered ops,
    which those systems understand (fakes, autograd formulas, decompositions)."""
    return (
        type(x) is torch.Tensor and not torch.compiler.is_compiling() and not torch.jit.is_tracing()
        and not _is_wrapped(x)
    )


def no_autocast():
    """A context with autocast off on CPU and CUDA (or a no-op when it is
    off): the pure-PyTorch twins run their [N, C] math in fp32 even inside
    ``torch.autocast``, like the kernels."""
    if torch.is_autocast_enabled("cuda") or torch.is_autocast_enabled("cpu"):
        stack = contextlib.ExitStack()
        for device_type in ("cuda", "cpu"):
            if torch.is_autocast_enabled(device_type):
                stack.enter_context(torch.autocast(device_type, enabled=False))
        return stack
    return contextlib.nullcontext()


class _NoContext:
    """A reusable do-nothing context (``contextlib.nullcontext()`` allocates
    one per call on the launch path)."""

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


NO_CONTEXT = _NoContext()
