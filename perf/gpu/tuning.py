"""Step 5: the autotune report for the ``resnet50`` preset in whatever budget
remains: ``python -m triton_attn.autotune --shapes resnet50`` semantics,
through its ``main()``, one shape at a time (batch 1, then 64) so that a run
cut short keeps every shape it finished. Rows are merged into
``results/autotune_<device>.csv`` (the CLI's report columns plus the run's
environment); a shape starts only if the box still holds the time the last
one took. Tuning goes into a private cache (the choices steer nothing
measured after it)."""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

STEP = "autotune"


def preset_shapes(profile) -> list[tuple]:
    if profile.autotune_shapes:
        return list(profile.autotune_shapes)
    from triton_attn.autotune.presets import preset_shapes as presets

    return presets("resnet50")


@contextlib.contextmanager
def private_cache(directory: Path):
    """Tune into a cache of this step's own: the choices never steer anything
    measured later in the process (or in a test session sharing a cache)."""
    import triton_attn.autotune as tuning

    old = os.environ.get("TRITON_ATTN_CACHE_DIR")
    os.environ["TRITON_ATTN_CACHE_DIR"] = str(directory)
    tuning.reset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TRITON_ATTN_CACHE_DIR", None)
        else:
            os.environ["TRITON_ATTN_CACHE_DIR"] = old
        tuning.reset()


def run(ctx, box) -> None:
    from triton_attn.autotune.__main__ import main as autotune_main

    from .results import read_rows

    profile = ctx.profile
    shapes = preset_shapes(profile)
    last = 0.0
    with tempfile.TemporaryDirectory(prefix="perf_gpu_autotune_") as tmp, private_cache(Path(tmp) / "cache"):
        for shape in box.take(shapes, label=lambda s: "tune " + ",".join(map(str, s)), need=lambda s: last):
            out = Path(tmp) / "report.csv"
            out.unlink(missing_ok=True)
            argv = ["--shapes", ",".join(map(str, shape)), "--blocks", profile.autotune_blocks, "--dtype", "bf16",
                    "--layout", "channels_last", "--out", str(out)]
            t0 = time.perf_counter()
            report = io.StringIO()
            with contextlib.redirect_stdout(report):
                rc = autotune_main(argv)
            last = time.perf_counter() - t0
            if rc != 0 or not out.is_file():
                ctx.skip_item(STEP, f"tune {shape}", f"failed: python -m triton_attn.autotune {' '.join(argv)} exited {rc}")
                continue
            N, C, H, W = shape
            rows = [dict(r, shape=f"{N}x{C}x{H}x{W}") for r in read_rows(out)]
            if rows:
                ctx.writer.write("autotune", rows)
            ctx.count(STEP)
            ctx.log(f"perf gpu: [autotune] {N}x{C}x{H}x{W}: {len(rows)} key(s) in {last:.1f} s")
