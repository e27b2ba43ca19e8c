"""The notebooks execute headlessly (nbclient, CPU), with and without data."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from test_perf import write_synthetic_results

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name: str) -> list[dict]:
    """Run a notebook from notebooks/ (env vars reach its kernel); its outputs, flattened."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return outputs


def text_of(outputs) -> str:
    return "".join(o.get("text", "") for o in outputs)


def images(outputs) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs)


@pytest.mark.parametrize("with_gpu_results", [True, False])
def test_perf_charts_notebook(tmp_path, monkeypatch, with_gpu_results):
    write_synthetic_results(tmp_path, device="cpu", blocks=("se",))
    if with_gpu_results:
        write_synthetic_results(tmp_path, blocks=("se",))
    monkeypatch.setenv("PERF_RESULTS_DIR", str(tmp_path))
    outputs = execute("perf_charts.ipynb")
    if with_gpu_results:
        assert "NVIDIA H100 80GB HBM3: " in text_of(outputs) and images(outputs) == 2  # SE GB/s + speedup
    else:
        assert "No GPU results yet" in text_of(outputs) and images(outputs) == 0


@pytest.mark.parametrize("with_report", [True, False])
def test_autotune_report_notebook(tmp_path, monkeypatch, with_report):
    report = tmp_path / "autotune.csv"
    if with_report:
        pd.DataFrame({
            "kernel": ["channel_pool", "channel_pool", "channel_scale"],
            "C": [64, 960, 64], "HW_bucket": [4096, 64, 4096], "N_bucket": [32, 1, 32],
            "layout": ["channels_last"] * 3, "dtype": ["bf16"] * 3, "variant": ["mean", "mean", "gate"],
            "config": ["BC=64 BHW=64 w=4", "BC=128 BHW=16 w=8 split=4", "BC=32 BHW=128 w=4 st=3"],
            "ms": [0.02, 0.01, 0.03], "runner_up": ["BC=32 BHW=64 w=4", "", "BC=64 BHW=64 w=4"],
            "runner_up_ms": [0.025, None, 0.031], "n_configs": [12, 1, 20], "source": ["tuned", "cache", "tuned"],
        }).to_csv(report, index=False)
    monkeypatch.setenv("AUTOTUNE_REPORT", str(report))
    outputs = execute("autotune_report.ipynb")
    assert images(outputs) == 1
    assert ("3 tuned keys" if with_report else "No autotune report found") in text_of(outputs)


def test_autotune_report_notebook_on_a_real_cpu_report(tmp_path, monkeypatch, capsys):
    """The CLI's own CPU report (the README's example, smaller: candidates
    compete, each key has a runner-up), plotted without errors."""
    from triton_attn.autotune.__main__ import main

    monkeypatch.setenv("TRITON_ATTN_CACHE_DIR", str(tmp_path / "cache"))
    report = tmp_path / "autotune_cpu.csv"
    assert main(["--shapes", "2,64,8,8", "--blocks", "se", "--dtype", "fp32", "--out", str(report)]) == 0
    df = pd.read_csv(report, keep_default_na=False)
    assert (df.n_configs > 1).all() and (df.runner_up != "").all()
    monkeypatch.setenv("AUTOTUNE_REPORT", str(report))
    outputs = execute("autotune_report.ipynb")
    assert images(outputs) == 1
    assert f"{len(df)} tuned keys" in text_of(outputs) and "runner-up slower by" in text_of(outputs)


@pytest.mark.parametrize("case", ["one_config", "zero_and_nan_times", "no_config_fields"])
def test_autotune_report_notebook_on_degenerate_reports(tmp_path, monkeypatch, case):
    """Reports a CPU run or a failed run can write: every key with a single
    candidate (no runner-up), zero or NaN times, configs without numbers."""
    rows = {
        "kernel": ["channel_pool", "channel_scale"], "C": [16, 32], "HW_bucket": [64, 16], "N_bucket": [2, 4],
        "layout": ["channels_last"] * 2, "dtype": ["fp32"] * 2, "variant": ["mean", "gate"],
        "config": ["BC=16 BHW=64 w=4", "BC=32 BHW=16 w=4"], "ms": [15.2, 26.6], "runner_up": ["", ""],
        "runner_up_ms": [None, None], "n_configs": [1, 1], "source": ["tuned", "tuned"],
    }
    if case == "zero_and_nan_times":
        rows.update(ms=[0.0, float("nan")], runner_up=["BC=8 BHW=64 w=4", "BC=16 BHW=16 w=4"], runner_up_ms=[0.0, 1.0],
                    n_configs=[2, 2])
    if case == "no_config_fields":
        rows.update(config=["heuristic", ""], C=[0, 32])
    report = tmp_path / "autotune.csv"
    pd.DataFrame(rows).to_csv(report, index=False)
    monkeypatch.setenv("AUTOTUNE_REPORT", str(report))
    outputs = execute("autotune_report.ipynb")
    assert images(outputs) == 1 and "2 tuned keys" in text_of(outputs)
    if case == "one_config":
        assert "2 of 2 keys had a single candidate" in text_of(outputs)
