"""``python -m triton_attn.autotune``: tune (or read from the cache) every
kernel of the chosen blocks for the given shapes, and print the report.

    python -m triton_attn.autotune --shapes resnet50 --blocks se,eca --out perf/results/autotune.csv
    python -m triton_attn.autotune --shapes "2,64,8,8" --blocks se,eca --dtype fp32   # CPU, interpreter

Without a GPU the kernels run under Triton's interpreter: the CLI restarts
itself with TRITON_INTERPRET=1 when that was not set, refuses the presets
(GPU-sized: hours of interpreted Python), and its timings only rank configs
by interpreter work, so they are filed under the device name
``triton-interpreter-cpu`` and never used on a GPU.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from ..runtime import INTERPRETED
from ..tuning import cache, tuner
from . import report
from .blocks import BLOCKS, available, exercise
from .presets import STAGES, parse_shapes

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
          "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m triton_attn.autotune", description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="resnet50",
                   help=f"a preset ({', '.join(STAGES)}; batch 1 and 64) or 'N,C,H,W;N,C,H,W' (default: resnet50)")
    p.add_argument("--blocks", default=",".join(BLOCKS), help=f"comma-separated, from {', '.join(BLOCKS)} (default: all)")
    p.add_argument("--dtype", default="bf16", choices=sorted(DTYPES), help="default: bf16")
    p.add_argument("--layout", default="channels_last", choices=("channels_last", "nchw"), help="default: channels_last")
    p.add_argument("--out", default=None, help="also write the report as CSV here")
    return p


def _reexec_interpreted(argv: list[str]) -> None:
    # The kernels were decorated when triton_attn was imported, so the
    # interpreter can only be switched on in a fresh process.
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("error: TRITON_INTERPRET=1 is set but the kernels are not interpreted; cannot tune")
    print("note: no GPU; re-running under Triton's interpreter (TRITON_INTERPRET=1)", file=sys.stderr)
    sys.stderr.flush()
    env = dict(os.environ, TRITON_INTERPRET="1")
    os.execve(sys.executable, [sys.executable, "-m", "triton_attn.autotune", *argv], env)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    on_gpu = torch.cuda.is_available() and not INTERPRETED
    if not on_gpu and not INTERPRETED:
        _reexec_interpreted(argv)
    device = "cuda" if on_gpu else "cpu"

    if not on_gpu and args.shapes in STAGES:
        print(
            f"error: preset {args.shapes!r} holds GPU-sized shapes (up to 64x2048x7x7, 64x256x56x56); under "
            "Triton's interpreter on CPU tuning them would take hours. Run the presets on a GPU, or pass "
            "small shapes here, e.g. --shapes '2,64,8,8' (smaller than 32 channels or 64 pixels leaves a single "
            "candidate per kernel: nothing to choose).",
            file=sys.stderr,
        )
        return 2
    try:
        shapes = parse_shapes(args.shapes)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    blocks = [b.strip() for b in args.blocks.split(",") if b.strip()]
    unknown = [b for b in blocks if b not in BLOCKS]
    if unknown or not blocks:
        print(f"error: unknown block(s) {unknown or args.blocks!r}; choose from {', '.join(BLOCKS)}", file=sys.stderr)
        return 2
    for b in [b for b in blocks if not available(b)]:
        print(f"note: block {b!r} has no fused module in this build; skipped", file=sys.stderr)
        blocks.remove(b)

    jobs = [(shape, b) for shape in shapes for b in blocks]
    start = time.perf_counter()
    # One bar (the jobs), drawn only on a terminal; the per-kernel bars of
    # the tuner stay off so nothing is drawn twice, and warnings (a corrupt
    # cache) print above the bar, not through it.
    with tuner.tuning(True, progress=False), tuner.recording() as records, tuner.bar_safe_output():
        bar = tuner.progress(jobs, desc="tuning", unit="block", disable=None)
        for shape, b in bar:
            bar.set_postfix_str(f"{b} {'x'.join(map(str, shape))}")
            exercise(b, shape, DTYPES[args.dtype], args.layout == "channels_last", device)

    df = report.frame(records)
    tuned = int((df["source"] == "tuned").sum()) if len(df) else 0
    where = "wall-clock ms under Triton's interpreter (CPU)" if device == "cpu" else "ms per launch on the GPU"
    print(
        f"{len(df)} kernel keys ({tuned} tuned, {len(df) - tuned} from the cache) for {len(jobs)} block x shape "
        f"jobs in {time.perf_counter() - start:.1f} s; times in {where}",
        file=sys.stderr,
    )
    print(report.markdown(df))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        df.to_csv(args.out, index=False)
    print(f"cache: {cache.cache_path()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
