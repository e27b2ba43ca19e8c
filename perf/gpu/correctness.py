"""Step 1: correctness where the kernels really run.

- every block variant (``blocks.VARIANTS``: SE avg/max/avgmax, ESE, ECA, CECA,
  CBAM and light CBAM in training and eval, the fused tails once they exist)
  on real preset shapes, both layouts, bf16/fp16/fp32: output and every
  gradient against the float64 reference, with ``tests/helpers.py``'s
  tolerances; a result outside them still passes ("pass-eager") when its
  error is at most twice the eager same-dtype computation's;
- a CUDA-graph capture and replay after warm-up (forward of each block, and
  forward + backward through ``make_graphed_callables``), compared with eager;
- every block on a non-default stream, its input written there after a long
  GPU sleep (a kernel on any other stream would read it too early);
- tensors of more than 2**31 elements: across samples (the first and last
  sample against float64) and within one sample (elements around offset
  2**31 against a float64 reference computed in channel chunks);
- the host time of a tiny SE forward against its kernel count: the
  per-launch overhead.

Order: the bf16 channels_last matrix first (within 55% of the box), then the
special checks, then the rest of the matrix. Failures are rows, never fatal."""
from __future__ import annotations

import copy
import gc
import itertools
import time

import torch

from .blocks import SPECIAL_VARIANTS, VARIANTS

#: tests/helpers.py's tolerances (relative to the reference's magnitude).
TOL = {
    torch.float32: dict(atol=2e-5, rtol=2e-5),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2),
}
EAGER_FACTOR = 2.0
STEP = "correctness"


def _dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def make_x(shape, dtype, layout, device, gen):
    x = torch.randn(shape, generator=gen, device=device, dtype=torch.float32).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x.contiguous()


def fwd_bwd(module, inputs, dy):
    """(y, {name: grad}) with inputs named x (or x0, x1, ...) and parameters by name."""
    module.zero_grad(set_to_none=True)
    leaves = [t.detach().requires_grad_(True) for t in inputs]
    y = module(*leaves)
    y.backward(dy)
    names = ["x"] if len(leaves) == 1 else [f"x{i}" for i in range(len(leaves))]
    grads = dict(zip(names, (t.grad for t in leaves)))
    grads.update({n: p.grad for n, p in module.named_parameters()})
    return y.detach(), grads


def tensor_error(actual, expected, dtype) -> tuple[float, float, float]:
    """(max abs error, allowed error, magnitude); inf error for a non-finite
    value where the reference is finite."""
    a, e = actual.double(), expected.double()
    mag = max(e.abs().max().item(), 1.0) if e.numel() else 1.0
    tol = TOL[dtype]
    allowed = (tol["atol"] + tol["rtol"]) * mag
    if not e.numel():
        return 0.0, allowed, mag
    if bool((~torch.isfinite(a) & torch.isfinite(e)).any()):
        return float("inf"), allowed, mag
    return (a - e).abs().max().item(), allowed, mag


def compare(got, want, dtype, prefix: str) -> dict:
    """Per tensor: error, allowed error, ratio; names of ``want`` are ours
    with ``prefix`` on the parameter names."""
    (y, grads), (ry, rgrads) = got, want
    out = {"y": (y, ry)}
    for name, g in grads.items():
        ref_name = name if name.startswith("x") else prefix + name
        out[f"grad {name}"] = (g, rgrads.get(ref_name))
    errors = {}
    for name, (a, e) in out.items():
        if e is None:
            continue  # a parameter the reference does not use (none today)
        if a is None:
            errors[name] = (float("inf"), 1.0, 1.0, "no gradient")
            continue
        if a.shape != e.shape:
            errors[name] = (float("inf"), 1.0, 1.0, f"shape {tuple(a.shape)} != {tuple(e.shape)}")
            continue
        err, allowed, mag = tensor_error(a, e, dtype)
        errors[name] = (err, allowed, mag, "")
    return errors


def check_case(variant, shape, dtype_name, layout, device) -> dict:
    build, _ = VARIANTS[variant]
    dtype = _dtype(dtype_name)
    torch.manual_seed(0)
    case = build(shape[1])
    ours = case.ours.to(device=device, dtype=dtype)
    ref64 = case.reference(torch.float64).to(device)  # before ours runs: same BatchNorm state
    base = case.reference(dtype).to(device)
    gen = torch.Generator(device=device).manual_seed(1)
    inputs = [make_x(shape, dtype, layout, device, gen) for _ in range(case.inputs)]
    dy = make_x(shape, dtype, layout, device, gen)
    got = fwd_bwd(ours, inputs, dy)
    want = fwd_bwd(ref64, [t.double() for t in inputs], dy.double())
    errors = compare(got, want, dtype, case.param_prefix)
    worst = max(errors, key=lambda k: errors[k][0] / errors[k][1])
    err, allowed, mag, why = errors[worst]
    ratio = err / allowed
    status, detail = "pass", ""
    if ratio > 1.0:
        # Outside tolerance: no worse than the eager computation in the same dtype?
        eager = compare(fwd_bwd(base, inputs, dy), want, dtype, case.param_prefix)
        eps = torch.finfo(dtype).eps
        bad = [k for k, (e, _, m, _) in errors.items()
               if not e <= EAGER_FACTOR * eager.get(k, (0.0,))[0] + eps * m]
        if bad:
            status = "FAIL"
            detail = "; ".join(f"{k}: err {errors[k][0]:.3g} > tol {errors[k][1]:.3g} (eager {eager.get(k, (float('nan'),))[0]:.3g}) {errors[k][3]}".strip() for k in bad[:4])
        else:
            status, detail = "pass-eager", f"{worst}: err {err:.3g} > tol {allowed:.3g}, within {EAGER_FACTOR:g}x eager's error"
    return {"status": status, "err_ratio": ratio, "max_err": err, "worst": worst, "detail": detail or why}


def _row(check, variant, shape, dtype, layout, **kw):
    N, C, H, W = shape
    return {"check": check, "variant": variant, "N": N, "C": C, "H": H, "W": W, "dtype": dtype, "layout": layout, **kw}


def _matrix_items(profile, variants):
    combos = list(itertools.product(profile.check_dtypes, profile.check_layouts))
    if profile.diagonal:  # dry run: each variant at one combination, cycling through them
        return [(v, s, *combos[i % len(combos)]) for i, v in enumerate(variants) for s in profile.check_shapes]
    return [(v, s, d, lay) for d, lay in combos for s in profile.check_shapes for v in variants]


def _run_matrix(ctx, box, items):
    done = ctx.writer.done_keys("correctness", ok=("pass", "pass-eager")) if ctx.resume else set()
    label = lambda it: f"fwd_bwd {it[0]} {'x'.join(map(str, it[1]))} {it[2]} {it[3]}"  # noqa: E731
    for variant, shape, dtype, layout in box.take(items, label):
        key = ctx.writer.key_of("correctness", check="fwd_bwd", variant=variant, N=shape[0], C=shape[1], H=shape[2],
                                W=shape[3], dtype=dtype, layout=layout)
        if key in done:
            continue
        try:
            result = check_case(variant, shape, dtype, layout, ctx.device)
        except Exception as e:
            result = {"status": "error", "detail": f"{type(e).__name__}: {e}"[:400]}
        if result["status"] not in ("pass", "pass-eager"):
            ctx.log(f"perf gpu: [correctness] {result['status']} {label((variant, shape, dtype, layout))}: {result.get('detail', '')}")
        ctx.writer.write("correctness", [_row("fwd_bwd", variant, shape, dtype, layout, **result)])
        ctx.count(STEP)


# --- the special checks ------------------------------------------------------------


def _cuda_only(ctx, check) -> bool:
    if ctx.device.type == "cuda":
        return True
    ctx.writer.write("correctness", [_row(check, "all", (0, 0, 0, 0), "", "", status="skipped", detail="needs CUDA")])
    ctx.skip_item(STEP, check, "needs CUDA")
    return False


def _eval_module(variant, C, dtype, device):
    torch.manual_seed(0)
    case = VARIANTS[variant][0](C)
    return case, case.ours.to(device=device, dtype=dtype).eval()


def _max_diff(a, b) -> float:
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def _same_status(diff: float, mag: float, what: str) -> tuple[str, str]:
    """Replays and side-stream runs launch the same kernels with the same
    configs: bit-identical is expected, bf16 tolerance is the bound."""
    tol = TOL[torch.bfloat16]
    if diff == 0.0:
        return "pass", f"{what}: bit-identical"
    ok = diff <= (tol["atol"] + tol["rtol"]) * max(mag, 1.0)
    return ("pass" if ok else "FAIL"), f"{what}: max diff {diff:.3g}, not bit-identical"


def check_cuda_graphs(ctx) -> None:
    if not _cuda_only(ctx, "cuda_graph"):
        return
    shape, dtype, layout = ctx.profile.graph_shape, torch.bfloat16, "channels_last"
    gen = torch.Generator(device=ctx.device).manual_seed(2)
    rows = []
    for variant in SPECIAL_VARIANTS:
        try:
            _, module = _eval_module(variant, shape[1], dtype, ctx.device)
            static_x = make_x(shape, dtype, layout, ctx.device, gen)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.no_grad():
                for _ in range(3):  # compile, tune and allocate before the capture
                    module(static_x)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.no_grad():
                static_y = module(static_x)
            diff = mag = 0.0
            for _ in range(2):
                new_x = make_x(shape, dtype, layout, ctx.device, gen)
                static_x.copy_(new_x)
                graph.replay()
                torch.cuda.synchronize()
                with torch.no_grad():
                    expected = module(new_x)
                diff, mag = max(diff, _max_diff(static_y, expected)), max(mag, expected.abs().max().item())
            status, detail = _same_status(diff, mag, "forward replay vs eager")
            rows.append(_row("cuda_graph", variant, shape, "bfloat16", layout, status=status, max_err=diff, detail=detail))
        except Exception as e:
            rows.append(_row("cuda_graph", variant, shape, "bfloat16", layout, status="error", detail=f"{type(e).__name__}: {e}"[:400]))
    # forward + backward captured by make_graphed_callables
    for variant in ("se_avgmax", "eca"):
        try:
            _, module = _eval_module(variant, shape[1], dtype, ctx.device)
            eager = copy.deepcopy(module)  # make_graphed_callables patches module.forward in place
            sample = make_x(shape, dtype, layout, ctx.device, gen).requires_grad_(True)
            graphed = torch.cuda.make_graphed_callables(module, (sample,))
            diff = mag = 0.0
            for _ in range(2):
                x = make_x(shape, dtype, layout, ctx.device, gen)
                dy = make_x(shape, dtype, layout, ctx.device, gen)
                y, grads = fwd_bwd(graphed, [x], dy)
                got = [y.clone(), *(g.clone() for g in grads.values())]  # static buffers: the next replay overwrites them
                y2, grads2 = fwd_bwd(eager, [x], dy)
                for a, b in zip(got, [y2, *grads2.values()]):
                    diff, mag = max(diff, _max_diff(a, b)), max(mag, b.abs().max().item())
            status, detail = _same_status(diff, mag, "make_graphed_callables replay (fwd + bwd) vs eager")
            rows.append(_row("cuda_graph_fwd_bwd", variant, shape, "bfloat16", layout, status=status, max_err=diff, detail=detail))
        except Exception as e:
            rows.append(_row("cuda_graph_fwd_bwd", variant, shape, "bfloat16", layout, status="error", detail=f"{type(e).__name__}: {e}"[:400]))
    ctx.writer.write("correctness", rows)
    ctx.count(STEP, len(rows))


def check_stream(ctx) -> None:
    if not _cuda_only(ctx, "stream"):
        return
    shape, dtype, layout = ctx.profile.graph_shape, torch.bfloat16, "channels_last"
    gen = torch.Generator(device=ctx.device).manual_seed(3)
    rows = []
    for variant in SPECIAL_VARIANTS:
        try:
            _, module = _eval_module(variant, shape[1], dtype, ctx.device)
            src = make_x(shape, dtype, layout, ctx.device, gen)
            dy = make_x(shape, dtype, layout, ctx.device, gen)
            y, grads = fwd_bwd(module, [src], dy)
            expected = [y, *(g.clone() for g in grads.values())]
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                x = torch.empty_like(src)
                torch.cuda._sleep(100_000_000)  # ~50 ms of GPU time before x is written
                x.copy_(src)
                y2, grads2 = fwd_bwd(module, [x], dy)
            side.synchronize()
            diff = max(_max_diff(a, b) for a, b in zip([y2, *grads2.values()], expected))
            mag = max(b.abs().max().item() for b in expected)
            status, detail = _same_status(diff, mag, "side stream vs default stream")
            rows.append(_row("stream", variant, shape, "bfloat16", layout, status=status, max_err=diff, detail=detail))
        except Exception as e:
            rows.append(_row("stream", variant, shape, "bfloat16", layout, status="error", detail=f"{type(e).__name__}: {e}"[:400]))
    ctx.writer.write("correctness", rows)
    ctx.count(STEP, len(rows))


BIG_CHECKS = (("se_avgmax", "nchw"), ("eca", "channels_last"), ("cbam_eval", "channels_last"))


def check_big_tensor(ctx) -> None:
    """One x of more than 2**31 elements per block: fwd + bwd, then y and dx
    of the first and the last sample against float64 (the blocks are per
    sample in eval mode, so one sample's reference is exact)."""
    shape = ctx.profile.big_shape
    N = shape[0]
    numel = N * shape[1] * shape[2] * shape[3]
    dtype = torch.bfloat16
    note = "" if numel > 2**31 else f"{numel} elements < 2**31 (dry run: the check's code path only)"
    rows = []
    for variant, layout in BIG_CHECKS:
        if "big-tensor" in ctx.skip:
            ctx.skip_item(STEP, f"big_tensor {variant}", "--skip big-tensor")
            continue
        if ctx.device.type == "cuda":
            need = 6 * numel * 2 + 2**31  # x, dy, y, dx in bf16, the fp32 randn they are drawn from, slack
            free, _ = torch.cuda.mem_get_info(ctx.device)
            if free < need:
                rows.append(_row("big_tensor", variant, shape, "bfloat16", layout, status="skipped",
                                 detail=f"needs {need / 2**30:.0f} GiB, {free / 2**30:.0f} GiB free"))
                ctx.skip_item(STEP, f"big_tensor {variant}", "GPU memory")
                continue
        x = dy = y = None
        try:
            t0 = time.perf_counter()
            case, module = _eval_module(variant, shape[1], dtype, ctx.device)
            ref64 = case.reference(torch.float64).to(ctx.device).eval()
            gen = torch.Generator(device=ctx.device).manual_seed(4)
            x = make_x(shape, dtype, layout, ctx.device, gen).requires_grad_(True)
            dy = make_x(shape, dtype, layout, ctx.device, gen)
            y = module(x)
            y.backward(dy)
            worst = 0.0
            for n in (0, N - 1):
                xs = x[n : n + 1].detach().double().requires_grad_(True)
                ys = ref64(xs)
                ys.backward(dy[n : n + 1].double())
                for a, e in ((y[n : n + 1].detach(), ys.detach()), (x.grad[n : n + 1], xs.grad)):
                    err, allowed, _ = tensor_error(a, e, dtype)
                    worst = max(worst, err / allowed)
            status = "pass" if worst <= 1.0 else "FAIL"
            detail = f"{numel} elements, samples 0 and {N - 1} vs float64, {time.perf_counter() - t0:.1f} s"
            rows.append(_row("big_tensor", variant, shape, "bfloat16", layout, status=status, err_ratio=worst,
                             detail=f"{detail}; {note}" if note else detail))
        except Exception as e:
            rows.append(_row("big_tensor", variant, shape, "bfloat16", layout, status="error", detail=f"{type(e).__name__}: {e}"[:400]))
        finally:
            x = dy = y = None
            gc.collect()
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()
    if rows:
        ctx.writer.write("correctness", rows)
        ctx.count(STEP, len(rows))


#: Blocks whose gate depends on the per-channel mean only: their float64
#: reference over one huge sample is computed in channel chunks.
BIG_SAMPLE_CHECKS = (("se_avg", "channels_last"), ("eca", "nchw"))
CHUNK_ELEMS = 2**26  # float64 elements per reference chunk (512 MB)


def mean_gate_reference(ref64, x, dy, chunk_elems=CHUNK_ELEMS):
    """(g, dL/ds) in float64 for one sample of a block y = x * g(mean_hw x):
    the per-channel sums are taken in channel chunks, and the gate comes from
    the reference module applied to a 1 x C x 1 x 2 proxy [s + 1, s - 1]
    (mean s, outputs (s +- 1) * g, so g = (y0 - y1) / 2), differentiable in s."""
    _, C, H, W = x.shape
    s = torch.empty(C, dtype=torch.float64, device=x.device)
    S = torch.empty_like(s)  # sum_hw dy * x: dL/dg
    step = max(1, chunk_elems // (H * W))
    for c0 in range(0, C, step):
        xc = x[0, c0 : c0 + step].double()
        s[c0 : c0 + step] = xc.mean((1, 2))
        S[c0 : c0 + step] = (xc * dy[0, c0 : c0 + step].double()).sum((1, 2))
        del xc
    s.requires_grad_(True)
    y = ref64(torch.stack([s + 1, s - 1], -1).reshape(1, C, 1, 2))
    g = (y[0, :, 0, 0] - y[0, :, 0, 1]) / 2
    (ds,) = torch.autograd.grad((g * S).sum(), s)
    return g.detach(), ds


def sample_positions(shape, layout, count=8):
    """(c, h, w) of elements at storage offsets around 2**31 and at the end,
    plus a few spread ones: where an int32 offset would wrap."""
    _, C, H, W = shape
    numel = C * H * W
    offsets = {numel - 1, 0, numel // 2}
    for base in (2**31, 2**32):
        if base < numel:
            offsets.update(o for o in (base - 1, base, base + 1, base + C, base + H * W) if o < numel)
    g = torch.Generator().manual_seed(6)
    offsets.update(torch.randint(0, numel, (count,), generator=g).tolist())
    out = []
    for o in sorted(offsets):
        if layout == "channels_last":  # offset = (h * W + w) * C + c
            hw, c = divmod(o, C)
        else:  # offset = c * H * W + h * W + w
            c, hw = divmod(o, H * W)
        out.append((c, hw // W, hw % W))
    return out


def check_big_sample(ctx) -> None:
    """One sample of more than 2**31 elements (SE, ECA): fwd + bwd, then y and
    dx at elements around offset 2**31 and at the end against a float64
    reference computed in chunks."""
    shape = ctx.profile.big_sample_shape
    numel = shape[1] * shape[2] * shape[3]
    dtype = torch.bfloat16
    note = "" if numel > 2**31 else f"; {numel} elements < 2**31 (dry run: the check's code path only)"
    rows = []
    for variant, layout in BIG_SAMPLE_CHECKS:
        if "big-tensor" in ctx.skip:
            ctx.skip_item(STEP, f"big_sample {variant}", "--skip big-tensor")
            continue
        if ctx.device.type == "cuda":
            need = 6 * numel * 2 + 2**31
            free, _ = torch.cuda.mem_get_info(ctx.device)
            if free < need:
                rows.append(_row("big_sample", variant, shape, "bfloat16", layout, status="skipped",
                                 detail=f"needs {need / 2**30:.0f} GiB, {free / 2**30:.0f} GiB free"))
                ctx.skip_item(STEP, f"big_sample {variant}", "GPU memory")
                continue
        x = dy = y = None
        try:
            t0 = time.perf_counter()
            case, module = _eval_module(variant, shape[1], dtype, ctx.device)
            ref64 = case.reference(torch.float64).to(ctx.device).eval()
            gen = torch.Generator(device=ctx.device).manual_seed(7)
            x = make_x(shape, dtype, layout, ctx.device, gen).requires_grad_(True)
            dy = make_x(shape, dtype, layout, ctx.device, gen)
            y = module(x)
            y.backward(dy)
            g, ds = mean_gate_reference(ref64, x.detach(), dy)
            HW = shape[2] * shape[3]
            pos = sample_positions(shape, layout)
            c, h, w = (torch.tensor(v, device=ctx.device) for v in zip(*pos))
            xs, dys = x.detach()[0, c, h, w].double(), dy[0, c, h, w].double()
            worst = 0.0
            for got, want in ((y.detach()[0, c, h, w], xs * g[c]), (x.grad[0, c, h, w], dys * g[c] + ds[c] / HW)):
                err, allowed, _ = tensor_error(got, want, dtype)
                worst = max(worst, err / allowed)
            rows.append(_row("big_sample", variant, shape, "bfloat16", layout, status="pass" if worst <= 1.0 else "FAIL",
                             err_ratio=worst, detail=f"{numel} elements in one sample, {len(pos)} elements around "
                             f"offset 2**31 and the end vs chunked float64, {time.perf_counter() - t0:.1f} s{note}"))
        except Exception as e:
            rows.append(_row("big_sample", variant, shape, "bfloat16", layout, status="error", detail=f"{type(e).__name__}: {e}"[:400]))
        finally:
            x = dy = y = None
            gc.collect()
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()
    if rows:
        ctx.writer.write("correctness", rows)
        ctx.count(STEP, len(rows))


def _kernels_per_call(fn) -> float:
    """CUDA kernels one call launches, from the profiler (NaN where it cannot count)."""
    try:
        from torch.profiler import ProfilerActivity, profile

        fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        kinds = {"cuda", "kernel"}
        n = sum(1 for e in prof.events() if str(getattr(e, "device_type", "")).split(".")[-1].lower() in kinds)
        return float(n) if n else float("nan")
    except Exception:
        return float("nan")


def host_us_per_call(fn, calls: int, device) -> float:
    for _ in range(min(10, calls)):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    t1 = time.perf_counter()  # issue time only: tiny kernels never fill the launch queue
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (t1 - t0) / calls * 1e6


def measure_launch_overhead(ctx) -> None:
    """Host microseconds per call of a tiny SE forward (ours and eager) and of
    one torch.add, with their kernel counts: what a launch costs the host."""
    import triton_attn
    from triton_attn.reference import EagerSEModule

    shape = ctx.profile.overhead_shape
    N, C, H, W = shape
    dtype = torch.bfloat16
    gen = torch.Generator(device=ctx.device).manual_seed(5)
    x = make_x(shape, dtype, "channels_last", ctx.device, gen)
    torch.manual_seed(0)
    ours = triton_attn.SEModule(C).to(device=ctx.device, dtype=dtype).eval()
    eager = EagerSEModule(C, ours.fc1.out_channels).to(device=ctx.device, dtype=dtype).eval()
    eager.load_state_dict(ours.state_dict())
    fns = {
        "triton_attn_se_fwd": lambda: ours(x),
        "eager_se_fwd": lambda: eager(x),
        "torch_add": lambda: torch.add(x, 1),
    }
    rows = []
    calls = ctx.profile.overhead_calls
    with torch.no_grad():
        for what, fn in fns.items():
            try:
                us = host_us_per_call(fn, calls, ctx.device)
                k = _kernels_per_call(fn) if ctx.device.type == "cuda" else float("nan")
                rows.append({"what": what, "N": N, "C": C, "H": H, "W": W, "dtype": "bfloat16", "calls": calls,
                             "us_per_call": us, "kernels_per_call": k, "us_per_kernel": us / k if k == k and k else float("nan"),
                             "status": "ok", "detail": "" if ctx.device.type == "cuda" else "CPU: kernel count needs CUDA"})
            except Exception as e:
                rows.append({"what": what, "status": "error", "detail": f"{type(e).__name__}: {e}"[:400]})
    ctx.writer.write("launch_overhead", rows)
    ctx.count(STEP, len(rows))


SPECIALS = (
    ("cuda_graph", check_cuda_graphs),
    ("stream", check_stream),
    ("big_tensor", check_big_tensor),
    ("big_sample", check_big_sample),
    ("launch_overhead", measure_launch_overhead),
)


def run(ctx, box) -> None:
    profile = ctx.profile
    variants = []
    for name, (_, unavailable) in VARIANTS.items():
        why = unavailable()
        if why:
            ctx.writer.write("correctness", [_row("fwd_bwd", name, (0, 0, 0, 0), "", "", status="skipped", detail=why)])
            ctx.skip_item(STEP, name, why)
        else:
            variants.append(name)
    items = _matrix_items(profile, variants)
    first_combo = (profile.check_dtypes[0], profile.check_layouts[0])
    head = [it for it in items if (it[2], it[3]) == first_combo]
    rest = [it for it in items if (it[2], it[3]) != first_combo]
    # The special checks need a few seconds each on a GPU: the headline matrix
    # may use 55% of the box, the rest of the matrix what remains after them.
    cudnn = torch.backends.cudnn
    with cudnn.flags(enabled=cudnn.enabled, benchmark=False, deterministic=cudnn.deterministic, allow_tf32=False):
        _run_matrix(ctx, box.sub(0.55 * box.seconds), head)
        for name, fn in box.take(SPECIALS, label=lambda s: s[0]):
            try:
                fn(ctx)
            except Exception as e:
                ctx.writer.write("correctness", [_row(name, "all", (0, 0, 0, 0), "", "", status="error", detail=f"{type(e).__name__}: {e}"[:400])])
        _run_matrix(ctx, box, rest)
