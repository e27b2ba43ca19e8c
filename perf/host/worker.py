"""Runs the host benchmark in this process (interpreter off) and prints one
JSON line per row, then the profile report if asked:
``python -m perf.host.worker PLAN.json``. ``perf.host.cli`` starts it."""
from __future__ import annotations

import json
import sys

import torch

import triton_attn

from ..provenance import environment
from .bench import launches, time_case


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    plan = json.loads(open(argv[0]).read())
    if triton_attn.INTERPRETED:
        print("perf host: TRITON_INTERPRET=1: stubbed launches need the interpreter off", file=sys.stderr)
        return 2
    torch.set_num_threads(1)  # host time of one thread, as a GPU training loop's
    env = environment()
    failures = 0
    for case in plan["cases"]:
        dtype = getattr(torch, case["dtype"])
        shape = tuple(case["shape"])
        try:
            t = time_case(case["block"], case["provider"], case["mode"], shape, dtype, case["layout"], plan["repeats"])
            n = launches(case["block"], case["provider"], case["mode"], shape, dtype, case["layout"])
        except Exception as exc:  # report and go on
            failures += 1
            print(f"perf host: FAILED {case}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            continue
        N, C, H, W = shape
        row = {"block": case["block"], "mode": case["mode"], "provider": case["provider"], "N": N, "C": C, "H": H,
               "W": W, "dtype": case["dtype"], "layout": case["layout"], "us": t.us, "us_wall": t.us_wall,
               "launches": n, "calls": t.calls, "repeats": t.repeats, **env}
        print("ROW " + json.dumps(row), flush=True)
    if plan.get("profile"):
        from .profile import report

        for case in plan["profile"]:
            print("PROFILE " + json.dumps(report(case["block"], case["mode"], tuple(case["shape"]),
                                                getattr(torch, case["dtype"]), case["layout"])), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
