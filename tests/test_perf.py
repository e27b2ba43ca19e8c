"""The perf harness: a quick CPU run, the CSV store, charts, README table and
targets. GPU-like results are synthetic, written here into temp dirs: nothing
fake ever lands in perf/results/."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from perf import BLOCKS, COLUMNS, KEY, MODES, PROVIDERS
from perf.__main__ import main
from perf.measure import minimal_bytes
from perf.readme_table import END, NO_RESULTS, START, render, update_readme
from perf.shapes import Shape
from perf.store import csv_path, load_results, read_csv, update_csv
from perf.summary import geomean_table
from perf.targets import check

GPU = "NVIDIA H100 80GB HBM3"
# time of each provider relative to triton_attn: 3x eager, 1.5x compile, copy 0.8
FACTORS = {"eager": 3.0, "compile": 1.5, "triton_attn": 1.0, "copy": 0.8}
SYNTHETIC_SHAPES = [Shape(32, 256, 56, 56, "resnet50"), Shape(32, 2048, 7, 7, "resnet50"),
                    Shape(1, 72, 28, 28, "mobilenetv3_large", inference=True)]
README_TEXT = f"# title\n\nbefore\n\n{START}\n{END}\n\nafter\n"


def synthetic_rows(device=GPU, factors=FACTORS, blocks=BLOCKS, layouts=("channels_last", "nchw"), base_ms=lambda s: 0.01):
    rows = []
    for block in blocks:
        for shape in SYNTHETIC_SHAPES:
            for mode in shape.modes:
                for layout in layouts:
                    for provider, f in factors.items():
                        ms = f * base_ms(shape)
                        rows.append({
                            "block": block, "mode": mode, "provider": provider, "N": shape.N, "C": shape.C,
                            "H": shape.H, "W": shape.W, "dtype": "bfloat16", "layout": layout,
                            "ms": ms, "ms_p20": 0.95 * ms, "ms_p80": 1.05 * ms,
                            "gbps": minimal_bytes(mode, shape, torch.bfloat16) / (ms * 1e-3) / 1e9,
                            "device": device, "torch": "2.test", "triton": "3.test", "commit": "synthetic",
                            "timestamp": "2025-01-01T00:00:00+00:00",
                        })
    return rows


def write_synthetic_results(results_dir: Path, **kw) -> Path:
    path = csv_path(results_dir, kw.get("device", GPU))
    update_csv(path, synthetic_rows(**kw))
    return path


def test_quick_cpu_run_writes_rows_and_reruns_in_place(tmp_path):
    args = ["measure", "--quick", "--cpu", "--blocks", "se", "--out-dir", str(tmp_path), "--warmup-ms", "0", "--rep-ms", "5"]
    assert main(args) == 0
    files = list((tmp_path / "results").glob("*.csv"))
    assert len(files) == 1 and files[0].stem.startswith("cpu")
    df = pd.read_csv(files[0])
    assert list(df.columns) == list(COLUMNS)
    assert set(df["provider"]) == set(PROVIDERS) and set(df["mode"]) == set(MODES)
    assert len(df) == len(PROVIDERS) * len(MODES)
    assert df["device"].str.startswith("cpu").all() and (df["torch"] == torch.__version__).all()
    assert (df["commit"].astype(str).str.len() > 0).all()
    assert (df["ms"] > 0).all() and (df["ms_p20"] <= df["ms"]).all() and (df["ms"] <= df["ms_p80"]).all()
    one = df.iloc[0]
    shape = Shape(one.N, one.C, one.H, one.W, "")
    assert one.gbps == pytest.approx(minimal_bytes(one["mode"], shape, torch.float32) / (one.ms * 1e-3) / 1e9)

    # Re-measuring one provider replaces its rows and keeps the others untouched.
    assert main([*args, "--providers", "copy"]) == 0
    again = pd.read_csv(files[0])
    assert len(again) == len(df) and not again.duplicated(list(KEY)).any()
    others = lambda d: d[d["provider"] != "copy"].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(others(again), others(df))

    # --resume skips what this commit already measured: nothing left to do.
    assert main([*args, "--resume"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(files[0]), again)


def test_update_csv_replaces_rows_by_key(tmp_path):
    path = tmp_path / "r.csv"
    rows = synthetic_rows(blocks=("se",), layouts=("nchw",))
    update_csv(path, rows)
    changed = dict(rows[0], ms=123.0)
    new = dict(rows[0], device="NVIDIA H200")
    merged = update_csv(path, [changed, new])
    assert len(merged) == len(rows) + 1
    back = read_csv(path)
    assert len(back) == len(rows) + 1 and not back.duplicated(list(KEY)).any()
    key = {k: rows[0][k] for k in KEY}
    hit = back.loc[(back[list(key)] == pd.Series(key)).all(axis=1)]
    assert hit["ms"].tolist() == [123.0]


def test_load_results_skips_other_csvs_and_splits_devices(tmp_path):
    write_synthetic_results(tmp_path, blocks=("se",))
    write_synthetic_results(tmp_path, device="cpu", blocks=("se",))
    pd.DataFrame({"kernel": ["channel_pool"], "C": [64], "config": ["BC=64"]}).to_csv(tmp_path / "autotune.csv", index=False)
    assert sorted(load_results(tmp_path)) == sorted([GPU, "cpu"])
    with pytest.raises(ValueError, match="not a perf results CSV"):
        read_csv(tmp_path / "autotune.csv")


def test_geomean_over_shapes():
    # eager takes 2x, 8x and 4x triton_attn's time on the three shapes: geomean 4
    eager_fwd = {256: 2.0, 2048: 8.0, 72: 4.0}
    rows = synthetic_rows(blocks=("se",), layouts=("nchw",), base_ms=lambda s: 1.0)
    for r in rows:
        if r["provider"] == "eager" and r["mode"] == "fwd":
            r["ms"] = eager_fwd[r["C"]]
    table = geomean_table(pd.DataFrame(rows), "bfloat16", "nchw").set_index(["block", "mode"])
    assert table.loc[("se", "fwd"), "vs_eager"] == pytest.approx(4.0)
    assert table.loc[("se", "fwd"), "vs_compile"] == pytest.approx(1.5)
    assert table.loc[("se", "fwd"), "time_vs_copy"] == pytest.approx(1.25)
    assert table.loc[("se", "bwd"), "shapes"] == 2


def test_targets_met_missed_and_unmeasured():
    results = {(t.block, t.mode, t.ratio): met for t, _, met in check(pd.DataFrame(synthetic_rows()))}
    assert results[("se", "fwd", "vs_eager")] and results[("eca", "fwd", "vs_compile")]
    assert results[("se", "fwd", "time_vs_copy")]  # 1.25 <= 1.6
    assert results[("cbam", "fwd+bwd", "vs_compile")] is False  # 1.5 < 2
    slow = dict(FACTORS, copy=0.5)  # triton_attn takes 2x a copy
    results = {(t.block, t.ratio): met for t, _, met in check(pd.DataFrame(synthetic_rows(factors=slow, blocks=("se",))))}
    assert results[("se", "time_vs_copy")] is False and results[("cbam", "vs_eager")] is None


def test_plot_and_readme_from_gpu_results_only(tmp_path):
    results = tmp_path / "results"
    write_synthetic_results(results, blocks=("se",))
    write_synthetic_results(results, device="cpu", blocks=("se",))
    readme = tmp_path / "README.md"
    readme.write_text(README_TEXT)
    assert main(["plot", "--out-dir", str(tmp_path), "--readme", str(readme)]) == 0
    charts = sorted(p.relative_to(tmp_path / "charts").as_posix() for p in (tmp_path / "charts").rglob("*.png"))
    assert charts == ["nvidia_h100_80gb_hbm3/se_bfloat16_gbps.png", "nvidia_h100_80gb_hbm3/se_bfloat16_speedup.png"]
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    section = text[text.index(START):text.index(END)]
    assert GPU in section and "cpu" not in section.split("(", 1)[0]
    assert "| SE | fwd | 3.00× | 1.50× | 1.25 | 3 |" in section
    assert "(charts/nvidia_h100_80gb_hbm3/se_bfloat16_gbps.png)" in section
    assert "(results/nvidia_h100_80gb_hbm3.csv)" in section
    # regenerating is idempotent
    assert main(["readme", "--out-dir", str(tmp_path), "--readme", str(readme)]) == 0
    assert readme.read_text() == text


def test_readme_says_so_without_gpu_results(tmp_path):
    write_synthetic_results(tmp_path / "results", device="cpu", blocks=("se",))
    readme = tmp_path / "README.md"
    readme.write_text(README_TEXT)
    body = render(tmp_path / "results", tmp_path / "charts", readme)
    assert body == NO_RESULTS
    assert update_readme(readme, body)
    assert readme.read_text() == README_TEXT.replace(START + "\n", f"{START}\n{NO_RESULTS}\n")
    assert not update_readme(tmp_path / "missing.md", body)


def test_cli_rejects_unknown_names():
    with pytest.raises(SystemExit):
        main(["--blocks", "se,nope"])
    with pytest.raises(SystemExit):
        main(["--dtypes", "fp8"])


def test_minimal_bytes_per_mode():
    shape = Shape(2, 3, 4, 5, "")
    one_pass = 2 * 3 * 4 * 5 * 2
    assert [minimal_bytes(m, shape, torch.bfloat16) for m in MODES] == [2 * one_pass, 3 * one_pass, 5 * one_pass]


def test_gpu_quick_run(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("do_bench timing needs CUDA")
    args = ["measure", "--quick", "--blocks", "se,eca", "--providers", "eager,triton_attn,copy", "--out-dir", str(tmp_path)]
    assert main(args) == 0
    (df,) = load_results(tmp_path / "results").values()
    assert df["device"].iloc[0] == torch.cuda.get_device_name()
    assert (df["ms"] > 0).all() and (df["gbps"] > 0).all()
