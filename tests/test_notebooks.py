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
