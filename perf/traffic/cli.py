"""``python -m perf traffic``: count launches and bytes per block, mode,
provider, dtype, layout and shape (no GPU needed), merge them into
``perf/results/traffic.csv``, print the tables, redraw
``perf/charts/traffic/`` and the README's traffic section.

Default cases: ``perf/traffic/plan.py`` (a few minutes on two cores).
``--shapes`` counts bytes (and launches) at your shapes under the
interpreter, ``--launch-shapes`` launches only (stubbed, any size); given
either, only those run."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import PERF_DIR, README
from ..cli_args import choices as _choices
from ..cli_args import shapes as _shapes
from . import budgets
from .blocks import PROVIDERS
from .plan import BLOCKS, DTYPES, LAYOUTS, SM_COUNT, cases, default_plan
from .store import FILENAME, read
from .tables import budget_table, byte_shapes, configs, launch_table, passes_table, shape_label


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m perf traffic", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="also bytes at the real ResNet-50 stage shapes (batch 1) and "
                    "the weight shape in every dtype and layout (tens of minutes)")
    ap.add_argument("--shapes", type=_shapes, help='bytes and launches at these shapes: "N,C,H,W;N,C,H,W" (interpreter)')
    ap.add_argument("--launch-shapes", type=_shapes, help="launches only at these shapes (stubbed launches, fast at any size)")
    ap.add_argument("--blocks", type=_choices(BLOCKS), default=list(BLOCKS))
    ap.add_argument("--providers", type=_choices(PROVIDERS), default=list(PROVIDERS))
    ap.add_argument("--dtypes", type=_choices(DTYPES), default=list(DTYPES))
    ap.add_argument("--layouts", type=_choices(LAYOUTS), default=list(LAYOUTS))
    ap.add_argument("--sm-count", type=int, default=SM_COUNT, help=f"SMs the launch heuristics plan for (default {SM_COUNT}: H100)")
    ap.add_argument("--out-dir", type=Path, default=PERF_DIR, help="results/ and charts/traffic/ go here (default: perf/)")
    ap.add_argument("--readme", type=Path, default=README)
    ap.add_argument("--no-readme", action="store_true", help="leave the README alone")
    ap.add_argument("--no-charts", action="store_true")
    ap.add_argument("--render-only", action="store_true", help="count nothing: redraw the tables, charts and README from the CSV")
    return ap.parse_args(argv)


def plan_from(args):
    sel = dict(blocks=args.blocks, dtypes=args.dtypes, layouts=args.layouts, providers=args.providers)
    if args.shapes or args.launch_shapes:
        return cases(args.shapes or [], "interpreter", **sel) + cases(args.launch_shapes or [], "stub", **sel)
    return default_plan(full=args.full, **sel)


def csv_path(out_dir: Path) -> Path:
    return Path(out_dir) / "results" / FILENAME


def charts_dir(out_dir: Path) -> Path:
    return Path(out_dir) / "charts" / "traffic"


def print_tables(df, out=sys.stdout) -> None:
    print("Device-independent counts (not speed). launches = Triton launches + torch compute ops per call; "
          "passes = bytes moved ÷ bytes of x.", file=out)
    for dtype, layout in configs(df[df["N"].isin(budgets.LAUNCH_BATCHES)]):
        print(f"\nLaunches per call (count), {dtype}, {layout}, planned for {budgets.SM_COUNT} SMs:", file=out)
        print(launch_table(df, dtype, layout), file=out)
    for shape in byte_shapes(df):
        sel = df[(df["N"] == shape[0]) & (df["C"] == shape[1]) & (df["H"] == shape[2]) & (df["W"] == shape[3])]
        for dtype, layout in configs(sel):
            print(f"\nBytes per call at {shape_label(*shape)}, {dtype}, {layout} (passes = bytes ÷ bytes of x):", file=out)
            print(passes_table(df, shape, dtype, layout), file=out)
    print("\nBudgets of issues 11 and 14 (triton_attn, worst over the rows counted):", file=out)
    print(budget_table(df), file=out)


def render(out_dir: Path, readme: Path | None, charts: bool = True, quiet: bool = False) -> bool:
    """Tables, charts and the README section from the CSV; False without a CSV."""
    from .charts import draw_all
    from .readme_section import render as render_section
    from .readme_section import update_readme

    path = csv_path(out_dir)
    if not path.exists():
        return False
    df = read(path)
    if not quiet:
        print_tables(df)
    if charts:
        written = draw_all(df, charts_dir(out_dir))
        print(f"perf traffic: {len(written)} charts in {charts_dir(out_dir)}")
    if readme is not None:
        body = render_section(df, path, charts_dir(out_dir), readme)
        if update_readme(readme, body):
            print(f"perf traffic: traffic section of {readme} regenerated")
        else:
            print(f"perf traffic: {readme} missing or without traffic markers: left alone")
    return True


def main(argv=None) -> int:
    from .run import run_plan

    args = parse_args(argv)
    failures = 0
    if not args.render_only:
        plan = plan_from(args)
        print(f"perf traffic: {len(plan)} cases -> {csv_path(args.out_dir)} "
              f"(bytes under Triton's interpreter, launches also stubbed; planned for {args.sm_count} SMs)")
        failures = run_plan(plan, csv_path(args.out_dir), sm_count=args.sm_count)
    if not render(args.out_dir, None if args.no_readme else args.readme, charts=not args.no_charts):
        print(f"perf traffic: no counts in {csv_path(args.out_dir)}")
    if failures:
        print("perf traffic: some cases FAILED (see above)")
    return 1 if failures else 0

