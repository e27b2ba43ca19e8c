"""Step 3: L2-aware ordering of the second pass over x.

The scale pass (forward) and the dx pass (backward) re-read x after a first
pass over it; walking their tiles in reverse re-reads first what the first
pass touched last, which may still sit in L2 (an H200 keeps ~50 MB there at
~2.5x DRAM bandwidth). For each shape both orders are timed under
``triton_attn.launch.config.tile_order`` (L2 flushed before every call, as
do_bench does), alternating the order between rounds so drift favours
neither; rows: x bytes, ms in each order, the better one. ``propose_rule``
fits the rule the heuristic (``second_pass_reversed(x_bytes)``) should
encode: a threshold on x bytes, stated as a multiple of L2."""
from __future__ import annotations

import gc
import math

import torch

from ..shapes import Shape

STEP = "l2"
#: A difference below this fraction is noise: the rule then keeps "forward".
NOISE = 0.01


def l2_bytes(device) -> int:
    if device.type != "cuda":
        return 0
    try:
        return int(torch.cuda.get_device_properties(device).L2_cache_size)
    except Exception:
        return 0


def _time_orders(ctx, block, mode, shape, dtype_name, layout, timer, rounds):
    from triton_attn.launch.config import tile_order

    from ..measure import buffer_count, make_inputs
    from ..providers import bench_fn, build, make_reference

    device, dtype = ctx.device, getattr(torch, dtype_name)
    s = Shape(*shape, preset="l2")
    xs, dys = make_inputs(s, dtype, layout, device, buffer_count(s, dtype, device))
    reference = make_reference(block, s.C).to(device=device, dtype=dtype)
    module = build("triton_attn", block, reference, s.C)
    fn, grads = bench_fn(module, mode, xs, dys)
    best = {}
    for r in range(rounds):
        for order in (("forward", "reverse") if r % 2 == 0 else ("reverse", "forward")):
            with tile_order(order):
                ms = timer(fn, grads, ctx.profile.warmup_ms, ctx.profile.rep_ms)[0]
            best[order] = min(best.get(order, math.inf), ms)
    del fn, grads, module, reference, xs, dys
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return best["forward"], best["reverse"]


def run(ctx, box) -> None:
    from ..measure import pass_bytes
    from ..timing import timer_for
    from .bench import quick_wall_clock

    try:
        from triton_attn.launch.config import TILE_ORDERS  # noqa: F401
    except ImportError as e:
        raise RuntimeError(f"triton_attn.launch.config.tile_order is missing: {e}") from e
    profile = ctx.profile
    timer = quick_wall_clock if profile.quick_timer else timer_for(ctx.device.type)
    l2 = l2_bytes(ctx.device)
    dtype, layout = "bfloat16", "channels_last"
    items = [(b, m, s) for b in profile.l2_blocks for m in profile.l2_modes for s in profile.l2_shapes]
    done = ctx.writer.done_keys("l2_order") if ctx.resume else set()
    for block, mode, shape in box.take(items, label=lambda it: f"{it[0]} {it[1]} {'x'.join(map(str, it[2]))}"):
        N, C, H, W = shape
        key = dict(block=block, mode=mode, N=N, C=C, H=H, W=W, dtype=dtype, layout=layout)
        if ctx.writer.key_of("l2_order", **key) in done:
            continue
        x_bytes = pass_bytes(Shape(*shape, preset="l2"), getattr(torch, dtype))
        row = dict(key, x_bytes=x_bytes, l2_bytes=l2)
        try:
            ms_f, ms_r = _time_orders(ctx, block, mode, shape, dtype, layout, timer, profile.l2_rounds)
            row.update(ms_forward=ms_f, ms_reverse=ms_r, better="reverse" if ms_r < ms_f else "forward",
                       reverse_speedup=ms_f / ms_r, status="ok")
        except Exception as e:
            row.update(status="error", detail=f"{type(e).__name__}: {e}"[:400])
        ctx.writer.write("l2_order", [row])
        ctx.count(STEP)


def propose_rule(rows: list[dict], noise: float = NOISE) -> dict:
    """The best rule "reverse iff x_bytes <= t" / "reverse iff x_bytes >= t"
    (or always / never) over the measured rows, by the geometric mean of the
    chosen order's time over the per-shape best. Returns a dict with the rule
    in words, the threshold, and the costs of the rule and of always-forward."""
    from .results import num

    data = []
    for r in rows:
        f, rv, xb = num(r.get("ms_forward")), num(r.get("ms_reverse")), num(r.get("x_bytes"))
        if f > 0 and rv > 0 and xb > 0:
            data.append((xb, f, rv))
    l2 = max((num(r.get("l2_bytes"), 0.0) for r in rows), default=0.0)
    if not data:
        return {"rule": "no measurements", "threshold_bytes": None, "cost": None, "cost_forward": None, "rows": 0}

    def cost(choose):  # geomean of chosen / best
        logs = [math.log((rv if choose(xb) else f) / min(f, rv)) for xb, f, rv in data]
        return math.exp(sum(logs) / len(logs))

    c_fwd = cost(lambda xb: False)
    sizes = sorted({xb for xb, _, _ in data})
    candidates = [("forward always", None, lambda xb: False), ("reverse always", None, lambda xb: True)]
    for t in sizes:
        candidates.append((f"reverse iff x_bytes <= {t:.0f}", ("<=", t), lambda xb, t=t: xb <= t))
        candidates.append((f"reverse iff x_bytes >= {t:.0f}", (">=", t), lambda xb, t=t: xb >= t))
    scored = [(cost(fn), i, name, thr) for i, (name, thr, fn) in enumerate(candidates)]
    best_cost, _, name, thr = min(scored)  # ties: the simpler (earlier) rule
    if c_fwd <= 1 + noise or best_cost > c_fwd / (1 + noise):
        name, thr, best_cost = "forward always (reverse gains less than the noise)", None, c_fwd
    words = name
    if thr is not None and l2 > 0:
        words = f"reverse when x_bytes {thr[0]} {thr[1] / 2**20:.1f} MiB ({thr[1] / l2:.2f} x L2), else forward"
    return {"rule": words, "threshold_bytes": None if thr is None else thr[1], "direction": None if thr is None else thr[0],
            "l2_bytes": l2, "cost": best_cost, "cost_forward": c_fwd, "cost_reverse": cost(lambda xb: True),
            "rows": len(data)}
