"""``python -m perf host``: µs of CPU time per call with the GPU launches
stubbed, for triton_attn and timm eager on the same tensor, forward and
forward+backward; prints a table and writes ``perf/results/host.csv``.

Runs in a subprocess with ``TRITON_INTERPRET`` unset (stubbed launches drive
the CUDA code path on CPU tensors) and ``TRITON_ATTN_SM_COUNT=132``, so the
host plans the grids an H100 would get. ``--profile`` adds where
triton_attn's host time goes (cProfile, grouped by file), also written to
``perf/results/host_profile.txt``."""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from .. import PERF_DIR
from ..cli_args import choices as _choices
from ..cli_args import shapes as _shapes
from ..traffic.plan import BLOCKS, DTYPES, LAYOUTS
from ..traffic.run import worker_env
from ..traffic.store import upsert_csv
from .bench import MODES, PROVIDERS

DEFAULT_SHAPES = [(1, 64, 8, 8), (8, 512, 28, 28)]  # the tiny shape; ResNet-50 stage 2 at batch 8
KEY = ("block", "mode", "provider", "N", "C", "H", "W", "dtype", "layout")
COLUMNS = (*KEY, "us", "us_wall", "launches", "calls", "repeats", "cpu", "torch", "triton", "commit")
FILENAME = "host.csv"
PROFILE_FILENAME = "host_profile.txt"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m perf host", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", type=_shapes, default=DEFAULT_SHAPES, help='"N,C,H,W;N,C,H,W" (default 1,64,8,8;8,512,28,28)')
    ap.add_argument("--blocks", type=_choices(BLOCKS), default=list(BLOCKS))
    ap.add_argument("--modes", type=_choices(MODES), default=list(MODES))
    ap.add_argument("--providers", type=_choices(PROVIDERS), default=list(PROVIDERS))
    ap.add_argument("--dtypes", type=_choices(DTYPES), default=["float32"])
    ap.add_argument("--layouts", type=_choices(LAYOUTS), default=["channels_last"])
    ap.add_argument("--repeats", type=int, default=7, help="repeats per case (median reported), each ≥ 20 ms of calls")
    ap.add_argument("--profile", action="store_true", help="also profile triton_attn at the first shape")
    ap.add_argument("--out-dir", type=Path, default=PERF_DIR, help="results/ goes here (default: perf/)")
    return ap.parse_args(argv)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table(rows: list[dict]) -> str:
    """One line per block, mode, shape: µs per call of each provider and the launches."""
    head = ("| block | mode | shape | dtype, layout | triton_attn (µs/call, launches stubbed) | eager (µs/call, CPU math incl.) "
            "| launches (triton_attn / eager) | triton_attn ≤ eager |")
    lines = [head, "|---|---|---|---|---:|---:|---:|---|"]
    by = {}
    for r in rows:
        by.setdefault((r["block"], r["mode"], (r["N"], r["C"], r["H"], r["W"]), r["dtype"], r["layout"]), {})[r["provider"]] = r
    for (block, mode, shape, dtype, layout), p in by.items():
        def us(name):
            return f"{p[name]['us']:.0f}" if name in p else "—"

        def n(name):
            return str(p[name]["launches"]) if name in p else "—"

        ok = "—"
        if "triton_attn" in p and "eager" in p:
            ok = "yes" if p["triton_attn"]["us"] <= p["eager"]["us"] else "**no**"
        lines.append(f"| {block.upper()} | {mode} | {'×'.join(map(str, shape))} | {dtype}, {layout} | {us('triton_attn')} "
                     f"| {us('eager')} | {n('triton_attn')} / {n('eager')} | {ok} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    cases = [
        {"block": b, "mode": m, "provider": p, "shape": list(s), "dtype": d, "layout": lay}
        for s, b, d, lay, m, p in itertools.product(args.shapes, args.blocks, args.dtypes, args.layouts, args.modes, args.providers)
    ]
    profile = [
        {"block": b, "mode": m, "shape": list(args.shapes[0]), "dtype": args.dtypes[0], "layout": args.layouts[0]}
        for b in args.blocks for m in args.modes
    ] if args.profile else []
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"cases": cases, "repeats": args.repeats, "profile": profile}, f)
        plan = f.name
    print(f"perf host: {len(cases)} cases, CPU time per call with the GPU launches stubbed (one thread, median of "
          f"{args.repeats} repeats)", flush=True)
    try:
        done = subprocess.run([sys.executable, "-m", "perf.host.worker", plan], env=worker_env("stub"),
                              stdout=subprocess.PIPE, text=True)
    finally:
        os.unlink(plan)
    rows, reports = [], []
    for line in done.stdout.splitlines():
        if line.startswith("ROW "):
            rows.append({**json.loads(line[4:]), "cpu": cpu_name()})
        elif line.startswith("PROFILE "):
            reports.append(json.loads(line[8:]))
        else:
            print(line)
    if rows:
        path = Path(args.out_dir) / "results" / FILENAME
        upsert_csv(path, rows, KEY, COLUMNS)
        print(table(rows))
        print(f"perf host: {len(rows)} rows -> {path} (machine-dependent: not committed)")
    if reports:
        text = "\n\n".join(reports)
        path = Path(args.out_dir) / "results" / PROFILE_FILENAME
        path.write_text(text + "\n")
        print("\nWhere triton_attn's host time goes (self time by file, cProfile):\n" + text)
        print(f"perf host: profile -> {path}")
    return done.returncode
