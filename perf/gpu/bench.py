"""Step 2: the block benchmark, ``perf.measure.run`` over the presets (eager /
compile / triton_attn / copy, fwd and fwd+bwd), bf16 channels_last first,
then NCHW, then fp16 and fp32 (``profiles.BENCH_GROUPS``). Within a group the
rows the targets are stated on come first (``profiles.BENCH_PASSES``).

Rows go to the harness's own per-device CSV (``results/<device>.csv``),
merged after every shape group, so the charts, the README table and
``python -m perf targets`` read them as any other run's. ``--resume`` skips
the rows this commit already measured: a second invocation continues where
the first stopped."""
from __future__ import annotations

import time

from .blocks import BENCH_BLOCKS, BENCH_TAIL_BLOCKS, bench_block_unavailable
from .profiles import BENCH_PASSES

STEP = "bench"


def quick_wall_clock(fn, grad_to_none, warmup_ms, rep_ms):
    """The dry run's timer: three timed calls, no warm-up (the CPU wall clock
    takes at least eight calls; interpreted kernels cost ~15 ms a launch)."""
    times = []
    for _ in range(3):
        for t in grad_to_none:
            t.grad = None
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return times[1], times[0], times[2]


def providers_for(ctx) -> list[str]:
    from .. import PROVIDERS

    providers = list(PROVIDERS)
    reason = None
    if "compile" in ctx.skip:
        reason = "--skip compile"
    elif not ctx.profile.bench_compile:
        reason = "dry run: torch.compile of every block on CPU would take minutes"
    if reason:
        providers.remove("compile")
        ctx.skip_item(STEP, "provider compile", reason)
    return providers


def run(ctx, box) -> None:
    from ..measure import Plan
    from ..measure import run as measure_run

    profile = ctx.profile
    blocks = []
    for block in (*BENCH_BLOCKS, *BENCH_TAIL_BLOCKS):
        why = bench_block_unavailable(block)
        if why:
            ctx.skip_item(STEP, f"block {block}", why)
        else:
            blocks.append(block)
    providers = providers_for(ctx)
    timer = quick_wall_clock if profile.quick_timer else None
    first = [s for s in profile.bench_shapes if s in profile.bench_first_shapes]
    shape_sets = {"first": first, "rest": [s for s in profile.bench_shapes if s not in first],
                  "all": list(profile.bench_shapes)}
    passes = []
    for pass_blocks, modes, which in BENCH_PASSES:
        passes.append((tuple(b for b in pass_blocks if b in blocks), tuple(m for m in modes if m in profile.bench_modes),
                       shape_sets[which]))
    tails = [b for b in blocks if b in BENCH_TAIL_BLOCKS]
    if tails:
        passes.append((tuple(tails), tuple(profile.bench_modes), shape_sets["all"]))
    for dtype, layout in profile.bench_groups:
        for pass_blocks, modes, shapes in passes:
            if not pass_blocks or not modes or not shapes:
                continue
            label = f"{dtype} {layout} {','.join(pass_blocks)} {','.join(modes)} ({len(shapes)} shapes)"
            if box.spent():
                ctx.skip_item(STEP, label, "budget")
                continue
            plan = Plan(
                device=ctx.device, blocks=list(pass_blocks), modes=list(modes), providers=providers, dtypes=[dtype],
                layouts=[layout], shapes=list(shapes), warmup_ms=profile.warmup_ms,
                rep_ms=profile.rep_ms, resume=ctx.resume, timer=timer,
                # a case (one shape, every provider, compiles included) runs to its end:
                # stop starting new ones a little before the box closes
                deadline=box.deadline - min(8.0, 0.05 * box.seconds),
            )
            _, rows = measure_run(plan, ctx.results_dir)
            ctx.count(STEP, len(rows))
            for item in plan.skipped:
                ctx.skip_item(STEP, item, "budget")
            for failure in plan.failures:
                ctx.skip_item(STEP, failure, "failed")
