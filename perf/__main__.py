"""python -m perf [run|measure|plot|readme|targets] [options]

run (default)  measure, then redraw the charts and the README section
measure        measure only
plot           redraw the charts (and the README section) from the CSVs, on any machine
readme         regenerate the README's results section only
targets        recompute the project's targets from the GPU CSVs: met / missed
gpu            the whole GPU check in one time-boxed command (python -m perf gpu --help)
traffic        device-independent counts: launches and bytes per block, mode, provider
               (results/traffic.csv, charts/traffic/; python -m perf traffic --help)
host           host µs per call with the GPU launches stubbed (results/host.csv; --help)

Without a GPU, `run` counts instead of timing: the default cases of `traffic`
(a few minutes), its charts and the README's traffic section, then redraws
the charts from the GPU results already there. `measure --cpu` still times
the CPU paths with a wall clock (results/cpu.csv, never charted)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from . import BLOCKS, DTYPES, LAYOUTS, MODES, PERF_DIR, PROVIDERS, README
from .cli_args import choices as _choices


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m perf", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", nargs="?", default="run", choices=["run", "measure", "plot", "readme", "targets"])
    ap.add_argument("--quick", action="store_true", help="a small subset (GPU: ResNet-50 at batch 32 and two mobile shapes, bf16, channels_last)")
    ap.add_argument("--blocks", type=_choices(BLOCKS), default=list(BLOCKS), help="comma-separated: " + ",".join(BLOCKS))
    ap.add_argument("--modes", type=_choices(MODES), default=list(MODES), help="comma-separated: " + ",".join(MODES))
    ap.add_argument("--providers", type=_choices(PROVIDERS), default=list(PROVIDERS), help="comma-separated: " + ",".join(PROVIDERS))
    ap.add_argument("--dtypes", type=_choices(DTYPES), default=None, help="comma-separated (default GPU: all, or bfloat16 with --quick; CPU: float32)")
    ap.add_argument("--layouts", type=_choices(LAYOUTS), default=None, help="comma-separated (default: both, or channels_last with --quick)")
    ap.add_argument("--out-dir", type=Path, default=PERF_DIR, help="results/ and charts/ go here (default: perf/)")
    ap.add_argument("--readme", type=Path, default=README, help="README whose perf section is regenerated")
    ap.add_argument("--no-readme", action="store_true", help="leave the README alone")
    ap.add_argument("--resume", action="store_true", help="skip rows this commit already measured on this device")
    ap.add_argument("--warmup-ms", type=int, default=10, help="warm-up time per measurement (do_bench, or the CPU wall clock)")
    ap.add_argument("--rep-ms", type=int, default=50, help="timing window per measurement (do_bench, or the CPU wall clock)")
    ap.add_argument("--cpu", action="store_true", help="measure the CPU paths even where a GPU is present")
    return ap.parse_args(argv)


def _device(args) -> torch.device:
    import triton_attn

    if torch.cuda.is_available() and not args.cpu:
        if triton_attn.INTERPRETED:
            sys.exit("perf: TRITON_INTERPRET=1 is set: the CUDA timings would not be Triton's. Unset it.")
        return torch.device("cuda")
    if not args.cpu:
        print("perf: no GPU present: timing the CPU paths (one thread) on tiny shapes with a wall clock. These numbers")
        print("      say nothing about the kernels' speed; they go to their own CSV and are never charted.")
    if triton_attn.INTERPRETED:
        print("perf: TRITON_INTERPRET=1: triton_attn runs Triton's interpreter on CPU (device 'cpu-interpreter').")
    else:
        print("perf: triton_attn on CPU runs its pure-PyTorch fallback (TRITON_INTERPRET=1 runs the interpreter).")
    return torch.device("cpu")


def measure(args) -> bool:
    from .measure import Plan, run
    from .shapes import shapes_for

    device = _device(args)
    gpu = device.type == "cuda"
    dtypes = args.dtypes or ((["bfloat16"] if args.quick else list(DTYPES)) if gpu else ["float32"])
    layouts = args.layouts or (["channels_last"] if args.quick else list(LAYOUTS))
    plan = Plan(
        device=device, blocks=args.blocks, modes=args.modes, providers=args.providers, dtypes=dtypes,
        layouts=layouts, shapes=shapes_for(device.type, args.quick), warmup_ms=args.warmup_ms,
        rep_ms=args.rep_ms, resume=args.resume,
    )
    threads = torch.get_num_threads()
    if not gpu:
        # One thread: on a shared or small machine, intra-op threads waiting on a
        # busy core turn microseconds into milliseconds (p80 x100 measured on 2 cores).
        torch.set_num_threads(1)
    try:
        _, rows = run(plan, args.out_dir / "results")
    finally:
        torch.set_num_threads(threads)
    if not gpu and rows:
        import pandas as pd

        df = pd.DataFrame(rows)
        print("perf: median wall-clock time per call, in ms (CPU paths, one thread; lower is better):")
        print(df.pivot_table(index=["block", "mode", "dtype", "layout", "N", "C", "H", "W"], columns="provider", values="ms").round(3).to_string())
    for failure in plan.failures:
        print(f"perf: FAILED {failure}")
    return not plan.failures


def traffic(args) -> bool:
    """The CPU main job: the traffic accounting's default cases, charts and README section."""
    from .traffic.cli import main as traffic_main

    print("perf: no GPU present: counting launches and bytes instead (device-independent counts, not speed)")
    from .traffic.plan import BLOCKS as COUNTED

    # the default blocks also count the fused tails (timed on a GPU as se_tail/eca_tail)
    blocks = list(COUNTED) if list(args.blocks) == list(BLOCKS) else args.blocks
    argv = ["--blocks", ",".join(blocks), "--out-dir", str(args.out_dir), "--readme", str(args.readme)]
    return traffic_main(argv + (["--no-readme"] if args.no_readme else [])) == 0


def plot(args, with_traffic: bool = True) -> None:
    from .plot import plot_all

    written = plot_all(args.out_dir / "results", args.out_dir / "charts")
    if written:
        print(f"perf: {len(written)} charts in {args.out_dir / 'charts'}")
    else:
        print(f"perf: no GPU results in {args.out_dir / 'results'}: no charts to draw")
    if with_traffic:  # the counts' charts and section, from the committed CSV (counts nothing)
        from .traffic.cli import render

        render(args.out_dir, None if args.no_readme else args.readme, quiet=True)
    readme(args)


def readme(args) -> None:
    from .readme_table import render, update_readme

    if args.no_readme:
        return
    body = render(args.out_dir / "results", args.out_dir / "charts", args.readme)
    if update_readme(args.readme, body):
        print(f"perf: results section of {args.readme} regenerated")
    else:
        print(f"perf: {args.readme} missing or without perf markers: left alone")


def targets(args) -> None:
    from .store import gpu_results
    from .targets import report_lines

    results = gpu_results(args.out_dir / "results")
    if not results:
        print(f"perf: no GPU results in {args.out_dir / 'results'}: targets cannot be checked")
    for device, df in results.items():
        print(f"{device} (bfloat16, channels_last, geomean over the presets):")
        for line in report_lines(df):
            print(f"  {line}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["gpu"]:  # its own options; imports no pandas (the GPU image may lack it)
        from .gpu.cli import main as gpu_main

        return gpu_main(argv[1:], allow_reexec=__name__ == "__main__")
    if argv[:1] == ["traffic"]:  # its own options
        from .traffic.cli import main as traffic_main

        return traffic_main(argv[1:])
    if argv[:1] == ["host"]:
        from .host.cli import main as host_main

        return host_main(argv[1:])
    args = parse_args(argv)
    ok = True
    counting = args.command == "run" and not args.cpu and not torch.cuda.is_available()
    if counting:
        ok = traffic(args)
    elif args.command in ("run", "measure"):
        ok = measure(args)
    if args.command in ("run", "plot"):
        plot(args, with_traffic=not counting)
    if args.command == "readme":
        readme(args)
    if args.command in ("run", "targets"):
        targets(args)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
