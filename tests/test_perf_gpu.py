"""``python -m perf gpu``: the dry run of the whole plan (every step ran or
recorded why not, the CSVs have their columns, the summary and the README
copy exist, nothing lands in perf/results), and the runner's guarantees: a
step that raises is recorded and the plan goes on, a budget too small skips
the later steps ("skipped: budget"), a step past its box is interrupted,
``--resume`` continues instead of re-measuring."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from perf import COLUMNS, RESULTS_DIR
from perf.gpu import cli
from perf.gpu.l2_order import propose_rule
from perf.gpu.plan import Alarm, Box, Context, ItemTimeout, Step, StepTimeout, run_plan
from perf.gpu.profiles import BENCH_GROUPS, DRY_RUN
from perf.gpu.readme import lines_for
from perf.gpu.results import ENV, TABLES, ResultsWriter
from perf.gpu.summary import se_tax, se_tax_target

REPO = Path(__file__).resolve().parent.parent
STEP_NAMES = [s.name for s in cli.STEPS]


def read(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def results_files() -> set[str]:
    return {p.name for p in RESULTS_DIR.glob("*")} if RESULTS_DIR.is_dir() else set()


def dry_run(tmp_path, *extra) -> tuple[int, Path]:
    rc = cli.main(["--dry-run", "--out-dir", str(tmp_path), *extra])
    return rc, tmp_path / "results"


def steps_table(results: Path) -> dict[str, dict]:
    (path,) = results.glob("gpu_steps_*.csv")
    return {r["step"]: r for r in read(path)[1]}


def test_dry_run_runs_every_step_and_writes_everything(tmp_path):
    before = results_files()
    t0 = time.monotonic()
    rc, results = dry_run(tmp_path, "--budget-s", "300")
    took = time.monotonic() - t0
    assert rc == 0
    assert took < 120, f"the dry run took {took:.0f} s"
    steps = steps_table(results)
    assert list(steps) == STEP_NAMES
    for name, r in steps.items():
        assert r["status"] == "ok", f"{name}: {r['status']} {r['reason']}"
        assert float(r["duration_s"]) >= 0 and float(r["box_s"]) > 0
    slug = steps["correctness"]["device"].replace("-", "_")
    # every table this run wrote has its declared columns, environment last
    for table, spec in TABLES.items():
        path = results / f"{table}_{slug}.csv"
        assert path.is_file(), f"{table} not written"
        header, rows = read(path)
        assert header[-len(ENV):] == list(ENV)
        if spec["columns"] is not None:
            assert header == [*spec["columns"], *ENV], table
        for r in rows:
            assert all(r[k] for k in ("device", "torch", "triton", "commit", "timestamp")), (table, r)
    # the block benchmark went to the harness's own CSV, in its own columns
    header, rows = read(results / f"{slug}.csv")
    assert header == list(COLUMNS) and rows
    assert {r["dtype"] + " " + r["layout"] for r in rows} == {f"{d} {lay}" for d, lay in DRY_RUN.bench_groups}
    # correctness: every variant checked or skipped with its reason
    _, rows = read(results / f"correctness_{slug}.csv")
    fwd_bwd = [r for r in rows if r["check"] == "fwd_bwd"]
    from perf.gpu.blocks import VARIANTS

    assert {r["variant"] for r in fwd_bwd} == set(VARIANTS)
    for r in rows:
        assert r["status"] in ("pass", "pass-eager", "skipped"), r
        assert r["status"] != "skipped" or r["detail"], r
    assert {r["check"] for r in rows} >= {"fwd_bwd", "cuda_graph", "stream", "big_tensor", "big_sample"}
    # e2e: every configuration measured or skipped with its reason
    _, rows = read(results / f"e2e_{slug}.csv")
    assert len(rows) == 2 * 4 * len(DRY_RUN.e2e_pairs)
    assert all(r["status"] == "ok" or (r["status"] == "skipped" and r["detail"]) for r in rows), rows
    assert any(r["status"] == "ok" and r["variant"] == "converted" and int(r["swapped"]) > 0 for r in rows)
    _, rows = read(results / f"l2_order_{slug}.csv")
    assert rows and all(r["status"] == "ok" and r["better"] in ("forward", "reverse") for r in rows)
    # summary, charts, README copy, log
    summary = (results / f"gpu_summary_{slug}.md").read_text()
    for needle in ("# GPU check", "## Steps", "Correctness", "SE tax", "Proposed rule", "Skipped", "Dry run"):
        assert needle in summary, needle
    assert (tmp_path / "charts" / slug / "gpu" / "se_tax.png").is_file()
    assert "<!-- perf:start -->" in (tmp_path / "README.md").read_text()
    assert (results / f"gpu_log_{slug}.txt").read_text()
    assert results_files() == before, "the dry run wrote into perf/results"


def test_a_failing_step_is_recorded_and_the_plan_goes_on(tmp_path, monkeypatch):
    import perf.gpu.l2_order

    def boom(ctx, box):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(perf.gpu.l2_order, "run", boom)
    rc, results = dry_run(tmp_path, "--steps", "l2,autotune")
    assert rc == 1
    steps = steps_table(results)
    assert steps["l2"]["status"] == "failed" and "kernel exploded" in steps["l2"]["reason"]
    assert steps["autotune"]["status"] == "ok"
    assert steps["correctness"]["status"] == "skipped" and "--steps" in steps["correctness"]["reason"]
    summary = next(results.glob("gpu_summary_*.md")).read_text()
    assert "failed: RuntimeError: kernel exploded" in summary


def test_a_budget_too_small_skips_with_reason_budget(tmp_path):
    rc, results = dry_run(tmp_path, "--budget-s", "0.05", "--no-readme")
    assert rc == 0
    for name, r in steps_table(results).items():
        assert r["status"] == "skipped" and r["reason"].startswith("budget"), (name, r)
    assert next(results.glob("gpu_summary_*.md")).read_text().count("skipped: budget") == len(STEP_NAMES)


def test_resume_continues_instead_of_remeasuring(tmp_path):
    rc, results = dry_run(tmp_path, "--steps", "l2", "--no-readme")
    assert rc == 0
    (path,) = results.glob("l2_order_*.csv")
    first = read(path)[1]
    rc, _ = dry_run(tmp_path, "--steps", "l2", "--no-readme", "--resume")
    assert rc == 0
    assert steps_table(results)["l2"]["items_done"] == "0"
    assert read(path)[1] == first


# --- the runner, with stand-in steps --------------------------------------------------------


def _ctx(tmp_path) -> Context:
    env = {"device": "test-device", "torch": "t", "triton": "tr", "commit": "c"}
    return Context(profile=DRY_RUN, device=None, writer=ResultsWriter(tmp_path, env), results_dir=tmp_path,
                   charts_dir=tmp_path, log=lambda msg: None)


def _steps(tmp_path, monkeypatch, **funcs):
    module = type(sys)("fake_steps")
    for name, fn in funcs.items():
        setattr(module, name, fn)
    monkeypatch.setitem(sys.modules, "fake_steps", module)
    return [Step(name, name, 1.0, 0.2, "fake_steps", name) for name in funcs]


def test_runner_records_an_exception_and_continues(tmp_path, monkeypatch):
    ran = []

    def a(ctx, box):
        ran.append("a")
        for item in box.take(range(3)):
            ctx.count("a")

    def b(ctx, box):
        raise ValueError("bad shape")

    def c(ctx, box):
        ran.append("c")

    ctx = _ctx(tmp_path)
    with ctx.alarm:
        records = run_plan(ctx, _steps(tmp_path, monkeypatch, a=a, b=b, c=c), budget_s=30, reserve_s=0)
    assert [r.status for r in records] == ["ok", "failed", "ok"]
    assert records[0].items_done == 3
    assert "ValueError: bad shape" in records[1].reason
    assert ran == ["a", "c"]
    _, rows = read(ctx.writer.path("gpu_steps"))
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]


def test_runner_skips_later_steps_when_the_budget_is_spent(tmp_path, monkeypatch):
    def slow(ctx, box):
        for _ in box.take(range(1000)):
            time.sleep(0.01)

    def later(ctx, box):  # pragma: no cover - must not run
        raise AssertionError("ran without budget")

    ctx = _ctx(tmp_path)
    steps = _steps(tmp_path, monkeypatch, slow=slow, later=later, last=later)
    steps[0].weight = 100.0  # the first step takes (almost) the whole budget
    with ctx.alarm:
        records = run_plan(ctx, steps, budget_s=1.0, reserve_s=0.3)
    assert records[0].status == "partial" and records[0].reason.startswith("budget")
    assert [(r.status, r.reason.split(" ")[0]) for r in records[1:]] == [("skipped", "budget")] * 2
    skipped = [s for s in ctx.skipped if s[0] == "slow"]
    assert skipped and all(reason == "budget" for _, _, reason in skipped)


def test_a_step_past_its_box_is_interrupted(tmp_path, monkeypatch):
    def stubborn(ctx, box):  # never looks at its box
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.005)

    def after(ctx, box):
        ctx.count("after")

    ctx = _ctx(tmp_path)
    steps = _steps(tmp_path, monkeypatch, stubborn=stubborn, after=after)
    for s in steps:
        s.min_box_s = 0.0
    t0 = time.monotonic()
    with ctx.alarm:
        records = run_plan(ctx, steps, budget_s=1.0, reserve_s=0.6)
    assert time.monotonic() - t0 < 3
    assert records[0].status == "timeout"
    assert records[1].status in ("ok", "skipped")


def test_alarm_item_limit_inside_a_step_limit():
    alarm = Alarm()
    if not alarm.usable:
        pytest.skip("no SIGALRM here")
    with alarm:
        with pytest.raises(StepTimeout) as outer:
            with alarm.limit(0.4, StepTimeout, "step"):
                with pytest.raises(ItemTimeout):
                    with alarm.limit(0.05, ItemTimeout, "item"):
                        time.sleep(1)
                time.sleep(1)
        assert str(outer.value) == "step" and not isinstance(outer.value, ItemTimeout)


def test_the_watchdog_ends_a_hung_process_after_saving(tmp_path):
    """A hang no signal reaches (simulated by a C-level sleep in a child
    process): the watchdog writes what it can, then ends the process."""
    marker = tmp_path / "saved"
    code = ("import time, sys; sys.path.insert(0, %r); from perf.gpu.plan import Watchdog\n"
            "with Watchdog(0.3, lambda: open(%r, 'w').write('x')):\n    time.sleep(30)\n") % (str(REPO), str(marker))
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 124, out.stderr[-2000:]
    assert marker.read_text() == "x" and time.monotonic() - t0 < 20


def test_gpu_profile_is_complete():
    from perf.gpu.profiles import GPU, WEIGHTS
    from perf.shapes import GPU_SHAPES

    assert set(WEIGHTS) == set(STEP_NAMES) == set(GPU.min_box_s) == set(DRY_RUN.min_box_s)
    assert GPU.bench_groups == BENCH_GROUPS and set(GPU.bench_first_shapes) <= set(GPU.bench_shapes) == set(GPU_SHAPES)
    N, C, H, W = GPU.big_shape
    assert N * C * H * W > 2**31 and (N - 1) * C * H * W >= 2**31  # the last sample starts past 2**31
    _, C, H, W = GPU.big_sample_shape
    assert C * H * W > 2**31
    assert GPU.e2e_pairs[0] == ("seresnet50", "resnet50") and (GPU.e2e_batch, GPU.e2e_size) == (64, 224)
    from perf.gpu.correctness import _matrix_items
    from perf.gpu.blocks import VARIANTS

    items = _matrix_items(GPU, list(VARIANTS))
    assert items[0][2:] == ("bfloat16", "channels_last") and len(items) == len(VARIANTS) * 6 * 6


def test_box_take_records_what_it_did_not_reach(tmp_path):
    ctx = _ctx(tmp_path)
    box = Box(ctx, "s", 0.0)
    assert list(box.take(["x", "y"])) == []
    assert ctx.skipped == [("s", "x", "budget"), ("s", "y", "budget")]


# --- plan contents, summary pieces, plain checkout --------------------------------------------


def test_bench_groups_in_the_issue_order():
    assert BENCH_GROUPS[:2] == (("bfloat16", "channels_last"), ("bfloat16", "nchw"))
    assert [d for d, _ in BENCH_GROUPS[2:]] == ["float16", "float16", "float32", "float32"]


def test_l2_rule_threshold_and_noise():
    L2 = 50 * 2**20
    rows = []
    for mib in (5, 25, 50, 100, 200, 400):
        # reverse pays while x fits in about two L2s, and costs a little past that
        ms_reverse = 1.0 if mib <= 100 else 1.02
        rows.append(dict(x_bytes=mib * 2**20, l2_bytes=L2, ms_forward=1.15 if mib <= 100 else 1.0, ms_reverse=ms_reverse))
    rule = propose_rule(rows)
    assert rule["threshold_bytes"] == 100 * 2**20 and rule["direction"] == "<="
    assert "2.00 x L2" in rule["rule"] and rule["cost"] == pytest.approx(1.0)
    flat = [dict(r, ms_forward=1.0, ms_reverse=0.999) for r in rows]
    assert propose_rule(flat)["rule"].startswith("forward always")


def e2e_row(model, mode, variant, ms, status="ok"):
    return dict(model=model, compile=mode, variant=variant, ms=str(ms), status=status)


def test_se_tax_and_its_target():
    rows = [e2e_row("resnet50", "compile", "unconverted", 100.0), e2e_row("seresnet50", "compile", "unconverted", 125.0),
            e2e_row("seresnet50", "compile", "converted", 112.0), e2e_row("seresnet50", "compile", "converted+tail", 107.0),
            e2e_row("resnet50", "eager", "unconverted", 120.0), e2e_row("seresnet50", "eager", "unconverted", 160.0)]
    tax = {(t["mode"], t["variant"]): t["ratio"] for t in se_tax(rows, [("seresnet50", "resnet50")])}
    assert tax[("compile", "unconverted")] == pytest.approx(1.25)
    assert tax[("compile", "converted+tail")] == pytest.approx(1.07)
    assert tax[("eager", "converted")] != tax[("eager", "converted")]  # not measured: NaN
    assert "1.070 — met" in se_tax_target(rows)
    rows[3]["ms"] = "110"
    assert "1.100 — MISSED" in se_tax_target(rows)
    assert "not measured" in se_tax_target(rows[:2])


def test_readme_lines_link_the_summary_and_the_se_tax(tmp_path):
    device = "NVIDIA H200"
    writer = ResultsWriter(tmp_path, {"device": device, "torch": "t", "triton": "tr", "commit": "c"})
    assert lines_for(tmp_path, device, tmp_path) == []
    (tmp_path / "gpu_summary_nvidia_h200.md").write_text("# x\n")
    writer.write("e2e", [e2e_row("resnet50", "compile", "unconverted", 100.0), e2e_row("seresnet50", "compile", "converted", 110.0)])
    text = "\n".join(lines_for(tmp_path, device, tmp_path))
    assert "(gpu_summary_nvidia_h200.md)" in text and "seresnet50 / resnet50" in text and "1.100 (110.0 ms)" in text


@pytest.mark.parametrize("variant", ["se_avg", "eca"])
def test_chunked_reference_of_one_huge_sample_matches_the_full_one(variant):
    """The >2**31-element single-sample check's float64 reference, taken in
    channel chunks through a 1 x C x 1 x 2 proxy, equals the plain one."""
    import torch

    from perf.gpu.blocks import VARIANTS
    from perf.gpu.correctness import mean_gate_reference, sample_positions

    torch.manual_seed(0)
    ref64 = VARIANTS[variant][0](12).reference(torch.float64)
    x = torch.randn(1, 12, 3, 5, dtype=torch.float64, requires_grad=True)
    dy = torch.randn_like(x)
    y = ref64(x)
    y.backward(dy)
    g, ds = mean_gate_reference(ref64, x.detach(), dy, chunk_elems=40)  # 2 channels a chunk
    torch.testing.assert_close(x.detach()[0] * g[:, None, None], y.detach()[0])
    torch.testing.assert_close(dy[0] * g[:, None, None] + ds[:, None, None] / 15, x.grad[0])
    for layout in ("channels_last", "nchw"):
        pos = sample_positions((1, 12, 3, 5), layout)
        assert (0, 0, 0) in pos and (11, 2, 4) in pos
        t = torch.empty(1, 12, 3, 5).contiguous(memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
        offsets = [c * t.stride(1) + h * t.stride(2) + w * t.stride(3) for c, h, w in pos]
        assert len(set(offsets)) == len(offsets) and max(offsets) == t.numel() - 1


def test_results_writer_merges_by_key_atomically(tmp_path):
    writer = ResultsWriter(tmp_path, {"device": "d", "torch": "t", "triton": "tr", "commit": "c"})
    base = dict(block="se", mode="fwd", N=1, C=8, H=2, W=2, dtype="bfloat16", layout="nchw")
    writer.write("l2_order", [dict(base, ms_forward=1.0, status="ok"), dict(base, N=2, ms_forward=2.0, status="ok")])
    writer.write("l2_order", [dict(base, ms_forward=3.0, status="ok")])
    _, rows = read(writer.path("l2_order"))
    assert [(r["N"], r["ms_forward"]) for r in rows] == [("1", "3.0"), ("2", "2.0")]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary file left behind"
    assert writer.done_keys("l2_order") == {writer.key_of("l2_order", **base), writer.key_of("l2_order", **dict(base, N=2))}


def test_plain_checkout_imports_without_install(tmp_path):
    """The GPU machine runs from a bare checkout (PYTHONPATH=., no pip
    install): perf maps triton_attn.kernels to kernels/ when nothing else does.
    Simulated with ``python -S``: site-packages on the path, but not the .pth
    files of an editable install."""
    import site

    paths = [str(REPO), *site.getsitepackages()]
    code = (f"import sys; sys.path[:0] = {paths!r}; import perf, triton_attn, triton_attn.kernels as k; "
            "print(k.__file__)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert Path(out.stdout.strip()).resolve().parent.name == "kernels"
