"""Runs a plan: one worker process per instrument, each with the environment
it needs, both merging rows into the same CSV (one after the other)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .. import REPO_ROOT
from .plan import SM_COUNT, Case


def worker_env(how: str, sm_count: int = SM_COUNT, cache_dir: str | None = None) -> dict:
    """The environment of a worker: the interpreter on (``interpreter``) or
    off (``stub``), the SM count to plan for, an empty autotune cache (the
    counts are the heuristics' plans, not a tuned machine's) and tuning off."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TRITON_ATTN_AUTOTUNE")}
    if how == "interpreter":
        env["TRITON_INTERPRET"] = "1"
    env["TRITON_ATTN_SM_COUNT"] = str(sm_count)
    env["TRITON_ATTN_CACHE_DIR"] = cache_dir or tempfile.mkdtemp(prefix="triton_attn_traffic_cache_")
    # perf/ is found from the repository root; appended, so that a triton_attn
    # already on PYTHONPATH (another checkout) keeps precedence.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), str(REPO_ROOT)) if p)
    return env


def run_plan(cases: list[Case], out: Path, sm_count: int = SM_COUNT, timeout: float | None = None) -> int:
    """Count ``cases`` into the CSV ``out``; returns the number of workers
    that reported a failed case or died (each failure is printed)."""
    failures = 0
    for how in ("stub", "interpreter"):  # the fast one first
        group = [c for c in cases if c.how == how]
        if not group:
            continue
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump([c.to_dict() for c in group], f)
            plan_path = f.name
        try:
            done = subprocess.run(
                [sys.executable, "-m", "perf.traffic.worker", plan_path, str(out)],
                env=worker_env(how, sm_count), timeout=timeout,
            )
        finally:
            os.unlink(plan_path)
        if done.returncode != 0:
            failures += 1
    return failures
