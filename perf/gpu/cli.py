"""``python -m perf gpu``: the whole GPU check as one command that stays in
its budget and cannot stop on a failure.

    PYTHONPATH=. python -m perf gpu --budget-s 540        # on the GPU, from a plain checkout
    python -m perf gpu --dry-run                           # anywhere: tiny shapes, CPU, seconds

Steps, in order (each time-boxed, each failure recorded and the run
continued, results on disk after every step):

1. correctness   every block variant vs float64 on CUDA (both layouts,
                 bf16/fp16/fp32, fwd + all gradients), CUDA graphs, a side
                 stream, a >2**31-element tensor, the per-launch host cost
2. bench         the block benchmark over the presets (perf.measure)
3. l2            the second pass's tile order, forward vs reverse
4. e2e           training step of seresnet50/resnet50 (ecaresnet50d/resnet50d),
                 eager and compiled, unconverted and converted: the SE tax;
                 batch-1 latency of one SE block
5. autotune      the resnet50 preset's autotune report, in what is left

The dry run runs the same plan on tiny shapes on CPU, writing under a
temporary directory (or ``--out-dir``), never into perf/results. Without
TRITON_INTERPRET=1 it re-runs itself under Triton's interpreter, so the
real kernels' launch code runs; called in-process without the interpreter
it uses triton_attn's pure-PyTorch CPU path instead (and says so)."""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .. import PERF_DIR, README, REPO_ROOT
from ..cli_args import choices as _list
from .plan import Context, Step, StepTimeout, Watchdog, run_plan
from .profiles import DRY_RUN, GPU, WEIGHTS

STEPS = [
    Step("correctness", "Correctness on CUDA", WEIGHTS["correctness"], 0, "perf.gpu.correctness"),
    Step("bench", "Block benchmark", WEIGHTS["bench"], 0, "perf.gpu.bench"),
    Step("l2", "L2-aware tile order", WEIGHTS["l2"], 0, "perf.gpu.l2_order"),
    Step("e2e", "End to end: SE tax, batch-1 latency", WEIGHTS["e2e"], 0, "perf.gpu.e2e"),
    Step("autotune", "Autotune report (resnet50 preset)", WEIGHTS["autotune"], 0, "perf.gpu.tuning"),
]
STEP_NAMES = [s.name for s in STEPS]
FEATURES = ("compile", "big-tensor")  # --skip values beyond the step names


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m perf gpu", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-s", type=float, default=540.0, help="wall-clock budget of the whole run, final charts and summary included (default 540)")
    ap.add_argument("--dry-run", action="store_true", help="the same plan on tiny shapes on CPU (seconds), into a temporary directory")
    ap.add_argument("--out-dir", type=Path, default=None, help="results/ and charts/ go here (default perf/; dry run: a new temporary directory)")
    ap.add_argument("--readme", type=Path, default=None, help="README whose results section is regenerated (default the repository's; dry run: a copy in --out-dir)")
    ap.add_argument("--no-readme", action="store_true", help="leave the README alone")
    ap.add_argument("--steps", type=_list(STEP_NAMES), default=list(STEP_NAMES), help="comma-separated subset of " + ",".join(STEP_NAMES))
    ap.add_argument("--skip", type=_list([*STEP_NAMES, *FEATURES]), default=[],
                    help="comma-separated steps or features to skip: " + ",".join([*STEP_NAMES, *FEATURES]))
    ap.add_argument("--resume", action="store_true", help="skip what this commit already measured on this device (a second session continues)")
    return ap.parse_args(argv)


def _reexec_interpreted(argv) -> None:
    """The kernels are decorated when triton_attn is imported: the interpreter
    can only be switched on in a fresh process."""
    print("perf gpu: dry run: re-running under Triton's interpreter (TRITON_INTERPRET=1)", file=sys.stderr)
    sys.stderr.flush()
    env = dict(os.environ, TRITON_INTERPRET="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    os.execve(sys.executable, [sys.executable, "-m", "perf", "gpu", *argv], env)


def _versions() -> dict:
    import torch
    import triton

    try:
        import timm

        timm_version = timm.__version__
    except Exception as e:
        timm_version = f"missing ({type(e).__name__})"
    return {"torch": torch.__version__, "triton": triton.__version__, "timm": timm_version,
            "python": platform.python_version()}


def _gpu_detail(device) -> str:
    import torch

    if device.type != "cuda":
        return "CPU"
    p = torch.cuda.get_device_properties(device)
    l2 = getattr(p, "L2_cache_size", 0)
    return (f"{p.name}: {p.multi_processor_count} SMs, {p.total_memory / 2**30:.0f} GiB, L2 {l2 / 2**20:.0f} MiB, "
            f"sm_{p.major}{p.minor}, CUDA {torch.version.cuda}")


def _autotune_off(meta) -> bool:
    """Steps 1-4 measure the heuristics: tuning on the real launches
    (TRITON_ATTN_AUTOTUNE=1) is switched off for the run."""
    try:
        import triton_attn.autotune as tuning

        if tuning.enabled():
            tuning.set_enabled(False)
            meta["notes"].append("TRITON_ATTN_AUTOTUNE=1 was set: tuning on launches off for this run (step 5 tunes)")
            return True
    except Exception:
        pass
    return False


def main(argv=None, allow_reexec: bool = False) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    t_start = time.monotonic()
    if args.dry_run and os.environ.get("TRITON_INTERPRET") != "1" and allow_reexec:
        _reexec_interpreted(argv)

    # Every run measures with the heuristics and tunes from scratch: a tuning
    # cache left by an earlier run must not steer it (the user's choice wins).
    os.environ.setdefault("TRITON_ATTN_CACHE_DIR", tempfile.mkdtemp(prefix="perf_gpu_autotune_cache_"))

    import torch

    import triton_attn

    from .results import ResultsWriter, now_utc

    from ..provenance import device_label, git_commit

    if args.dry_run:
        device = torch.device("cpu")
        profile = DRY_RUN
    else:
        if not torch.cuda.is_available():
            print("perf gpu: no CUDA device here. `python -m perf gpu --dry-run` runs the same plan on CPU.", file=sys.stderr)
            return 2
        if triton_attn.INTERPRETED:
            print("perf gpu: TRITON_INTERPRET=1 is set: the kernels would not run on the GPU. Unset it.", file=sys.stderr)
            return 2
        device = torch.device("cuda")
        profile = GPU

    if args.out_dir is None:
        out_dir = Path(tempfile.mkdtemp(prefix="perf_gpu_dry_run_")) if args.dry_run else PERF_DIR
    else:
        out_dir = args.out_dir
    out_dir = out_dir.resolve()
    if args.dry_run and out_dir == PERF_DIR.resolve():
        print("perf gpu: a dry run never writes into perf/results: pass another --out-dir", file=sys.stderr)
        return 2
    results_dir, charts_dir = out_dir / "results", out_dir / "charts"
    readme = None
    if not args.no_readme:
        if args.dry_run:
            readme = out_dir / "README.md"
            if README.is_file() and not readme.exists():
                out_dir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(README, readme)
        else:
            readme = args.readme or README

    label = device_label(device)
    env = {"device": label, "commit": git_commit(), **_versions()}
    writer = ResultsWriter(results_dir, env)
    log_path = results_dir / f"gpu_log_{writer.slug}.txt"
    results_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_path.open("w")

    def log(msg: str) -> None:
        print(msg, flush=True)
        log_file.write(msg + "\n")
        log_file.flush()

    meta = {
        "command": "python -m perf gpu " + " ".join(argv), "budget_s": args.budget_s, "started": now_utc(),
        "dry_run": args.dry_run, "finished": False, "elapsed_s": 0.0, "commit": env["commit"],
        "gpu_detail": _gpu_detail(device), "cache_dir": os.environ["TRITON_ATTN_CACHE_DIR"],
        "e2e_batch": profile.e2e_batch, "e2e_size": profile.e2e_size, "e2e_pairs": profile.e2e_pairs,
        **{k: env[k] for k in ("torch", "triton", "timm", "python")}, "notes": [],
    }
    if args.dry_run:
        how = ("Triton's interpreter" if triton_attn.INTERPRETED else
               "triton_attn's pure-PyTorch CPU path (TRITON_INTERPRET=1 was not set)")
        meta["gpu_detail"] = f"CPU, kernels via {how}"
    autotune_was_on = _autotune_off(meta)
    steps = [Step(s.name, s.title, s.weight, profile.min_box_s[s.name], s.module, s.func) for s in STEPS]
    ctx = Context(profile=profile, device=device, writer=writer, results_dir=results_dir, charts_dir=charts_dir,
                  dry_run=args.dry_run, skip=set(args.skip), resume=args.resume, log=log, meta=meta)

    from . import summary

    def write_summary() -> Path:
        meta["elapsed_s"] = time.monotonic() - t_start
        return summary.write(results_dir, label, writer.slug, meta)

    def on_watchdog() -> None:
        for r in ctx.records:
            if r.status == "running":
                r.status, r.reason = "timeout", "watchdog: the process hung past the budget and was ended"
        meta["notes"].append("ended by the watchdog past the budget")
        ctx.save_steps()
        write_summary()
        log(f"perf gpu: WATCHDOG: past the budget of {args.budget_s:.0f} s; results so far in {results_dir}")

    log(f"perf gpu: {'DRY RUN, ' if args.dry_run else ''}{label} ({meta['gpu_detail']}); budget {args.budget_s:.0f} s; "
        f"results -> {results_dir}")
    margin = min(45.0, max(2.0, 0.05 * args.budget_s))
    spent = time.monotonic() - t_start
    threads = torch.get_num_threads()
    if device.type == "cpu":
        # One thread, as `python -m perf` on CPU: on a shared or small machine,
        # intra-op threads waiting on busy cores turn 50 ms steps into seconds.
        torch.set_num_threads(1)
    try:
        with ctx.alarm, Watchdog(args.budget_s - spent + margin, on_watchdog):
            records = run_plan(ctx, steps, args.budget_s - spent, profile.reserve_s, selected=args.steps,
                               after_step=lambda c: write_summary())
            files = _finalize(ctx, args, readme, label, t_start, write_summary)
    finally:
        torch.set_num_threads(threads)
        if autotune_was_on:
            import triton_attn.autotune

            triton_attn.autotune.set_enabled(None)
    meta["finished"] = True
    summary_path = write_summary()
    log_file.close()

    print()
    print(f"perf gpu: done in {time.monotonic() - t_start:.1f} s. Steps:")
    for r in records:
        print(f"  {r.step:12s} {r.shown}  ({r.duration_s:.1f} s of a {r.box_s:.0f} s box)")
    print("perf gpu: wrote")
    for f in [summary_path, *files, log_path]:
        print(f"  {f}")
    correctness = writer.read("correctness")
    bad = [r for r in correctness if r.get("status") in ("FAIL", "error") and r.get("timestamp", "") >= meta["started"]]
    failed = [r for r in records if r.status in ("failed", "timeout", "interrupted")]
    return 1 if bad or failed else 0


def _finalize(ctx, args, readme, label, t_start, write_summary) -> list[Path]:
    """Charts, summary, README, within what is left of the budget; a failure
    here is a note in the summary."""
    files = sorted({p for p in ctx.writer.written.values()})
    left = args.budget_s - (time.monotonic() - t_start)
    try:
        with ctx.alarm.limit(max(left, ctx.profile.reserve_s), StepTimeout, "final charts/README past the budget"):
            files += _charts(ctx, label)
            if readme is not None:
                files += _readme(ctx, readme)
    except StepTimeout as e:
        ctx.meta["notes"].append(str(e))
    try:
        from ..store import csv_path

        bench = csv_path(ctx.results_dir, label)
        if bench.is_file():
            files.append(bench)
    except Exception:
        pass
    ctx.meta["files"] = [str(f) for f in files]
    return files


def _charts(ctx, label) -> list[Path]:
    written = []
    try:
        from ..plot import plot_all

        written += plot_all(ctx.results_dir, ctx.charts_dir)
    except Exception as e:
        ctx.meta["notes"].append(f"block charts not drawn: {type(e).__name__}: {e}")
        ctx.log(f"perf gpu: block charts not drawn: {type(e).__name__}: {e}")
    try:
        from .charts import draw

        written += draw(ctx.results_dir, ctx.charts_dir, label, ctx.writer.slug)
    except Exception as e:
        ctx.meta["notes"].append(f"GPU charts not drawn: {type(e).__name__}: {e}")
        ctx.log(f"perf gpu: GPU charts not drawn: {type(e).__name__}: {e}")
    return written


def _readme(ctx, readme: Path) -> list[Path]:
    try:
        from ..readme_table import render, update_readme

        body = render(ctx.results_dir, ctx.charts_dir, readme)
        if update_readme(readme, body):
            return [readme]
        ctx.meta["notes"].append(f"{readme} missing or without perf markers: left alone")
    except Exception as e:
        ctx.meta["notes"].append(f"README not regenerated: {type(e).__name__}: {e}")
        ctx.log(f"perf gpu: README not regenerated: {type(e).__name__}: {e}")
    return []
