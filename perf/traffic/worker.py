"""Counts a list of cases in this process and merges the rows into a CSV:
``python -m perf.traffic.worker PLAN.json OUT.csv``. ``perf.traffic.run``
starts it with the environment each instrument needs (``TRITON_INTERPRET=1``
for the interpreter, unset for stubbed launches; ``TRITON_ATTN_SM_COUNT``;
an empty autotune cache, so the counts are the heuristics' plans)."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from ..accounting.fast_reduce import fast_reduce
from .blocks import build
from .count import summarize
from .plan import Case
from ..provenance import environment
from .step import make_inputs, measure_step
from .store import update

FLUSH_S = 10.0  # seconds between CSV merges


def rows_for(case: Case, env: dict) -> list[dict]:
    """The rows of one case: its mode, and for fwd+bwd also its bwd phase."""
    dtype = getattr(torch, case.dtype)
    device = "meta" if (case.how == "stub" and case.provider == "eager") else "cpu"
    module = build(case.provider, case.block, case.C, dtype).to(device)
    x, dy = make_inputs(case.shape, dtype, case.layout, device, values=case.how == "interpreter")
    records = measure_step(module, case.provider, case.mode, x, dy, case.how)
    x_bytes = x.numel() * x.element_size()
    key = {
        "block": case.block, "provider": case.provider, "N": case.N, "C": case.C, "H": case.H, "W": case.W,
        "dtype": case.dtype, "layout": case.layout, "counted_by": "interpreter" if case.how == "interpreter" else "stubbed",
        "sm_count": int(os.environ.get("TRITON_ATTN_SM_COUNT") or 0),
    }
    phases = [(case.mode, None)] + ([("bwd", "bwd")] if case.mode == "fwd+bwd" else [])
    return [{**key, "mode": mode, **summarize(records, x_bytes, phase), **env} for mode, phase in phases]


def run(cases: list[Case], out: Path, log=sys.stderr) -> int:
    """Count every case; returns the number of failures (each is reported and skipped)."""
    torch.set_num_threads(1)  # two shared cores: intra-op threads only contend
    env = environment()
    failures = 0
    pending: list[dict] = []
    flushed = time.perf_counter()
    with fast_reduce():
        for i, case in enumerate(cases, 1):
            start = time.perf_counter()
            try:
                rows = rows_for(case, env)
            except Exception as exc:  # one failing case must not lose the rest of a long run
                failures += 1
                print(f"traffic: FAILED {case}: {type(exc).__name__}: {exc}", file=log, flush=True)
                continue
            pending += rows
            if time.perf_counter() - flushed > FLUSH_S:  # a run cut short keeps what it counted
                update(out, pending)
                pending, flushed = [], time.perf_counter()
            print(f"traffic: [{i}/{len(cases)}] {case.how} {case.block} {case.mode} {case.provider} "
                  f"{'x'.join(map(str, case.shape))} {case.dtype} {case.layout}: {rows[0]['launches']} launches "
                  f"({time.perf_counter() - start:.1f} s)", file=log, flush=True)
    if pending:
        update(out, pending)
    return failures


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    plan_path, out = Path(argv[0]), Path(argv[1])
    cases = [Case(**c) for c in json.loads(plan_path.read_text())]
    return 1 if run(cases, out) else 0


if __name__ == "__main__":
    sys.exit(main())
