"""The one-page summary of a GPU run, ``results/gpu_summary_<device>.md``,
rebuilt from the CSVs on disk after every step (so it always describes what
exists, including a run cut short): device and versions, each step's status
and time, correctness failures, the headline speedups and targets, the SE
tax, the per-launch overhead, the proposed L2 rule, what was skipped."""
from __future__ import annotations

import math
from pathlib import Path

from .results import num, read_rows

#: The fused tail's target: training step of seresnet50 over resnet50, both
#: under torch.compile, bf16, channels_last, batch 64.
SE_TAX_TARGET = ("seresnet50", "resnet50", "compile", "converted+tail", 1.08)
TIMM_SE_TAX = 1.25  # timm's figure today (unconverted, compiled), for comparison
E2E_VARIANTS = ("unconverted", "converted", "converted+tail")
SKIPPED_SHOWN = 15
FAILURES_SHOWN = 15


def _f(v, digits=2, suffix="") -> str:
    x = num(v)
    return "—" if x != x else f"{x:.{digits}f}{suffix}"


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def se_tax(e2e_rows: list[dict], pairs) -> list[dict]:
    """Per (attention model, twin, mode, variant): ms of both and their ratio
    (the twin always unconverted)."""
    ms = {(r["model"], r["compile"], r["variant"]): num(r.get("ms")) for r in e2e_rows if r.get("status") == "ok"}
    out = []
    for attn, plain in pairs:
        for mode in ("eager", "compile"):
            base = ms.get((plain, mode, "unconverted"), float("nan"))
            for variant in E2E_VARIANTS:
                a = ms.get((attn, mode, variant), float("nan"))
                out.append(dict(model=attn, twin=plain, mode=mode, variant=variant, ms=a, twin_ms=base,
                                ratio=a / base if a == a and base == base and base > 0 else float("nan")))
    return out


def se_tax_lines(e2e_rows: list[dict], pairs) -> list[str]:
    tax = se_tax(e2e_rows, pairs)
    status = {(r["model"], r["compile"], r["variant"]): (r.get("status", ""), r.get("detail", "")) for r in e2e_rows}
    rows = []
    for attn, plain in pairs:
        for mode in ("eager", "compile"):
            cells = []
            for variant in E2E_VARIANTS:
                t = next(x for x in tax if (x["model"], x["mode"], x["variant"]) == (attn, mode, variant))
                if t["ratio"] == t["ratio"]:
                    cells.append(f"{t['ratio']:.3f} ({t['ms']:.1f} ms)")
                else:
                    st, detail = status.get((attn, mode, variant), ("not run", ""))
                    cells.append(_short(st if st != "ok" else "twin missing", detail))
            twin = status.get((plain, mode, "unconverted"), ("not run", ""))
            base = next(x["twin_ms"] for x in tax if (x["model"], x["mode"]) == (attn, mode))
            rows.append([f"{attn} / {plain}", mode, f"{base:.1f}" if base == base else _short(*twin), *cells])
    return _table(["models", "mode", "twin ms", *E2E_VARIANTS], rows)


def _short(status: str, detail: str) -> str:
    if status == "skipped":
        for key, shown in (("not available", "n/a in this build"), ("budget", "skipped: budget"),
                           ("dry run", "skipped: dry run"), ("--skip", "skipped: --skip"), ("timm", "skipped: no timm")):
            if key in detail:
                return shown
        return "skipped"
    return status or "—"


def se_tax_target(e2e_rows: list[dict]) -> str:
    attn, plain, mode, variant, bound = SE_TAX_TARGET
    tax = {(t["model"], t["mode"], t["variant"]): t["ratio"] for t in se_tax(e2e_rows, [(attn, plain)])}
    value = tax.get((attn, mode, variant), float("nan"))
    conv = tax.get((attn, mode, "converted"), float("nan"))
    unconv = tax.get((attn, mode, "unconverted"), float("nan"))
    eager = {v: tax.get((attn, "eager", v), float("nan")) for v in E2E_VARIANTS}
    head = f"SE tax ({attn} / {plain}, torch.compile, bf16, channels_last) with the tail fused <= {bound:g}"
    state = "not measured" if value != value else ("met" if value <= bound else "MISSED")
    shown = f": {value:.3f}" if value == value else ""
    extra = (f" (converted without the tail {_f(conv, 3)}, unconverted {_f(unconv, 3)} vs timm's ~{TIMM_SE_TAX:g}; "
             f"eager: unconverted {_f(eager['unconverted'], 3)}, converted {_f(eager['converted'], 3)}, "
             f"tail {_f(eager['converted+tail'], 3)})")
    return f"{head}{shown} — {state}{extra}"


def _correctness_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return ["No correctness rows."]
    matrix = [r for r in rows if r.get("check") == "fwd_bwd"]
    count = lambda rs, s: sum(1 for r in rs if r.get("status") == s)  # noqa: E731
    lines = [
        f"Forward + backward vs float64: {len(matrix)} rows — {count(matrix, 'pass')} pass, "
        f"{count(matrix, 'pass-eager')} pass within 2x eager's error, {count(matrix, 'FAIL')} FAIL, "
        f"{count(matrix, 'error')} error, {count(matrix, 'skipped')} skipped (variants this build lacks)."
    ]
    for check in ("cuda_graph", "cuda_graph_fwd_bwd", "stream", "big_tensor", "big_sample"):
        rs = [r for r in rows if r.get("check") == check]
        if rs:
            states = ", ".join(f"{r['variant']} {r['status']}" for r in rs)
            lines.append(f"- {check}: {states}" + (f" ({rs[0].get('detail', '')})" if check.startswith("big") else ""))
    bad = [r for r in rows if r.get("status") in ("FAIL", "error")]
    if bad:
        lines.append("")
        lines.append(f"Failures ({len(bad)}" + (f", first {FAILURES_SHOWN}" if len(bad) > FAILURES_SHOWN else "") + "):")
        lines.append("")
        lines += _table(
            ["check", "variant", "shape", "dtype", "layout", "status", "worst", "err/tol", "detail"],
            [[r["check"], r["variant"], f"{r['N']}×{r['C']}×{r['H']}×{r['W']}", r["dtype"], r["layout"], r["status"],
              r.get("worst", ""), _f(r.get("err_ratio")), (r.get("detail") or "")[:120].replace("|", "/")]
             for r in bad[:FAILURES_SHOWN]],
        )
    return lines


def _bench_lines(results_dir: Path, device: str) -> list[str]:
    try:
        import pandas as pd  # noqa: F401

        from ..readme_table import markdown_table
        from ..store import csv_path, read_csv
        from ..summary import HEADLINE, geomean_table
        from ..targets import report_lines
    except Exception as e:
        return [f"(block benchmark summary needs pandas: {type(e).__name__}: {e})"]
    path = csv_path(results_dir, device)
    if not path.is_file():
        return ["No block benchmark rows."]
    df = read_csv(path)
    df = df[df["device"] == device]
    if df.empty:
        return ["No block benchmark rows."]
    lines = []
    groups = df.groupby(["dtype", "layout"]).size()
    lines.append("Rows per group: " + ", ".join(f"{d} {lay} {n}" for (d, lay), n in groups.items()) + f" ({path.name}).")
    table = geomean_table(df, *HEADLINE)
    if len(table):
        lines += ["", f"Geometric means over the preset shapes, {HEADLINE[0]}, {HEADLINE[1]}:", "", markdown_table(table)]
    lines += ["", "Targets:"] + [f"- {line}" for line in report_lines(df)]
    return lines


def _l2_lines(rows: list[dict]) -> list[str]:
    from .l2_order import propose_rule

    ok = [r for r in rows if r.get("status") == "ok"]
    if not ok:
        return ["No tile-order measurements." if not rows else f"{len(rows)} rows, none measured (see l2_order CSV)."]
    rule = propose_rule(ok)
    rev = sum(1 for r in ok if r.get("better") == "reverse")
    best = max(ok, key=lambda r: num(r.get("reverse_speedup"), 0.0))
    lines = [
        f"{len(ok)} shapes × modes timed in both orders: reverse faster on {rev}; largest gain "
        f"{_f(best.get('reverse_speedup'), 3)}× ({best['block']} {best['mode']} {best['N']}×{best['C']}×{best['H']}×{best['W']}, "
        f"{num(best.get('x_bytes')) / 2**20:.1f} MiB).",
        f"- Proposed rule for `second_pass_reversed(x_bytes)`: **{rule['rule']}** — time vs the per-shape best: "
        f"rule {_f(rule.get('cost'), 3)}, always forward {_f(rule.get('cost_forward'), 3)}, always reverse "
        f"{_f(rule.get('cost_reverse'), 3)} (geomean, 1.000 = best order everywhere).",
    ]
    return lines


def _latency_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    shapes = sorted({(r.get("N"), r.get("C"), r.get("H"), r.get("W")) for r in rows if r.get("N")})
    providers = ["eager", "triton_attn", "eager+cuda_graph", "triton_attn+cuda_graph"]
    get = {(r.get("N"), r.get("C"), r.get("H"), r.get("W"), r.get("provider")): r for r in rows}
    table = []
    for s in shapes:
        cells = []
        for p in providers:
            r = get.get((*s, p))
            cells.append("—" if r is None else (_f(r.get("us_per_call"), 1) if r.get("status") == "ok" else r.get("status")))
        table.append([f"{s[0]}×{s[1]}×{s[2]}×{s[3]}", *cells])
    return ["", "Batch-1 latency of one SE block (bf16, channels_last), µs per call:", "",
            *_table(["shape", *providers], table)]


def _overhead_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    return ["", "Per-launch host overhead (tiny SE forward, µs of host time per call):", "",
            *_table(["what", "µs/call", "kernels/call", "µs/kernel"],
                    [[r.get("what"), _f(r.get("us_per_call"), 1), _f(r.get("kernels_per_call"), 0), _f(r.get("us_per_kernel"), 1)]
                     for r in rows])]


def _skipped_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return ["Nothing."]
    lines = []
    by_step: dict[str, list[dict]] = {}
    for r in rows:
        by_step.setdefault(r["step"], []).append(r)
    for step, rs in by_step.items():
        reasons: dict[str, int] = {}
        for r in rs:
            key = r["reason"].split(" (")[0]
            reasons[key] = reasons.get(key, 0) + 1
        lines.append(f"- **{step}** ({len(rs)}): " + "; ".join(f"{k} ×{n}" for k, n in reasons.items()))
        for r in rs[:SKIPPED_SHOWN]:
            lines.append(f"  - {r['item']}: {r['reason']}")
        if len(rs) > SKIPPED_SHOWN:
            lines.append(f"  - … and {len(rs) - SKIPPED_SHOWN} more (gpu_skipped CSV)")
    return lines


def render(results_dir: Path, device: str, slug: str, meta: dict) -> str:
    results_dir = Path(results_dir)
    table = lambda name: read_rows(results_dir / f"{name}_{slug}.csv")  # noqa: E731
    steps = table("gpu_steps")
    lines = [f"# GPU check — {device}", ""]
    if meta.get("dry_run"):
        lines += ["**Dry run** (tiny shapes on CPU): it proves the command works; its numbers mean nothing.", ""]
    lines += [
        f"- Command: `{meta.get('command', '')}`; budget {meta.get('budget_s', '?')} s; "
        f"{'finished' if meta.get('finished') else 'in progress or cut short'} after {meta.get('elapsed_s', 0):.0f} s "
        f"(started {meta.get('started', '?')}).",
        f"- torch {meta.get('torch', '?')}, triton {meta.get('triton', '?')}, timm {meta.get('timm', '?')}, "
        f"Python {meta.get('python', '?')}; commit {meta.get('commit', '?')}; {meta.get('gpu_detail', '')}",
        f"- Kernel configs: the heuristics (tuning cache `{meta.get('cache_dir', '?')}`; step 5 tunes into a private one).",
        "",
        "## Steps",
        "",
    ]
    lines += _table(
        ["step", "status", "box s", "took s", "items done", "items skipped"],
        [[f"{r['step']} — {r['title']}", (r["status"] + (f": {r['reason']}" if r.get("reason") else "")).replace("|", "/")[:160],
          _f(r.get("box_s"), 0), _f(r.get("duration_s"), 1), r.get("items_done", ""), r.get("items_skipped", "")]
         for r in steps],
    )
    for note in meta.get("notes") or []:
        lines.append(f"- Note: {note}")
    sections = [
        ("1. Correctness", lambda: _correctness_lines(table("correctness")) + _overhead_lines(table("launch_overhead"))),
        ("2. Block benchmark", lambda: _bench_lines(results_dir, device)),
        ("3. L2-aware tile order", lambda: _l2_lines(table("l2_order"))),
        ("4. End to end: the SE tax", lambda: [
            f"Training step (forward + backward + SGD), bf16 autocast, channels_last, batch {meta.get('e2e_batch', '?')} "
            f"at {meta.get('e2e_size', '?')}²: attention model ÷ plain twin (unconverted) — the SE tax.", "",
            *se_tax_lines(table("e2e"), meta.get("e2e_pairs", ())), "", "- " + se_tax_target(table("e2e")),
            *_latency_lines(table("latency"))]),
        ("5. Autotune", lambda: _autotune_lines(table("autotune"), results_dir / f"autotune_{slug}.csv")),
        ("Skipped", lambda: _skipped_lines(table("gpu_skipped"))),
    ]
    for title, body in sections:
        lines += ["", f"## {title}", ""]
        try:
            lines += body()
        except Exception as e:  # one broken section must not lose the page
            lines.append(f"(could not render: {type(e).__name__}: {e})")
    files = meta.get("files") or []
    if files:
        lines += ["", "## Files", ""] + [f"- `{f}`" for f in files]
    return "\n".join(lines).rstrip() + "\n"


def _autotune_lines(rows: list[dict], path: Path) -> list[str]:
    if not rows:
        return ["No autotune rows."]
    shapes = sorted({r.get("shape", "") for r in rows})
    kernels = sorted({r.get("kernel", "") for r in rows})
    margins = [num(r.get("runner_up_ms")) / num(r.get("ms")) - 1 for r in rows if num(r.get("ms")) > 0]
    margins = [m for m in margins if m == m and not math.isinf(m)]
    med = sorted(margins)[len(margins) // 2] if margins else float("nan")
    return [f"{len(rows)} tuned keys over {len(shapes)} shape(s) ({', '.join(shapes)}), kernels {', '.join(kernels)}; "
            f"median runner-up margin {_f(med * 100, 1, '%')} (`{path.name}`)."]


def write(results_dir: Path, device: str, slug: str, meta: dict) -> Path:
    from .results import write_text

    path = Path(results_dir) / f"gpu_summary_{slug}.md"
    write_text(path, render(results_dir, device, slug, meta))
    return path
