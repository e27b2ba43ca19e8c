"""Step 4: end to end.

First (it takes seconds) the batch-1 inference latency of one SE block:
eager (timm's arithmetic) vs triton_attn, each also replayed from a CUDA
graph. Then the training-step time (forward + backward + SGD step) of timm
models, bf16 autocast, channels_last, at the profile's batch and size:
each attention model and its plain twin (``seresnet50``/``resnet50``,
``ecaresnet50d``/``resnet50d``), eager and torch.compile, unconverted,
converted (``triton_attn.convert``) and converted with the fused tail
(``convert(..., fuse_tail=True)``, "not available in this build" until it
exists). The ratios attention model / plain twin are the "SE tax" of the
summary.

torch.compile of a ResNet-50 training step takes about a minute: a compiled
configuration starts only when the box still holds the estimate (the first
compile's measured time scales the later ones), and runs under an item time
limit (what is left of the box), so a slow compile is cut and recorded, not
waited for."""
from __future__ import annotations

import gc
import statistics
import time

import torch

from .blocks import tail_unavailable, timm_unavailable
from .plan import ItemTimeout

STEP = "e2e"
VARIANTS = ("unconverted", "converted", "converted+tail")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def quantiles(times):
    times = sorted(times)
    if len(times) == 1:
        return times[0], times[0], times[0]
    q = statistics.quantiles(times, n=10, method="inclusive")
    return statistics.median(times), q[1], q[7]


# --- batch-1 latency of one SE block ------------------------------------------------


def _graphed(fn, x, device):
    """A CUDA graph of ``fn(x)`` after a warm-up on a side stream; returns replay()."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn(x)
    return graph.replay


def _us_per_call(fn, calls, device):
    for _ in range(5):
        fn()
    _sync(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / calls * 1e3
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e6


def se_latency(ctx) -> None:
    import triton_attn
    from triton_attn.reference import EagerSEModule

    device, dtype = ctx.device, torch.bfloat16
    rows = []
    for shape in ctx.profile.latency_shapes:
        N, C, H, W = shape
        torch.manual_seed(0)
        ours = triton_attn.SEModule(C).to(device=device, dtype=dtype).eval()
        eager = EagerSEModule(C, ours.fc1.out_channels).to(device=device, dtype=dtype).eval()
        eager.load_state_dict(ours.state_dict())
        x = torch.randn(shape, device=device).to(dtype).contiguous(memory_format=torch.channels_last)
        base = dict(block="se", N=N, C=C, H=H, W=W, dtype="bfloat16", layout="channels_last", calls=ctx.profile.latency_calls)
        for provider, module in (("eager", eager), ("triton_attn", ours)):
            for graphed in (False, True):
                name = provider + ("+cuda_graph" if graphed else "")
                row = dict(base, provider=name)
                try:
                    with torch.no_grad():
                        if graphed:
                            if device.type != "cuda":
                                row.update(status="skipped", detail="needs CUDA")
                                rows.append(row)
                                continue
                            fn = _graphed(module, x, device)
                        else:
                            fn = lambda m=module: m(x)  # noqa: E731
                        row.update(us_per_call=_us_per_call(fn, ctx.profile.latency_calls, device), status="ok")
                except Exception as e:
                    row.update(status="error", detail=f"{type(e).__name__}: {e}"[:400])
                rows.append(row)
    ctx.writer.write("latency", rows)
    ctx.count(STEP, len(rows))


# --- training step ---------------------------------------------------------------------


def _build(model_name, variant, profile, device):
    import timm

    import triton_attn

    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False, num_classes=profile.e2e_classes, **profile.e2e_model_kwargs)
    model = model.to(device).to(memory_format=torch.channels_last).train()
    swapped = 0
    if variant == "converted":
        model, report = triton_attn.convert(model, inplace=True)
        swapped = len(report.swapped)
    elif variant == "converted+tail":
        model, report = triton_attn.convert(model, inplace=True, fuse_tail=True)
        swapped = len(report.swapped)
    return model, swapped


def train_step_ms(model_name, compiled, variant, profile, device):
    """(median, p20, p80 ms per step, first step s, modules swapped)."""
    import torch.nn.functional as F

    model, swapped = _build(model_name, variant, profile, device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    run_model = torch.compile(model) if compiled else model
    B, S = profile.e2e_batch, profile.e2e_size
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(B, 3, S, S, device=device, generator=gen).contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, profile.e2e_classes, (B,), device=device, generator=gen)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = F.cross_entropy(run_model(x), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    first_s = None
    if profile.e2e_warmup > 0:
        t0 = time.perf_counter()
        step()  # compiles under torch.compile; cuDNN picks its algorithms
        _sync(device)
        first_s = time.perf_counter() - t0
        for _ in range(profile.e2e_warmup - 1):
            step()
    times = []
    for _ in range(profile.e2e_steps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            step()
            times.append((time.perf_counter() - t) * 1e3)
    ms, p20, p80 = quantiles(times)
    if first_s is None:  # no warm-up (the dry run): the first timed step was the first
        first_s = times[0] / 1e3
    del model, opt, run_model, x, target
    return ms, p20, p80, first_s, swapped


def configs(profile) -> list[tuple[str, bool, str]]:
    """(model, compiled, variant) in priority order: per model pair, eager
    then compiled; the plain twin first (the denominator), then the fused
    variants of the attention model, then its unconverted baseline."""
    out = []
    for attn, plain in profile.e2e_pairs:
        for compiled in (False, True):
            out.append((plain, compiled, "unconverted"))
            for variant in ("converted+tail", "converted", "unconverted"):
                out.append((attn, compiled, variant))
    return out


def _cleanup(device):
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run(ctx, box) -> None:
    profile, device = ctx.profile, ctx.device
    try:
        se_latency(ctx)
    except Exception as e:  # recorded; the training steps still run
        ctx.writer.write("latency", [dict(block="se", provider="all", status="error", detail=f"{type(e).__name__}: {e}"[:400])])
    why_timm = timm_unavailable()
    why_tail = tail_unavailable()
    compile_estimate = profile.compile_estimate_s
    done = ctx.writer.done_keys("e2e") if ctx.resume else set()
    cudnn_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        for model_name, compiled, variant in configs(profile):
            mode = "compile" if compiled else "eager"
            label = f"{model_name} {mode} {variant}"
            base = dict(model=model_name, compile=mode, variant=variant, batch=profile.e2e_batch, size=profile.e2e_size,
                        dtype="bfloat16", layout="channels_last", warmup_steps=profile.e2e_warmup, steps=profile.e2e_steps)
            reason = None
            if why_timm:
                reason = why_timm
            elif variant == "converted+tail" and why_tail:
                reason = why_tail
            elif compiled and "compile" in ctx.skip:
                reason = "--skip compile"
            elif compiled and not profile.e2e_compile:
                reason = "dry run: torch.compile skipped (a CPU inductor build of a model takes minutes)"
            if reason:
                ctx.writer.write("e2e", [dict(base, status="skipped", detail=reason)])
                ctx.skip_item(STEP, label, reason)
                continue
            if ctx.writer.key_of("e2e", **base) in done:
                continue
            need = compile_estimate if compiled else 0.0
            if box.spent(need):
                why = f"budget (torch.compile needs ~{need:.0f} s, {max(0.0, box.left()):.0f} s left)" if compiled else "budget"
                ctx.writer.write("e2e", [dict(base, status="skipped", detail=why)])
                ctx.skip_item(STEP, label, why)
                continue
            row = dict(base)
            try:
                with ctx.alarm.limit(max(1.0, box.left()), ItemTimeout, f"{label}: past the step's box"):
                    ms, p20, p80, first_s, swapped = train_step_ms(model_name, compiled, variant, profile, device)
                row.update(ms=ms, ms_p20=p20, ms_p80=p80, img_per_s=profile.e2e_batch / (ms / 1e3), first_step_s=first_s,
                           swapped=swapped, status="ok")
                if compiled:  # later compiles: this one's time, scaled for a bigger graph
                    compile_estimate = max(10.0, 1.3 * first_s)
            except ItemTimeout as e:
                row.update(status="timeout", detail=str(e))
                ctx.skip_item(STEP, label, "budget (timed out)")
            except Exception as e:
                row.update(status="error", detail=f"{type(e).__name__}: {e}"[:400])
                ctx.log(f"perf gpu: [e2e] {label}: {row['detail']}")
            finally:
                _cleanup(device)
            ctx.writer.write("e2e", [row])
            ctx.count(STEP)
    finally:
        torch.backends.cudnn.benchmark = cudnn_benchmark
