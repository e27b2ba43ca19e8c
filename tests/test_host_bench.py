"""``python -m perf host`` runs, prints its table with units and writes
results/host.csv (and the profile). Timings are machine noise: never asserted."""
from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd

from perf import REPO_ROOT
from perf.host.cli import COLUMNS, table
from perf.host.profile import category


def test_host_command_writes_its_csv_and_profile(tmp_path):
    env = dict(os.environ)  # TRITON_INTERPRET=1 from conftest: the command must drop it for its worker
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), str(REPO_ROOT)) if p)
    argv = [sys.executable, "-m", "perf", "host", "--shapes", "1,16,4,4", "--blocks", "se,eca", "--repeats", "2",
            "--profile", "--out-dir", str(tmp_path)]
    r = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    df = pd.read_csv(tmp_path / "results" / "host.csv")
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == 2 * 2 * 2  # blocks x modes x providers
    assert set(df["provider"]) == {"triton_attn", "eager"} and set(df["mode"]) == {"fwd", "fwd+bwd"}
    assert (df["us"] > 0).all() and (df["launches"] > 0).all() and (df["calls"] >= 1).all()
    eager_fwd = df[(df["provider"] == "eager") & (df["mode"] == "fwd") & (df["block"] == "se")]
    assert eager_fwd["launches"].tolist() == [6]  # timm's SE: mean, conv, relu, conv, sigmoid, mul
    assert "µs/call" in r.stdout and "launches" in r.stdout
    profile = (tmp_path / "results" / "host_profile.txt").read_text()
    assert "se fwd 1x16x4x4" in profile and "triton_attn/" in profile and "%" in profile


def test_table_and_profile_groups():
    rows = [dict(block="se", mode="fwd", provider=p, N=1, C=8, H=2, W=2, dtype="float32", layout="nchw", us=us, launches=n)
            for p, us, n in (("triton_attn", 90.0, 3), ("eager", 100.0, 6))]
    text = table(rows)
    assert "| SE | fwd | 1×8×2×2 | float32, nchw | 90 | 100 | 3 / 6 | yes |" in text
    assert category("~", "<built-in method torch.empty>") == "torch ops (C++)"
    assert category(str(REPO_ROOT / "triton_attn" / "runtime.py"), "launch") == "triton_attn/runtime.py"
